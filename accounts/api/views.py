from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors, services
from accounts.api import serializers
from accounts.models import ApiKey, Membership, Organization
from marketplace.core.api import Need, OrganizationScopedMixin
from marketplace.core.errors import NotFound
from marketplace.core.idempotency import idempotent


class MeView(OrganizationScopedMixin, GenericAPIView):
    needs = {"get": "read", "patch": Need("admin", roles=Membership.ALL_ROLES)}  # one's own profile
    serializer_class = serializers.MeSerializer
    pagination_class = None

    def _me(self, request: Request) -> Response:
        memberships = selectors.membership_list_for_user(user=request.user)
        if request.api_key is not None:  # a key speaks for its own organization only
            memberships = memberships.filter(organization=self.organization)
        context = {"organization": self.organization, "memberships": memberships}
        return Response(serializers.MeSerializer(request.user, context=context).data)

    def get(self, request: Request) -> Response:
        return self._me(request)

    @extend_schema(request=serializers.MeUpdateSerializer, responses=serializers.MeSerializer)
    def patch(self, request: Request) -> Response:
        payload = serializers.MeUpdateSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        services.user_profile_update(
            user=request.user,
            full_name=payload.validated_data.get("full_name", request.user.full_name),
            preferred_language=payload.validated_data.get("preferred_language", request.user.preferred_language),
        )
        return self._me(request)


class OrganizationViewSet(
    OrganizationScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    needs = {
        "list": "read",
        "retrieve": "read",
        # A new organization of one's own, whatever one's role in this one.
        "create": Need("admin", roles=Membership.ALL_ROLES),
        "partial_update": "admin",
        "members": "read",  # GET; changes go through `member`
        "member": "admin",
        "invitations": "admin",  # GET lists invitees' addresses: administration, like sending them
        "invitation": "admin",
        "provider_application": {"get": "read", "post": "admin"},
    }
    serializer_class = serializers.OrganizationSerializer
    ordering_fields = ["name", "created_at"]
    filterset_fields = ["is_personal"]

    def get_queryset(self) -> QuerySet[Organization]:
        if getattr(self, "swagger_fake_view", False):
            return Organization.objects.none()
        api_key = self.request.api_key
        return selectors.organization_list(user=self.request.user, only=api_key.organization if api_key else None)

    @extend_schema(request=serializers.OrganizationWriteSerializer, responses={201: serializers.OrganizationSerializer})
    @idempotent
    def create(self, request: Request) -> Response:
        payload = serializers.OrganizationWriteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        organization = services.organization_create(name=payload.validated_data["name"], owner=request.user)
        organization.caller_role = Membership.Role.OWNER  # an API key sees only its own organization afterwards
        return Response(self.get_serializer(organization).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=serializers.OrganizationWriteSerializer, responses=serializers.OrganizationSerializer)
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        payload = serializers.OrganizationWriteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        organization = services.organization_update(
            organization=self.get_object(), actor=request.user, name=payload.validated_data["name"]
        )
        return Response(self.get_serializer(self.get_queryset().get(pk=organization.pk)).data)

    @extend_schema(responses=serializers.MembershipSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], filterset_fields=None, ordering_fields=None)
    def members(self, request: Request, pk: str | None = None) -> Response:
        page = self.paginate_queryset(selectors.membership_list(organization=self.get_object()))
        return self.get_paginated_response(serializers.MembershipSerializer(page, many=True).data)

    @extend_schema(
        methods=["patch"], request=serializers.MembershipRoleSerializer, responses=serializers.MembershipSerializer
    )
    @extend_schema(methods=["delete"], responses={204: None})
    @action(detail=True, methods=["patch", "delete"], url_path=r"members/(?P<membership_id>\d+)")
    def member(self, request: Request, pk: str | None = None, membership_id: str | None = None) -> Response:
        organization = self.get_object()
        membership = get_object_or_404(selectors.membership_list(organization=organization), pk=membership_id)
        if request.method == "DELETE":
            services.membership_remove(membership=membership, actor=request.user)
            return Response(status=status.HTTP_204_NO_CONTENT)
        payload = serializers.MembershipRoleSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        membership = services.membership_change_role(
            membership=membership, role=payload.validated_data["role"], actor=request.user
        )
        return Response(serializers.MembershipSerializer(membership).data)

    @extend_schema(methods=["get"], responses=serializers.InvitationSerializer(many=True), filters=False)
    @extend_schema(
        methods=["post"],
        request=serializers.InvitationCreateSerializer,
        responses={201: serializers.InvitationSerializer},
    )
    @action(detail=True, methods=["get", "post"], filterset_fields=None, ordering_fields=None)
    def invitations(self, request: Request, pk: str | None = None) -> Response:
        organization = self.get_object()
        if request.method == "POST":
            return self._invite(request, organization)
        page = self.paginate_queryset(selectors.invitation_list_pending(organization=organization))
        return self.get_paginated_response(serializers.InvitationSerializer(page, many=True).data)

    @extend_schema(request=None, responses={204: None})
    @action(detail=True, methods=["delete"], url_path=r"invitations/(?P<invitation_id>\d+)")
    def invitation(self, request: Request, pk: str | None = None, invitation_id: str | None = None) -> Response:
        organization = self.get_object()
        invitation = get_object_or_404(selectors.invitation_list_pending(organization=organization), pk=invitation_id)
        services.invitation_revoke(invitation=invitation, actor=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @idempotent
    def _invite(self, request: Request, organization: Organization) -> Response:
        payload = serializers.InvitationCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        invitation, _token = services.invitation_create(
            organization=organization, invited_by=request.user, **payload.validated_data
        )
        return Response(serializers.InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED)

    @extend_schema(methods=["get"], responses=serializers.ProviderProfileSerializer)
    @extend_schema(
        methods=["post"],
        request=serializers.ProviderApplySerializer,
        responses={201: serializers.ProviderProfileSerializer},
    )
    @action(detail=True, methods=["get", "post"], url_path="provider-application", pagination_class=None)
    def provider_application(self, request: Request, pk: str | None = None) -> Response:
        organization = self.get_object()
        if request.method == "POST":
            return self._apply(request, organization)
        profile = selectors.provider_profile_get(organization=organization)
        if profile is None:
            raise NotFound(_("This organization has not applied to become a provider."), code="no_provider_application")
        return Response(serializers.ProviderProfileSerializer(profile).data)

    @idempotent
    def _apply(self, request: Request, organization: Organization) -> Response:
        payload = serializers.ProviderApplySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        profile = services.provider_apply(organization=organization, actor=request.user, **payload.validated_data)
        return Response(serializers.ProviderProfileSerializer(profile).data, status=status.HTTP_201_CREATED)


class ApiKeyViewSet(OrganizationScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    needs = {
        "list": "read",
        "retrieve": "read",
        # Members manage keys of their own (the service limits them to those); billing members hold none.
        "create": Need("admin", roles=Membership.KEY_HOLDER_ROLES),
        "revoke": Need("admin", roles=Membership.KEY_HOLDER_ROLES),
    }
    serializer_class = serializers.ApiKeySerializer
    ordering_fields = ["created_at", "name", "last_used_at"]

    def get_queryset(self) -> QuerySet[ApiKey]:
        if getattr(self, "swagger_fake_view", False):
            return ApiKey.objects.none()
        return selectors.api_key_list(organization=self.organization)

    @extend_schema(request=serializers.ApiKeyCreateSerializer, responses={201: serializers.ApiKeyCreatedSerializer})
    @idempotent(redact=("secret",))  # the secret is shown once and never stored, not even for replays
    def create(self, request: Request) -> Response:
        payload = serializers.ApiKeyCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        api_key, secret = services.api_key_create(
            organization=self.organization, created_by=request.user, granting_key=request.api_key,
            **payload.validated_data,
        )  # fmt: skip
        api_key.secret = secret
        return Response(serializers.ApiKeyCreatedSerializer(api_key).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=serializers.ApiKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        api_key = services.api_key_revoke(api_key=self.get_object(), actor=request.user)
        return Response(self.get_serializer(api_key).data)

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from accounts.models import ApiKey, Invitation, Membership, Organization, ProviderProfile, User
from marketplace.core.regions import Region


class OrganizationSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "is_personal"]
        read_only_fields = fields


class MembershipOfUserSerializer(serializers.ModelSerializer):
    organization = OrganizationSummarySerializer(read_only=True)

    class Meta:
        model = Membership
        fields = ["organization", "role"]
        read_only_fields = fields


class MeSerializer(serializers.ModelSerializer):
    preferred_language = serializers.ChoiceField(
        choices=settings.LANGUAGES, allow_blank=True, read_only=True, help_text="Empty: follow the browser."
    )
    active_organization = serializers.SerializerMethodField()
    memberships = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = ["id", "email", "full_name", "preferred_language", "date_joined", "active_organization", "memberships"]
        read_only_fields = fields

    @extend_schema_field(OrganizationSummarySerializer)
    def get_active_organization(self, user) -> dict:
        return OrganizationSummarySerializer(self.context["organization"]).data

    @extend_schema_field(MembershipOfUserSerializer(many=True))
    def get_memberships(self, user) -> list:
        return MembershipOfUserSerializer(self.context["memberships"], many=True).data


class MeUpdateSerializer(serializers.Serializer):
    full_name = serializers.CharField(max_length=150, allow_blank=True, required=False)
    preferred_language = serializers.ChoiceField(choices=settings.LANGUAGES, allow_blank=True, required=False)


class OrganizationSerializer(serializers.ModelSerializer):
    role = serializers.CharField(source="caller_role", read_only=True, help_text="The caller's role here.")
    provider_status = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["id", "name", "slug", "is_personal", "role", "provider_status", "created_at"]
        read_only_fields = fields

    def get_provider_status(self, organization) -> str | None:
        profile = getattr(organization, "provider_profile", None)
        return profile.status if profile else None


class OrganizationWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120)


class MembershipSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    full_name = serializers.CharField(source="user.full_name", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "full_name", "role", "created_at"]
        read_only_fields = fields


class MembershipRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class InvitationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "expires_at", "created_at"]
        read_only_fields = fields


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Membership.Role.choices, default=Membership.Role.MEMBER)


class ProviderProfileSerializer(serializers.ModelSerializer):
    class Meta:
        model = ProviderProfile
        fields = [
            "legal_name", "contact_name", "contact_email", "contact_phone", "regions",
            "status", "review_note", "reviewed_at", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class ProviderApplySerializer(serializers.Serializer):
    legal_name = serializers.CharField(max_length=200)
    contact_name = serializers.CharField(max_length=120)
    contact_email = serializers.EmailField()
    contact_phone = serializers.CharField(max_length=40, allow_blank=True, required=False, default="")
    regions = serializers.ListField(child=serializers.ChoiceField(choices=Region.choices), min_length=1)


class ApiKeySerializer(serializers.ModelSerializer):
    created_by = serializers.EmailField(source="created_by.email", read_only=True)

    class Meta:
        model = ApiKey
        fields = [
            "id", "name", "prefix", "masked", "scopes", "is_active",
            "expires_at", "last_used_at", "revoked_at", "created_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class ApiKeyCreatedSerializer(ApiKeySerializer):
    secret = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="The full key. Shown once; store it now. Null in an Idempotency-Key replay: it is never stored.",
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ApiKey.Scope.choices), min_length=1)
    expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)

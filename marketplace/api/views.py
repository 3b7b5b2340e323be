from django.db.models import QuerySet
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework import serializers as drf_serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from marketplace.api import serializers
from marketplace.core.api import (
    ApprovedProviderMixin,
    CountlessPagination,
    FastJSONRenderer,
    OrganizationScopedMixin,
    StrictFilterBackend,
    query_params_refuse_unknown,
)
from marketplace.core.errors import DomainError
from marketplace.core.idempotency import idempotent
from marketplace.filters import ModelServiceFilterSet, OfferingFilterSet
from marketplace.models import (
    Application,
    ApplicationCategory,
    ApplicationSubscription,
    ModelCall,
    ModelService,
    Offering,
    Rental,
    Site,
)
from marketplace.selectors import applications as application_selectors
from marketplace.selectors import catalogue
from marketplace.selectors import model_calls as model_call_selectors
from marketplace.selectors import rentals as rental_selectors
from marketplace.services import applications as application_services
from marketplace.services import offerings as offering_services
from marketplace.services import rentals as rental_services
from marketplace.services.placement import EXCLUSION_REASONS, PlacementRequest, placement_quote, training_estimate


class SiteViewSet(viewsets.ReadOnlyModelViewSet):
    needs = {"list": "read", "retrieve": "read"}
    serializer_class = serializers.SiteSerializer
    filterset_fields = ["region", "tier", "residency_zone"]
    ordering_fields = ["name", "region"]

    def get_queryset(self) -> QuerySet[Site]:
        return catalogue.site_list()


class AcceleratorViewSet(viewsets.ReadOnlyModelViewSet):
    needs = {"list": "read", "retrieve": "read"}
    serializer_class = serializers.AcceleratorSerializer
    filterset_fields = ["vendor", "is_domestic"]
    ordering_fields = ["vendor", "memory_gb", "tflops_bf16"]

    def get_queryset(self):
        return catalogue.accelerator_list()


class OfferingViewSet(viewsets.ReadOnlyModelViewSet):
    """Published offerings. Every storefront facet is a filter; `sort` orders them (price by default).

    The list is the catalogue's hot path: flat rows instead of model instances and serializers, and pages
    without COUNT(*) (`next` says whether there is more).
    """

    needs = {"list": "read", "retrieve": "read", "price_history": "read"}

    serializer_class = serializers.OfferingSerializer
    filter_backends = [StrictFilterBackend]
    filterset_class = OfferingFilterSet
    pagination_class = CountlessPagination
    renderer_classes = [FastJSONRenderer]

    def get_queryset(self) -> QuerySet[Offering]:
        return catalogue.offering_list()

    def list(self, request: Request) -> Response:
        query_params_refuse_unknown(request=request, view=self, filterset_class=self.filterset_class)
        offset, limit = self.paginator.page_window(request)
        window = catalogue.offering_rows_page(filters=request.query_params, offset=offset, limit=limit)
        rows = self.paginator.paginate_rows(window)
        return self.get_paginated_response(serializers.offering_rows_representation(rows))

    @extend_schema(responses=serializers.PriceChangeSerializer(many=True), filters=False)
    @action(detail=True, methods=["get"], url_path="price-history", filterset_class=None)
    def price_history(self, request: Request, pk: str | None = None) -> Response:
        page = self.paginate_queryset(catalogue.offering_price_history(offering=self.get_object()))
        return self.get_paginated_response(serializers.PriceChangeSerializer(page, many=True).data)


class ModelServiceViewSet(viewsets.ReadOnlyModelViewSet):
    needs = {"list": "read", "retrieve": "read"}
    serializer_class = serializers.ModelServiceSerializer
    filter_backends = [StrictFilterBackend]
    filterset_class = ModelServiceFilterSet

    def get_queryset(self) -> QuerySet[ModelService]:
        return catalogue.model_service_list()


class ProviderCatalogueViewSet(
    ApprovedProviderMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """What a provider sells, one kind per subclass; writes go through the kind's create, update and status
    services."""

    needs = {
        "list": "provider",
        "retrieve": "provider",
        "create": "provider",
        "partial_update": "provider",
        "set_status": "provider",
    }

    write_serializer_class: type[drf_serializers.Serializer]

    def perform_create_service(self, request: Request, data: dict):
        raise NotImplementedError

    def perform_update_service(self, request: Request, pk: int, data: dict):
        raise NotImplementedError

    def perform_status_service(self, request: Request, pk: int, new_status: str):
        raise NotImplementedError

    def _represent(self, pk: int) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=pk)).data)

    @idempotent
    def create(self, request: Request) -> Response:
        payload = self.write_serializer_class(data=request.data)
        payload.is_valid(raise_exception=True)
        created = self.perform_create_service(request, payload.validated_data)
        return Response(self.get_serializer(created).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        item = self.get_object()
        payload = self.write_serializer_class(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        # only the fields the caller sent change: serializer defaults must not overwrite stored values
        sent = {name: value for name, value in payload.validated_data.items() if name in request.data}
        self.perform_update_service(request, item.pk, sent)
        return self._represent(item.pk)

    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request: Request, pk: str | None = None) -> Response:
        item = self.get_object()
        payload = serializers.StatusChangeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        self.perform_status_service(request, item.pk, payload.validated_data["status"])
        return self._represent(item.pk)


@extend_schema_view(
    create=extend_schema(request=serializers.OfferingWriteSerializer, responses={201: serializers.OfferingSerializer}),
    partial_update=extend_schema(request=serializers.OfferingWriteSerializer),
    set_status=extend_schema(request=serializers.StatusChangeSerializer),
)
class ProviderOfferingViewSet(ProviderCatalogueViewSet):
    serializer_class = serializers.OfferingSerializer
    write_serializer_class = serializers.OfferingWriteSerializer
    filterset_fields = ["status"]
    ordering_fields = ["updated_at", "on_demand_price", "name"]

    def get_queryset(self) -> QuerySet[Offering]:
        if getattr(self, "swagger_fake_view", False):
            return Offering.objects.none()
        return catalogue.offering_list_for_provider(provider=self.organization)

    def perform_create_service(self, request: Request, data: dict) -> Offering:
        return offering_services.offering_create(provider=self.organization, actor=request.user, **data)

    def perform_update_service(self, request: Request, pk: int, data: dict) -> None:
        offering_services.offering_update(offering_id=pk, actor=request.user, **data)

    def perform_status_service(self, request: Request, pk: int, new_status: str) -> None:
        offering_services.offering_set_status(offering_id=pk, status=new_status, actor=request.user)


@extend_schema_view(
    create=extend_schema(
        request=serializers.ModelServiceWriteSerializer, responses={201: serializers.ProviderModelServiceSerializer}
    ),
    partial_update=extend_schema(request=serializers.ModelServiceWriteSerializer),
    set_status=extend_schema(request=serializers.StatusChangeSerializer),
)
class ProviderModelServiceViewSet(ProviderCatalogueViewSet):
    serializer_class = serializers.ProviderModelServiceSerializer
    write_serializer_class = serializers.ModelServiceWriteSerializer
    filterset_fields = ["status", "modality"]
    ordering_fields = ["updated_at", "name"]

    def get_queryset(self) -> QuerySet[ModelService]:
        if getattr(self, "swagger_fake_view", False):
            return ModelService.objects.none()
        return catalogue.model_service_list_for_provider(provider=self.organization)

    def perform_create_service(self, request: Request, data: dict) -> ModelService:
        return offering_services.model_service_create(provider=self.organization, actor=request.user, **data)

    def perform_update_service(self, request: Request, pk: int, data: dict) -> None:
        offering_services.model_service_update(model_service_id=pk, actor=request.user, **data)

    def perform_status_service(self, request: Request, pk: int, new_status: str) -> None:
        offering_services.model_service_set_status(model_service_id=pk, status=new_status, actor=request.user)


class PlacementQuoteView(OrganizationScopedMixin, APIView):
    """Rank the feasible offerings for a request by total price, with the reason for every excluded one."""

    needs = {"post": "read"}  # a POST that reads: quoting changes nothing

    @extend_schema(request=serializers.PlacementRequestSerializer, responses=serializers.PlacementResultSerializer)
    def post(self, request: Request) -> Response:
        payload = serializers.PlacementRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        accelerator = data.pop("accelerator")
        placement = PlacementRequest(accelerator_slug=accelerator.slug if accelerator else "", **data)
        result = placement_quote(request=placement, offerings=catalogue.offering_list())
        body = {
            "quotes": result.quotes,
            "excluded": [
                {"offering_id": o.pk, "offering_name": o.name, "reason": r, "message": str(EXCLUSION_REASONS[r])}
                for o, r in result.excluded
            ],
            "excluded_counts": result.excluded_counts,
        }
        return Response(serializers.PlacementResultSerializer(body).data)


class TrainingEstimateView(OrganizationScopedMixin, APIView):
    """Training compute ≈ 6·N·D and the accelerator-hours it takes on each accelerator at the given MFU."""

    needs = {"post": "read"}

    @extend_schema(request=serializers.EstimateRequestSerializer, responses=serializers.EstimateSerializer)
    def post(self, request: Request) -> Response:
        payload = serializers.EstimateRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        estimate = training_estimate(accelerators=list(catalogue.accelerator_list()), **payload.validated_data)
        body = {
            "total_flops": str(estimate.total_flops),
            "petaflop_days": estimate.petaflop_days,
            "accelerator_hours": estimate.accelerator_hours,
        }
        return Response(serializers.EstimateSerializer(body).data)


@extend_schema_view(
    create=extend_schema(
        request=serializers.RentalCreateSerializer,
        responses={
            201: serializers.RentalDetailSerializer,
            402: OpenApiResponse(description="insufficient_funds: details.missing says how much more is needed."),
            409: OpenApiResponse(description="capacity_exhausted: details.free_nodes says what is left."),
            422: OpenApiResponse(description="residency_zone_mismatch: the offering is in another zone."),
            429: OpenApiResponse(description="quota_exceeded: a monthly limit; details say which, and resets_at."),
        },
    ),
    stop=extend_schema(request=None, responses=serializers.RentalDetailSerializer),
    cancel=extend_schema(request=None, responses=serializers.RentalDetailSerializer),
    resume=extend_schema(request=None, responses=serializers.RentalDetailSerializer),
)
class RentalViewSet(OrganizationScopedMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    """The organization's rentals. Creating one admits it at once (capacity, quota and funds) or refuses it."""

    needs = {"list": "read", "retrieve": "read", "create": "rent", "cancel": "rent", "resume": "rent", "stop": "rent"}

    filterset_fields = ["status", "mode", "offering"]
    ordering_fields = ["created_at", "started_at"]

    def get_serializer_class(self):
        return serializers.RentalSerializer if self.action == "list" else serializers.RentalDetailSerializer

    def get_queryset(self) -> QuerySet[Rental]:
        if getattr(self, "swagger_fake_view", False):
            return Rental.objects.none()
        rentals = rental_selectors.rental_list(organization=self.organization).select_related("hold")
        return rentals.prefetch_related("transitions") if self.action != "list" else rentals

    @idempotent
    def create(self, request: Request) -> Response:
        payload = serializers.RentalCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        order = rental_services.RentalRequest(
            offering_id=data["offering"],
            accelerators=data["accelerators"],
            mode=data["mode"],
            hours=data.get("hours"),
            starts_at=data.get("starts_at"),
            residency_zone=data.get("residency_zone", ""),
        )
        api_key = getattr(request, "api_key", None)  # spend counts against the key's own limit too
        rental = rental_services.rental_create(
            organization=self.organization, request=order, created_by=request.user, api_key=api_key
        )
        # The admitted rental as written (its hold included): no need to read it back.
        return Response(serializers.RentalDetailSerializer(rental).data, status=status.HTTP_201_CREATED)

    def _detail(self, pk: int) -> dict:
        return serializers.RentalDetailSerializer(self.get_queryset().prefetch_related("transitions").get(pk=pk)).data

    def _act(self, request: Request, service) -> Response:
        rental = self.get_object()  # another tenant's rental, or no number at all: 404
        service(rental_id=rental.pk, organization=self.organization, actor=request.user)
        return Response(self._detail(rental.pk))

    @action(detail=True, methods=["post"])
    def stop(self, request: Request, pk: str | None = None) -> Response:
        """Stop a running or suspended rental; it is charged up to now (a reserved term: the whole term)."""
        return self._act(request, rental_services.rental_stop)

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a rental that has not started; its hold is released in full."""
        return self._act(request, rental_services.rental_cancel)

    @action(detail=True, methods=["post"])
    def resume(self, request: Request, pk: str | None = None) -> Response:
        """Resume a suspended rental once funds and limits allow (402 or 429 otherwise)."""
        return self._act(request, rental_services.rental_resume)


class ModelCallViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """The organization's calls through the model gateway (`/v1/`), newest first; written a few seconds after each
    call. Another organization's call is 404."""

    needs = {"list": "read", "retrieve": "read"}

    serializer_class = serializers.ModelCallSerializer
    filterset_fields = ["model_service", "api_key", "status_code", "endpoint", "residency_zone"]
    ordering_fields = ["created_at", "latency_ms"]

    def get_queryset(self) -> QuerySet[ModelCall]:
        if getattr(self, "swagger_fake_view", False):
            return ModelCall.objects.none()
        return model_call_selectors.model_call_list(organization=self.organization)


class ProviderModelCallViewSet(ApprovedProviderMixin, viewsets.ReadOnlyModelViewSet):
    """Calls on the provider's model services and what each earned (once captured); not who made them."""

    needs = {"list": "provider", "retrieve": "provider"}

    serializer_class = serializers.ProviderModelCallSerializer
    filterset_fields = ["model_service", "status_code", "endpoint"]
    ordering_fields = ["created_at", "latency_ms"]

    def get_queryset(self) -> QuerySet[ModelCall]:
        if getattr(self, "swagger_fake_view", False):
            return ModelCall.objects.none()
        return model_call_selectors.provider_model_call_list(provider=self.organization)


USAGE_GROUPINGS = ("day", "offering", "rental")


class UsageView(OrganizationScopedMixin, APIView):
    """Accelerator-hours and spend of the last `days` days, grouped by day, offering or rental."""

    needs = {"get": "read"}

    @extend_schema(
        parameters=[
            OpenApiParameter("group_by", str, enum=USAGE_GROUPINGS, description="day (default), offering or rental"),
            OpenApiParameter("days", int, description="1 to 366; default 30"),
        ],
        responses=serializers.UsageAggregateSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        group_by = request.query_params.get("group_by", "day")
        days = request.query_params.get("days", "30")
        if group_by not in USAGE_GROUPINGS or not days.isdigit() or not 1 <= int(days) <= 366:
            raise DomainError(
                _("group_by must be day, offering or rental, and days 1 to 366."), code="invalid_parameters"
            )
        days = int(days)
        organization = self.organization
        if group_by == "day":
            rows = [
                {"key": day.isoformat(), "label": day.isoformat(), "accelerator_hours": hours, "amount": amount}
                for day, hours, amount in rental_selectors.usage_by_day(organization=organization, days=days)
            ]
        elif group_by == "offering":
            rows = [
                {"key": str(row["offering_id"]), "label": row["offering"], **row}
                for row in rental_selectors.usage_by_offering(organization=organization, days=days)
            ]
        else:
            rows = [
                {"key": str(row["rental_id"]), "label": f"#{row['rental_id']}", **row}
                for row in rental_selectors.usage_by_rental(organization=organization, days=days)
            ]
        return Response(serializers.UsageAggregateSerializer(rows, many=True).data)


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter("q", str, description="Words in the name, tagline or description."),
            OpenApiParameter("category", str, enum=[value for value, _label in ApplicationCategory.choices]),
            OpenApiParameter("sort", str, enum=list(application_selectors.ORDERINGS), description="rating by default"),
        ]
    )
)
class ApplicationViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Published applications in the storefront; call one at the gateway as its `gateway_model` (`app:<slug>`)."""

    needs = {
        "list": "read",
        "retrieve": "read",
        "reviews": {"get": "read", "post": "rent"},
        "subscribe": "billing",  # a subscription is paid for: money
    }

    serializer_class = serializers.ApplicationSerializer
    lookup_field = "slug"
    lookup_value_regex = "[-a-zA-Z0-9_]+"
    filter_backends: list = []

    def get_queryset(self) -> QuerySet[Application]:
        if self.action != "list":
            return application_selectors.application_storefront_list()
        search = serializers.ApplicationSearchSerializer(data=self.request.query_params)
        search.is_valid(raise_exception=True)
        data = search.validated_data
        return application_selectors.application_storefront_list(
            query=data["q"], category=data["category"], ordering=data["sort"]
        )

    @extend_schema(
        methods=["GET"], responses=serializers.ApplicationReviewSerializer(many=True),
        description="Its reviews, newest first.",
    )  # fmt: skip
    @extend_schema(
        methods=["POST"], request=serializers.ApplicationReviewWriteSerializer,
        responses=serializers.ApplicationReviewSerializer,
        description="Write or rewrite your organization's review: only organizations that used it (403 not_used), "
        "never its seller (403 own_application).",
    )  # fmt: skip
    @action(detail=True, methods=["get", "post"])
    def reviews(self, request: Request, slug: str | None = None) -> Response:
        application = self.get_object()
        if request.method == "GET":
            reviews = application_selectors.application_reviews(application=application)
            page = self.paginate_queryset(reviews)
            return self.get_paginated_response(serializers.ApplicationReviewSerializer(page, many=True).data)
        payload = serializers.ApplicationReviewWriteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        review = application_services.application_review_save(
            application=application, organization=self.organization, user=request.user, **payload.validated_data
        )
        return Response(serializers.ApplicationReviewSerializer(review).data)

    @extend_schema(
        request=None, responses={201: serializers.ApplicationSubscriptionSerializer},
        description="Subscribe at the current version's monthly price; the first month is charged now (402 "
        "insufficient_funds, 409 already_subscribed or not_by_subscription).",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def subscribe(self, request: Request, slug: str | None = None) -> Response:
        subscription = application_services.application_subscribe(
            application=self.get_object(), organization=self.organization, user=request.user
        )
        body = serializers.ApplicationSubscriptionSerializer(subscription).data
        return Response(body, status=status.HTTP_201_CREATED)


class ApplicationSubscriptionViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """The organization's application subscriptions. Another organization's is 404."""

    needs = {"list": "read", "retrieve": "read", "cancel": "billing", "accept_price": "billing"}

    serializer_class = serializers.ApplicationSubscriptionSerializer
    filterset_fields = ["status"]

    def get_queryset(self) -> QuerySet[ApplicationSubscription]:
        if getattr(self, "swagger_fake_view", False):
            return ApplicationSubscription.objects.none()
        return application_selectors.subscription_list(organization=self.organization)

    @extend_schema(request=None, description="Stop renewing; it runs to the end of the period paid for.")
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        subscription = application_services.application_subscription_cancel(
            subscription=self.get_object(), user=request.user
        )
        return Response(self.get_serializer(subscription).data)

    @extend_schema(
        request=serializers.SubscriptionPriceAcceptSerializer,
        description="Accept the seller's higher monthly price (`pending_price`, sent back as `price`): renewals pay "
        "it from the next period on. Without acceptance the subscription ends at the end of its period "
        "(409 no_pending_price or price_changed).",
    )
    @action(detail=True, methods=["post"], url_path="accept-price")
    def accept_price(self, request: Request, pk: str | None = None) -> Response:
        subscription = self.get_object()  # another organization's is 404 whatever it sends
        payload = serializers.SubscriptionPriceAcceptSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        subscription = application_services.application_subscription_price_accept(
            subscription=subscription, user=request.user, price=payload.validated_data["price"]
        )
        return Response(self.get_serializer(subscription).data)


@extend_schema_view(
    create=extend_schema(
        request=serializers.ApplicationCreateSerializer, responses={201: serializers.SellerApplicationSerializer}
    ),
    partial_update=extend_schema(request=serializers.ApplicationListingWriteSerializer),
)
class SellerApplicationViewSet(
    OrganizationScopedMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """The applications the organization sells, drafts included. Owners and admins make, version, publish and
    unpublish them; another organization's is 404."""

    needs = {
        "list": "provider",
        "retrieve": "provider",
        "create": "provider",
        "partial_update": "provider",
        "set_status": "provider",
        "versions": "provider",
    }

    serializer_class = serializers.SellerApplicationSerializer
    filterset_fields = ["status", "category"]
    ordering_fields = ["created_at", "name"]

    def get_queryset(self) -> QuerySet[Application]:
        if getattr(self, "swagger_fake_view", False):
            return Application.objects.none()
        return application_selectors.seller_application_list(seller=self.organization).order_by("-created_at")

    def _represent(self, pk: int, status_code: int = status.HTTP_200_OK) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=pk)).data, status=status_code)

    @idempotent
    def create(self, request: Request) -> Response:
        payload = serializers.ApplicationCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        listing = dict(payload.validated_data)
        slug, version = listing.pop("slug"), listing.pop("version")
        created = application_services.application_create(
            seller=self.organization, user=request.user, slug=slug, listing=listing, version=version
        )
        return self._represent(created.pk, status.HTTP_201_CREATED)

    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        application = self.get_object()
        payload = serializers.ApplicationListingWriteSerializer(data=request.data, partial=True)
        payload.is_valid(raise_exception=True)
        application_services.application_update_listing(
            application=application, user=request.user, listing=payload.validated_data
        )
        return self._represent(application.pk)

    @extend_schema(
        request=serializers.ApplicationVersionWriteSerializer, responses={201: serializers.SellerApplicationSerializer},
        description="A new current version: new calls and subscriptions get it; paid subscriptions keep theirs (and "
        "its price) until they renew.",
    )  # fmt: skip
    @action(detail=True, methods=["post"])
    def versions(self, request: Request, pk: str | None = None) -> Response:
        application = self.get_object()
        payload = serializers.ApplicationVersionWriteSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        application_services.application_version_create(
            application=application, user=request.user, version=payload.validated_data
        )
        return self._represent(application.pk, status.HTTP_201_CREATED)

    @extend_schema(request=serializers.ApplicationStatusSerializer, description="Publish or unpublish.")
    @action(detail=True, methods=["post"], url_path="status")
    def set_status(self, request: Request, pk: str | None = None) -> Response:
        application = self.get_object()
        payload = serializers.ApplicationStatusSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        application_services.application_status_set(
            application=application, user=request.user, status=payload.validated_data["status"]
        )
        return self._represent(application.pk)

from datetime import tzinfo
from decimal import Decimal

from django.utils.timezone import get_current_timezone
from rest_framework import serializers

from marketplace.core.api import FieldsBuiltOnce, ReadOnlyModelSerializer, SlugRefField, money_field
from marketplace.core.regions import Region
from marketplace.models import (
    AcceleratorModel,
    Application,
    ApplicationCategory,
    ApplicationReview,
    ApplicationSubscription,
    ApplicationVersion,
    Metering,
    ModelCall,
    ModelService,
    Offering,
    OfferingPriceChange,
    Precision,
    Rental,
    RentalTransition,
    ResidencyZone,
    Site,
)
from marketplace.services.applications import VERSION_FIELDS


class ProviderRefSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)


class SiteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Site
        fields = ["id", "name", "slug", "region", "tier", "residency_zone", "operator", "pue"]
        read_only_fields = fields


class AcceleratorSerializer(serializers.ModelSerializer):
    class Meta:
        model = AcceleratorModel
        fields = [
            "id", "slug", "vendor", "name", "memory_gb", "memory_bandwidth_gbps", "interconnect", "is_domestic",
            "tflops_fp64", "tflops_fp32", "tflops_tf32", "tflops_bf16", "tflops_fp16", "tflops_fp8", "tflops_int8",
            "datasheet_note",
        ]  # fmt: skip
        read_only_fields = fields


class OfferingSerializer(serializers.ModelSerializer):
    provider = ProviderRefSerializer(read_only=True)
    site = SiteSerializer(read_only=True)
    accelerator = AcceleratorSerializer(read_only=True)
    free_nodes = serializers.IntegerField(read_only=True)
    is_verified = serializers.BooleanField(read_only=True)

    class Meta:
        model = Offering
        fields = [
            "id", "name", "description", "provider", "site", "accelerator", "accelerators_per_node",
            "vcpu_per_node", "ram_gb_per_node", "disk_gb_per_node", "network_gbps", "capacity_nodes", "free_nodes",
            "on_demand_price", "interruptible_price", "reserved_1w_discount_percent", "reserved_1m_discount_percent",
            "reserved_3m_discount_percent", "min_rental_hours", "max_rental_hours", "status", "published_at",
            "is_verified", "verified_at", "verified_tflops", "reliability", "metering",
        ]  # fmt: skip
        read_only_fields = fields


PRECISIONS = tuple(Precision.values)  # computed once: the enum builds a new list on every access


def _decimal(value) -> str | None:
    return None if value is None else str(value)


def _datetime_or_none(value, zone: tzinfo) -> str | None:
    """DRF's DateTimeField output (ISO 8601 in the current time zone, "Z" for UTC) without its per-call lookups."""
    if value is None:
        return None
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def offering_rows_representation(rows: list[dict]) -> list[dict]:
    """What OfferingSerializer writes, built from flat `.values()` rows; a test holds the two equal."""
    zone = get_current_timezone()
    return [_offering_row(row, zone) for row in rows]


def _offering_row(row: dict, zone: tzinfo) -> dict:
    return {
        "id": row["id"],
        "name": row["name"],
        "description": row["description"],
        "provider": {"id": row["provider__id"], "name": row["provider__name"]},
        "site": {
            "id": row["site__id"],
            "name": row["site__name"],
            "slug": row["site__slug"],
            "region": row["site__region"],
            "tier": row["site__tier"],
            "residency_zone": row["site__residency_zone"],
            "operator": row["site__operator"],
            "pue": _decimal(row["site__pue"]),
        },
        "accelerator": {
            "id": row["accelerator__id"],
            "slug": row["accelerator__slug"],
            "vendor": row["accelerator__vendor"],
            "name": row["accelerator__name"],
            "memory_gb": row["accelerator__memory_gb"],
            "memory_bandwidth_gbps": row["accelerator__memory_bandwidth_gbps"],
            "interconnect": row["accelerator__interconnect"],
            "is_domestic": row["accelerator__is_domestic"],
            **{f"tflops_{p}": _decimal(row[f"accelerator__tflops_{p}"]) for p in PRECISIONS},
            "datasheet_note": row["accelerator__datasheet_note"],
        },
        "accelerators_per_node": row["accelerators_per_node"],
        "vcpu_per_node": row["vcpu_per_node"],
        "ram_gb_per_node": row["ram_gb_per_node"],
        "disk_gb_per_node": row["disk_gb_per_node"],
        "network_gbps": row["network_gbps"],
        "capacity_nodes": row["capacity_nodes"],
        "free_nodes": row["capacity_nodes"] - row["rented_nodes"],
        "on_demand_price": _decimal(row["on_demand_price"]),
        "interruptible_price": _decimal(row["interruptible_price"]),
        "reserved_1w_discount_percent": _decimal(row["reserved_1w_discount_percent"]),
        "reserved_1m_discount_percent": _decimal(row["reserved_1m_discount_percent"]),
        "reserved_3m_discount_percent": _decimal(row["reserved_3m_discount_percent"]),
        "min_rental_hours": row["min_rental_hours"],
        "max_rental_hours": row["max_rental_hours"],
        "status": row["status"],
        "published_at": _datetime_or_none(row["published_at"], zone),
        "is_verified": row["verified_at"] is not None,
        "verified_at": _datetime_or_none(row["verified_at"], zone),
        "verified_tflops": row["verified_tflops"],
        "reliability": _decimal(row["reliability"]),
        "metering": row["metering"],
    }


class OfferingWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=160)
    description = serializers.CharField(allow_blank=True, required=False, default="")
    site = SlugRefField(slug_field="slug", queryset=Site.objects.all())
    accelerator = SlugRefField(slug_field="slug", queryset=AcceleratorModel.objects.all())
    accelerators_per_node = serializers.IntegerField(min_value=1, max_value=64)
    vcpu_per_node = serializers.IntegerField(min_value=1, max_value=1024)
    ram_gb_per_node = serializers.IntegerField(min_value=1, max_value=65536)
    disk_gb_per_node = serializers.IntegerField(min_value=1, max_value=10**7)
    network_gbps = serializers.IntegerField(min_value=1, max_value=100000)
    capacity_nodes = serializers.IntegerField(min_value=0, max_value=100000)
    on_demand_price = money_field(min_value=Decimal("0.00000001"))
    interruptible_price = money_field(min_value=Decimal("0.00000001"), required=False, allow_null=True, default=None)
    reserved_1w_discount_percent = serializers.DecimalField(5, 2, required=False, allow_null=True, default=None)
    reserved_1m_discount_percent = serializers.DecimalField(5, 2, required=False, allow_null=True, default=None)
    reserved_3m_discount_percent = serializers.DecimalField(5, 2, required=False, allow_null=True, default=None)
    min_rental_hours = serializers.IntegerField(min_value=1, required=False, default=1)
    max_rental_hours = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    metering = serializers.ChoiceField(choices=Metering.choices, required=False, default=Metering.LIFECYCLE)


class StatusChangeSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[s for s in Offering.Status.choices if s[0] != Offering.Status.DRAFT])


class PriceChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = OfferingPriceChange
        fields = ["on_demand_price", "interruptible_price", "effective_at"]
        read_only_fields = fields


class ModelServiceSerializer(serializers.ModelSerializer):
    """What buyers see. The upstream URL and key are the provider's business and never appear here."""

    provider = ProviderRefSerializer(read_only=True)
    model = serializers.SerializerMethodField(help_text="The name to pass as `model` to the gateway.")

    class Meta:
        model = ModelService
        fields = [
            "id", "model", "name", "slug", "provider", "model_family", "description", "modality", "context_length",
            "max_output_tokens", "precision", "input_price_per_1k_tokens", "output_price_per_1k_tokens",
            "rate_limit_rpm", "rate_limit_tpm", "residency_zone", "status",
        ]  # fmt: skip
        read_only_fields = fields

    def get_model(self, service: ModelService) -> str:
        return f"{service.provider.slug}/{service.slug}"


class ProviderModelServiceSerializer(ModelServiceSerializer):
    """What the owning provider sees: the upstream URL, and whether a key is stored (never the key)."""

    has_upstream_api_key = serializers.SerializerMethodField()

    class Meta(ModelServiceSerializer.Meta):
        fields = [*ModelServiceSerializer.Meta.fields, "upstream_base_url", "has_upstream_api_key", "alias_approved_at"]
        read_only_fields = fields

    def get_has_upstream_api_key(self, service: ModelService) -> bool:
        return bool(service.upstream_api_key)


class ModelServiceWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=120)
    slug = serializers.SlugField(max_length=80)
    model_family = serializers.CharField(max_length=80)
    description = serializers.CharField(allow_blank=True, required=False, default="")
    modality = serializers.ChoiceField(choices=ModelService.Modality.choices)
    context_length = serializers.IntegerField(min_value=1, max_value=10**7)
    max_output_tokens = serializers.IntegerField(
        min_value=1, max_value=10**7, required=False, allow_null=True, default=None
    )
    precision = serializers.ChoiceField(choices=ModelService.ServedPrecision.choices)
    input_price_per_1k_tokens = money_field(min_value=Decimal("0.00000001"))
    output_price_per_1k_tokens = money_field(min_value=Decimal("0.00000001"))
    rate_limit_rpm = serializers.IntegerField(min_value=1, max_value=10**7)
    rate_limit_tpm = serializers.IntegerField(min_value=1, max_value=10**10)
    residency_zone = serializers.ChoiceField(choices=ResidencyZone.choices)
    upstream_base_url = serializers.URLField(max_length=200)
    upstream_api_key = serializers.CharField(
        max_length=255, write_only=True, required=False, allow_blank=True, default="", style={"input_type": "password"}
    )


class PlacementRequestSerializer(serializers.Serializer):
    accelerators = serializers.IntegerField(min_value=1, max_value=100000)
    hours = serializers.IntegerField(min_value=1, max_value=24 * 365 * 3)
    accelerator = SlugRefField(
        slug_field="slug", queryset=AcceleratorModel.objects.all(), required=False, allow_null=True, default=None
    )
    precision = serializers.ChoiceField(choices=Precision.choices, default=Precision.BF16)
    min_tflops = serializers.DecimalField(8, 2, min_value=Decimal("0"), required=False, allow_null=True, default=None)
    region = serializers.ChoiceField(choices=Region.choices, required=False, allow_blank=True, default="")
    residency_zone = serializers.ChoiceField(
        choices=ResidencyZone.choices, required=False, allow_blank=True, default=""
    )
    domestic_only = serializers.BooleanField(default=False)
    max_price_per_accelerator_hour = money_field(min_value=Decimal("0"), required=False, allow_null=True, default=None)
    interruptible_allowed = serializers.BooleanField(default=False)


class QuoteSerializer(serializers.Serializer):
    offering = OfferingSerializer(read_only=True)
    mode = serializers.ChoiceField(choices=["on_demand", "interruptible"], read_only=True)
    nodes = serializers.IntegerField(read_only=True)
    accelerators = serializers.IntegerField(read_only=True)
    price_per_accelerator_hour = money_field(read_only=True)
    total_price = money_field(read_only=True)
    peak_tflops_per_yuan_hour = serializers.DecimalField(16, 4, read_only=True, allow_null=True)


class ExclusionSerializer(serializers.Serializer):
    offering_id = serializers.IntegerField(read_only=True)
    offering_name = serializers.CharField(read_only=True)
    reason = serializers.CharField(read_only=True)
    message = serializers.CharField(read_only=True)


class PlacementResultSerializer(serializers.Serializer):
    quotes = QuoteSerializer(many=True, read_only=True, help_text="The cheapest feasible offerings, best first.")
    excluded = ExclusionSerializer(many=True, read_only=True, help_text="A few examples for each exclusion reason.")
    excluded_counts = serializers.DictField(
        child=serializers.IntegerField(), read_only=True, help_text="How many offerings each reason excluded."
    )


class EstimateRequestSerializer(serializers.Serializer):
    parameters = serializers.IntegerField(min_value=1, help_text="Model parameters, e.g. 7000000000.")
    tokens = serializers.IntegerField(min_value=1, help_text="Training tokens.")
    precision = serializers.ChoiceField(choices=Precision.choices, default=Precision.BF16)
    mfu = serializers.DecimalField(4, 3, min_value=Decimal("0.001"), max_value=Decimal("1"), default=Decimal("0.4"))


class EstimateSerializer(serializers.Serializer):
    total_flops = serializers.CharField(read_only=True, help_text="6·N·D, as an integer string.")
    petaflop_days = serializers.DecimalField(20, 1, read_only=True)
    accelerator_hours = serializers.DictField(child=serializers.DecimalField(24, 1), read_only=True)


class RentalCreateSerializer(FieldsBuiltOnce, serializers.Serializer):
    offering = serializers.IntegerField(min_value=1, help_text="Offering id (or take one from a placement quote).")
    accelerators = serializers.IntegerField(min_value=1, max_value=100000, help_text="Rounded up to whole nodes.")
    mode = serializers.ChoiceField(choices=Rental.Mode.choices, default=Rental.Mode.ON_DEMAND)
    hours = serializers.IntegerField(
        min_value=1, required=False, allow_null=True, help_text="Omit for an open-ended on-demand rental."
    )
    starts_at = serializers.DateTimeField(required=False, allow_null=True, help_text="Omit to start now.")
    residency_zone = serializers.ChoiceField(
        choices=ResidencyZone.choices, required=False, allow_blank=True, help_text="Refuse (422) outside this zone."
    )


class RentalTransitionSerializer(ReadOnlyModelSerializer):
    class Meta:
        model = RentalTransition
        fields = ["from_status", "to_status", "reason", "at"]
        read_only_fields = fields


class RentalSerializer(ReadOnlyModelSerializer):
    offering = serializers.IntegerField(source="offering_id", read_only=True)
    provider = serializers.IntegerField(source="provider_id", read_only=True)
    price_per_accelerator_hour = money_field(read_only=True)
    price_per_hour = money_field(read_only=True)
    charged_amount = money_field(read_only=True)
    uncollected_amount = money_field(read_only=True)
    held_amount = money_field(source="hold.remaining", read_only=True, allow_null=True)
    billed = serializers.BooleanField(source="is_billed", read_only=True)

    class Meta:
        model = Rental
        fields = [
            "id", "offering", "provider", "mode", "nodes", "accelerators", "price_per_accelerator_hour",
            "price_per_hour", "specs", "residency_zone", "metering", "status", "suspension_reason", "billed",
            "starts_at", "ends_at", "started_at", "ended_at", "metered_until", "charged_amount",
            "uncollected_amount", "held_amount", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class RentalDetailSerializer(RentalSerializer):
    transitions = RentalTransitionSerializer(many=True, read_only=True)

    class Meta(RentalSerializer.Meta):
        fields = [*RentalSerializer.Meta.fields, "transitions"]
        read_only_fields = fields


class UsageAggregateSerializer(serializers.Serializer):
    key = serializers.CharField(help_text="The day (YYYY-MM-DD), offering id or rental id.")
    label = serializers.CharField()
    accelerator_hours = money_field()
    amount = money_field()


class ModelCallSerializer(ReadOnlyModelSerializer):
    """A call through the gateway as its caller sees it (never the prompt or the completion)."""

    model_service = serializers.CharField(source="model_service_name", read_only=True)
    cost = money_field(read_only=True)
    application_amount = money_field(read_only=True, help_text="The application's part of the cost.")
    application = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    captured = serializers.BooleanField(source="is_captured", read_only=True)

    class Meta:
        model = ModelCall
        fields = [
            "id", "call_id", "created_at", "api_key", "requested_model", "model_service", "residency_zone", "endpoint",
            "stream", "status_code", "error_code", "prompt_tokens", "completion_tokens", "tokens_estimated",
            "usage_clamped", "cost", "application", "application_amount", "latency_ms", "first_token_ms", "captured",
        ]  # fmt: skip
        read_only_fields = fields


class ProviderModelCallSerializer(ReadOnlyModelSerializer):
    """A call on one of the provider's services: what it earned, not who made it."""

    model_service = serializers.CharField(source="model_service_name", read_only=True)
    cost = money_field(source="model_cost", read_only=True, help_text="What the caller paid for the model.")
    earnings = money_field(read_only=True, allow_null=True)

    class Meta:
        model = ModelCall
        fields = [
            "id", "created_at", "model_service", "residency_zone", "endpoint", "stream", "status_code",
            "prompt_tokens", "completion_tokens", "usage_clamped", "cost", "earnings", "latency_ms", "first_token_ms",
        ]  # fmt: skip
        read_only_fields = fields


class ApplicationVersionSerializer(ReadOnlyModelSerializer):
    """A version as buyers see it: what it runs on and costs, not its system prompt (the seller's work)."""

    model_service = serializers.SerializerMethodField()
    price = money_field(read_only=True)

    class Meta:
        model = ApplicationVersion
        fields = [
            "number", "notes", "model_service", "temperature", "max_tokens", "pricing", "price", "free_trial_calls",
            "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_model_service(self, version: ApplicationVersion) -> str:
        return f"{version.model_service.provider.slug}/{version.model_service.slug}"


class SellerApplicationVersionSerializer(ApplicationVersionSerializer):
    class Meta(ApplicationVersionSerializer.Meta):
        fields = ["id", *ApplicationVersionSerializer.Meta.fields, "system_prompt"]
        read_only_fields = fields


class ApplicationSerializer(ReadOnlyModelSerializer):
    """A published application in the storefront; callers name it `gateway_model` at the gateway."""

    seller = serializers.CharField(source="seller.name", read_only=True)
    version = ApplicationVersionSerializer(source="current_version", read_only=True)
    rating = serializers.FloatField(read_only=True, allow_null=True, help_text="Mean stars, 1–5; null: no reviews.")
    gateway_model = serializers.CharField(read_only=True)

    class Meta:
        model = Application
        fields = [
            "slug", "name", "icon", "tagline", "description", "category", "seller", "gateway_model", "rating",
            "rating_count", "published_at", "version",
        ]  # fmt: skip
        read_only_fields = fields


class SellerApplicationSerializer(ApplicationSerializer):
    version = SellerApplicationVersionSerializer(source="current_version", read_only=True)

    class Meta(ApplicationSerializer.Meta):
        fields = ["id", "status", *ApplicationSerializer.Meta.fields, "created_at"]
        read_only_fields = fields


class ApplicationVersionWriteSerializer(serializers.ModelSerializer):
    model_service = serializers.PrimaryKeyRelatedField(
        queryset=ModelService.objects.filter(status=ModelService.Status.PUBLISHED, modality=ModelService.Modality.CHAT),
        help_text="The id of a published chat model service.",
    )
    price = money_field(min_value=Decimal(0))

    class Meta:
        model = ApplicationVersion
        fields = list(VERSION_FIELDS)


class ApplicationListingWriteSerializer(serializers.ModelSerializer):
    class Meta:
        model = Application
        fields = ["name", "icon", "tagline", "description", "category"]


class ApplicationCreateSerializer(ApplicationListingWriteSerializer):
    slug = serializers.SlugField(max_length=60, help_text="Callers name it app:<slug>; it cannot change.")
    version = ApplicationVersionWriteSerializer()

    class Meta(ApplicationListingWriteSerializer.Meta):
        fields = ["slug", *ApplicationListingWriteSerializer.Meta.fields, "version"]


class ApplicationStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=[Application.Status.PUBLISHED, Application.Status.UNPUBLISHED])


class ApplicationReviewSerializer(ReadOnlyModelSerializer):
    organization = serializers.CharField(source="organization.name", read_only=True)

    class Meta:
        model = ApplicationReview
        fields = ["organization", "stars", "text", "created_at", "updated_at"]
        read_only_fields = fields


class ApplicationReviewWriteSerializer(serializers.Serializer):
    stars = serializers.IntegerField(min_value=1, max_value=5)
    text = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class ApplicationSubscriptionSerializer(ReadOnlyModelSerializer):
    application = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    price = money_field(read_only=True)
    accepted_price = money_field(read_only=True)
    pending_price = money_field(read_only=True, allow_null=True)

    class Meta:
        model = ApplicationSubscription
        fields = [
            "id", "application", "version", "price", "accepted_price", "pending_price", "status", "period_start",
            "period_end", "end_reason", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class SubscriptionPriceAcceptSerializer(serializers.Serializer):
    price = money_field(help_text="The new monthly price as shown (pending_price); a different one is refused.")


class ApplicationSearchSerializer(serializers.Serializer):
    q = serializers.CharField(required=False, max_length=100, default="")
    category = serializers.ChoiceField(choices=ApplicationCategory.choices, required=False, default="")
    sort = serializers.ChoiceField(choices=["rating", "reviews", "newest", "price"], required=False, default="rating")

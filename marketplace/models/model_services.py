from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from billing.money import amount_field
from marketplace.core.models import TimeStampedModel
from marketplace.models.offerings import OfferingStatus
from marketplace.models.sites import ResidencyZone


class ModelService(TimeStampedModel):
    """A provider's hosted model behind an OpenAI-compatible upstream, sold per 1K tokens."""

    Status = OfferingStatus
    TRANSITIONS = {
        OfferingStatus.DRAFT: {OfferingStatus.PUBLISHED, OfferingStatus.PAUSED, OfferingStatus.RETIRED},
        OfferingStatus.PUBLISHED: {OfferingStatus.PAUSED, OfferingStatus.RETIRED},
        OfferingStatus.PAUSED: {OfferingStatus.PUBLISHED, OfferingStatus.RETIRED},
    }

    class Modality(models.TextChoices):
        CHAT = "chat", _("Chat")
        EMBEDDINGS = "embeddings", _("Embeddings")

    class ServedPrecision(models.TextChoices):
        FP32 = "fp32", "FP32"
        BF16 = "bf16", "BF16"
        FP16 = "fp16", "FP16"
        FP8 = "fp8", "FP8"
        INT8 = "int8", "INT8"
        INT4 = "int4", "INT4"

    provider = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="model_services")
    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=80)
    model_family = models.CharField(_("base model family"), max_length=80, db_index=True)
    description = models.TextField(_("description"), blank=True)
    modality = models.CharField(_("modality"), max_length=12, choices=Modality.choices)
    context_length = models.PositiveIntegerField(_("context length (tokens)"))
    max_output_tokens = models.PositiveIntegerField(_("max output tokens"), null=True, blank=True)
    precision = models.CharField(_("precision served"), max_length=8, choices=ServedPrecision.choices)
    input_price_per_1k_tokens = amount_field(verbose_name=_("price per 1K input tokens"))
    output_price_per_1k_tokens = amount_field(verbose_name=_("price per 1K output tokens"))
    rate_limit_rpm = models.PositiveIntegerField(_("requests per minute it accepts"))
    rate_limit_tpm = models.PositiveIntegerField(_("tokens per minute it accepts"))
    residency_zone = models.CharField(
        _("data-residency zone"), max_length=16, choices=ResidencyZone.choices, db_index=True
    )
    upstream_base_url = models.URLField(_("upstream base URL"))
    # The `model` the upstream expects, when it is not the slug (a provider's internal name).
    upstream_model = models.CharField(_("upstream model name"), max_length=200, blank=True)
    # Write-only: used by the gateway to call the upstream, never serialised or shown back.
    upstream_api_key = models.CharField(_("upstream API key"), max_length=255, blank=True)
    status = models.CharField(_("status"), max_length=12, choices=OfferingStatus.choices, default=OfferingStatus.DRAFT)
    # A service joins its model's public alias (callers naming just the slug) only once staff approved it: otherwise a
    # new provider could undercut a popular model's alias and receive its callers' prompts. Until then it is called
    # by its own `provider/slug` name. Cleared when the slug changes.
    alias_approved_at = models.DateTimeField(_("alias approved at"), null=True, blank=True)
    alias_approved_by = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        verbose_name=_("alias approved by"),
    )  # fmt: skip

    class Meta:
        verbose_name = _("model service")
        verbose_name_plural = _("model services")
        constraints = [
            models.UniqueConstraint(fields=["provider", "slug"], name="model_service_unique_provider_slug"),
            models.CheckConstraint(condition=Q(status__in=OfferingStatus.values), name="model_service_status_valid"),
            models.CheckConstraint(
                condition=Q(input_price_per_1k_tokens__gte=0) & Q(output_price_per_1k_tokens__gte=0),
                name="model_service_prices_not_negative",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "modality", "input_price_per_1k_tokens"], name="model_service_browse")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def alias_approved(self) -> bool:
        return self.alias_approved_at is not None

"""Rentals: a buyer's lease of whole nodes of an offering, with a price snapshot and an explicit lifecycle."""

from decimal import Decimal

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from billing.money import amount_field
from marketplace.core.models import TimeStampedModel
from marketplace.models.offerings import Metering


class RentalStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    PROVISIONING = "provisioning", _("Provisioning")
    RUNNING = "running", _("Running")
    SUSPENDED = "suspended", _("Suspended")
    COMPLETED = "completed", _("Completed")
    CANCELLED = "cancelled", _("Cancelled")
    FAILED = "failed", _("Failed")
    PREEMPTED = "preempted", _("Preempted")


class RentalMode(models.TextChoices):
    ON_DEMAND = "on_demand", _("On demand")
    INTERRUPTIBLE = "interruptible", _("Interruptible")
    RESERVED_1W = "reserved_1w", _("Reserved, 1 week")
    RESERVED_1M = "reserved_1m", _("Reserved, 1 month")
    RESERVED_3M = "reserved_3m", _("Reserved, 3 months")


class SuspensionReason(models.TextChoices):
    FUNDS = "funds", _("Funds exhausted")
    SPEND_CAP = "spend_cap", _("Monthly spend cap reached")
    API_KEY_LIMIT = "api_key_limit", _("API key spend limit reached")


class Rental(TimeStampedModel):
    Status = RentalStatus
    Mode = RentalMode
    SuspensionReason = SuspensionReason
    TRANSITIONS = {
        RentalStatus.PENDING: {RentalStatus.PROVISIONING, RentalStatus.CANCELLED, RentalStatus.FAILED},
        RentalStatus.PROVISIONING: {RentalStatus.RUNNING, RentalStatus.CANCELLED, RentalStatus.FAILED},
        RentalStatus.RUNNING: {
            RentalStatus.SUSPENDED,
            RentalStatus.COMPLETED,
            RentalStatus.FAILED,
            RentalStatus.PREEMPTED,
        },
        RentalStatus.SUSPENDED: {RentalStatus.RUNNING, RentalStatus.COMPLETED},
    }  # a status with no entry is terminal
    ENDED_STATUSES = frozenset(set(RentalStatus) - set(TRANSITIONS))
    BILLED_STATUSES = frozenset({RentalStatus.RUNNING})

    # The buyer's and the provider's lists are indexed with the time (Meta).
    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.PROTECT, related_name="rentals", db_index=False
    )
    offering = models.ForeignKey("marketplace.Offering", on_delete=models.PROTECT, related_name="rentals")
    provider = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="+", db_index=False)
    created_by = models.ForeignKey("accounts.User", on_delete=models.SET_NULL, null=True, related_name="+")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    mode = models.CharField(_("mode"), max_length=16, choices=RentalMode.choices)
    nodes = models.PositiveIntegerField(_("nodes"))
    accelerators = models.PositiveIntegerField(_("accelerators"))
    # The snapshot: what the buyer agreed to, never re-read from the offering.
    price_per_accelerator_hour = amount_field(verbose_name=_("price per accelerator-hour"))
    specs = models.JSONField(_("specification"), default=dict)
    residency_zone = models.CharField(_("data-residency zone"), max_length=32)
    metering = models.CharField(_("metering"), max_length=12, choices=Metering.choices, default=Metering.LIFECYCLE)
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"), null=True, blank=True)  # null: open-ended on-demand
    status = models.CharField(_("status"), max_length=16, choices=RentalStatus.choices, default=RentalStatus.PENDING)
    status_changed_at = models.DateTimeField(_("status changed at"))
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    suspension_reason = models.CharField(
        _("suspension reason"), max_length=16, choices=SuspensionReason.choices, blank=True
    )
    # Lifecycle metering watermark: accelerator time up to here is recorded as usage events.
    metered_until = models.DateTimeField(_("metered until"), null=True, blank=True)
    hold = models.OneToOneField("billing.Hold", on_delete=models.PROTECT, null=True, related_name="rental")
    # Rating watermark: this rental's usage events with a larger id are still to be rated. Moved only under the
    # rental's row lock, which every writer of its events holds too (see billing.services.metering).
    usage_rated_through = models.BigIntegerField(_("usage rated through event"), default=0)
    charged_amount = amount_field(verbose_name=_("charged"), default=0)
    # Usage the hold could not cover when funds ran out: never charged, shown to the provider.
    uncollected_amount = amount_field(verbose_name=_("uncollected"), default=0)

    class Meta:
        verbose_name = _("rental")
        verbose_name_plural = _("rentals")
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="rental_org_time"),
            models.Index(fields=["provider", "-created_at", "-id"], name="rental_provider_time"),
            models.Index(fields=["status", "starts_at"], name="rental_status_start"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=RentalStatus.values), name="rental_status_valid"),
            models.CheckConstraint(condition=Q(mode__in=RentalMode.values), name="rental_mode_valid"),
            models.CheckConstraint(condition=Q(nodes__gt=0, accelerators__gt=0), name="rental_size_positive"),
            models.CheckConstraint(condition=Q(price_per_accelerator_hour__gt=0), name="rental_price_positive"),
            models.CheckConstraint(
                condition=Q(ends_at__isnull=True) | Q(ends_at__gt=F("starts_at")), name="rental_period_ordered"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.specs.get('offering_name', '')}"

    @property
    def price_per_hour(self) -> Decimal:
        return self.price_per_accelerator_hour * self.accelerators

    @property
    def is_reserved(self) -> bool:
        return self.mode.startswith("reserved_")

    @property
    def is_billed(self) -> bool:
        return self.status in self.BILLED_STATUSES


class RentalTransition(models.Model):
    """One row per status change: when, why and by whom (none: the platform)."""

    rental = models.ForeignKey(Rental, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=16, choices=RentalStatus.choices, blank=True)
    to_status = models.CharField(max_length=16, choices=RentalStatus.choices)
    reason = models.CharField(_("reason"), max_length=255, blank=True)
    actor = models.ForeignKey("accounts.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    at = models.DateTimeField(_("time"))

    class Meta:
        verbose_name = _("rental transition")
        verbose_name_plural = _("rental transitions")
        ordering = ["at", "pk"]

    def __str__(self) -> str:
        return f"#{self.rental_id}: {self.from_status or '∅'} → {self.to_status}"

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from billing.money import amount_field
from marketplace.core.models import TimeStampedModel


class OfferingStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    PUBLISHED = "published", _("Published")
    PAUSED = "paused", _("Paused")
    RETIRED = "retired", _("Retired")


class Metering(models.TextChoices):
    """Who measures a rental's accelerator time: the platform's own clock, or the provider's usage reports."""

    LIFECYCLE = "lifecycle", _("Platform clock (per second while running)")
    REPORTED = "reported", _("Provider usage reports")


class Offering(TimeStampedModel):
    """A provider's node type at a site, sold per accelerator-hour."""

    Status = OfferingStatus
    TRANSITIONS = {
        OfferingStatus.DRAFT: {OfferingStatus.PUBLISHED, OfferingStatus.RETIRED},
        OfferingStatus.PUBLISHED: {OfferingStatus.PAUSED, OfferingStatus.RETIRED},
        OfferingStatus.PAUSED: {OfferingStatus.PUBLISHED, OfferingStatus.RETIRED},
    }  # retired is terminal
    RESERVED_TERMS = {"1w": 7 * 24, "1m": 30 * 24, "3m": 90 * 24}  # term → hours

    provider = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="offerings")
    site = models.ForeignKey("marketplace.Site", on_delete=models.PROTECT, related_name="offerings")
    accelerator = models.ForeignKey("marketplace.AcceleratorModel", on_delete=models.PROTECT, related_name="offerings")
    name = models.CharField(_("name"), max_length=160)
    description = models.TextField(_("description"), blank=True)
    accelerators_per_node = models.PositiveSmallIntegerField(_("accelerators per node"))
    vcpu_per_node = models.PositiveSmallIntegerField(_("vCPU per node"))
    ram_gb_per_node = models.PositiveIntegerField(_("RAM per node (GB)"))
    disk_gb_per_node = models.PositiveIntegerField(_("disk per node (GB)"))
    network_gbps = models.PositiveIntegerField(_("network (Gb/s)"))
    capacity_nodes = models.PositiveIntegerField(_("capacity (nodes)"))
    rented_nodes = models.PositiveIntegerField(_("rented nodes"), default=0)  # kept by the rentals service
    on_demand_price = amount_field(verbose_name=_("on-demand price per accelerator-hour"))
    interruptible_price = amount_field(
        verbose_name=_("interruptible price per accelerator-hour"), null=True, blank=True
    )
    reserved_1w_discount_percent = models.DecimalField(
        _("1-week reserved discount (%)"), max_digits=5, decimal_places=2, null=True, blank=True
    )
    reserved_1m_discount_percent = models.DecimalField(
        _("1-month reserved discount (%)"), max_digits=5, decimal_places=2, null=True, blank=True
    )
    reserved_3m_discount_percent = models.DecimalField(
        _("3-month reserved discount (%)"), max_digits=5, decimal_places=2, null=True, blank=True
    )
    min_rental_hours = models.PositiveIntegerField(_("minimum rental (hours)"), default=1)
    max_rental_hours = models.PositiveIntegerField(_("maximum rental (hours)"), null=True, blank=True)
    # Rentals snapshot it: usage is rated from the platform's clock, or from the provider's reported events.
    metering = models.CharField(_("metering"), max_length=12, choices=Metering.choices, default=Metering.LIFECYCLE)
    status = models.CharField(_("status"), max_length=12, choices=OfferingStatus.choices, default=OfferingStatus.DRAFT)
    published_at = models.DateTimeField(_("published at"), null=True, blank=True)
    # Filled by the provider agent's benchmarks; until then the storefront says "unverified".
    verified_tflops = models.JSONField(_("verified TFLOPS per precision"), default=dict, blank=True)
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    # The mean uptime of its agents' nodes over the reliability window (marketplace.services.nodes), kept here for
    # ranking; empty until a node has registered.
    reliability = models.DecimalField(_("reliability"), max_digits=5, decimal_places=4, null=True, blank=True)

    class Meta:
        verbose_name = _("compute offering")
        verbose_name_plural = _("compute offerings")
        indexes = [
            models.Index(fields=["status", "on_demand_price", "id"], name="offering_status_price"),
            models.Index(fields=["provider", "status"], name="offering_provider_status"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=OfferingStatus.values), name="offering_status_valid"),
            models.CheckConstraint(condition=Q(on_demand_price__gt=0), name="offering_price_positive"),
            models.CheckConstraint(
                condition=Q(interruptible_price__isnull=True) | Q(interruptible_price__gt=0),
                name="offering_interruptible_price_positive",
            ),
            models.CheckConstraint(
                condition=Q(rented_nodes__lte=F("capacity_nodes")), name="offering_rented_within_capacity"
            ),
            models.CheckConstraint(
                condition=Q(max_rental_hours__isnull=True) | Q(max_rental_hours__gte=F("min_rental_hours")),
                name="offering_rental_hours_ordered",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def free_nodes(self) -> int:
        return self.capacity_nodes - self.rented_nodes

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None

    def reserved_discounts(self) -> dict[str, object]:
        return {term: getattr(self, f"reserved_{term}_discount_percent") for term in self.RESERVED_TERMS}


class OfferingPriceChange(models.Model):
    """Price history: one row per price set. Rentals snapshot the price, so a change touches new rentals only."""

    offering = models.ForeignKey(Offering, on_delete=models.CASCADE, related_name="price_changes")
    on_demand_price = amount_field()
    interruptible_price = amount_field(null=True, blank=True)
    effective_at = models.DateTimeField(db_index=True)
    changed_by = models.ForeignKey("accounts.User", on_delete=models.SET_NULL, null=True, related_name="+")

    class Meta:
        ordering = ["-effective_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.offering_id} @ {self.effective_at:%Y-%m-%d}: {self.on_demand_price}"

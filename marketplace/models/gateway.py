from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from billing.money import amount_field
from marketplace.models.sites import ResidencyZone


class GatewayPolicy(models.Model):
    """What the gateway lets an organization, or one of its API keys, do: a residency pin and rate limits.

    An organization without a row gets the defaults from settings and no pin; a key without a row adds nothing to
    its organization's. A key pinned to a zone and an organization pinned to another can reach no service.
    """

    organization = models.OneToOneField(
        "accounts.Organization", on_delete=models.CASCADE, null=True, blank=True, related_name="gateway_policy"
    )
    api_key = models.OneToOneField(
        "accounts.ApiKey", on_delete=models.CASCADE, null=True, blank=True, related_name="gateway_policy"
    )
    residency_zone = models.CharField(
        _("residency zone"), max_length=16, choices=ResidencyZone.choices, blank=True,
        help_text=_("Calls are only ever routed to model services in this zone. Empty: any zone."),
    )  # fmt: skip
    requests_per_minute = models.PositiveIntegerField(_("requests per minute"), null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(_("tokens per minute"), null=True, blank=True)

    class Meta:
        verbose_name = _("gateway policy")
        verbose_name_plural = _("gateway policies")
        constraints = [
            models.CheckConstraint(
                condition=Q(organization__isnull=True) ^ Q(api_key__isnull=True), name="gateway_policy_one_owner"
            )
        ]

    def __str__(self) -> str:
        return str(self.organization or self.api_key)


class ModelCall(models.Model):
    """One call through the gateway that reached a model service: who, what, where, how long, what it cost.

    Never the prompt or the completion. Written in batches after the call (`call_id`, made by the gateway, makes a
    replayed batch insert nothing twice) and captured from the organization's gateway hold by a later batch.
    """

    call_id = models.UUIDField(unique=True)
    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )  # indexed with the time below
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    model_service = models.ForeignKey("marketplace.ModelService", on_delete=models.PROTECT, related_name="calls")
    requested_model = models.CharField(_("requested model"), max_length=200)
    residency_zone = models.CharField(_("zone"), max_length=16, choices=ResidencyZone.choices)
    endpoint = models.CharField(_("endpoint"), max_length=32)
    stream = models.BooleanField(_("streamed"), default=False)
    status_code = models.PositiveSmallIntegerField(_("status"))
    error_code = models.CharField(_("error"), max_length=64, blank=True)
    prompt_tokens = models.PositiveIntegerField(_("input tokens"), default=0)
    completion_tokens = models.PositiveIntegerField(_("output tokens"), default=0)
    # True when the upstream sent no usage and the gateway counted the tokens itself.
    tokens_estimated = models.BooleanField(_("tokens counted by the gateway"), default=False)
    # True when the upstream reported more tokens than the request allows (or counts that are no counts): the call
    # was billed at the request's bound instead.
    usage_clamped = models.BooleanField(_("usage clamped"), default=False)
    cost = amount_field(verbose_name=_("cost"))  # what the caller pays: the model's price and an application's
    fee = amount_field(verbose_name=_("platform fee amount"), null=True, blank=True)  # set when captured
    # A call of an application (`app:<slug>`): the version it ran, the application's part of the cost (its price,
    # zero in the free trial or under a subscription) and the platform's fee on that part.
    application = models.ForeignKey(
        "marketplace.Application", on_delete=models.PROTECT, null=True, blank=True, related_name="calls"
    )
    application_version = models.ForeignKey(
        "marketplace.ApplicationVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    application_amount = amount_field(verbose_name=_("application price"), default=0)
    application_fee = amount_field(verbose_name=_("platform fee on the application"), null=True, blank=True)
    latency_ms = models.PositiveIntegerField(_("latency (ms)"))
    first_token_ms = models.PositiveIntegerField(_("time to first token (ms)"), null=True, blank=True)
    created_at = models.DateTimeField(_("time"))
    ledger_transaction = models.ForeignKey(
        "billing.LedgerTransaction", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        verbose_name = _("model call")
        verbose_name_plural = _("model calls")
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="model_call_org_time"),
            models.Index(fields=["model_service", "-created_at"], name="model_call_service_time"),
            models.Index(fields=["application", "-created_at"], name="model_call_application_time"),
            models.Index(
                fields=["id"], condition=Q(ledger_transaction__isnull=True, cost__gt=0), name="model_call_uncaptured"
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cost__gte=0), name="model_call_cost_not_negative"),
            models.CheckConstraint(
                condition=Q(application_amount__gte=0, application_amount__lte=F("cost")),
                name="model_call_application_amount_within_cost",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.requested_model} {self.status_code} {self.cost}"

    @property
    def model_service_name(self) -> str:
        return f"{self.model_service.provider.slug}/{self.model_service.slug}"

    @property
    def is_captured(self) -> bool:
        return self.ledger_transaction_id is not None or self.cost == 0

    @property
    def model_cost(self):
        """The model service's part of the cost (the rest is the application's)."""
        return self.cost - self.application_amount

    @property
    def earnings(self):
        """What the provider earned: the model's part less the platform fee, known once captured."""
        return None if self.fee is None else self.model_cost - self.fee


class RateWindow(models.Model):
    """Requests and tokens counted in one minute for one limit, where there is no Redis (the embedded default)."""

    bucket = models.CharField(max_length=80)
    window = models.BigIntegerField()  # minutes since the epoch
    requests = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bucket", "window"], name="rate_window_unique")]

    def __str__(self) -> str:
        return f"{self.bucket} @ {self.window}"

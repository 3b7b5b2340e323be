"""The ledger is the record of every balance: accounts, transactions and append-only postings.

Sign convention: an account's balance is the sum of its postings, and every transaction's postings sum
to zero. An organization's funds are positive balances (money the platform owes it); the platform's
payment clearing account mirrors cash at the payment rail and goes negative as money comes in.
"""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from billing.money import amount_field


class AccountKind(models.TextChoices):
    AVAILABLE = "available", _("Available funds")
    HELD = "held", _("Held funds")
    EARNINGS = "earnings", _("Provider earnings payable")
    PLATFORM_REVENUE = "platform_revenue", _("Platform revenue")
    PAYMENT_CLEARING = "payment_clearing", _("Payment clearing")
    PAYOUTS_IN_TRANSIT = "payouts_in_transit", _("Payouts in transit")


ORGANIZATION_ACCOUNT_KINDS = (AccountKind.AVAILABLE, AccountKind.HELD, AccountKind.EARNINGS)
PLATFORM_ACCOUNT_KINDS = (AccountKind.PLATFORM_REVENUE, AccountKind.PAYMENT_CLEARING, AccountKind.PAYOUTS_IN_TRANSIT)


class LedgerAccount(models.Model):
    """One balance: an organization's (available, held, earnings) or the platform's (revenue, clearing).

    `balance` is a cache of the sum of postings, updated in the posting's transaction; the daily
    reconciliation compares the two. `minimum_balance` is the floor a debit may not cross: zero for held
    funds and earnings, minus the approved credit line for available funds, none for platform accounts.
    It is enforced by the ledger's conditional update rather than a CHECK constraint, because one kind of
    posting must be able to cross it: a refund that Stripe reports after it happened (a dashboard refund of
    money already spent) is recorded as it is, and leaves the organization owing.
    """

    Kind = AccountKind

    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_accounts"
    )
    kind = models.CharField(_("kind"), max_length=20, choices=AccountKind.choices)
    currency = models.CharField(_("currency"), max_length=3, default=settings.PLATFORM_CURRENCY)
    balance = amount_field(verbose_name=_("balance"), default=0)
    minimum_balance = amount_field(verbose_name=_("minimum balance"), null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("ledger account")
        verbose_name_plural = _("ledger accounts")
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "kind", "currency"],
                condition=Q(organization__isnull=False),
                name="ledger_account_unique_organization_kind",
            ),
            models.UniqueConstraint(
                fields=["kind", "currency"],
                condition=Q(organization__isnull=True),
                name="ledger_account_unique_platform",
            ),
            models.CheckConstraint(condition=Q(kind__in=AccountKind.values), name="ledger_account_kind_valid"),
            models.CheckConstraint(
                condition=Q(organization__isnull=True, kind__in=PLATFORM_ACCOUNT_KINDS)
                | Q(organization__isnull=False, kind__in=ORGANIZATION_ACCOUNT_KINDS),
                name="ledger_account_owner_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        owner = self.organization_id and f"org {self.organization_id}" or "platform"
        return f"{owner} · {self.get_kind_display()} ({self.currency})"

    @property
    def credit_limit(self):
        return -self.minimum_balance if self.minimum_balance is not None else None


class TransactionKind(models.TextChoices):
    TOP_UP = "top_up", _("Top-up")
    HOLD = "hold", _("Hold")
    CAPTURE = "capture", _("Charge")
    RELEASE = "release", _("Hold released")
    REFUND = "refund", _("Refund")
    REFUND_REVERSAL = "refund_reversal", _("Refund reversed")
    PAYOUT = "payout", _("Payout")
    PAYOUT_RETURN = "payout_return", _("Payout returned")
    CHARGE_REFUND = "charge_refund", _("Charge refunded")
    ADJUSTMENT = "adjustment", _("Adjustment")


class LedgerTransaction(models.Model):
    """A set of postings that sum to zero, made at most once per idempotency key."""

    Kind = TransactionKind

    idempotency_key = models.CharField(max_length=200)
    kind = models.CharField(_("kind"), max_length=20, choices=TransactionKind.choices)
    # The organization the transaction is about (its statements list it); null for platform-only moves and for
    # moves of many organizations' money (a rating run's capture: each sees its own postings).
    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    memo = models.CharField(_("memo"), max_length=255)
    reference = models.CharField(_("reference"), max_length=100, blank=True)
    created_at = models.DateTimeField(_("time"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("ledger transaction")
        verbose_name_plural = _("ledger transactions")
        # Keys and references are looked up whole: constraints and indexes declared here get no LIKE index
        # (which unique=True and db_index=True add on PostgreSQL), one index less to write per transaction.
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="ledger_txn_org_time"),
            models.Index(fields=["reference"], name="ledger_txn_reference"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=TransactionKind.values), name="ledger_txn_kind_valid"),
            models.UniqueConstraint(fields=["idempotency_key"], name="ledger_txn_unique_idempotency_key"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} · {self.memo}"


class Posting(models.Model):
    """One side of a transaction. Append-only: the database refuses UPDATE and DELETE (see migration 0002)."""

    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="postings")
    # Indexed by (account, transaction) below.
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="postings", db_index=False)
    amount = amount_field(verbose_name=_("amount"))

    class Meta:
        verbose_name = _("posting")
        verbose_name_plural = _("postings")
        indexes = [models.Index(fields=["account", "transaction"], name="posting_account_txn")]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="posting_amount_nonzero")]

    def __str__(self) -> str:
        return f"{self.account} {self.amount:+}"


class HoldStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    RELEASED = "released", _("Released")
    EXPIRED = "expired", _("Expired")


class Hold(models.Model):
    """Funds reserved before work and settled after: captured in parts, the rest returned once.

    `amount` only grows (an on-demand rental tops its hold up); what is still held is
    `amount - captured_amount` while active, nothing once resolved.
    """

    Status = HoldStatus

    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="holds")
    idempotency_key = models.CharField(max_length=200)
    reference = models.CharField(_("reference"), max_length=100)
    description = models.CharField(_("description"), max_length=255)
    amount = amount_field(verbose_name=_("amount held"))
    captured_amount = amount_field(verbose_name=_("captured"), default=0)
    status = models.CharField(_("status"), max_length=10, choices=HoldStatus.choices, default=HoldStatus.ACTIVE)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True, db_index=True)
    resolved_at = models.DateTimeField(_("resolved at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("hold")
        verbose_name_plural = _("holds")
        indexes = [models.Index(fields=["reference"], name="hold_reference")]  # no LIKE index (LedgerTransaction)
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="hold_unique_idempotency_key"),
            models.CheckConstraint(condition=Q(status__in=HoldStatus.values), name="hold_status_valid"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.CheckConstraint(
                condition=Q(captured_amount__gte=0, captured_amount__lte=F("amount")), name="hold_capture_within_amount"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.description} ({self.get_status_display()})"

    @property
    def remaining(self):
        return self.amount - self.captured_amount if self.status == HoldStatus.ACTIVE else Decimal(0)


class GatewayFunds(models.Model):
    """An organization's standing hold for model calls through the gateway, and what of it calls may still take.

    Every call reserves its worst case from `available` before it goes upstream and gives back what it did not
    cost; captures take the real costs from the hold in batches. So `available` + reserved + not yet captured =
    what the hold still holds, and no call can spend funds that are not held. `available` is kept here on the
    embedded default; with Redis the gateway keeps it there (this column then stays zero).
    """

    organization = models.OneToOneField("accounts.Organization", on_delete=models.PROTECT, primary_key=True)
    hold = models.ForeignKey(Hold, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    available = amount_field(verbose_name=_("available to calls"), default=0)

    class Meta:
        verbose_name = _("gateway funds")
        verbose_name_plural = _("gateway funds")

    def __str__(self) -> str:
        return str(self.organization)


class TopUp(models.Model):
    """Money paid in: through a Stripe Checkout Session, or in the marked test mode (never in production)."""

    class Mode(models.TextChoices):
        STRIPE = "stripe", _("Stripe")
        TEST = "test", _("Test mode")

    class Status(models.TextChoices):
        PENDING = "pending", _("Awaiting payment")
        SUCCEEDED = "succeeded", _("Paid")
        FAILED = "failed", _("Failed")

    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="top_ups")
    amount = amount_field(verbose_name=_("amount"))
    mode = models.CharField(_("mode"), max_length=8, choices=Mode.choices)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    stripe_checkout_session_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    checkout_url = models.URLField(max_length=2000, blank=True)
    refunded_amount = amount_field(verbose_name=_("refunded"), default=0)
    created_by = models.ForeignKey("accounts.User", on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, db_index=True)
    credited_at = models.DateTimeField(_("credited at"), null=True, blank=True)

    class Meta:
        verbose_name = _("top-up")
        verbose_name_plural = _("top-ups")
        indexes = [models.Index(fields=["organization", "-created_at"], name="topup_org_time")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="topup_amount_positive"),
            models.CheckConstraint(
                condition=Q(refunded_amount__gte=0, refunded_amount__lte=F("amount")), name="topup_refund_within_amount"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {settings.PLATFORM_CURRENCY} ({self.get_status_display()})"

    @property
    def refundable_amount(self):
        return self.amount - self.refunded_amount if self.status == self.Status.SUCCEEDED else Decimal(0)


class Refund(models.Model):
    """Money returned from a top-up: by staff (admin, then Stripe) or reported by Stripe (dashboard refunds)."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    top_up = models.ForeignKey(TopUp, on_delete=models.PROTECT, related_name="refunds")
    amount = amount_field(verbose_name=_("amount"))
    reason = models.CharField(_("reason"), max_length=255, blank=True)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    stripe_refund_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    failure_message = models.CharField(max_length=255, blank=True)
    requested_by = models.ForeignKey("accounts.User", on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)

    class Meta:
        verbose_name = _("refund")
        verbose_name_plural = _("refunds")
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive")]

    def __str__(self) -> str:
        return f"{self.amount} ({self.get_status_display()})"


class StripeEvent(models.Model):
    """Every verified webhook event, stored once by id before it is processed (dj-stripe's rule)."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("Stripe event")
        verbose_name_plural = _("Stripe events")

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"


class ProviderBilling(models.Model):
    """Per-provider billing terms set by staff: a platform fee other than the global one, the payout account."""

    organization = models.OneToOneField(
        "accounts.Organization", on_delete=models.CASCADE, related_name="provider_billing"
    )
    platform_fee_percent = models.DecimalField(
        _("platform fee (%)"),
        max_digits=5,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_("Leave empty for the platform's default fee."),
    )
    stripe_connect_account_id = models.CharField(_("Stripe Connect account"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("provider billing terms")
        verbose_name_plural = _("provider billing terms")
        constraints = [
            models.CheckConstraint(
                condition=Q(platform_fee_percent__isnull=True)
                | Q(platform_fee_percent__gte=0, platform_fee_percent__lte=100),
                name="provider_fee_within_bounds",
            )
        ]

    def __str__(self) -> str:
        return str(self.organization)


class Statement(models.Model):
    """A closed month of an organization's funds (available plus held): numbered 1, 2, 3 … without gaps.

    Amounts are the ledger's exact sums; pages and CSV round each figure to the minor unit, half-up.
    """

    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="statements")
    number = models.PositiveIntegerField(_("number"))
    period_start = models.DateField(_("period start"))
    period_end = models.DateField(_("period end"), help_text=_("The first day after the period."))
    opening_balance = amount_field(verbose_name=_("opening balance"))
    top_ups = amount_field(verbose_name=_("top-ups"))
    charges = amount_field(verbose_name=_("charges"))
    refunds = amount_field(verbose_name=_("refunds"))
    adjustments = amount_field(verbose_name=_("adjustments"))
    closing_balance = amount_field(verbose_name=_("closing balance"))
    # Charges by item: [{"reference", "description", "amount"}], largest first.
    charge_lines = models.JSONField(_("charges by item"), default=list)
    created_at = models.DateTimeField(_("closed at"), auto_now_add=True)

    class Meta:
        verbose_name = _("statement")
        verbose_name_plural = _("statements")
        constraints = [
            models.UniqueConstraint(fields=["organization", "number"], name="statement_unique_number"),
            models.UniqueConstraint(fields=["organization", "period_start"], name="statement_unique_period"),
            models.CheckConstraint(condition=Q(period_end__gt=F("period_start")), name="statement_period_ordered"),
        ]

    def __str__(self) -> str:
        return f"#{self.number} {self.period_start:%Y-%m}"


class Payout(models.Model):
    """Provider earnings paid out: requested by the provider, settled by a task through Stripe Connect, or by
    staff by hand (two different staff members above `PAYOUT_TWO_PERSON_THRESHOLD`)."""

    class Status(models.TextChoices):
        REQUESTED = "requested", _("Requested")
        AWAITING_APPROVAL = "awaiting_approval", _("Awaiting manual settlement")
        PAID = "paid", _("Paid")
        FAILED = "failed", _("Failed")

    class Method(models.TextChoices):
        STRIPE_CONNECT = "stripe_connect", _("Stripe Connect transfer")
        MANUAL = "manual", _("Manual bank transfer")

    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="payouts")
    amount = amount_field(verbose_name=_("amount"))
    status = models.CharField(_("status"), max_length=20, choices=Status.choices, default=Status.REQUESTED)
    method = models.CharField(_("method"), max_length=20, choices=Method.choices, blank=True)
    stripe_transfer_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    failure_message = models.CharField(max_length=255, blank=True)
    requested_by = models.ForeignKey("accounts.User", on_delete=models.SET_NULL, null=True, related_name="+")
    first_approved_by = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    second_approved_by = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("requested at"), auto_now_add=True, db_index=True)
    settled_at = models.DateTimeField(_("settled at"), null=True, blank=True)

    class Meta:
        verbose_name = _("payout")
        verbose_name_plural = _("payouts")
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payout_amount_positive"),
            models.CheckConstraint(
                condition=Q(second_approved_by__isnull=True) | ~Q(second_approved_by=F("first_approved_by")),
                name="payout_two_different_approvers",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} ({self.get_status_display()})"


class UsageDimension(models.TextChoices):
    ACCELERATOR_SECONDS = "accelerator_seconds", _("Accelerator-seconds")


class UsageEvent(models.Model):
    """A measured amount of use over a period. Append-only; the idempotency key is unique per source.

    An event is rated once its id is at most its rental's `usage_rated_through`; the charge that rated it is the
    rental's first with `events_through` at or above its id.
    """

    Dimension = UsageDimension
    LIFECYCLE_SOURCE = "lifecycle"  # the platform's own clock over running rentals

    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="+")
    # Indexed with the id below: ratings read a rental's events past its watermark.
    rental = models.ForeignKey(
        "marketplace.Rental", on_delete=models.PROTECT, related_name="usage_events", db_index=False
    )
    source = models.CharField(_("source"), max_length=80)
    idempotency_key = models.CharField(_("idempotency key"), max_length=200)
    # The node whose agent reported it (none: the provider's API or the platform's clock). Periods of one rental never
    # overlap, except those of two different nodes of the rental.
    node = models.ForeignKey(
        "marketplace.Node", on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    dimension = models.CharField(_("dimension"), max_length=32, choices=UsageDimension.choices)
    quantity = amount_field(verbose_name=_("quantity"))
    period_start = models.DateTimeField(_("period start"))
    period_end = models.DateTimeField(_("period end"))
    received_at = models.DateTimeField(_("received at"), auto_now_add=True)

    class Meta:
        verbose_name = _("usage event")
        verbose_name_plural = _("usage events")
        indexes = [
            models.Index(fields=["organization", "period_start"], name="usage_event_org_time"),
            models.Index(fields=["rental", "id"], name="usage_event_rental_order"),
            # A reported period is checked against the rental's stored periods that end after it starts.
            models.Index(fields=["rental", "period_end"], name="usage_event_rental_period"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["source", "idempotency_key"], name="usage_event_unique_per_source"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="usage_event_quantity_positive"),
            models.CheckConstraint(condition=Q(period_end__gt=F("period_start")), name="usage_event_period_ordered"),
            models.CheckConstraint(
                condition=Q(dimension__in=UsageDimension.values), name="usage_event_dimension_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source}:{self.idempotency_key} {self.quantity} {self.dimension}"


class UsageCharge(models.Model):
    """One rating of a rental's new usage: what it cost at the snapshotted price and what the hold covered."""

    # Indexed with the time below.
    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    rental = models.ForeignKey("marketplace.Rental", on_delete=models.PROTECT, related_name="charges")
    api_key = models.ForeignKey("accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    quantity = amount_field(verbose_name=_("accelerator-seconds"))
    rated_amount = amount_field(verbose_name=_("rated amount"))
    amount = amount_field(verbose_name=_("charged"))  # at most rated_amount: only what the hold covered
    fee = amount_field(verbose_name=_("platform fee amount"), default=0)  # of amount; the provider earned the rest
    # The capture that took it: its own (rated rental by rental) or the rating run's, shared by every charge of
    # the run (rated in sets). Null when nothing was captured.
    ledger_transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    period_start = models.DateTimeField(_("period start"))
    period_end = models.DateTimeField(_("period end"))
    events_through = models.BigIntegerField(_("events rated through"))  # the largest usage event id it rated
    event_count = models.PositiveIntegerField(_("events rated"))
    created_at = models.DateTimeField(_("time"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("usage charge")
        verbose_name_plural = _("usage charges")
        indexes = [models.Index(fields=["organization", "created_at"], name="usage_charge_org_time")]
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__gte=0, amount__lte=F("rated_amount")), name="usage_charge_within_rated"
            ),
            models.CheckConstraint(condition=Q(fee__gte=0, fee__lte=F("amount")), name="usage_charge_fee_within"),
        ]

    def __str__(self) -> str:
        return f"rental {self.rental_id}: {self.amount}"


class OrganizationQuota(models.Model):
    """An organization's limits, set by staff; created with the defaults from settings on first use.

    `accelerators_in_use` is kept by the rentals service in the admission transaction (a conditional update
    against the limit), so parallel admissions cannot pass the limit together.
    """

    organization = models.OneToOneField("accounts.Organization", on_delete=models.CASCADE, related_name="quota")
    max_concurrent_accelerators = models.PositiveIntegerField(_("maximum concurrent accelerators"))
    monthly_spend_cap = amount_field(
        verbose_name=_("monthly spend cap"), null=True, blank=True, help_text=_("Empty: no cap.")
    )
    alert_thresholds = models.JSONField(
        _("spend alert thresholds (%)"),
        default=list,
        blank=True,
        help_text=_("Percent of the cap, e.g. [50, 80, 100]."),
    )
    # Staff may lower the limit below what is in use: running rentals go on, new ones wait.
    accelerators_in_use = models.PositiveIntegerField(_("accelerators in use"), default=0)

    class Meta:
        verbose_name = _("quota")
        verbose_name_plural = _("quotas")

    def __str__(self) -> str:
        return str(self.organization)


class SpendAlert(models.Model):
    """A spend threshold crossed in a month: sent once per threshold per period (the unique constraint)."""

    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")
    period_start = models.DateField(_("period start"))
    threshold_percent = models.PositiveSmallIntegerField(_("threshold (%)"))
    spend = amount_field(verbose_name=_("spend"))
    cap = amount_field(verbose_name=_("cap"))
    created_at = models.DateTimeField(_("sent at"), auto_now_add=True)

    class Meta:
        verbose_name = _("spend alert")
        verbose_name_plural = _("spend alerts")
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start", "threshold_percent"], name="spend_alert_once_per_period"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization_id} {self.period_start:%Y-%m} {self.threshold_percent}%"


class StaffMoneyActionKind(models.TextChoices):
    CREDIT_LINE_SET = "credit_line_set", _("Credit line set")
    TOP_UP_REFUND = "top_up_refund", _("Top-up refunded")
    CHARGE_REFUND = "charge_refund", _("Charge refunded")
    USAGE_CHARGE_REFUND = "usage_charge_refund", _("Usage charge refunded")
    PAYOUT_APPROVE = "payout_approve", _("Payout approved")
    PAYOUT_REJECT = "payout_reject", _("Payout rejected")


class StaffMoneyAction(models.Model):
    """Who moved money in the admin, when, and what. Written by `billing.services.staff` in the same transaction
    as the money action itself (never by a signal), so an action without its row cannot exist; read-only in
    the admin. The permissions that allow each action are declared here, on their record."""

    Action = StaffMoneyActionKind

    actor = models.ForeignKey("accounts.User", on_delete=models.PROTECT, related_name="+", verbose_name=_("staff"))
    action = models.CharField(_("action"), max_length=24, choices=StaffMoneyActionKind.choices)
    organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    reference = models.CharField(_("object"), max_length=64)
    amount = amount_field(verbose_name=_("amount"))
    previous_amount = amount_field(verbose_name=_("previous amount"), null=True, blank=True)
    reason = models.CharField(_("reason"), max_length=255, blank=True)
    result = models.CharField(_("result"), max_length=32, blank=True)
    ledger_transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(_("at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("staff money action")
        verbose_name_plural = _("staff money actions")
        default_permissions = ("view",)  # rows are written by the services only
        permissions = [
            ("set_credit_line", _("Can set an organization's credit line")),
            ("issue_refund", _("Can refund top-ups and charges")),
            ("approve_payout", _("Can approve or reject manual payouts")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=StaffMoneyActionKind.values), name="staff_money_action_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.reference} {self.amount}"

"""The app store: applications buyers build on a model service and sell, their versions, subscriptions and reviews."""

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from billing.money import amount_field
from marketplace.core.models import TimeStampedModel


class ApplicationCategory(models.TextChoices):
    WRITING = "writing", _("Writing")
    CODING = "coding", _("Coding")
    TRANSLATION = "translation", _("Translation")
    CUSTOMER_SERVICE = "customer_service", _("Customer service")
    DATA_ANALYSIS = "data_analysis", _("Data analysis")
    EDUCATION = "education", _("Education")
    KNOWLEDGE = "knowledge", _("Knowledge and search")
    OTHER = "other", _("Other")


class Application(TimeStampedModel):
    """An application a buyer organization sells: a listing whose current version says what it runs and costs.

    Callable through the gateway as `app:<slug>` once published. The rating totals are kept with each review so the
    storefront sorts by rating without reading the reviews.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        PUBLISHED = "published", _("Published")
        UNPUBLISHED = "unpublished", _("Unpublished")

    seller = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="applications")
    name = models.CharField(_("name"), max_length=80)
    slug = models.SlugField(
        _("slug"), max_length=60, unique=True, help_text=_("Callers name it as app:<slug>; it cannot change.")
    )
    icon = models.CharField(_("icon"), max_length=8, default="🤖", help_text=_("An emoji shown with the name."))
    tagline = models.CharField(_("tagline"), max_length=140)
    description = models.TextField(_("description"))
    category = models.CharField(_("category"), max_length=20, choices=ApplicationCategory.choices)
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.DRAFT)
    current_version = models.ForeignKey(
        "marketplace.ApplicationVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    published_at = models.DateTimeField(_("published at"), null=True, blank=True)
    rating_count = models.PositiveIntegerField(default=0)
    rating_total = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("application")
        verbose_name_plural = _("applications")
        indexes = [models.Index(fields=["status", "category"], name="application_browse")]

    def __str__(self) -> str:
        return self.name

    @property
    def gateway_model(self) -> str:
        return f"app:{self.slug}"

    @property
    def rating(self) -> float | None:
        """The mean of its reviews' stars, for display (money is never a float; stars are not money)."""
        return round(self.rating_total / self.rating_count, 1) if self.rating_count else None


class ApplicationVersion(models.Model):
    """What one version of an application runs and costs. Never changed once made: a new version is a new row, and
    subscriptions keep the version (and price) they were bought at until they renew."""

    class Pricing(models.TextChoices):
        PER_CALL = "per_call", _("Per call")
        PER_1K_TOKENS = "per_1k_tokens", _("Per 1K tokens")
        SUBSCRIPTION = "subscription", _("Monthly subscription")

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField(_("version"))
    notes = models.TextField(_("version notes"), blank=True)
    model_service = models.ForeignKey("marketplace.ModelService", on_delete=models.PROTECT, related_name="+")
    system_prompt = models.TextField(_("system prompt"), blank=True)
    temperature = models.DecimalField(
        _("temperature"), max_digits=3, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(2)],
    )  # fmt: skip
    max_tokens = models.PositiveIntegerField(
        _("max output tokens per call"), null=True, blank=True, help_text=_("Empty: the model's own limit.")
    )
    pricing = models.CharField(_("pricing"), max_length=16, choices=Pricing.choices)
    price = amount_field(
        verbose_name=_("price"),
        help_text=_("Per call, per 1K tokens (input and output) or per month, on top of the model's price."),
    )
    free_trial_calls = models.PositiveIntegerField(
        _("free trial calls"), default=0, help_text=_("Calls each buyer makes without the application's price.")
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("application version")
        verbose_name_plural = _("application versions")
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["application", "number"], name="application_version_unique_number"),
            models.CheckConstraint(condition=Q(price__gte=0), name="application_version_price_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.application} v{self.number}"


class ApplicationUse(models.Model):
    """One organization's use of one application: the free trial calls it has taken."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="uses")
    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")
    trial_calls_used = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["application", "organization"], name="application_use_unique")]

    def __str__(self) -> str:
        return f"{self.organization_id} → {self.application_id}"


class ApplicationSubscription(TimeStampedModel):
    """A buyer's monthly subscription: paid for a period ahead at the version's price it was bought or renewed at."""

    class Status(models.TextChoices):
        ACTIVE = "active", _("Active")
        CANCELLED = "cancelled", _("Cancelled")  # runs to the end of the period, then ends
        ENDED = "ended", _("Ended")

    class EndReason(models.TextChoices):
        CANCELLED = "cancelled", _("Cancelled by the buyer.")
        UNPUBLISHED = "unpublished", _("The seller unpublished the application.")
        NOT_BY_SUBSCRIPTION = "not_by_subscription", _("The application is no longer sold by subscription.")
        INSUFFICIENT_FUNDS = "insufficient_funds", _("Insufficient funds to renew.")
        PRICE_NOT_ACCEPTED = "price_not_accepted", _("The seller raised the price and the buyer did not accept it.")
        SPEND_LIMIT = "spend_limit", _("Renewing would pass the monthly spend cap.")

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="subscriptions")
    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="+")
    version = models.ForeignKey(ApplicationVersion, on_delete=models.PROTECT, related_name="+")
    price = amount_field(verbose_name=_("price per month"))
    # The most the buyer agreed to renew at: what it subscribed at, or a higher price it accepted since. A seller's
    # higher price applies only once accepted; a lower one applies at the next renewal by itself.
    accepted_price = amount_field(verbose_name=_("accepted price per month"))
    status = models.CharField(_("status"), max_length=12, choices=Status.choices, default=Status.ACTIVE)
    period_start = models.DateTimeField(_("period start"))
    period_end = models.DateTimeField(_("paid until"))
    end_reason = models.CharField(_("why it ended"), max_length=24, choices=EndReason.choices, blank=True)

    class Meta:
        verbose_name = _("application subscription")
        verbose_name_plural = _("application subscriptions")
        constraints = [
            models.UniqueConstraint(
                fields=["application", "organization"],
                condition=~Q(status="ended"),
                name="application_subscription_one_open",
            )
        ]
        indexes = [models.Index(fields=["status", "period_end"], name="app_subscription_renewal")]

    def __str__(self) -> str:
        return f"{self.organization} → {self.application}"

    @property
    def pending_price(self) -> Decimal | None:
        """The seller's current monthly price when it is higher than the buyer accepted (it awaits acceptance)."""
        if self.status != self.Status.ACTIVE:
            return None
        current = self.application.current_version
        if current is None or current.pricing != ApplicationVersion.Pricing.SUBSCRIPTION:
            return None
        return current.price if current.price > self.accepted_price else None


class SubscriptionPayment(models.Model):
    """One period of a subscription paid: what the buyer paid and the platform's fee (the seller earns the rest)."""

    subscription = models.ForeignKey(ApplicationSubscription, on_delete=models.PROTECT, related_name="payments")
    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="+")
    period_start = models.DateTimeField(_("period start"))
    period_end = models.DateTimeField(_("period end"))
    amount = amount_field(verbose_name=_("amount"))
    fee = amount_field(verbose_name=_("platform fee amount"))
    ledger_transaction = models.OneToOneField("billing.LedgerTransaction", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(_("paid at"), auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("subscription payment")
        verbose_name_plural = _("subscription payments")
        constraints = [
            models.UniqueConstraint(fields=["subscription", "period_start"], name="subscription_payment_once")
        ]

    def __str__(self) -> str:
        return f"{self.subscription} {self.period_start:%Y-%m-%d}"


class ApplicationReview(TimeStampedModel):
    """A buyer organization's review of an application it used: one per organization, edited in place."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="reviews")
    organization = models.ForeignKey("accounts.Organization", on_delete=models.CASCADE, related_name="+")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    stars = models.PositiveSmallIntegerField(_("stars"), validators=[MinValueValidator(1), MaxValueValidator(5)])
    text = models.TextField(_("review"), max_length=2000, blank=True)

    class Meta:
        verbose_name = _("application review")
        verbose_name_plural = _("application reviews")
        ordering = ["-updated_at"]
        constraints = [
            models.UniqueConstraint(fields=["application", "organization"], name="application_review_one_per_org"),
            models.CheckConstraint(condition=Q(stars__gte=1, stars__lte=5), name="application_review_stars_1_to_5"),
        ]

    def __str__(self) -> str:
        return f"{self.application} ★{self.stars}"

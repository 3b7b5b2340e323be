from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models import Q
from django.utils.timezone import now
from django.utils.translation import gettext_lazy as _

from marketplace.core.models import TimeStampedModel
from marketplace.core.regions import Region


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **fields) -> "User":
        if not email:
            raise ValueError("An e-mail address is required")
        user = self.model(email=self.normalize_email(email).lower(), **fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **fields) -> "User":
        fields.update(is_staff=True, is_superuser=True)
        return self.create_user(email, password, **fields)


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(_("e-mail address"), unique=True)
    full_name = models.CharField(_("full name"), max_length=150, blank=True)
    preferred_language = models.CharField(
        _("preferred language"), max_length=10, choices=settings.LANGUAGES, blank=True
    )
    is_active = models.BooleanField(_("active"), default=True)
    is_staff = models.BooleanField(_("staff status"), default=False)
    date_joined = models.DateTimeField(_("date joined"), default=now)
    # Remembered across sign-ins, so people land in the organization they last worked in.
    last_active_organization = models.ForeignKey(
        "accounts.Organization", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return self.full_name or self.email

    def get_short_name(self) -> str:
        return self.full_name or self.email.split("@")[0]


class Organization(TimeStampedModel):
    """The tenant: every purchase, balance, quota and key belongs to an organization."""

    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=140, unique=True)
    is_personal = models.BooleanField(_("personal"), default=False)
    members = models.ManyToManyField(User, through="Membership", related_name="organizations")

    class Meta:
        verbose_name = _("organization")
        verbose_name_plural = _("organizations")

    def __str__(self) -> str:
        return self.name

    @property
    def is_approved_provider(self) -> bool:
        profile = getattr(self, "provider_profile", None)
        return profile is not None and profile.status == ProviderProfile.Status.APPROVED


class Membership(TimeStampedModel):
    class Role(models.TextChoices):
        OWNER = "owner", _("Owner")
        ADMIN = "admin", _("Admin")
        MEMBER = "member", _("Member")
        BILLING = "billing", _("Billing")

    MANAGER_ROLES = frozenset({Role.OWNER, Role.ADMIN})
    BILLING_ROLES = frozenset({Role.OWNER, Role.ADMIN, Role.BILLING})
    ALL_ROLES = frozenset(Role.values)
    KEY_HOLDER_ROLES = frozenset({Role.OWNER, Role.ADMIN, Role.MEMBER})
    # The role matrix: which roles may take an action that changes something, by the API key scope that action
    # needs (docs/api.md, "Scopes and roles"). Reads are open to every role. Billing members handle money and
    # read everything, but neither rent, nor call models, nor touch provider settings, node tokens or upstreams;
    # members rent and operate, but neither move money nor administer the organization.
    ROLES_BY_SCOPE = {
        "read": ALL_ROLES,
        "rent": KEY_HOLDER_ROLES,
        "gateway": KEY_HOLDER_ROLES,
        "provider": KEY_HOLDER_ROLES,
        "billing": BILLING_ROLES,
        "admin": MANAGER_ROLES,
    }

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="membership_unique_user_organization"),
            models.CheckConstraint(
                condition=Q(role__in=["owner", "admin", "member", "billing"]), name="membership_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization} ({self.role})"

    @property
    def can_manage(self) -> bool:
        return self.role in self.MANAGER_ROLES

    @property
    def can_manage_billing(self) -> bool:
        return self.role in self.BILLING_ROLES


class Invitation(TimeStampedModel):
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(_("e-mail address"))
    role = models.CharField(_("role"), max_length=16, choices=Membership.Role.choices, default=Membership.Role.MEMBER)
    # Only a hash of the link's token is stored: a database leak does not let anyone join.
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    expires_at = models.DateTimeField(_("expires at"))
    accepted_at = models.DateTimeField(_("accepted at"), null=True, blank=True)
    accepted_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("invitation")
        verbose_name_plural = _("invitations")
        indexes = [models.Index(fields=["organization", "email"])]

    def __str__(self) -> str:
        return f"{self.email} → {self.organization}"

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > now()


class ProviderProfile(TimeStampedModel):
    """An organization's application to sell capacity; staff approve or reject it in the admin."""

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending review")
        APPROVED = "approved", _("Approved")
        REJECTED = "rejected", _("Rejected")

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="provider_profile")
    legal_name = models.CharField(_("legal name"), max_length=200)
    contact_name = models.CharField(_("contact name"), max_length=120)
    contact_email = models.EmailField(_("contact e-mail"))
    contact_phone = models.CharField(_("contact phone"), max_length=40, blank=True)
    regions = models.JSONField(_("regions"), default=list, help_text=_("Regions the provider operates in."))
    status = models.CharField(_("status"), max_length=16, choices=Status.choices, default=Status.PENDING)
    submitted_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    reviewed_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    reviewed_at = models.DateTimeField(_("reviewed at"), null=True, blank=True)
    review_note = models.TextField(_("review note"), blank=True)

    class Meta:
        verbose_name = _("provider profile")
        verbose_name_plural = _("provider profiles")
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "approved", "rejected"]), name="provider_status_valid"
            )
        ]

    def __str__(self) -> str:
        return f"{self.legal_name} ({self.get_status_display()})"

    def get_region_labels(self) -> list[str]:
        labels = dict(Region.choices)
        return [str(labels.get(code, code)) for code in self.regions]


class ApiKey(TimeStampedModel):
    """An organization's API key. The secret is shown once; only its keyed hash is stored."""

    class Scope(models.TextChoices):
        READ = "read", _("Read")
        RENT = "rent", _("Rent capacity")
        GATEWAY = "gateway", _("Model gateway")
        PROVIDER = "provider", _("Provider")
        BILLING = "billing", _("Billing: top-ups, subscriptions, payouts")
        ADMIN = "admin", _("Administration: organizations, members, invitations, API keys")

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    # The public part of the key (`mk_live_<prefix>_…`), used to find the row; not a secret.
    prefix = models.CharField(_("key id"), max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(_("scopes"), default=list)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    created_by = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    # What rentals started with this key may spend per calendar month; empty: only the organization's limits.
    monthly_spend_limit = models.DecimalField(
        _("monthly spend limit"), max_digits=24, decimal_places=8, null=True, blank=True
    )

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        indexes = [models.Index(fields=["organization", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"mk_{settings.API_KEY_ENVIRONMENT}_{self.prefix}_…"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now())


class IdempotencyRecord(models.Model):
    """The stored outcome of a POST sent with an `Idempotency-Key`, per organization."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    locked_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "key"], name="idempotency_unique_organization_key")
        ]

    def __str__(self) -> str:
        return self.key


class Notification(models.Model):
    """An in-app message to an organization (spend alerts, suspended or preempted rentals)."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(_("kind"), max_length=40)
    title = models.CharField(_("title"), max_length=200)
    body = models.TextField(_("message"), blank=True)
    link = models.CharField(_("link"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("time"), default=now, db_index=True)
    read_at = models.DateTimeField(_("read at"), null=True, blank=True)

    class Meta:
        verbose_name = _("notification")
        verbose_name_plural = _("notifications")
        indexes = [models.Index(fields=["organization", "-created_at"], name="notification_org_time")]

    def __str__(self) -> str:
        return self.title

"""Reads of the accounts app. Tenant data is always selected through an organization."""

from django.conf import settings
from django.db.models import OuterRef, QuerySet, Subquery
from django.utils.timezone import now
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import ApiKey, Invitation, Membership, Organization, ProviderProfile, User
from marketplace.core.queries import PreparedQuery


def organization_list(*, user: User, only: Organization | None = None) -> QuerySet[Organization]:
    """Organizations the user belongs to, with the user's role as `caller_role`; an API key sees only its own
    organization (`only`)."""
    role = Membership.objects.filter(organization=OuterRef("pk"), user=user).values("role")[:1]
    qs = (
        Organization.objects.filter(memberships__user=user)
        .select_related("provider_profile")
        .annotate(caller_role=Subquery(role))
        .order_by("name", "pk")
    )
    if only is not None:
        qs = qs.filter(pk=only.pk)
    return qs


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    return Membership.objects.filter(organization=organization).select_related("user").order_by("created_at", "pk")


def membership_get(*, user: User, organization: Organization) -> Membership | None:
    return Membership.objects.filter(user=user, organization=organization).first()


def membership_admits(*, user: User, organization: Organization, roles: frozenset[str]) -> bool:
    """Whether the user's role in the organization is one of `roles` (a row of Membership.ROLES_BY_SCOPE, or an
    action's own set): the one role check of API actions and pages that change something. Every role: no query."""
    if roles >= Membership.ALL_ROLES:
        return True
    membership = membership_get(user=user, organization=organization)
    return membership is not None and membership.role in roles


def membership_list_visible_to(*, user: User) -> QuerySet[Membership]:
    """Memberships of every organization the user belongs to (whom they may see, not what they may change)."""
    return Membership.objects.filter(organization__memberships__user=user).select_related("organization", "user")


def invitation_list_visible_to(*, user: User) -> QuerySet[Invitation]:
    """Invitations of every organization the user belongs to (what they may change, services decide)."""
    return Invitation.objects.filter(organization__memberships__user=user).select_related("organization")


def membership_list_for_user(*, user: User) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(user=user)
        .select_related("organization__provider_profile")
        .order_by("organization__name", "pk")
    )


def invitation_list_pending(*, organization: Organization) -> QuerySet[Invitation]:
    return (
        Invitation.objects.filter(
            organization=organization, accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now()
        )
        .select_related("invited_by")
        .order_by("-created_at", "pk")
    )


def api_key_list(*, organization: Organization) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(organization=organization).select_related("created_by").order_by("-created_at", "-pk")


# Every API request looks its key up: compiled once per process (see PreparedQuery).
_api_key_by_prefix = PreparedQuery(
    lambda prefix: ApiKey.objects.select_related("organization", "created_by").filter(prefix=prefix)[:1], "prefix"
)


def api_key_get_by_prefix(*, prefix: str) -> ApiKey | None:
    """The key with its organization and creator, or None."""
    found = _api_key_by_prefix.run(prefix=prefix)
    return found[0] if found else None


def organization_get_active(*, user: User, organization_id: int | None) -> Organization | None:
    """The organization a browser session works in: the session's choice, else the one the user last
    worked in, else their personal one, as long as they are still a member."""
    memberships = Membership.objects.filter(user=user).select_related("organization__provider_profile")
    for candidate in (organization_id, user.last_active_organization_id):
        if candidate and (chosen := memberships.filter(organization_id=candidate).first()):
            return chosen.organization
    membership = memberships.order_by("-organization__is_personal", "created_at").first()
    return membership.organization if membership else None


def provider_profile_get(*, organization: Organization) -> ProviderProfile | None:
    return ProviderProfile.objects.filter(organization=organization).first()


def provider_is_approved(*, organization: Organization) -> bool:
    """Asked of the database, not of a cached profile: approval may have changed since the object was loaded."""
    return ProviderProfile.objects.filter(organization=organization, status=ProviderProfile.Status.APPROVED).exists()


# --- Two-factor sign-in (django-otp's TOTP devices) ---


def two_factor_device_get(*, user: User, confirmed: bool = True) -> TOTPDevice | None:
    """The user's TOTP device: the confirmed one that sign-in asks for, or (confirmed=False) one being enrolled."""
    return TOTPDevice.objects.filter(user=user, confirmed=confirmed).order_by("pk").first()


def two_factor_satisfied(*, user: User, verified: bool) -> bool:
    """Whether a session may open what staff open: staff need a verified second factor while
    STAFF_REQUIRE_TWO_FACTOR is on; nobody else does."""
    return verified or not (user.is_staff and settings.STAFF_REQUIRE_TWO_FACTOR)

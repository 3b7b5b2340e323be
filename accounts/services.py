"""Writes of the accounts app: users, organizations, memberships, invitations, providers, API keys."""

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils.text import slugify
from django.utils.timezone import now
from django.utils.translation import gettext as _
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import selectors
from accounts.models import ApiKey, Invitation, Membership, Notification, Organization, ProviderProfile, User
from marketplace.core.errors import Conflict, DomainError, NotFound, PermissionDenied, RateLimited
from marketplace.core.regions import Region

logger = logging.getLogger(__name__)

API_KEY_PREFIX_BYTES, API_KEY_SECRET_BYTES = 6, 24
LAST_USED_RESOLUTION = timedelta(minutes=1)  # write last_used_at at most once a minute per key


class AuthenticationFailed(DomainError):
    status_code, code = 401, "authentication_failed"


# --- Users and organizations ---


@transaction.atomic
def user_sign_up(*, email: str, password: str, full_name: str = "", preferred_language: str = "") -> User:
    """Create a user with a personal organization they own. Raises Conflict for a taken e-mail."""
    email = email.strip().lower()
    if User.objects.filter(email=email).exists():
        raise Conflict(_("An account with this e-mail address already exists."), code="email_taken")
    user = User.objects.create_user(
        email=email, password=password, full_name=full_name.strip(), preferred_language=preferred_language
    )
    organization_create(name=_("%(name)s's workspace") % {"name": user.get_short_name()}, owner=user, is_personal=True)
    logger.info("user signed up", extra={"user_id": user.pk})
    return user


def _unique_slug(name: str) -> str:
    base = slugify(name, allow_unicode=False)[:40] or "org"
    return f"{base}-{secrets.token_hex(3)}"


@transaction.atomic
def organization_create(*, name: str, owner: User, is_personal: bool = False) -> Organization:
    name = name.strip()
    if not name:
        raise DomainError(_("An organization needs a name."), code="name_required")
    organization = Organization.objects.create(name=name, slug=_unique_slug(name), is_personal=is_personal)
    Membership.objects.create(user=owner, organization=organization, role=Membership.Role.OWNER)
    return organization


def organization_update(*, organization: Organization, actor: User, name: str) -> Organization:
    membership_require(user=actor, organization=organization, manage=True)
    name = name.strip()
    if not name:
        raise DomainError(_("An organization needs a name."), code="name_required")
    organization.name = name
    organization.save(update_fields=["name", "updated_at"])
    return organization


def organization_activate(*, user: User, organization: Organization) -> Organization:
    """Make the organization the one the user works in (remembered for their next sign-in)."""
    membership_require(user=user, organization=organization)
    if user.last_active_organization_id != organization.pk:
        user.last_active_organization = organization
        user.save(update_fields=["last_active_organization"])
    return organization


def membership_require(*, user: User, organization: Organization, manage: bool = False) -> Membership:
    """The user's membership of the organization; NotFound for outsiders, PermissionDenied for too low a role."""
    membership = selectors.membership_get(user=user, organization=organization)
    if membership is None:
        raise NotFound(_("Organization not found."))
    if manage and not membership.can_manage:
        raise PermissionDenied(_("Only owners and admins can do this."), code="role_required", role=membership.role)
    return membership


def _owner_ids_locked(*, organization: Organization) -> list[int]:
    """Owner memberships, locked: two concurrent demotions cannot both pass the last-owner check."""
    owners = Membership.objects.select_for_update().filter(organization=organization, role=Membership.Role.OWNER)
    return list(owners.order_by("pk").values_list("pk", flat=True))


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, actor: User) -> Membership:
    """Owners and admins change roles; only owners grant or take away ownership, and one owner always stays."""
    actor_membership = membership_require(user=actor, organization=membership.organization, manage=True)
    if role not in Membership.Role.values:
        raise DomainError(_("Unknown role."), code="invalid_role")
    touches_ownership = Membership.Role.OWNER in {role, membership.role}
    if touches_ownership and actor_membership.role != Membership.Role.OWNER:
        raise PermissionDenied(_("Only owners can grant or remove ownership."), code="role_required")
    owners = _owner_ids_locked(organization=membership.organization)
    if membership.role == Membership.Role.OWNER and role != Membership.Role.OWNER and owners == [membership.pk]:
        raise Conflict(_("An organization needs at least one owner."), code="last_owner")
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    if role not in Membership.KEY_HOLDER_ROLES:  # a billing member holds no keys: those made before go with the role
        _member_keys_revoke(membership)
    return membership


def _member_keys_revoke(membership: Membership) -> None:
    ApiKey.objects.filter(
        organization=membership.organization, created_by=membership.user, revoked_at__isnull=True
    ).update(revoked_at=now())


@transaction.atomic
def membership_remove(*, membership: Membership, actor: User) -> None:
    """Remove a member (or leave); the last owner cannot go, and the member's API keys are revoked."""
    if membership.user_id != actor.pk:
        actor_membership = membership_require(user=actor, organization=membership.organization, manage=True)
        if membership.role == Membership.Role.OWNER and actor_membership.role != Membership.Role.OWNER:
            raise PermissionDenied(_("Only owners can remove an owner."), code="role_required")
    owners = _owner_ids_locked(organization=membership.organization)
    if owners == [membership.pk]:
        raise Conflict(_("An organization needs at least one owner."), code="last_owner")
    _member_keys_revoke(membership)
    membership.delete()


# --- Invitations ---


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def invitation_create(*, organization: Organization, email: str, role: str, invited_by: User) -> tuple[Invitation, str]:
    """Invite an e-mail address; returns the invitation and the link token (sent by e-mail, never stored)."""
    membership_require(user=invited_by, organization=organization, manage=True)
    email = email.strip().lower()
    if role not in Membership.Role.values:
        raise DomainError(_("Unknown role."), code="invalid_role")
    if (
        role == Membership.Role.OWNER
        and not Membership.objects.filter(
            user=invited_by, organization=organization, role=Membership.Role.OWNER
        ).exists()
    ):
        raise PermissionDenied(_("Only owners can invite owners."), code="role_required")
    if Membership.objects.filter(organization=organization, user__email=email).exists():
        raise Conflict(_("%(email)s is already a member.") % {"email": email}, code="already_member")
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organization=organization,
        email=email,
        role=role,
        token_hash=_token_hash(token),
        invited_by=invited_by,
        expires_at=now() + timedelta(days=settings.INVITATION_TTL_DAYS),
    )
    link = settings.SITE_URL.rstrip("/") + reverse("accounts:invitation-accept", args=[token])
    transaction.on_commit(
        lambda: send_mail(
            subject=_("You are invited to join %(org)s on 算力商城") % {"org": organization.name},
            message=_("%(inviter)s invited you to join %(org)s as %(role)s.\n\nAccept: %(link)s\n")
            % {"inviter": invited_by.get_full_name(), "org": organization.name, "role": role, "link": link},
            from_email=None,
            recipient_list=[email],
        )
    )
    logger.info("invitation created", extra={"organization_id": organization.pk, "invitation_id": invitation.pk})
    return invitation, token


def invitation_get_pending(*, token: str) -> Invitation:
    invitation = Invitation.objects.select_related("organization").filter(token_hash=_token_hash(token)).first()
    if invitation is None or not invitation.is_pending:
        raise NotFound(_("This invitation is invalid, expired or already used."), code="invitation_invalid")
    return invitation


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    """Join the invitation's organization. Only the invited e-mail address may accept, once."""
    invitation = invitation_get_pending(token=token)
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.accepted_at is not None:
        raise NotFound(_("This invitation is invalid, expired or already used."), code="invitation_invalid")
    if invitation.email != user.email:
        raise PermissionDenied(
            _("This invitation was sent to %(email)s; sign in with that address to accept it.")
            % {"email": invitation.email},
            code="invitation_email_mismatch",
        )
    membership, _created = Membership.objects.get_or_create(
        user=user, organization=invitation.organization, defaults={"role": invitation.role}
    )
    invitation.accepted_at, invitation.accepted_by = now(), user
    invitation.save(update_fields=["accepted_at", "accepted_by", "updated_at"])
    return membership


def invitation_revoke(*, invitation: Invitation, actor: User) -> Invitation:
    membership_require(user=actor, organization=invitation.organization, manage=True)
    if invitation.revoked_at is None and invitation.accepted_at is None:
        invitation.revoked_at = now()
        invitation.save(update_fields=["revoked_at", "updated_at"])
    return invitation


# --- Providers ---


@transaction.atomic
def provider_apply(
    *,
    organization: Organization,
    actor: User,
    legal_name: str,
    contact_name: str,
    contact_email: str,
    contact_phone: str = "",
    regions: Iterable[str],
) -> ProviderProfile:
    """Submit (or resubmit after a rejection) the organization's provider application."""
    membership_require(user=actor, organization=organization, manage=True)
    regions = list(dict.fromkeys(regions))
    unknown = [code for code in regions if code not in Region.values]
    if not regions or unknown:
        raise DomainError(_("Choose at least one known region."), code="invalid_regions", unknown=unknown)
    profile = ProviderProfile.objects.select_for_update().filter(organization=organization).first()
    if profile is not None and profile.status != ProviderProfile.Status.REJECTED:
        raise Conflict(
            _("This organization already has a provider application (%(status)s).")
            % {"status": profile.get_status_display()},
            code="provider_application_exists",
        )
    profile = profile or ProviderProfile(organization=organization)
    profile.legal_name, profile.contact_name = legal_name.strip(), contact_name.strip()
    profile.contact_email, profile.contact_phone = contact_email.strip().lower(), contact_phone.strip()
    profile.regions, profile.submitted_by = regions, actor
    profile.status, profile.reviewed_by, profile.reviewed_at, profile.review_note = (
        ProviderProfile.Status.PENDING,
        None,
        None,
        "",
    )
    profile.save()
    return profile


def _provider_review(*, profile_id: int, reviewer: User, status: str, note: str) -> ProviderProfile:
    if not reviewer.is_staff:
        raise PermissionDenied(_("Only staff review provider applications."))
    with transaction.atomic():
        profile = ProviderProfile.objects.select_for_update().get(pk=profile_id)
        if profile.status != status:
            profile.status, profile.reviewed_by, profile.reviewed_at, profile.review_note = (
                status,
                reviewer,
                now(),
                note,
            )
            profile.save(update_fields=["status", "reviewed_by", "reviewed_at", "review_note", "updated_at"])
    logger.info("provider reviewed", extra={"provider_profile_id": profile_id, "status": status})
    return profile


def provider_approve(*, profile_id: int, reviewer: User, note: str = "") -> ProviderProfile:
    return _provider_review(profile_id=profile_id, reviewer=reviewer, status=ProviderProfile.Status.APPROVED, note=note)


def provider_reject(*, profile_id: int, reviewer: User, note: str) -> ProviderProfile:
    return _provider_review(profile_id=profile_id, reviewer=reviewer, status=ProviderProfile.Status.REJECTED, note=note)


# --- API keys ---


def api_key_hash(secret: str) -> str:
    return hmac.new(settings.API_KEY_HASH_SECRET.encode(), secret.encode(), hashlib.sha256).hexdigest()


def api_key_create(
    *,
    organization: Organization,
    created_by: User,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None = None,
    granting_key: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its full secret, which is never stored and never shown again.

    A key created through another key may hold only scopes that key holds, may not outlive it and inherits its
    monthly spend limit (no escalation).
    """
    membership = membership_require(user=created_by, organization=organization)
    if membership.role == Membership.Role.BILLING:
        raise PermissionDenied(_("Billing members cannot create API keys."), code="role_required")
    scopes = sorted(set(scopes))
    if not scopes or any(scope not in ApiKey.Scope.values for scope in scopes):
        raise DomainError(_("Choose at least one known scope."), code="invalid_scopes")
    if granting_key is not None and not set(scopes) <= set(granting_key.scopes):
        raise PermissionDenied(
            _("A key cannot grant scopes it does not hold."), code="scope_escalation", held=granting_key.scopes
        )
    if expires_at is not None and expires_at <= now():
        raise DomainError(_("The expiry must be in the future."), code="invalid_expiry")
    if (
        granting_key is not None
        and granting_key.expires_at is not None
        and (expires_at is None or expires_at > granting_key.expires_at)
    ):
        raise PermissionDenied(
            _("A key cannot make a key that outlives it."),
            code="expiry_escalation",
            latest=granting_key.expires_at.isoformat(),
        )
    if not name.strip():
        raise DomainError(_("A key needs a name."), code="name_required")
    secret = secrets.token_urlsafe(API_KEY_SECRET_BYTES)
    for _attempt in range(3):
        prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
        try:
            with transaction.atomic():
                api_key = ApiKey.objects.create(
                    organization=organization,
                    name=name.strip(),
                    prefix=prefix,
                    secret_hash=api_key_hash(secret),
                    scopes=scopes,
                    expires_at=expires_at,
                    created_by=created_by,
                    # a key made by a key spends no more than it may
                    monthly_spend_limit=granting_key.monthly_spend_limit if granting_key else None,
                )
            break
        except IntegrityError:  # a 48-bit prefix collision: draw again
            continue
    else:
        raise Conflict(_("Could not allocate a key id; try again."), code="key_id_collision")
    logger.info("api key created", extra={"organization_id": organization.pk, "api_key_prefix": prefix})
    return api_key, f"mk_{settings.API_KEY_ENVIRONMENT}_{prefix}_{secret}"


def api_key_revoke(*, api_key: ApiKey, actor: User) -> ApiKey:
    membership = membership_require(user=actor, organization=api_key.organization)
    if not membership.can_manage and api_key.created_by_id != actor.pk:
        raise PermissionDenied(_("Only owners, admins and the key's creator can revoke it."), code="role_required")
    if api_key.revoked_at is None:
        ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=now())
        api_key.refresh_from_db(fields=["revoked_at"])
        logger.info("api key revoked", extra={"api_key_prefix": api_key.prefix})
    return api_key


def api_key_verify(*, raw_key: str) -> ApiKey:
    """The active key for `mk_<env>_<id>_<secret>`; AuthenticationFailed with one message for every failure."""
    invalid = AuthenticationFailed(_("Invalid, expired or revoked API key."), code="invalid_api_key")
    parts = raw_key.split("_", 3)
    if len(parts) != 4 or parts[0] != "mk" or parts[1] != settings.API_KEY_ENVIRONMENT:
        raise invalid
    api_key = selectors.api_key_get_by_prefix(prefix=parts[2])
    if api_key is None or not hmac.compare_digest(api_key.secret_hash, api_key_hash(parts[3])):
        raise invalid
    if not api_key.is_active or not api_key.created_by.is_active:
        raise invalid
    moment = now()
    if api_key.last_used_at is None or moment - api_key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=moment)
        api_key.last_used_at = moment
    return api_key


def api_keys_mark_used(*, last_used: dict[int, datetime]) -> None:
    """Record when keys were last used by work done elsewhere (model calls, recorded in batches after the call);
    written at most once per LAST_USED_RESOLUTION per key, and never moved back."""
    for api_key_id, moment in last_used.items():
        ApiKey.objects.filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=moment - LAST_USED_RESOLUTION), pk=api_key_id
        ).update(last_used_at=moment)


# --- Login throttling (shared cache, so every web worker counts the same failures) ---


def _login_failure_keys(*, email: str, ip_address: str) -> dict[str, tuple[str, int]]:
    """Counters per address (stops guessing one password) and per client IP (stops spraying many addresses)."""
    email_digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()
    ip_digest = hashlib.sha256(ip_address.encode()).hexdigest()
    return {
        "email": (f"login-failures:email:{email_digest}", settings.LOGIN_FAILURE_LIMIT),
        "ip": (f"login-failures:ip:{ip_digest}", settings.LOGIN_FAILURE_LIMIT_PER_IP),
    }


def _login_lock_key(counter_key: str) -> str:
    return counter_key.replace("login-failures:", "login-locked:", 1)


def login_attempt_check(*, email: str, ip_address: str) -> None:
    """RateLimited while an address or a client is locked out, whether or not the account exists; its
    `retry_after` is the seconds left of the lockout."""
    lock_keys = [
        _login_lock_key(key) for key, _limit in _login_failure_keys(email=email, ip_address=ip_address).values()
    ]
    locked_until = cache.get_many(lock_keys).values()
    if not locked_until:
        return
    seconds_left = max(1, math.ceil(max(locked_until) - time.time()))
    raise RateLimited(
        _("Too many failed sign-in attempts. Try again in %(minutes)d minutes or reset your password.")
        % {"minutes": math.ceil(seconds_left / 60)},
        code="login_locked",
        retry_after=seconds_left,
    )


def login_failure_record(*, email: str, ip_address: str) -> None:
    """Count a failure; the one that reaches the limit locks the address (or client) for exactly
    LOGIN_LOCKOUT_SECONDS from that moment, in a key of its own written with that timeout. Failures count
    until LOGIN_LOCKOUT_SECONDS pass without one: `touch` re-arms the counter on every backend alike (the file
    and database caches' `incr` would otherwise re-arm it with the cache's default timeout)."""
    lockout = settings.LOGIN_LOCKOUT_SECONDS
    for key, limit in _login_failure_keys(email=email, ip_address=ip_address).values():
        cache.add(key, 0, timeout=lockout)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=lockout)
            count = 1
        cache.touch(key, timeout=lockout)
        if count >= limit:
            cache.set(_login_lock_key(key), time.time() + lockout, timeout=lockout)
            cache.delete(key)  # after the lockout, a fresh count
    logger.warning("sign-in failed", extra={"client_ip": ip_address})


def login_success_record(*, email: str, ip_address: str) -> None:
    """A correct password clears the address's count; the client's count expires on its own."""
    cache.delete(_login_failure_keys(email=email, ip_address=ip_address)["email"][0])


# --- Two-factor sign-in (TOTP through django-otp: its devices, token checks, replay guard and throttling) ---


class TwoFactorInvalidCode(DomainError):
    status_code, code = 400, "two_factor_invalid_code"


def _two_factor_check(*, device: TOTPDevice, token: str) -> None:
    """Check a code on a device; django-otp refuses a code used before and slows down repeated failures."""
    allowed, throttle = device.verify_is_allowed()
    if not allowed:
        seconds_left = 1
        if throttle and throttle.get("locked_until"):
            seconds_left = max(1, math.ceil((throttle["locked_until"] - now()).total_seconds()))
        raise RateLimited(
            _("Too many wrong codes. Try again in %(seconds)d seconds.") % {"seconds": seconds_left},
            code="two_factor_throttled",
            retry_after=seconds_left,
        )
    if not device.verify_token(token.strip().replace(" ", "")):
        raise TwoFactorInvalidCode(_("That code is not valid. Enter the current 6-digit code from your app."))


@transaction.atomic
def two_factor_enrol_start(*, user: User) -> TOTPDevice:
    """The device being enrolled: an unconfirmed TOTP device with a fresh secret, or the one already shown (a
    reload does not change the secret). Conflict when the user already has a confirmed device."""
    if selectors.two_factor_device_get(user=user) is not None:
        raise Conflict(_("Two-factor sign-in is already on."), code="two_factor_already_enabled")
    device = selectors.two_factor_device_get(user=user, confirmed=False)
    return device or TOTPDevice.objects.create(user=user, name="default", confirmed=False)


def two_factor_enrol_confirm(*, user: User, token: str) -> TOTPDevice:
    """Turn two-factor sign-in on once the user proves the app holds the secret (a current code).
    Raises NotFound without an enrolment in progress, TwoFactorInvalidCode, RateLimited. Not one transaction on
    purpose: a wrong code's throttling count must stay written when the refusal is raised."""
    device = selectors.two_factor_device_get(user=user, confirmed=False)
    if device is None:
        raise NotFound(_("Start the set-up again: no device is being enrolled."), code="two_factor_not_enrolling")
    _two_factor_check(device=device, token=token)
    with transaction.atomic():
        TOTPDevice.objects.filter(pk=device.pk).update(confirmed=True)
        TOTPDevice.objects.filter(user=user, confirmed=False).delete()
    device.confirmed = True
    logger.info("two-factor enabled", extra={"user_id": user.pk})
    return device


def two_factor_verify(*, user: User, token: str) -> TOTPDevice:
    """The second step of sign-in: the user's confirmed device accepts `token`. Raises NotFound (no device),
    TwoFactorInvalidCode, RateLimited."""
    device = selectors.two_factor_device_get(user=user)
    if device is None:
        raise NotFound(_("Two-factor sign-in is not on for this account."), code="two_factor_not_enabled")
    _two_factor_check(device=device, token=token)
    return device


def two_factor_disable(*, user: User, token: str) -> None:
    """Turn two-factor sign-in off; a current code is required, so a stolen session alone cannot."""
    two_factor_verify(user=user, token=token)
    TOTPDevice.objects.filter(user=user).delete()
    logger.info("two-factor disabled", extra={"user_id": user.pk})


def user_profile_update(*, user: User, full_name: str, preferred_language: str) -> User:
    if preferred_language and preferred_language not in dict(settings.LANGUAGES):
        raise DomainError(_("Unknown language."), code="invalid_language")
    user.full_name, user.preferred_language = full_name.strip(), preferred_language
    user.save(update_fields=["full_name", "preferred_language"])
    return user


# --- Notifications ---


def notification_send(*, organization: Organization, kind: str, title: str, body: str, link: str = "") -> Notification:
    """An in-app notification, and the same by e-mail to the members who manage billing (after commit)."""
    notification = Notification.objects.create(organization=organization, kind=kind, title=title, body=body, link=link)
    recipients = list(
        organization.memberships.filter(role__in=Membership.BILLING_ROLES, user__is_active=True).values_list(
            "user__email", flat=True
        )
    )
    if recipients:
        message = f"{body}\n\n{settings.SITE_URL.rstrip('/')}{link}" if link else body
        transaction.on_commit(
            lambda: send_mail(title, message, settings.DEFAULT_FROM_EMAIL, recipients, fail_silently=True)
        )
    return notification

"""The app store's writes: sellers list, version, publish and unpublish applications; buyers subscribe and review;
the gateway asks what a call of an application is (trial, subscribed, paid) before it runs it."""

import calendar
import logging
from datetime import datetime
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils.timezone import now
from django.utils.translation import gettext as _

from accounts.models import Organization, User
from accounts.services import membership_require, notification_send
from billing.models import AccountKind, TransactionKind
from billing.money import round_to_minor_unit
from billing.services.holds import fee_split, platform_fee_percent
from billing.services.ledger import InsufficientFunds, ledger_post, organization_account, platform_account
from billing.services.quotas import QuotaExceeded, spend_limits_check
from billing.services.wallets import billing_manager_require
from marketplace.core.errors import Conflict, DomainError, PermissionDenied
from marketplace.models import (
    Application,
    ApplicationReview,
    ApplicationSubscription,
    ApplicationUse,
    ApplicationVersion,
    ModelCall,
    ModelService,
    SubscriptionPayment,
)

logger = logging.getLogger(__name__)

LISTING_FIELDS = {"name", "icon", "tagline", "description", "category"}
# What a seller sets on a version, in the order forms show it.
VERSION_FIELDS = (
    "model_service", "system_prompt", "temperature", "max_tokens", "pricing", "price", "free_trial_calls", "notes",
)  # fmt: skip
Pricing = ApplicationVersion.Pricing


class SubscriptionRequired(DomainError):
    status_code, code = 402, "subscription_required"


def _seller_require(*, user: User, application: Application) -> None:
    """Owners and admins of the selling organization manage its applications; anyone else gets NotFound."""
    membership_require(user=user, organization=application.seller, manage=True)


def _version_check(fields: dict) -> None:
    service: ModelService = fields["model_service"]
    if service.status != ModelService.Status.PUBLISHED or service.modality != ModelService.Modality.CHAT:
        raise DomainError(
            _("An application runs on a published chat model service."),
            code="model_service_unavailable",
            fields={"model_service": [_("Choose a published chat model service.")]},
        )
    price = fields["price"]
    if price < 0:
        raise DomainError(_("The price cannot be negative."), code="invalid_price", fields={"price": [_("≥ 0")]})
    if fields["pricing"] == Pricing.SUBSCRIPTION and (price <= 0 or price != round_to_minor_unit(price)):
        raise DomainError(
            _("A monthly subscription costs a positive amount in whole fen."),
            code="invalid_price",
            fields={"price": [_("A positive amount in whole fen, e.g. 29.90.")]},
        )
    limit = service.max_output_tokens or service.context_length
    if fields.get("max_tokens") and fields["max_tokens"] > limit:
        raise DomainError(
            _("The model answers with at most %(n)d tokens.") % {"n": limit},
            code="invalid_max_tokens",
            fields={"max_tokens": [_("At most %(n)d.") % {"n": limit}]},
        )


@transaction.atomic
def application_create(*, seller: Organization, user: User, slug: str, listing: dict, version: dict) -> Application:
    """A draft application with its first version. Raises Conflict when the slug is taken."""
    membership_require(user=user, organization=seller, manage=True)
    _version_check(version)
    if Application.objects.filter(slug=slug).exists():
        raise Conflict(
            _("The name app:%(slug)s is taken; choose another slug.") % {"slug": slug},
            code="slug_taken",
            fields={"slug": [_("Taken.")]},
        )
    application = Application.objects.create(
        seller=seller, slug=slug, **{key: listing[key] for key in LISTING_FIELDS if key in listing}
    )
    first = ApplicationVersion.objects.create(
        application=application, number=1, **{key: version[key] for key in VERSION_FIELDS if key in version}
    )
    application.current_version = first
    application.save(update_fields=["current_version"])
    logger.info("application created", extra={"application_id": application.pk, "seller_id": seller.pk})
    return application


def application_update_listing(*, application: Application, user: User, listing: dict) -> Application:
    _seller_require(user=user, application=application)
    for key in LISTING_FIELDS & listing.keys():
        setattr(application, key, listing[key])
    application.save()
    return application


@transaction.atomic
def application_version_create(*, application: Application, user: User, version: dict) -> ApplicationVersion:
    """A new version that new calls and new subscriptions get from now on; subscriptions already paid keep theirs
    (and its price) until they renew."""
    _seller_require(user=user, application=application)
    _version_check(version)
    locked = Application.objects.select_for_update().get(pk=application.pk)
    latest = locked.versions.order_by("-number").values_list("number", flat=True).first() or 0
    made = ApplicationVersion.objects.create(
        application=locked, number=latest + 1, **{key: version[key] for key in VERSION_FIELDS if key in version}
    )
    locked.current_version = made
    locked.save(update_fields=["current_version", "updated_at"])
    application.current_version = made
    if made.pricing == Pricing.SUBSCRIPTION:
        _subscribers_tell_price(application=locked, version=made)
    return made


def _subscribers_tell_price(*, application: Application, version: ApplicationVersion) -> None:
    """Tell each active subscriber whose accepted price the new one passes, in the app and by e-mail (after
    commit): it applies only if they accept it before their period ends; otherwise the subscription ends then."""
    subscribers = ApplicationSubscription.objects.filter(
        application=application, status=ApplicationSubscription.Status.ACTIVE, accepted_price__lt=version.price
    ).select_related("organization")
    for subscription in subscribers:
        prices = {"name": application.name, "old": f"{subscription.accepted_price:.2f}", "new": f"{version.price:.2f}"}
        notification_send(
            organization=subscription.organization,
            kind="subscription_price_change",
            title=_("%(name)s: the monthly price rises from %(old)s to %(new)s") % prices,
            body=_(
                "Your subscription renews on %(date)s. It renews at %(new)s only if you accept the new price before "
                "then; otherwise it ends at the end of the period you paid for."
            )
            % {**prices, "date": f"{subscription.period_end:%Y-%m-%d}"},
            link=reverse("storefront:subscription-list"),
        )


@transaction.atomic
def application_status_set(*, application: Application, user: User, status: str) -> Application:
    """Publish (again) or unpublish. An unpublished application takes no calls and renews no subscriptions; those
    paid run to the end of their period."""
    _seller_require(user=user, application=application)
    locked = (
        Application.objects.select_for_update(of=("self",))
        .select_related("current_version__model_service")
        .get(pk=application.pk)
    )
    if status == Application.Status.PUBLISHED:
        service = locked.current_version.model_service
        if service.status != ModelService.Status.PUBLISHED:
            raise Conflict(
                _("Its model service %(name)s is not published; make a version on another one.") % {"name": service},
                code="model_service_unavailable",
            )
        locked.published_at = locked.published_at or now()
    elif status != Application.Status.UNPUBLISHED or locked.status != Application.Status.PUBLISHED:
        raise Conflict(_("Only a published application can be unpublished."), code="invalid_transition")
    locked.status = status
    locked.save(update_fields=["status", "published_at", "updated_at"])
    return locked


def application_used_by(*, application: Application, organization: Organization) -> bool:
    """Whether the organization has had an answer from the application (what entitles it to review)."""
    return ModelCall.objects.filter(application=application, organization=organization, status_code=200).exists()


@transaction.atomic
def application_review_save(
    *, application: Application, organization: Organization, user: User, stars: int, text: str
) -> ApplicationReview:
    """Write or rewrite the organization's review. Only organizations that used the application may review it, never
    its seller; its rating totals change in the same transaction."""
    membership_require(user=user, organization=organization)
    if organization.pk == application.seller_id:
        raise PermissionDenied(_("Sellers cannot review their own applications."), code="own_application")
    if not application_used_by(application=application, organization=organization):
        raise PermissionDenied(
            _("Only organizations that used the application can review it: call it first."), code="not_used"
        )
    if not 1 <= stars <= 5:
        raise DomainError(_("Give 1 to 5 stars."), code="invalid_stars", fields={"stars": [_("1 to 5.")]})
    Application.objects.select_for_update().filter(pk=application.pk).first()  # serialises the rating totals
    review = ApplicationReview.objects.filter(application=application, organization=organization).first()
    if review is None:
        review = ApplicationReview.objects.create(
            application=application, organization=organization, author=user, stars=stars, text=text
        )
        Application.objects.filter(pk=application.pk).update(
            rating_count=F("rating_count") + 1, rating_total=F("rating_total") + stars
        )
    else:
        Application.objects.filter(pk=application.pk).update(rating_total=F("rating_total") + stars - review.stars)
        review.stars, review.text, review.author = stars, text, user
        review.save()
    return review


def month_after(moment: datetime) -> datetime:
    """The same time a calendar month later (the 31st of January → the last day of February)."""
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def _subscription_pay(*, subscription: ApplicationSubscription, period_start: datetime) -> SubscriptionPayment:
    """Charge one period from the buyer's available funds: the seller earns the price less the platform fee. Raises
    InsufficientFunds (nothing written)."""
    seller = subscription.application.seller
    earned, fee = fee_split(amount=subscription.price, fee_percent=platform_fee_percent(provider=seller))
    reference = f"app-subscription:{subscription.pk}:{period_start:%Y%m%d%H%M%S}"
    posted, _created = ledger_post(
        idempotency_key=reference,
        kind=TransactionKind.CAPTURE,
        lines=[
            (organization_account(organization_id=subscription.organization_id, kind=AccountKind.AVAILABLE),
             -subscription.price),
            (organization_account(organization_id=seller.pk, kind=AccountKind.EARNINGS), earned),
            (platform_account(kind=AccountKind.PLATFORM_REVENUE), fee),
        ],
        memo=_("Subscription: %(name)s") % {"name": subscription.application.name},
        organization=subscription.organization,
        reference=reference,
    )  # fmt: skip
    period_end = month_after(period_start)
    subscription.period_start, subscription.period_end = period_start, period_end
    subscription.save(update_fields=["version", "price", "accepted_price", "period_start", "period_end", "updated_at"])
    return SubscriptionPayment.objects.create(
        subscription=subscription,
        organization_id=subscription.organization_id,
        period_start=period_start,
        period_end=period_end,
        amount=subscription.price,
        fee=fee,
        ledger_transaction=posted,
    )


@transaction.atomic
def application_subscribe(
    *, application: Application, organization: Organization, user: User
) -> ApplicationSubscription:
    """Subscribe at the current version's monthly price, the first month paid now. Raises Conflict (not sold by
    subscription, or already subscribed), InsufficientFunds, QuotaExceeded (the monthly spend cap)."""
    billing_manager_require(user=user, organization=organization)
    version = application.current_version
    if application.status != Application.Status.PUBLISHED or version.pricing != Pricing.SUBSCRIPTION:
        raise Conflict(_("This application is not sold by subscription."), code="not_by_subscription")
    if organization.pk == application.seller_id:
        raise Conflict(_("Sellers use their own applications without subscribing."), code="own_application")
    spend_limits_check(organization_id=organization.pk, api_key=None, amount=version.price)
    moment = now()
    try:
        with transaction.atomic():
            subscription = ApplicationSubscription.objects.create(
                application=application, organization=organization, version=version, price=version.price,
                accepted_price=version.price, period_start=moment, period_end=month_after(moment),
            )  # fmt: skip
    except IntegrityError:
        raise Conflict(
            _("Your organization already subscribes to this application."), code="already_subscribed"
        ) from None
    _subscription_pay(subscription=subscription, period_start=moment)
    logger.info("application subscribed", extra={"subscription_id": subscription.pk})
    return subscription


def application_subscription_cancel(*, subscription: ApplicationSubscription, user: User) -> ApplicationSubscription:
    """Stop renewing: it runs to the end of the period paid for."""
    billing_manager_require(user=user, organization=subscription.organization)
    updated = ApplicationSubscription.objects.filter(pk=subscription.pk, status=ApplicationSubscription.Status.ACTIVE)
    if not updated.update(status=ApplicationSubscription.Status.CANCELLED, updated_at=now()):
        raise Conflict(_("This subscription is not active."), code="invalid_transition")
    subscription.refresh_from_db()
    return subscription


@transaction.atomic
def application_subscription_price_accept(
    *, subscription: ApplicationSubscription, user: User, price: Decimal
) -> ApplicationSubscription:
    """Accept the seller's higher monthly price `price` (the one the buyer was shown): renewals pay it from the next
    period on. Raises Conflict when the subscription is not active, nothing awaits acceptance, or the seller's price
    is no longer `price`."""
    billing_manager_require(user=user, organization=subscription.organization)
    locked = (
        ApplicationSubscription.objects.select_for_update(of=("self",))
        .select_related("application__current_version")
        .get(pk=subscription.pk)
    )
    pending = locked.pending_price
    if pending is None:
        raise Conflict(_("No new price awaits your acceptance."), code="no_pending_price")
    if pending != price:
        raise Conflict(
            _("The seller's price is now %(price)s; review it and accept again.") % {"price": f"{pending:.2f}"},
            code="price_changed",
            price=str(pending),
        )
    locked.accepted_price = pending
    locked.save(update_fields=["accepted_price", "updated_at"])
    logger.info("subscription price accepted", extra={"subscription_id": locked.pk, "price": str(pending)})
    return locked


def application_subscriptions_renew(*, moment: datetime | None = None) -> int:
    """Renew every subscription whose period is over, at the current version's price if the buyer accepted it (a
    lower one needs no acceptance), or end it (cancelled, the application unpublished or no longer sold by
    subscription, a higher price not accepted, the monthly spend cap passed, funds short). Each in its own
    transaction; a period is paid at most once, so a second run changes nothing. Returns how many were renewed."""
    moment = moment or now()
    renewed = 0
    due = ApplicationSubscription.objects.filter(period_end__lte=moment).exclude(
        status=ApplicationSubscription.Status.ENDED
    )
    for subscription_id in due.values_list("pk", flat=True).iterator():
        renewed += _subscription_renew(subscription_id=subscription_id, moment=moment)
    return renewed


@transaction.atomic
def _subscription_renew(*, subscription_id: int, moment: datetime) -> bool:
    subscription = (
        ApplicationSubscription.objects.select_for_update(skip_locked=True, of=("self",))
        .select_related("application__current_version", "application__seller", "organization")
        .filter(pk=subscription_id, period_end__lte=moment)
        .exclude(status=ApplicationSubscription.Status.ENDED)
        .first()
    )
    if subscription is None:
        return False
    application, version = subscription.application, subscription.application.current_version
    Ended = ApplicationSubscription.EndReason
    if subscription.status == ApplicationSubscription.Status.CANCELLED:
        reason = Ended.CANCELLED
    elif application.status != Application.Status.PUBLISHED:
        reason = Ended.UNPUBLISHED
    elif version.pricing != Pricing.SUBSCRIPTION:
        reason = Ended.NOT_BY_SUBSCRIPTION
    elif version.price > subscription.accepted_price:
        reason = Ended.PRICE_NOT_ACCEPTED
    else:
        subscription.version, subscription.price = version, version.price
        subscription.accepted_price = version.price
        try:
            spend_limits_check(
                organization_id=subscription.organization_id, api_key=None, amount=version.price, moment=moment
            )
            with transaction.atomic():
                _subscription_pay(subscription=subscription, period_start=subscription.period_end)
        except QuotaExceeded:
            reason = Ended.SPEND_LIMIT
        except InsufficientFunds:
            reason = Ended.INSUFFICIENT_FUNDS
        else:
            return True
    subscription.status, subscription.end_reason = ApplicationSubscription.Status.ENDED, reason
    subscription.save(update_fields=["status", "end_reason", "updated_at"])
    logger.info("application subscription ended", extra={"subscription_id": subscription.pk, "reason": reason})
    return False


def application_call_admit(*, application_id: int, organization_id: int, seller_id: int, pricing: str,
                           trial_calls: int) -> str:  # fmt: skip
    """What a call of the application is for this caller: "own" (its seller), "subscribed", "trial" (one free call
    taken) or "paid". Raises SubscriptionRequired when it is sold by subscription and the caller has none and no
    trial left."""
    if organization_id == seller_id:
        return "own"
    if (
        pricing == Pricing.SUBSCRIPTION
        and ApplicationSubscription.objects.filter(
            application_id=application_id, organization_id=organization_id, period_end__gt=now()
        )
        .exclude(status=ApplicationSubscription.Status.ENDED)
        .exists()
    ):
        return "subscribed"
    if trial_calls:
        ApplicationUse.objects.get_or_create(application_id=application_id, organization_id=organization_id)
        taken = ApplicationUse.objects.filter(
            application_id=application_id, organization_id=organization_id, trial_calls_used__lt=trial_calls
        ).update(trial_calls_used=F("trial_calls_used") + 1)
        if taken:
            return "trial"
    if pricing == Pricing.SUBSCRIPTION:
        raise SubscriptionRequired(
            _("This application is sold by monthly subscription: subscribe on its page first."),
        )
    return "paid"


def application_trial_give_back(*, application_id: int, organization_id: int) -> None:
    """A trial call that got no answer does not count."""
    ApplicationUse.objects.filter(
        application_id=application_id, organization_id=organization_id, trial_calls_used__gt=0
    ).update(trial_calls_used=F("trial_calls_used") - 1)

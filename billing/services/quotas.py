"""Quotas and budgets: what an organization (and each API key) may hold and spend, checked at admission and
enforced by the metering tick.

Periods are calendar months in the platform's time zone; spend is what usage charges took in the month plus what
model calls through the gateway cost.
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.urls import reverse
from django.utils.timezone import localdate, now
from django.utils.translation import gettext as _

from accounts.models import ApiKey, Organization
from accounts.services import notification_send
from billing.models import OrganizationQuota, SpendAlert, UsageCharge
from billing.money import amount_sum, quantize_amount
from billing.services.statements import day_start, month_after
from marketplace.core.errors import DomainError
from marketplace.core.guarded import GuardedStatement

logger = logging.getLogger(__name__)

ZERO = Decimal(0)


class QuotaExceeded(DomainError):
    """A limit refuses the request. Limits that reset with the month are 429 (retry then); the concurrency
    limit frees up only when rentals end, so it is 403."""

    status_code, code = 429, "quota_exceeded"


class ConcurrencyQuotaExceeded(QuotaExceeded):
    status_code = 403


def quota_get(*, organization_id: int) -> OrganizationQuota:
    """The organization's quota, created with the defaults from settings on first use."""
    quota, _created = OrganizationQuota.objects.get_or_create(
        organization_id=organization_id,
        defaults={
            "max_concurrent_accelerators": settings.QUOTA_DEFAULT_MAX_CONCURRENT_ACCELERATORS,
            "monthly_spend_cap": settings.QUOTA_DEFAULT_MONTHLY_SPEND_CAP,
            "alert_thresholds": list(settings.QUOTA_DEFAULT_ALERT_THRESHOLDS),
        },
    )
    return quota


def period_bounds(moment: datetime) -> tuple[datetime, datetime]:
    """The calendar month (platform time zone) that `moment` falls in, as [start, end)."""
    first = localdate(moment).replace(day=1)
    return day_start(first), day_start(month_after(first))


def _concurrency_exceeded(*, quota: OrganizationQuota, accelerators: int) -> ConcurrencyQuotaExceeded:
    return ConcurrencyQuotaExceeded(
        _("This would use %(want)d accelerators at once; the limit is %(limit)d and %(used)d are in use.")
        % {"want": quota.accelerators_in_use + accelerators, "limit": quota.max_concurrent_accelerators,
           "used": quota.accelerators_in_use},
        limit="max_concurrent_accelerators",
        current=quota.accelerators_in_use,
        maximum=quota.max_concurrent_accelerators,
        resets_at=None,
    )  # fmt: skip


def quota_accelerators_take(*, organization_id: int, accelerators: int) -> None:
    """Count `accelerators` against the concurrency limit, or raise QuotaExceeded (403). One conditional
    UPDATE: parallel admissions cannot pass the limit together."""
    quota = quota_get(organization_id=organization_id)
    taken = OrganizationQuota.objects.filter(
        pk=quota.pk, accelerators_in_use__lte=F("max_concurrent_accelerators") - accelerators
    ).update(accelerators_in_use=F("accelerators_in_use") + accelerators)
    if not taken:
        quota.refresh_from_db()
        raise _concurrency_exceeded(quota=quota, accelerators=accelerators)


# The quota row, if its concurrency limit fits the accelerators and this month's spend plus the amount fit its
# monthly cap: rentals' charges, model calls and subscription payments, as `month_spend` counts them. Parameters:
# organization, accelerators, then organization, month start, month end three times, then the amount.
_MONTH_SPENT_SQL = """(SELECT coalesce(sum(c.amount), 0) FROM billing_usagecharge c
               WHERE c.organization_id = %s AND c.created_at >= %s AND c.created_at < %s)
           + (SELECT coalesce(sum(m.cost), 0) FROM marketplace_modelcall m
               WHERE m.organization_id = %s AND m.created_at >= %s AND m.created_at < %s)
           + (SELECT coalesce(sum(p.amount), 0) FROM marketplace_subscriptionpayment p
               WHERE p.organization_id = %s AND p.created_at >= %s AND p.created_at < %s)"""
QUOTA_CHECK_SQL = f"""SELECT q.id FROM billing_organizationquota q
    WHERE q.organization_id = %s AND q.accelerators_in_use <= q.max_concurrent_accelerators - %s
      AND (q.monthly_spend_cap IS NULL OR {_MONTH_SPENT_SQL} + %s <= q.monthly_spend_cap)"""  # noqa: S608 - the code's SQL, no input
# And the same for one API key's charges and calls and limit. Parameters: organization, start, end, key, twice,
# then amount, limit.
API_KEY_LIMIT_SQL = """ AND (SELECT coalesce(sum(c.amount), 0) FROM billing_usagecharge c
    WHERE c.organization_id = %s AND c.created_at >= %s AND c.created_at < %s AND c.api_key_id = %s)
    + (SELECT coalesce(sum(m.cost), 0) FROM marketplace_modelcall m
    WHERE m.organization_id = %s AND m.created_at >= %s AND m.created_at < %s AND m.api_key_id = %s) + %s <= %s"""


def quota_take_in(
    statement: GuardedStatement,
    *,
    organization_id: int,
    accelerators: int,
    amount: Decimal,
    api_key: ApiKey | None,
    moment: datetime,
) -> None:
    """Add the organization's limits to a guarded statement: its check locks the quota row and passes when the
    accelerators fit the concurrency limit and spending `amount` more keeps this month within the organization's
    cap and the API key's limit (as `quota_accelerators_take` and `spend_limits_check`); its write counts the
    accelerators. The check fails when the quota row is missing too (see `quota_refusal`)."""
    start, end = period_bounds(moment)
    sql, params = QUOTA_CHECK_SQL, [organization_id, accelerators, *[organization_id, start, end] * 3, amount]
    if api_key is not None and api_key.monthly_spend_limit is not None:
        sql += API_KEY_LIMIT_SQL
        params += [*[organization_id, start, end, api_key.pk] * 2, amount, api_key.monthly_spend_limit]
    statement.check("quota", sql + " AND {guard} FOR UPDATE OF q", params)
    statement.write(
        "quota_take",
        """UPDATE billing_organizationquota SET accelerators_in_use = accelerators_in_use + %s
           WHERE id IN (SELECT id FROM quota) AND {guard}""",
        [accelerators],
    )


def quota_refusal(
    *, organization_id: int, accelerators: int, amount: Decimal, api_key: ApiKey | None, moment: datetime
) -> None:
    """Why `quota_take_in`'s check failed: raises the QuotaExceeded of the limit that refuses; returns when the
    quota row was only missing (opened now with the defaults, so the statement can run again)."""
    quota = quota_get(organization_id=organization_id)
    if quota.accelerators_in_use + accelerators > quota.max_concurrent_accelerators:
        raise _concurrency_exceeded(quota=quota, accelerators=accelerators)
    spend_limits_check(organization_id=organization_id, api_key=api_key, amount=amount, moment=moment)


def quota_accelerators_release(*, organization_id: int, accelerators: int) -> None:
    OrganizationQuota.objects.filter(organization_id=organization_id).update(
        accelerators_in_use=F("accelerators_in_use") - accelerators
    )


def month_spend(*, organization_id: int, moment: datetime, api_key_id: int | None = None) -> Decimal:
    """What rentals' usage charges, model calls and (for the organization, not a key) application subscriptions
    cost in the month of `moment`."""
    from marketplace.selectors.applications import subscription_spend
    from marketplace.selectors.model_calls import model_call_spend

    start, end = period_bounds(moment)
    charges = UsageCharge.objects.filter(organization_id=organization_id, created_at__gte=start, created_at__lt=end)
    if api_key_id is not None:
        charges = charges.filter(api_key_id=api_key_id)
    rentals = quantize_amount(charges.aggregate(total=amount_sum("amount", default=ZERO))["total"])
    calls = model_call_spend(organization_id=organization_id, start=start, end=end, api_key_id=api_key_id)
    if api_key_id is not None:
        return rentals + calls
    return rentals + calls + subscription_spend(organization_id=organization_id, start=start, end=end)


def spend_limits_check(
    *, organization_id: int, api_key: ApiKey | None, amount: Decimal, moment: datetime | None = None
) -> None:
    """Raise QuotaExceeded (429, with when the limit resets) if spending `amount` more this month would pass the
    organization's monthly cap or the API key's monthly limit."""
    moment = moment or now()
    quota = quota_get(organization_id=organization_id)
    limits = [("monthly_spend_cap", quota.monthly_spend_cap, None)]
    if api_key is not None:
        limits.append(("api_key_monthly_spend_limit", api_key.monthly_spend_limit, api_key.pk))
    for name, limit, api_key_id in limits:
        if limit is None:
            continue
        spent = month_spend(organization_id=organization_id, moment=moment, api_key_id=api_key_id)
        if spent + amount > limit:
            resets_at = period_bounds(moment)[1]
            raise QuotaExceeded(
                _("This month's spend limit of %(limit)s would be passed (spent %(spent)s, this needs %(amount)s).")
                % {"limit": f"{limit:.2f}", "spent": f"{spent:.2f}", "amount": f"{amount:.2f}"},
                limit=name,
                current=str(spent),
                maximum=str(limit),
                resets_at=resets_at.isoformat(),
                retry_after=max(int((resets_at - moment).total_seconds()), 1),
            )


@dataclass(frozen=True)
class QuotaUse:
    """One limit, what uses it and when it resets (the quota page and `/api/v1/quotas/`)."""

    name: str
    label: str
    limit: Decimal | int | None
    current: Decimal | int
    resets_at: datetime | None


def quota_usage(*, organization: Organization, moment: datetime | None = None) -> list[QuotaUse]:
    moment = moment or now()
    quota = quota_get(organization_id=organization.pk)
    resets_at = period_bounds(moment)[1]
    return [
        QuotaUse(
            "max_concurrent_accelerators",
            _("Concurrent accelerators"),
            quota.max_concurrent_accelerators,
            quota.accelerators_in_use,
            None,
        ),
        QuotaUse(
            "monthly_spend_cap",
            _("Spend this month"),
            quota.monthly_spend_cap,
            month_spend(organization_id=organization.pk, moment=moment),
            resets_at,
        ),
    ]


def spend_cap_room(*, organization_id: int, moment: datetime) -> Decimal | None:
    """What the organization may still commit this month under its cap: the cap less the month's spend and less
    everything it holds (rentals' runways, the gateway's standing hold), never below zero; None without a cap. A
    hold grows no further than this, so what it later charges cannot pass the cap."""
    from billing.selectors import wallet_get

    cap = quota_get(organization_id=organization_id).monthly_spend_cap
    if cap is None:
        return None
    held = wallet_get(organization=Organization.objects.get(pk=organization_id)).held
    return max(cap - month_spend(organization_id=organization_id, moment=moment) - held, ZERO)


def over_spend_limits(*, organization_id: int, moment: datetime) -> tuple[bool, set[int]]:
    """(whether the organization is at or over its monthly cap, ids of its API keys at or over their limit)."""
    quota = quota_get(organization_id=organization_id)
    over_cap = quota.monthly_spend_cap is not None and (
        month_spend(organization_id=organization_id, moment=moment) >= quota.monthly_spend_cap
    )
    limits = dict(
        ApiKey.objects.filter(organization_id=organization_id, monthly_spend_limit__isnull=False).values_list(
            "pk", "monthly_spend_limit"
        )
    )
    if not limits:
        return over_cap, set()
    start, end = period_bounds(moment)
    spent = (
        UsageCharge.objects.filter(api_key_id__in=limits, created_at__gte=start, created_at__lt=end)
        .values("api_key_id")
        .annotate(total=amount_sum("amount"))
    )
    return over_cap, {row["api_key_id"] for row in spent if row["total"] >= limits[row["api_key_id"]]}


def spend_alerts_send(*, organization_id: int, moment: datetime) -> list[SpendAlert]:
    """Alert once per threshold per month (the unique constraint decides), by e-mail and in the app."""
    quota = quota_get(organization_id=organization_id)
    if quota.monthly_spend_cap is None or not quota.alert_thresholds:
        return []
    spent = month_spend(organization_id=organization_id, moment=moment)
    period_start = localdate(moment).replace(day=1)
    sent = []
    for threshold in sorted(quota.alert_thresholds):
        if spent * 100 < quota.monthly_spend_cap * threshold:
            break
        try:
            with transaction.atomic():
                alert = SpendAlert.objects.create(
                    organization_id=organization_id,
                    period_start=period_start,
                    threshold_percent=threshold,
                    spend=spent,
                    cap=quota.monthly_spend_cap,
                )
                notification_send(
                    organization=Organization.objects.get(pk=organization_id),
                    kind="spend_alert",
                    title=_("%(n)d%% of this month's spend cap used") % {"n": threshold},
                    body=_("Spent %(spent)s of the %(cap)s monthly cap.")
                    % {"spent": f"{spent:.2f}", "cap": f"{quota.monthly_spend_cap:.2f}"},
                    link=reverse("billing:quotas"),
                )
        except IntegrityError:
            continue  # already sent this month
        sent.append(alert)
        logger.info("spend alert sent", extra={"organization_id": organization_id, "threshold": threshold})
    return sent

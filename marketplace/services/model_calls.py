"""Model calls after the gateway answered them: written in batches, then captured from the callers' gateway holds.

Each capture run takes up to CAPTURE_BATCH written calls that cost something and no capture has taken, charges them
in one ledger transaction (billing.services.gateway) and marks them with it, all in one database transaction: a
crash leaves them for the next run, and two runs never take the same call (row locks, SKIP LOCKED).
"""

import logging
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

import orjson
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils.timezone import now

from accounts.models import Organization
from accounts.services import api_keys_mark_used
from billing.models import GatewayFunds, Hold
from billing.services.gateway import (
    CallCharge,
    gateway_calls_capture,
    gateway_funds_give_back,
    gateway_funds_held,
    gateway_funds_release,
    gateway_funds_reserve,
)
from billing.services.holds import fee_split, platform_fee_percent
from billing.services.quotas import month_spend
from marketplace.models import ModelCall, RateWindow
from marketplace.selectors.model_calls import model_calls_uncaptured_cost

logger = logging.getLogger(__name__)

CAPTURE_BATCH = 5000
FLUSH_BATCH = 5000
FLUSH_LOCK_SECONDS = 120


def _model_call(record: dict) -> ModelCall:
    return ModelCall(
        call_id=record["call_id"],
        organization_id=record["organization_id"],
        api_key_id=record["api_key_id"],
        model_service_id=record["model_service_id"],
        requested_model=record["requested_model"][:200],
        residency_zone=record["residency_zone"],
        endpoint=record["endpoint"],
        stream=record["stream"],
        status_code=record["status_code"],
        error_code=record["error_code"],
        prompt_tokens=record["prompt_tokens"],
        completion_tokens=record["completion_tokens"],
        tokens_estimated=record["tokens_estimated"],
        usage_clamped=record.get("usage_clamped", False),  # records buffered before the flag have none
        cost=Decimal(record["cost_units"]).scaleb(-8),
        application_id=record.get("application_id"),
        application_version_id=record.get("application_version_id"),
        application_amount=Decimal(record.get("application_units", 0)).scaleb(-8),
        latency_ms=record["latency_ms"],
        first_token_ms=record["first_token_ms"],
        created_at=datetime.fromisoformat(record["created_at"]),
    )


def model_calls_record(*, records: list[dict]) -> None:
    """Write call records (one already written, the same call id, is left as it is) and mark their keys used."""
    calls = [_model_call(record) for record in records]
    ModelCall.objects.bulk_create(calls, ignore_conflicts=True)
    last_used: dict[int, datetime] = {}
    for call in calls:
        if call.api_key_id is not None:
            last_used[call.api_key_id] = max(call.created_at, last_used.get(call.api_key_id, call.created_at))
    api_keys_mark_used(last_used=last_used)


@transaction.atomic
def model_call_settle_in_database(*, record: dict, give_back: Decimal) -> None:
    """The embedded default's settlement: what the call did not cost goes back to its funds, with its record."""
    gateway_funds_give_back(organization_id=record["organization_id"], amount=give_back)
    model_calls_record(records=[record])


@transaction.atomic
def model_call_admit_in_database(
    *,
    organization_id: int,
    amount: Decimal,
    limits,
    tokens: int,
    window: int,
    api_key_id: int,
    spend_limit: Decimal | None,
    spend_cap: Decimal | None = None,
) -> str | tuple[str, str] | None:
    """The embedded default's admission: the call's worst case taken from the gateway funds and the call counted
    against its rate limits, both or neither, if its key's month spend leaves room for it (calls in flight are not
    counted here: they may pass the key's limit by their worst cases together). None when admitted; "funds" when
    the funds are short; "key_spend_limit"; "spend_cap" when the organization's month spend (compute, calls and
    subscriptions) leaves no room for it, whatever its gateway hold still holds; else the refusing limit as
    (bucket, requests|tokens)."""
    if spend_cap is not None and month_spend(organization_id=organization_id, moment=now()) + amount > spend_cap:
        return "spend_cap"
    if spend_limit is not None:
        spent = month_spend(organization_id=organization_id, moment=now(), api_key_id=api_key_id)
        if spent + amount > spend_limit:
            return "key_spend_limit"
    if amount and not gateway_funds_reserve(organization_id=organization_id, amount=amount):
        return "funds"
    refused = rate_window_admit(limits=limits, tokens=tokens, window=window)
    if refused is not None:
        transaction.set_rollback(True)  # the funds stay free
    return refused


def rate_window_admit(*, limits, tokens: int, window: int) -> tuple[str, str] | None:
    """The database's rate-limit check: None when the call fits every limit of this minute (and is counted),
    else (the limit's bucket, requests|tokens). The window rows are locked, so parallel calls count in turn. Runs
    in its caller's transaction."""
    rows = []
    for bucket, _requests_per_minute, _tokens_per_minute in sorted(limits):
        RateWindow.objects.get_or_create(bucket=bucket, window=window)
        rows.append(RateWindow.objects.select_for_update().get(bucket=bucket, window=window))
    by_bucket = {row.bucket: row for row in rows}
    for bucket, requests_per_minute, tokens_per_minute in limits:
        row = by_bucket[bucket]
        if requests_per_minute and row.requests + 1 > requests_per_minute:
            return bucket, "requests"
        if tokens_per_minute and row.tokens + tokens > tokens_per_minute:
            return bucket, "tokens"
    RateWindow.objects.filter(pk__in=[row.pk for row in rows]).update(
        requests=F("requests") + 1, tokens=F("tokens") + tokens
    )
    RateWindow.objects.filter(window__lt=window - 1).delete()
    return None


def model_calls_flush() -> int:
    """Write the calls the gateway buffered in Redis. The buffer is trimmed only after the rows committed, under a
    lock: a crash in between writes them again, which changes nothing (the call ids)."""
    if not settings.GATEWAY_REDIS_URL:
        return 0
    import redis

    from marketplace.gateway.counters import CALLS_BUFFER

    client = redis.Redis.from_url(settings.GATEWAY_REDIS_URL)
    written = 0
    with client.lock("gw:calls:flush", timeout=FLUSH_LOCK_SECONDS, blocking_timeout=0) as held:
        if not held:
            return 0
        while raw := client.lrange(CALLS_BUFFER, 0, FLUSH_BATCH - 1):
            with transaction.atomic():
                model_calls_record(records=[orjson.loads(item) for item in raw])
            client.ltrim(CALLS_BUFFER, len(raw), -1)
            written += len(raw)
    return written


def model_calls_capture() -> int:
    """Capture written calls' costs, a batch per ledger transaction; returns how many calls were captured.

    A batch that fails is captured again one organization at a time: an organization whose calls cannot be
    captured is left out of the rest of this run (its calls wait for the next one) and holds back no one else's."""
    captured, failing = 0, set()
    while True:
        taken, failed = _capture_batch(excluded=failing)
        if not taken and not failed:
            return captured
        captured += taken
        failing |= failed


@transaction.atomic
def _capture_batch(*, excluded: set[int]) -> tuple[int, set[int]]:
    """(calls captured, organizations whose calls could not be)."""
    calls = list(
        ModelCall.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(ledger_transaction__isnull=True, cost__gt=0)
        .exclude(organization_id__in=excluded)
        .select_related("model_service", "application")
        .order_by("pk")[:CAPTURE_BATCH]
    )
    if not calls:
        return 0, set()
    try:
        with transaction.atomic():
            _capture_calls(calls)
        return len(calls), set()
    except Exception:
        logger.exception("model calls batch not captured; capturing each organization alone")
    by_organization: dict[int, list[ModelCall]] = {}
    for call in calls:
        by_organization.setdefault(call.organization_id, []).append(call)
    captured, failed = 0, set()
    for organization_id, own in sorted(by_organization.items()):
        for call in own:  # what the failed attempt set on them is not in the database
            call.fee = call.application_fee = call.ledger_transaction = None
        try:
            with transaction.atomic():
                _capture_calls(own)
            captured += len(own)
        except Exception:
            logger.exception("model calls not captured", extra={"organization_id": organization_id})
            failed.add(organization_id)
    return captured, failed


def _capture_calls(calls: list[ModelCall]) -> None:
    """Charge the calls (one ledger transaction for the plain ones, one each for applications') and mark them."""
    fee_percents: dict[int, Decimal] = {}

    def fee_of(amount: Decimal, earner_id: int) -> Decimal:
        if earner_id not in fee_percents:
            fee_percents[earner_id] = platform_fee_percent(provider=Organization(pk=earner_id))
        return fee_split(amount=amount, fee_percent=fee_percents[earner_id])[1]

    model_charges = []
    for call in calls:
        provider_id = call.model_service.provider_id
        call.fee = fee_of(call.model_cost, provider_id)
        charge = CallCharge(organization_id=call.organization_id, provider_id=provider_id, amount=call.cost,
                            fee=call.fee)  # fmt: skip
        if call.application_id is None:
            model_charges.append(charge)
            continue
        # A call of an application is a ledger transaction of its own: caller, provider, seller and platform.
        call.application_fee = fee_of(call.application_amount, call.application.seller_id)
        charge = replace(charge, seller_id=call.application.seller_id, application_amount=call.application_amount,
                         application_fee=call.application_fee)  # fmt: skip
        call.ledger_transaction = gateway_calls_capture(charges=[charge], idempotency_key=f"app-call:{call.call_id}")
    if model_charges:
        capture = gateway_calls_capture(charges=model_charges, idempotency_key=f"gateway-calls:{uuid.uuid4()}")
        for call in calls:
            if call.application_id is None:
                call.ledger_transaction = capture
    ModelCall.objects.bulk_update(calls, ["fee", "application_fee", "ledger_transaction"], batch_size=1000)
    logger.info("model calls captured", extra={"calls": len(calls)})


def gateway_funds_reconcile() -> list[dict]:
    """Daily, with the ledger's balances: each organization's gateway funds counter (Redis, or the database on the
    embedded default) against its hold. A counter below zero or showing more free than the hold has beyond the calls
    not captured yet is set to that and logged as an error. (Calls in flight have reserved from the counter, so less
    than that is normal.) Returns the mismatches."""
    from marketplace.gateway.counters import funds_reconcile

    url, mismatches = settings.GATEWAY_REDIS_URL, []
    for organization_id in GatewayFunds.objects.order_by("pk").values_list("pk", flat=True):
        if url:
            held_free = gateway_funds_held(organization_id=organization_id) - model_calls_uncaptured_cost(
                organization_id=organization_id
            )
            mismatch = funds_reconcile(url=url, organization_id=organization_id, held_free=held_free)
        else:
            mismatch = gateway_funds_counter_reconcile(organization_id=organization_id)
        if mismatch is not None:
            mismatches.append({"organization_id": organization_id, **mismatch})
            logger.error("gateway funds mismatch", extra={k: str(v) for k, v in mismatches[-1].items()})
    return mismatches


@transaction.atomic
def gateway_funds_counter_reconcile(*, organization_id: int) -> dict | None:
    """The embedded default's counter (`GatewayFunds.available`), under its row lock: see gateway_funds_reconcile."""
    funds = GatewayFunds.objects.select_for_update(of=("self",)).select_related("hold").get(pk=organization_id)
    held = funds.hold.remaining if funds.hold is not None and funds.hold.status == Hold.Status.ACTIVE else Decimal(0)
    derived = max(held - model_calls_uncaptured_cost(organization_id=organization_id), Decimal(0))
    if 0 <= funds.available <= derived:
        return None
    mismatch = {"cached": funds.available, "derived": derived}
    GatewayFunds.objects.filter(pk=organization_id).update(available=derived)
    return mismatch


def gateway_holds_release_idle() -> int:
    """Give back the gateway holds of organizations that made no model call for GATEWAY_HOLD_IDLE_SECONDS, once
    nothing is reserved from them and every call is captured, so idle funds do not stay held. Returns how many were
    released; the next call holds again."""
    from marketplace.gateway.counters import funds_restore, funds_retire

    recent = ModelCall.objects.filter(
        organization_id=OuterRef("pk"), created_at__gte=now() - timedelta(seconds=settings.GATEWAY_HOLD_IDLE_SECONDS)
    )
    idle = GatewayFunds.objects.filter(hold__status=Hold.Status.ACTIVE).exclude(Exists(recent))
    url, released = settings.GATEWAY_REDIS_URL, 0
    for organization_id in idle.values_list("pk", flat=True):
        if not url:
            released += gateway_funds_release(organization_id=organization_id) > 0
            continue
        remaining = gateway_funds_held(organization_id=organization_id)
        epoch = funds_retire(url=url, organization_id=organization_id, remaining=remaining)
        if epoch is None:
            continue
        if gateway_funds_release(organization_id=organization_id, expected_remaining=remaining):
            released += 1
        else:
            funds_restore(url=url, organization_id=organization_id, epoch=epoch, remaining=remaining)
    if released:
        logger.info("idle gateway holds released", extra={"holds": released})
    return released

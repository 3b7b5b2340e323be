"""Rating: a rental's new usage events become a charge at its snapshotted price, captured from its hold.

Rounding rule: each rating of a rental charges Σ accelerator-seconds × price per accelerator-hour / 3600, rounded
half-up to 8 decimal places (the ledger's scale) from the exact product; statements round to the fen only when
printed. A rating charges through the rental's hold; usage beyond it is held first from what the organization can
still spend, and what even that cannot cover is recorded as uncollected.

Which events are rated: a rental's `usage_rated_through` is the largest event id already rated. A rating holds the
rental's row lock, and whoever writes the rental's events holds a lock on its row that conflicts with it (the
lifecycle clock the same lock, reported usage FOR KEY SHARE), from before the events take their ids until they
commit. So while a rating runs, every event of the rental is committed and visible, and any later one gets a larger
id: moving the watermark to the largest id seen loses nothing and counts nothing twice.
"""

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Max, Min
from django.utils.timezone import now
from django.utils.translation import gettext as _

from billing.models import AccountKind, Hold, TransactionKind, UsageCharge, UsageEvent
from billing.money import AMOUNT_PLACES, amount_sum, quantize_amount
from billing.services.holds import capture_fee, hold_capture, hold_increase_what_can_be
from billing.services.ledger import ZERO, platform_account
from billing.services.quotas import spend_cap_room
from marketplace.models import Rental

logger = logging.getLogger(__name__)


class LedgerFloorCrossed(RuntimeError):
    """A programming or data error (held funds short of the holds they back): the rating run rolls back."""


SECONDS_PER_HOUR = 3600
UNITS = 10**AMOUNT_PLACES  # amounts in units of the ledger's last place are integers
# Half-up division by an hour of seconds in those units: ⌊(2·seconds·price + D) / 2D⌋, D = 3600 · UNITS.
DIVISOR = SECONDS_PER_HOUR * UNITS


def usage_cost(*, accelerator_seconds: Decimal, price_per_accelerator_hour: Decimal) -> Decimal:
    """The written rounding rule (module docstring), in integers: a Decimal context would round the product of two
    long amounts before dividing. The rating SQL computes the same integers."""
    seconds_units = int(accelerator_seconds * UNITS)  # exact: both amounts have at most 8 places
    price_units = int(price_per_accelerator_hour * UNITS)
    return Decimal((2 * seconds_units * price_units + DIVISOR) // (2 * DIVISOR)).scaleb(-AMOUNT_PLACES)


def _capture_memo(*, rental_id: int | str, seconds: str) -> str:
    return _("Rental #%(id)s: %(seconds)s accelerator-seconds") % {"id": rental_id, "seconds": seconds}


def rental_rate(*, rental: Rental) -> UsageCharge | None:
    """Charge the rental's events past its watermark at its snapshotted price, from its hold.

    The caller holds the rental's row lock (module docstring); the charge, the capture and the watermark move in
    its transaction, so a crash leaves all of them undone and a rerun does the same work once.
    """
    new = UsageEvent.objects.filter(rental=rental, pk__gt=rental.usage_rated_through)
    totals = new.aggregate(
        quantity=amount_sum("quantity", default=ZERO),
        start=Min("period_start"),
        end=Max("period_end"),
        through=Max("pk"),
        count=Count("pk"),
    )
    if totals["through"] is None:
        return None
    quantity = quantize_amount(totals["quantity"])
    rated = usage_cost(accelerator_seconds=quantity, price_per_accelerator_hour=rental.price_per_accelerator_hour)
    hold = rental.hold
    hold.refresh_from_db()
    if rated > hold.remaining and hold.status == hold.Status.ACTIVE:
        # Usage beyond the runway (ticks missed while the worker was down): hold the rest from funds if there are any,
        # as far as the monthly cap has room (what is not held is not charged: the rental never passes the cap).
        shortfall = rated - hold.remaining
        room = spend_cap_room(organization_id=rental.organization_id, moment=now())
        shortfall = shortfall if room is None else min(shortfall, room)
        if shortfall > 0:
            key = f"usage-shortfall:{rental.pk}:{totals['through']}"
            hold = hold_increase_what_can_be(hold_id=hold.pk, amount=shortfall, idempotency_key=key)
    amount = min(rated, hold.remaining)
    charge = UsageCharge.objects.create(
        organization_id=rental.organization_id,
        rental=rental,
        api_key_id=rental.api_key_id,
        quantity=quantity,
        rated_amount=rated,
        amount=amount,
        period_start=totals["start"],
        period_end=totals["end"],
        events_through=totals["through"],
        event_count=totals["count"],
    )
    if amount > 0:
        charge.ledger_transaction = hold_capture(
            hold_id=hold.pk,
            amount=amount,
            provider=rental.provider,
            idempotency_key=f"usage-charge:{charge.pk}",
            memo=_capture_memo(rental_id=rental.pk, seconds=f"{quantity:f}"),
        )
        charge.fee = capture_fee(transaction_id=charge.ledger_transaction_id)
        charge.save(update_fields=["ledger_transaction", "fee"])
        hold.refresh_from_db()
    rental.charged_amount += amount
    rental.uncollected_amount += rated - amount
    rental.usage_rated_through = totals["through"]
    Rental.objects.filter(pk=rental.pk).update(
        charged_amount=rental.charged_amount,
        uncollected_amount=rental.uncollected_amount,
        usage_rated_through=rental.usage_rated_through,
    )
    if rated > amount:
        uncovered = str(rated - amount)
        logger.warning("usage not covered by the hold", extra={"rental_id": rental.pk, "uncovered": uncovered})
    return charge


def _rental_rate_locked(rental_id: int) -> UsageCharge | None:
    """Rate one rental in a transaction of its own, under its row lock."""
    with transaction.atomic():
        rental = Rental.objects.select_for_update(of=("self",)).select_related("hold", "provider").get(pk=rental_id)
        if rental.hold is None or rental.hold.status != Hold.Status.ACTIVE:
            return None  # settled meanwhile: its ending rated everything
        return rental_rate(rental=rental)


@dataclass(frozen=True)
class RatingRun:
    events: int  # usage events rated
    charges: int


def usage_rate_pending() -> RatingRun:
    """Rate every rental's new usage: the metering tick's rating run (`billing.usage_rate` task).

    PostgreSQL rates all rentals in sets (a few statements whatever their number); other databases rental by
    rental. Idempotent: a rerun, or a run in parallel, finds the watermarks moved and rates nothing twice.
    """
    return _rating_runner()()


def _rating_runner():
    return _rate_in_sets if connection.vendor == "postgresql" else _rate_rental_by_rental


def _rate_each(rental_ids, *, run: RatingRun) -> RatingRun:
    """Rate the rentals one by one, each in its own transaction; `run` is what was rated before."""
    events, charges = run.events, run.charges
    for rental_id in rental_ids:
        charge = _rental_rate_locked(rental_id)
        if charge is not None:
            charges, events = charges + 1, events + charge.event_count
    return RatingRun(events=events, charges=charges)


def _rate_rental_by_rental() -> RatingRun:
    pending = Rental.objects.filter(
        hold__status=Hold.Status.ACTIVE, usage_events__id__gt=F("usage_rated_through")
    ).distinct()
    return _rate_each(pending.values_list("pk", flat=True), run=RatingRun(events=0, charges=0))


# --- PostgreSQL: rating in sets ---
# Each statement handles every rental of the run at once, in temporary tables dropped at commit. Lock order as
# everywhere: rentals, then holds, then ledger accounts in key order.

DROP_TABLES = "DROP TABLE IF EXISTS usage_rating_rental, usage_rating, usage_rating_posting"

# The rentals whose usage can still be charged, locked in id order. Those another transaction holds (events being
# recorded for them, a tick settling one) are skipped, not waited for: the next run rates them.
LOCK_RENTALS = """
CREATE TEMPORARY TABLE usage_rating_rental ON COMMIT DROP AS
SELECT r.id, r.usage_rated_through FROM marketplace_rental r JOIN billing_hold h ON h.id = r.hold_id
WHERE h.status = %(active)s ORDER BY r.id FOR UPDATE OF r SKIP LOCKED"""

# Read after the locks are held (a new snapshot): every event of a locked rental is committed by now. The run reads
# events past the lowest watermark; a rental never rated (watermark 0) counts from just before its first event, so
# that a rental opened since the last run does not make the run read the whole table.
BOUNDS = """
SELECT (SELECT count(*) FROM usage_rating_rental),
       (SELECT min(CASE WHEN l.usage_rated_through > 0 THEN l.usage_rated_through
                        ELSE (SELECT min(e.id) - 1 FROM billing_usageevent e WHERE e.rental_id = l.id) END)
        FROM usage_rating_rental l),
       (SELECT max(id) FROM billing_usageevent)"""

# The rollup: each locked rental's events past its watermark, summed and rated by the rule of `usage_cost`, and the
# platform's fee of it rounded half-up like `fee_split` (multiplying by 0.01 keeps it exact).
# `e.id > %(since)s` (the lowest bound, BOUNDS) lets an incremental run read only the table's newest events; only
# the rentals whose watermark is above it need their own bound, so only those are joined to each event. They are
# read from the rentals table, not from the temporary table of locked rentals (the same values: the rows are
# locked), because a temporary table cannot be read by parallel workers, and the sums over every event of a full
# run take half the time in parallel on two cores. Rentals not locked are dropped after summing.
ROLLUP = f"""
CREATE TEMPORARY TABLE usage_rating ON COMMIT DROP AS
SELECT rated_rental.*, round(rated * fee_percent * 0.01, 8) AS fee, rated <= remaining AS covered
FROM (SELECT u.*, r.organization_id, r.provider_id, r.api_key_id, r.hold_id,
             h.amount - h.captured_amount AS remaining,
             div(2 * (u.quantity * {UNITS}) * (r.price_per_accelerator_hour * {UNITS}) + {DIVISOR}, {2 * DIVISOR})
               * 1e-{AMOUNT_PLACES} AS rated,
             coalesce(pb.platform_fee_percent, %(default_fee)s) AS fee_percent
      FROM (SELECT e.rental_id, sum(e.quantity) AS quantity, count(*) AS events, min(e.period_start) AS period_start,
                   max(e.period_end) AS period_end, max(e.id) AS events_through
            FROM billing_usageevent e
            LEFT JOIN marketplace_rental w ON w.id = e.rental_id AND w.usage_rated_through > %(since)s
            WHERE e.id > %(since)s AND (w.id IS NULL OR e.id > w.usage_rated_through)
            GROUP BY e.rental_id) u
      JOIN usage_rating_rental l ON l.id = u.rental_id
      JOIN marketplace_rental r ON r.id = u.rental_id
      JOIN billing_hold h ON h.id = r.hold_id
      LEFT JOIN billing_providerbilling pb ON pb.organization_id = r.provider_id) rated_rental"""  # noqa: S608

LOCK_HOLDS = "SELECT id FROM billing_hold WHERE id IN (SELECT hold_id FROM usage_rating) ORDER BY id FOR UPDATE"

# What each hold covers becomes a charge; a rental whose usage outgrew its hold is rated alone afterwards (see
# `rental_rate`: it holds more from funds first). Everything the run covers is captured by one ledger transaction,
# whose postings are per account: each buyer's held funds out, each provider's earnings and the platform's fees
# in. Its key names itself, drawn from the sequence in the statement; none when nothing is captured.
CAPTURE = """
INSERT INTO billing_ledgertransaction (id, idempotency_key, kind, memo, organization_id, reference, created_at)
SELECT id, 'usage-rating:' || id, %(capture)s, %(memo)s, NULL, '', %(moment)s
FROM (SELECT nextval(pg_get_serial_sequence('billing_ledgertransaction', 'id')) AS id) k
WHERE EXISTS (SELECT 1 FROM usage_rating WHERE covered AND rated > 0)
RETURNING id"""

EARNINGS_ACCOUNTS = """
INSERT INTO billing_ledgeraccount (organization_id, kind, currency, balance, minimum_balance, created_at)
SELECT DISTINCT provider_id, %(earnings)s, %(currency)s, 0, 0, %(moment)s FROM usage_rating
WHERE covered AND rated > fee
ON CONFLICT DO NOTHING"""

# One line per account, as `hold_capture` splits each charge (a zero line is left out). The accounts are distinct
# across the three parts: buyers' held funds, providers' earnings, the platform's revenue.
POSTINGS = """
CREATE TEMPORARY TABLE usage_rating_posting ON COMMIT DROP AS
SELECT a.id AS account_id, -sum(u.rated) AS amount
FROM usage_rating u JOIN billing_ledgeraccount a
  ON a.organization_id = u.organization_id AND a.kind = %(held)s AND a.currency = %(currency)s
WHERE u.covered GROUP BY a.id HAVING sum(u.rated) <> 0
UNION ALL
SELECT a.id, sum(u.rated - u.fee)
FROM usage_rating u JOIN billing_ledgeraccount a
  ON a.organization_id = u.provider_id AND a.kind = %(earnings)s AND a.currency = %(currency)s
WHERE u.covered GROUP BY a.id HAVING sum(u.rated - u.fee) <> 0
UNION ALL
SELECT %(platform_revenue)s, sum(fee) FROM usage_rating WHERE covered HAVING sum(fee) <> 0"""

LOCK_ACCOUNTS = """
SELECT id FROM billing_ledgeraccount WHERE id IN (SELECT account_id FROM usage_rating_posting) ORDER BY id
FOR UPDATE"""

# Held funds cover every active hold's remainder, so no floor can be crossed here; the condition is the ledger's
# rule all the same, and the caller checks that every account moved.
BALANCES = """
UPDATE billing_ledgeraccount a SET balance = a.balance + p.amount
FROM usage_rating_posting p
WHERE a.id = p.account_id AND (a.minimum_balance IS NULL OR a.balance + p.amount >= a.minimum_balance)"""

WRITES = [
    """INSERT INTO billing_posting (transaction_id, account_id, amount)
       SELECT %(transaction)s::bigint, account_id, amount FROM usage_rating_posting""",
    """INSERT INTO billing_usagecharge (organization_id, rental_id, api_key_id, quantity, rated_amount, amount, fee,
                                       ledger_transaction_id, period_start, period_end, events_through, event_count,
                                       created_at)
       SELECT organization_id, rental_id, api_key_id, quantity, rated, rated, fee,
              CASE WHEN rated > 0 THEN %(transaction)s::bigint END, period_start, period_end, events_through, events,
              %(moment)s
       FROM usage_rating WHERE covered""",
    """UPDATE billing_hold h SET captured_amount = h.captured_amount + u.rated
       FROM usage_rating u WHERE h.id = u.hold_id AND u.covered AND u.rated > 0""",
    # Every locked rental without a shortfall is rated up to the newest event: none of its events can be newer.
    """UPDATE marketplace_rental r
       SET charged_amount = r.charged_amount + coalesce(u.rated, 0),
           usage_rated_through = greatest(r.usage_rated_through, %(newest)s)
       FROM usage_rating_rental l LEFT JOIN usage_rating u ON u.rental_id = l.id
       WHERE r.id = l.id AND coalesce(u.covered, true)
         AND (u.rental_id IS NOT NULL OR r.usage_rated_through < %(newest)s)""",
]


def _rate_in_sets() -> RatingRun:
    moment = now()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(DROP_TABLES)  # left by an earlier run of this same transaction (a caller's, or a test's)
        cursor.execute(LOCK_RENTALS, {"active": Hold.Status.ACTIVE})
        cursor.execute("ANALYZE usage_rating_rental")  # temporary tables have no statistics until analysed
        cursor.execute(BOUNDS)
        locked, since, newest = cursor.fetchone()
        if not locked or newest is None:
            return RatingRun(events=0, charges=0)
        since = newest if since is None else since  # no locked rental has an event: none to rate
        cursor.execute(ROLLUP, {"since": since, "default_fee": settings.PLATFORM_FEE_PERCENT})
        cursor.execute("ANALYZE usage_rating")
        cursor.execute(LOCK_HOLDS)
        names = {
            "moment": moment,
            "currency": settings.PLATFORM_CURRENCY,
            "held": AccountKind.HELD,
            "earnings": AccountKind.EARNINGS,
            "capture": TransactionKind.CAPTURE,
            "platform_revenue": platform_account(kind=AccountKind.PLATFORM_REVENUE).pk,
            "memo": _("Usage charges"),
            "newest": newest,
        }
        cursor.execute(CAPTURE, names)
        captured = cursor.fetchone()
        names["transaction"] = captured[0] if captured else None
        cursor.execute(EARNINGS_ACCOUNTS, names)
        cursor.execute(POSTINGS, names)
        cursor.execute(LOCK_ACCOUNTS)
        accounts = cursor.rowcount
        cursor.execute(BALANCES)
        if cursor.rowcount != accounts:
            raise LedgerFloorCrossed(f"a rating run would take {accounts - cursor.rowcount} account(s) below a floor")
        for statement in WRITES:
            cursor.execute(statement, names)
        cursor.execute("SELECT count(*), coalesce(sum(events), 0)::bigint FROM usage_rating WHERE covered")
        charges, events = cursor.fetchone()
        cursor.execute("SELECT rental_id FROM usage_rating WHERE NOT covered ORDER BY rental_id")
        outgrown = [rental_id for (rental_id,) in cursor.fetchall()]
    # After the commit: each in its own transaction, under its own lock.
    run = _rate_each(outgrown, run=RatingRun(events=events, charges=charges))
    logger.info("usage rated", extra={"events": run.events, "charges": run.charges, "rentals_locked": locked})
    return run

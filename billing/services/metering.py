"""Usage metering: usage events in, idempotent per source, from the platform's clock and from providers' reports.

Whoever writes a rental's events holds a lock on the rental's row until they commit (see billing.services.rating,
which rates them).
"""

import logging
from collections import Counter, namedtuple
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import connection, transaction
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, now
from django.utils.translation import gettext as _
from psycopg.types.datetime import TimestamptzLoader

from accounts.models import ApiKey, Organization
from billing.models import UsageDimension, UsageEvent
from billing.money import quantize_amount
from marketplace.models import Metering, Rental, RentalNode, RentalTransition

logger = logging.getLogger(__name__)

MAX_QUANTITY = Decimal(10) ** 15  # accelerator-seconds in one event: far beyond any real period
# The staging table of a batch's events on PostgreSQL, as (column, type): a valid reported event is the tuple of its
# first columns (STAGED_COLUMNS), the time it was received the last.
STAGING = (("organization_id", "bigint"), ("rental_id", "bigint"), ("node_id", "bigint"), ("source", "varchar(80)"),
           ("idempotency_key", "varchar(200)"), ("dimension", "varchar(32)"), ("quantity", "numeric(24, 8)"),
           ("period_start", "timestamptz"), ("period_end", "timestamptz"), ("received_at", "timestamptz"))  # fmt: skip
STAGED_COLUMNS = tuple(column for column, _type in STAGING[:-1])
RENTAL, NODE, SOURCE, KEY, QUANTITY, START, END = (
    STAGED_COLUMNS.index(column)
    for column in ("rental_id", "node_id", "source", "idempotency_key", "quantity", "period_start", "period_end")
)
COPY_COLUMNS = ", ".join(column for column, _type in STAGING)
COPY_TYPES = [sql_type.split("(")[0] for _column, sql_type in STAGING]  # binary COPY names each by its base type
CREATE_STAGING = "CREATE TEMPORARY TABLE IF NOT EXISTS usage_event_staging ({}) ON COMMIT DELETE ROWS".format(
    ", ".join(f"{column} {sql_type}" for column, sql_type in STAGING)
)
# What could have been delivered bounds what is stored, judged for the whole batch in the statement that inserts it:
# - usage_exceeds_capacity: more accelerator-seconds than the period's length × the accelerators reported for (the
#   node's share of the rental when its agent reports, else the whole rental);
# - usage_outside_running: the period reaches (beyond the clocks' tolerance) before the rental started, after it
#   ended, into a time it was not running (suspended), or, reported by a node's agent, outside the time the node
#   held the rental;
# - usage_overlaps: the period overlaps a stored period of the rental (of the same node, or either without one) that
#   is not this same event, or an earlier period of the batch that passed the checks above.
# The rest are inserted; a key already stored stays a duplicate (ON CONFLICT), and only refusals and new keys return.
STAGED_JUDGE_AND_INSERT = f"""
WITH batch_rentals AS MATERIALIZED (  -- locked by the batch (RENTALS_REPORTED_LOCKED): no one changes them meanwhile
    SELECT id, accelerators, started_at, ended_at FROM marketplace_rental WHERE id = ANY(%(rental_ids)s)
),
not_running AS MATERIALIZED (
    SELECT * FROM (
        SELECT t.rental_id, t.to_status, t.at AS since,
               lead(t.at) OVER (PARTITION BY t.rental_id ORDER BY t.at, t.id) AS until
        FROM marketplace_rentaltransition t WHERE t.rental_id IN (SELECT id FROM batch_rentals)
    ) spans WHERE to_status <> 'running'
),
placed AS MATERIALIZED (  -- each node's latest placement of the rental: its share, and when it held the rental
    SELECT DISTINCT ON (p.rental_id, p.node_id) p.rental_id, p.node_id, p.assigned_at, p.released_at,
           NULLIF(jsonb_array_length(p.accelerator_indices), 0) AS accelerators
    FROM marketplace_rentalnode p WHERE p.rental_id IN (SELECT id FROM batch_rentals)
    ORDER BY p.rental_id, p.node_id, p.assigned_at DESC
),
judged AS MATERIALIZED (  -- once: its refusal is read twice below
    SELECT s.*, CASE
        WHEN s.quantity
            > extract(epoch FROM s.period_end - s.period_start) * COALESCE(placed.accelerators, r.accelerators)
            THEN 'usage_exceeds_capacity'
        WHEN r.started_at IS NULL OR s.period_start < r.started_at - %(tolerance)s
            OR s.period_end > r.ended_at + %(tolerance)s
            OR (s.node_id IS NOT NULL AND (placed.rental_id IS NULL
                                           OR s.period_start < placed.assigned_at - %(tolerance)s
                                           OR s.period_end > placed.released_at + %(tolerance)s))
            OR EXISTS (SELECT 1 FROM not_running x WHERE x.rental_id = s.rental_id
                       AND x.since < s.period_end - %(tolerance)s
                       AND (x.until IS NULL OR x.until > s.period_start + %(tolerance)s))
            THEN 'usage_outside_running'
        WHEN EXISTS (SELECT 1 FROM billing_usageevent e WHERE e.rental_id = s.rental_id
                     AND e.period_end > s.period_start AND e.period_start < s.period_end
                     AND (e.node_id IS NULL OR s.node_id IS NULL OR e.node_id = s.node_id)
                     AND (e.source, e.idempotency_key) <> (s.source, s.idempotency_key))
            THEN 'usage_overlaps'
    END AS refusal
    FROM usage_event_staging s JOIN batch_rentals r ON r.id = s.rental_id
    LEFT JOIN placed ON placed.rental_id = s.rental_id AND placed.node_id = s.node_id
),
checked AS (
    SELECT judged.*, COALESCE(refusal, CASE WHEN max(period_end) FILTER (WHERE refusal IS NULL) OVER (
        PARTITION BY rental_id ORDER BY period_start, idempotency_key ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
    ) > period_start THEN 'usage_overlaps' END) AS verdict
    FROM judged
),
inserted AS (
    INSERT INTO billing_usageevent ({COPY_COLUMNS}) SELECT {COPY_COLUMNS} FROM checked WHERE verdict IS NULL
    ON CONFLICT (source, idempotency_key) DO NOTHING RETURNING idempotency_key
)
SELECT idempotency_key, NULL FROM inserted
UNION ALL SELECT idempotency_key, verdict FROM checked WHERE verdict IS NOT NULL
"""  # noqa: S608 - the code's own names
DIMENSIONS = frozenset(UsageDimension.values)


# --- Lifecycle metering: the platform's clock ---


def _lifecycle_event(*, rental: Rental, key: str, start: datetime, end: datetime) -> UsageEvent:
    """The platform clock's event for the rental's accelerators over [start, end); a replay of the key returns
    the first one (the unique constraint decides)."""
    seconds = Decimal((end - start).total_seconds())
    event, _created = UsageEvent.objects.get_or_create(
        source=UsageEvent.LIFECYCLE_SOURCE,
        idempotency_key=f"rental:{rental.pk}:{key}",
        defaults={
            "organization_id": rental.organization_id,
            "rental": rental,
            "dimension": UsageDimension.ACCELERATOR_SECONDS,
            "quantity": quantize_amount(seconds * rental.accelerators),
            "period_start": start,
            "period_end": end,
        },
    )
    return event


def rental_accrue(*, rental: Rental, moment: datetime) -> UsageEvent | None:
    """Record the accelerator time of a running, clock-metered rental up to `moment` (never past its end).

    The caller holds the rental's row lock. The event's key is the period start, so a replay of the same
    period is refused by the unique constraint and the watermark only moves forward.
    """
    if rental.metering != Metering.LIFECYCLE or rental.status != Rental.Status.RUNNING:
        return None
    end = min(moment, rental.ends_at) if rental.ends_at else moment
    start = rental.metered_until
    if start is None or end <= start:
        return None
    event = _lifecycle_event(rental=rental, key=start.isoformat(), start=start, end=end)
    rental.metered_until = event.period_end
    Rental.objects.filter(pk=rental.pk).update(metered_until=rental.metered_until)
    return event


def rental_commitment_accrue(*, rental: Rental, moment: datetime) -> UsageEvent | None:
    """A reserved term stopped early still pays for the whole term: the rest is one event from `moment`."""
    if not rental.is_reserved or rental.ends_at is None or moment >= rental.ends_at:
        return None
    return _lifecycle_event(rental=rental, key="commitment", start=moment, end=rental.ends_at)


# --- Reported usage: providers and agents ---


@dataclass(frozen=True)
class EventResult:
    index: int
    status: str  # accepted, duplicate or rejected
    idempotency_key: str = ""
    code: str = ""
    message: str = ""


def usage_events_summary(results: list[EventResult]) -> dict:
    """A batch's answer: counts by outcome and a result per event (plain data, already in the documented shape: a
    serializer per result would cost more than the insert)."""
    counts = Counter(result.status for result in results)
    return {
        "accepted": counts["accepted"],
        "duplicates": counts["duplicate"],
        "rejected": counts["rejected"],
        "results": [vars(result) for result in results],
    }


def _rejected(index: int, key: str, code: str, message: str) -> EventResult:
    return EventResult(index=index, status="rejected", idempotency_key=key, code=code, message=message)


MAX_ID = 2**63 - 1


def _rental_id(raw: dict) -> int | None:
    value = raw.get("rental")
    return value if type(value) is int and 0 < value <= MAX_ID else None


def _valid_key(key: object) -> bool:
    if not isinstance(key, str) or not 0 < len(key) <= 200 or "\x00" in key:
        return False
    try:
        key.encode()
    except UnicodeEncodeError:  # a lone surrogate: no database can store it
        return False
    return True


def _parse_time(value: object) -> datetime | None:
    try:
        return parse_datetime(str(value or ""))
    except ValueError:  # well-formed but impossible, e.g. an offset beyond ±24 h
        return None


def _parse_quantity(value: object) -> Decimal | None:
    try:
        quantity = Decimal(str(value))
        if quantity.is_finite() and 0 < quantity < MAX_QUANTITY and quantity == quantize_amount(quantity):
            return quantity
    except InvalidOperation:
        pass
    return None


def _parse_event(
    index: int, raw: object, *, rentals: dict, window: tuple[datetime, datetime], source: str, node_id: int | None
):
    """The event's row (STAGED_COLUMNS) if it is valid, else an EventResult that says why not. `window`: the
    oldest and the latest end a period may have. Whether the period could have been delivered is judged with the
    batch's other events when they are stored (`_events_insert`)."""
    if not isinstance(raw, dict):
        return _rejected(index, "", "invalid", _("Each event must be an object."))
    key = raw.get("idempotency_key")
    if not _valid_key(key):
        message = _("idempotency_key must be a string of 1 to 200 characters.")
        return _rejected(index, "", "invalid_idempotency_key", message)
    rental = rentals.get(_rental_id(raw))
    if rental is None:
        return _rejected(index, key, "rental_not_found", _("No rental of yours with that id."))
    if rental.metering != Metering.REPORTED:
        return _rejected(
            index, key, "metered_by_platform", _("This rental is metered by the platform's clock; do not report it.")
        )
    if raw.get("dimension") not in DIMENSIONS:
        return _rejected(index, key, "invalid_dimension", _("Unknown dimension."))
    quantity = _parse_quantity(raw.get("quantity"))
    if quantity is None:
        message = _("quantity must be a positive number with at most 8 decimals.")
        return _rejected(index, key, "invalid_quantity", message)
    start, end = _parse_time(raw.get("period_start")), _parse_time(raw.get("period_end"))
    if start is None or end is None or is_naive(start) or is_naive(end) or end <= start:
        return _rejected(
            index, key, "invalid_period", _("period_start and period_end must be ISO 8601 times with a zone, in order.")
        )
    if end > window[1]:
        return _rejected(index, key, "period_in_future", _("The period ends in the future."))
    if end < window[0]:
        return _rejected(
            index,
            key,
            "event_too_old",
            _("Events must arrive within %(n)d hours of the period's end.") % {"n": settings.USAGE_EVENT_MAX_AGE_HOURS},
        )
    if rental.status in Rental.ENDED_STATUSES:
        return _rejected(index, key, "rental_settled", _("This rental is settled; no more usage can be charged."))
    return (rental.organization_id, rental.pk, node_id, source, key, raw["dimension"], quantity, start, end)


def _refusal_message(code: str) -> str:
    return {
        "usage_exceeds_capacity": _(
            "The quantity is more than the period's length times the accelerators it is reported for."
        ),
        "usage_outside_running": _("The period is outside the time the rental was running."),
        "usage_overlaps": _("The period overlaps another reported period of the rental."),
    }[code]


def _events_insert(rows: list[tuple], *, rentals: dict, moment: datetime) -> tuple[set[str], dict[str, str]]:
    """Insert the events (rows of STAGED_COLUMNS, one source) that could have been delivered and whose key is new.
    Returns the keys inserted and the refused ones with their codes; replays change nothing, even when the same key
    arrives in parallel (the unique constraint decides). `rentals`: the batch's ReportedRental by id, which the
    caller holds locked against other batches, so that two batches cannot both store overlapping periods.

    PostgreSQL: COPY into a temporary staging table, then one statement that judges every event (STAGED_JUDGE_AND_
    INSERT) and inserts the rest … ON CONFLICT DO NOTHING RETURNING, so each key meets the unique index once (a lookup
    of known keys first would probe that large index twice per event).
    """
    if not rows:
        return set(), {}
    if connection.vendor != "postgresql":  # SQLite: writers are serialised, nothing can come in between
        return _events_judge_and_insert_one_by_one(rows, rentals=rentals, moment=moment)
    with connection.cursor() as cursor:
        cursor.execute(CREATE_STAGING)
        cursor.execute("DELETE FROM usage_event_staging")  # a second batch in the same transaction starts empty
        with (
            connection.wrap_database_errors,
            cursor.cursor.copy(f"COPY usage_event_staging ({COPY_COLUMNS}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(COPY_TYPES)  # binary: half the time of text to format here and to parse there
            for row in rows:
                copy.write_row((*row, moment))
        cursor.execute(
            STAGED_JUDGE_AND_INSERT,
            {"tolerance": _clock_tolerance(), "rental_ids": sorted({row[RENTAL] for row in rows})},
        )
        inserted, refused = set(), {}
        for key, refusal in cursor.fetchall():
            if refusal is None:
                inserted.add(key)
            else:
                refused[key] = refusal
        return inserted, refused


def _seconds(length: timedelta) -> Decimal:
    """A length in seconds, exactly (a float of seconds would round its microseconds)."""
    return Decimal(length // timedelta(microseconds=1)) / 1_000_000


def _within(placement: RentalNode | None, start: datetime, end: datetime, tolerance: timedelta) -> bool:
    """Whether a node's period lies in the time the node held the rental (its placement)."""
    if placement is None or start < placement.assigned_at - tolerance:
        return False
    return placement.released_at is None or end <= placement.released_at + tolerance


def _clock_tolerance() -> timedelta:
    return timedelta(seconds=settings.USAGE_CLOCK_TOLERANCE_SECONDS)


def _events_judge_and_insert_one_by_one(
    rows: list[tuple], *, rentals: dict, moment: datetime
) -> tuple[set[str], dict[str, str]]:
    """The same judgement as STAGED_JUDGE_AND_INSERT, event by event (databases without it: SQLite)."""
    tolerance = _clock_tolerance()
    rental_ids = {row[RENTAL] for row in rows}
    placements = {}  # (rental, node): the node's latest placement of the rental (its share, when it held it)
    for placement in RentalNode.objects.filter(rental_id__in=rental_ids).order_by("assigned_at", "pk"):
        placements[placement.rental_id, placement.node_id] = placement
    not_running = []  # (rental, since, until) of every span the rental spent in another status
    transitions = RentalTransition.objects.filter(rental_id__in=rental_ids).order_by("rental_id", "at", "pk")
    spans = list(transitions.values_list("rental_id", "to_status", "at"))
    for (rental_id, status, since), following in zip(spans, [*spans[1:], None], strict=True):
        if status != Rental.Status.RUNNING:
            until = following[2] if following and following[0] == rental_id else None
            not_running.append((rental_id, since, until))
    earliest = min(row[START] for row in rows)
    stored = list(
        UsageEvent.objects.filter(rental_id__in=rental_ids, period_end__gt=earliest).values_list(
            "rental_id", "node_id", "source", "idempotency_key", "period_start", "period_end"
        )
    )
    recorded = UsageEvent.objects.filter(source=rows[0][SOURCE], idempotency_key__any_of=[r[KEY] for r in rows])
    known = set(recorded.values_list("idempotency_key", flat=True))

    def overlaps(row, others) -> bool:
        return any(
            rental_id == row[RENTAL] and end > row[START] and start < row[END]
            and (node_id is None or row[NODE] is None or node_id == row[NODE])
            and (source, key) != (row[SOURCE], row[KEY])
            for rental_id, node_id, source, key, start, end in others
        )  # fmt: skip

    def refusal(row) -> str | None:
        rental, placement = rentals[row[RENTAL]], placements.get((row[RENTAL], row[NODE]))
        accelerators = (placement and len(placement.accelerator_indices)) or rental.accelerators
        if row[QUANTITY] > _seconds(row[END] - row[START]) * accelerators:
            return "usage_exceeds_capacity"
        if (
            rental.started_at is None
            or row[START] < rental.started_at - tolerance
            or (rental.ended_at is not None and row[END] > rental.ended_at + tolerance)
            or (row[NODE] is not None and not _within(placement, row[START], row[END], tolerance))
            or any(
                rental_id == row[RENTAL]
                and since < row[END] - tolerance
                and (until is None or until > row[START] + tolerance)
                for rental_id, since, until in not_running
            )
        ):
            return "usage_outside_running"
        return "usage_overlaps" if overlaps(row, stored) else None

    inserted, refused, passed = set(), {}, []
    for row in sorted(rows, key=lambda row: (row[RENTAL], row[START], row[KEY])):
        verdict = refusal(row) or ("usage_overlaps" if overlaps(row, passed) else None)
        if verdict:
            refused[row[KEY]] = verdict
            continue
        passed.append((row[RENTAL], row[NODE], row[SOURCE], row[KEY], row[START], row[END]))
        if row[KEY] not in known:
            inserted.add(row[KEY])
    UsageEvent.objects.bulk_create(
        [
            UsageEvent(**dict(zip(STAGED_COLUMNS, row, strict=True)), received_at=moment)
            for row in rows
            if row[KEY] in inserted
        ]
    )
    return inserted, refused


ReportedRental = namedtuple(
    "ReportedRental", ["pk", "organization_id", "metering", "started_at", "ended_at", "status", "accelerators"]
)
# FOR NO KEY UPDATE: batches reporting the same rental take turns, so that each judges its periods against the other's
# stored ones; a rating (FOR UPDATE) of these rentals waits until the events are in, or skips them (module docstring).
RENTALS_REPORTED_LOCKED = """
SELECT id, organization_id, metering, started_at, ended_at, status, accelerators FROM marketplace_rental
WHERE provider_id = %s AND id = ANY(%s) ORDER BY id FOR NO KEY UPDATE"""


def _rentals_reported(*, provider_id: int, rental_ids: set[int]) -> list[ReportedRental]:
    """What validating a batch needs of its rentals, as tuples (model instances would cost more than the events'
    insert). On PostgreSQL the rows are locked until the batch commits; SQLite serialises writers anyway."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # psycopg's own timestamptz loader (C) instead of Django's (Python, several µs a value): both answer in
            # the session's zone, which Django sets to UTC.
            cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
            cursor.execute(RENTALS_REPORTED_LOCKED, [provider_id, sorted(rental_ids)])
            return [ReportedRental(*row) for row in cursor.fetchall()]
    reported = Rental.objects.filter(provider_id=provider_id, pk__in=rental_ids)
    return [ReportedRental(*row) for row in reported.values_list(*ReportedRental._fields)]


@transaction.atomic
def usage_events_record(
    *,
    provider: Organization,
    events: list,
    api_key: ApiKey | None = None,
    moment: datetime | None = None,
    rental_ids: set[int] | None = None,
    node_id: int | None = None,
) -> list[EventResult]:
    """Record a batch of usage events reported by a provider (or its agent) for rentals on its offerings.

    Every event gets a result: accepted, duplicate (its key was recorded before: nothing changes) or rejected
    with a code. Valid events are stored even when others in the batch are rejected; the source is the
    provider, so keys are unique per provider. `rental_ids` narrows what may be reported (a node's agent reports
    only the rentals placed on its node, `node_id`); any other rental is not found. No event is stored beyond what
    could have been delivered: its rental's accelerators (or the node's share) over its period, within the rental's
    running time, overlapping no other period of the rental (or of the node) — each refused with its own code.
    """
    moment = moment or now()
    source = f"provider:{provider.pk}"
    reported = {_rental_id(raw) for raw in events if isinstance(raw, dict)} - {None}
    rental_ids = reported if rental_ids is None else reported & rental_ids
    rentals = {rental.pk: rental for rental in _rentals_reported(provider_id=provider.pk, rental_ids=rental_ids)}
    # Nothing ends later than now (give or take the clocks): a period reported ahead would be billed even if the
    # rental stopped or was suspended before it came.
    window = (moment - timedelta(hours=settings.USAGE_EVENT_MAX_AGE_HOURS), moment + _clock_tolerance())
    results: dict[int, EventResult] = {}
    valid: dict[str, tuple[int, tuple]] = {}  # by key: (index, row)
    for index, raw in enumerate(events):
        parsed = _parse_event(index, raw, rentals=rentals, window=window, source=source, node_id=node_id)
        if isinstance(parsed, EventResult):
            results[index] = parsed
        elif parsed[KEY] in valid:
            results[index] = EventResult(index=index, status="duplicate", idempotency_key=parsed[KEY])
        else:
            valid[parsed[KEY]] = (index, parsed)
    inserted, refused = _events_insert([row for _index, row in valid.values()], rentals=rentals, moment=moment)
    for key, (index, _event) in valid.items():
        if key in refused:
            results[index] = _rejected(index, key, refused[key], _refusal_message(refused[key]))
        else:
            status = "accepted" if key in inserted else "duplicate"
            results[index] = EventResult(index=index, status=status, idempotency_key=key)
    logger.info(
        "usage events recorded",
        extra={
            "provider_id": provider.pk, "received": len(events), "accepted": len(inserted), "refused": len(refused)
        },
    )  # fmt: skip
    return [results[index] for index in range(len(events))]

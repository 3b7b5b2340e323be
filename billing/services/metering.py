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
from marketplace.models import Metering, Rental

logger = logging.getLogger(__name__)

# A reporter's clock may run a little ahead of ours.
CLOCK_SKEW = timedelta(minutes=5)
MAX_QUANTITY = Decimal(10) ** 15  # accelerator-seconds in one event: far beyond any real period
# The staging table of a batch's events on PostgreSQL, as (column, type): a valid reported event is the tuple of its
# first columns (STAGED_COLUMNS), the time it was received the last.
STAGING = (("organization_id", "bigint"), ("rental_id", "bigint"), ("source", "varchar(80)"),
           ("idempotency_key", "varchar(200)"), ("dimension", "varchar(32)"), ("quantity", "numeric(24, 8)"),
           ("period_start", "timestamptz"), ("period_end", "timestamptz"), ("received_at", "timestamptz"))  # fmt: skip
STAGED_COLUMNS = tuple(column for column, _type in STAGING[:-1])
SOURCE, KEY = STAGED_COLUMNS.index("source"), STAGED_COLUMNS.index("idempotency_key")
COPY_COLUMNS = ", ".join(column for column, _type in STAGING)
COPY_TYPES = [sql_type.split("(")[0] for _column, sql_type in STAGING]  # binary COPY names each by its base type
CREATE_STAGING = "CREATE TEMPORARY TABLE IF NOT EXISTS usage_event_staging ({}) ON COMMIT DELETE ROWS".format(
    ", ".join(f"{column} {sql_type}" for column, sql_type in STAGING)
)
STAGED_INSERT = f"""INSERT INTO billing_usageevent ({COPY_COLUMNS}) SELECT {COPY_COLUMNS} FROM usage_event_staging
    ON CONFLICT (source, idempotency_key) DO NOTHING RETURNING idempotency_key"""  # noqa: S608 - the code's own names
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


def _parse_event(index: int, raw: object, *, rentals: dict, window: tuple[datetime, datetime], source: str):
    """The event's row (STAGED_COLUMNS) if it is valid, else an EventResult that says why not. `window`: the
    oldest and the latest end a period may have."""
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
    started = rental.started_at
    if started is None or start < started - CLOCK_SKEW or (rental.ended_at and end > rental.ended_at + CLOCK_SKEW):
        return _rejected(index, key, "outside_rental", _("The period is outside the time the rental ran."))
    if rental.status in Rental.ENDED_STATUSES:
        return _rejected(index, key, "rental_settled", _("This rental is settled; no more usage can be charged."))
    return (rental.organization_id, rental.pk, source, key, raw["dimension"], quantity, start, end)


def _events_insert(rows: list[tuple], *, moment: datetime) -> set[str]:
    """Insert the events (rows of STAGED_COLUMNS, one source) whose key is new and return the keys inserted;
    replays change nothing, even when the same key arrives in parallel (the unique constraint decides).

    PostgreSQL: COPY into a temporary staging table, then one INSERT … ON CONFLICT DO NOTHING RETURNING, so each
    key meets the unique index once (a lookup of known keys first would probe that large index twice per event).
    """
    if not rows:
        return set()
    if connection.vendor != "postgresql":  # SQLite: writers are serialised, nothing can come in between
        recorded = UsageEvent.objects.filter(source=rows[0][SOURCE], idempotency_key__any_of=[r[KEY] for r in rows])
        known = set(recorded.values_list("idempotency_key", flat=True))
        fresh = [row for row in rows if row[KEY] not in known]
        UsageEvent.objects.bulk_create(
            [UsageEvent(**dict(zip(STAGED_COLUMNS, row, strict=True)), received_at=moment) for row in fresh]
        )
        return {row[KEY] for row in fresh}
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
        cursor.execute(STAGED_INSERT)
        return {key for (key,) in cursor.fetchall()}


ReportedRental = namedtuple("ReportedRental", ["pk", "organization_id", "metering", "started_at", "ended_at", "status"])
# FOR KEY SHARE: a rating (FOR UPDATE) of these rentals waits until the events are in, or skips them (module docstring).
RENTALS_REPORTED_LOCKED = """
SELECT id, organization_id, metering, started_at, ended_at, status FROM marketplace_rental
WHERE provider_id = %s AND id = ANY(%s) ORDER BY id FOR KEY SHARE"""


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
) -> list[EventResult]:
    """Record a batch of usage events reported by a provider (or its agent) for rentals on its offerings.

    Every event gets a result: accepted, duplicate (its key was recorded before: nothing changes) or rejected
    with a code. Valid events are stored even when others in the batch are rejected; the source is the
    provider, so keys are unique per provider. `rental_ids` narrows what may be reported (a node's agent reports
    only the rentals placed on its node); any other rental is not found.
    """
    moment = moment or now()
    source = f"provider:{provider.pk}"
    reported = {_rental_id(raw) for raw in events if isinstance(raw, dict)} - {None}
    rental_ids = reported if rental_ids is None else reported & rental_ids
    rentals = {rental.pk: rental for rental in _rentals_reported(provider_id=provider.pk, rental_ids=rental_ids)}
    window = (moment - timedelta(hours=settings.USAGE_EVENT_MAX_AGE_HOURS), moment + CLOCK_SKEW)
    results: dict[int, EventResult] = {}
    valid: dict[str, tuple[int, tuple]] = {}  # by key: (index, row)
    for index, raw in enumerate(events):
        parsed = _parse_event(index, raw, rentals=rentals, window=window, source=source)
        if isinstance(parsed, EventResult):
            results[index] = parsed
        elif parsed[KEY] in valid:
            results[index] = EventResult(index=index, status="duplicate", idempotency_key=parsed[KEY])
        else:
            valid[parsed[KEY]] = (index, parsed)
    inserted = _events_insert([row for _index, row in valid.values()], moment=moment)
    for key, (index, _event) in valid.items():
        status = "accepted" if key in inserted else "duplicate"
        results[index] = EventResult(index=index, status=status, idempotency_key=key)
    logger.info(
        "usage events recorded",
        extra={"provider_id": provider.pk, "received": len(events), "accepted": len(inserted)},
    )
    return [results[index] for index in range(len(events))]

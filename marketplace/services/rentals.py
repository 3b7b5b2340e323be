"""Rentals: admission (capacity, quota and funds in one transaction), the lifecycle, and settling usage.

Lock order, everywhere: the rental row, then the quota row, then holds and ledger accounts (inside the billing
services), then the offering row last. The offering is the row every buyer of a popular offering contends for,
so it is locked as late as possible and held only until the commit. On PostgreSQL an admission is one guarded
statement (marketplace.core.guarded): the quota, the funds and the nodes are checked and locked in that order
and everything is written only if all three pass, in one round trip. Elsewhere it is a transaction of
conditional UPDATEs (check and write in one statement each), the nodes taken by the last one. Either way
parallel admissions cannot oversell, overspend or pass a limit, and a refused one writes nothing.

Billed states: only `running`. Pending, provisioning, suspended and every ended state cost nothing; a reserved
term is the exception that proves it: stopping it early charges the rest of the term it committed to.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NoReturn

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.urls import reverse
from django.utils.timezone import now
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, override

from accounts.models import ApiKey, Organization, User
from accounts.services import notification_send
from billing.models import Hold, UsageCharge
from billing.money import quantize_amount
from billing.selectors import wallet_get
from billing.services.holds import (
    hold_increase,
    hold_increase_what_can_be,
    hold_place,
    hold_place_in,
    hold_refusal,
    hold_release,
)
from billing.services.metering import rental_accrue, rental_commitment_accrue
from billing.services.payouts import usage_charge_refund, usage_charge_refundable
from billing.services.quotas import (
    over_spend_limits,
    quota_accelerators_release,
    quota_accelerators_take,
    quota_refusal,
    quota_take_in,
    spend_alerts_send,
    spend_cap_room,
    spend_limits_check,
)
from billing.services.rating import rental_rate
from marketplace.core.batches import each_on_its_own
from marketplace.core.errors import Conflict, DomainError, NotFound, Unprocessable
from marketplace.core.guarded import Expression, GuardedStatement
from marketplace.core.queries import PreparedQuery
from marketplace.models import Offering, Rental, RentalTransition
from marketplace.selectors.residency import RESIDENCY_PIN_ALLOWS_SQL, residency_pins, residency_zones_allowed
from marketplace.services.nodes import rental_nodes_release
from marketplace.services.placement import offering_price

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
START_TOLERANCE = timedelta(minutes=1)  # a start "now" computed on the client may be a moment in the past
ADMISSION_ATTEMPTS = 3  # a check whose row was missing (opened on first use) or was freed meanwhile runs again


class CapacityExhausted(Conflict):
    code = "capacity_exhausted"


class InvalidTransition(Conflict):
    code = "rental_invalid_transition"


@dataclass(frozen=True)
class RentalRequest:
    offering_id: int
    accelerators: int
    mode: str = Rental.Mode.ON_DEMAND
    hours: int | None = None  # None: open-ended (on-demand and interruptible only)
    starts_at: datetime | None = None  # None: now
    residency_zone: str = ""


# --- Transitions ---


def _transition_new(
    *, rental: Rental, from_status: str, to: str, moment: datetime, reason: str, actor: User | None
) -> RentalTransition:
    """A transition to record. A lazy (platform) reason is stored as its untranslated source text, so each reader
    sees it in their own language (the timeline translates it); a provider's own words are stored as written."""
    with override(None):
        reason = str(reason)[:255]
    return RentalTransition(rental=rental, from_status=from_status, to_status=to, reason=reason, actor=actor, at=moment)


def _rental_transition(
    *, rental: Rental, to: Rental.Status, moment: datetime, reason: str = "", actor: User | None = None
) -> bool:
    """The one path that changes a rental's status; the caller holds the row lock. False: already there."""
    if rental.status == to:
        return False
    if to not in Rental.TRANSITIONS.get(rental.status, set()):
        raise InvalidTransition(
            _("A %(current)s rental cannot become %(target)s.")
            % {"current": rental.get_status_display(), "target": Rental.Status(to).label},
            current=rental.status,
            target=to,
        )
    _transition_new(rental=rental, from_status=rental.status, to=to, moment=moment, reason=reason, actor=actor).save()
    rental.status, rental.status_changed_at = to, moment
    rental.save(update_fields=["status", "status_changed_at", "updated_at"])
    return True


def _rental_lock(rental_id: int, organization: Organization | None = None) -> Rental:
    rentals = Rental.objects.select_for_update(of=("self",)).select_related("hold", "provider")
    if organization is not None:
        rentals = rentals.filter(organization=organization)
    rental = rentals.filter(pk=rental_id).first()
    if rental is None:
        raise NotFound(_("No such rental."), code="rental_not_found")
    return rental


# --- Admission ---


def _admission_hold_amount(*, rental: Rental, hours: int | None) -> Decimal:
    """A reserved term holds the whole term; on-demand and interruptible hold a runway of hours, topped up."""
    if rental.is_reserved:
        return rental.price_per_hour * hours
    runway = settings.RENTAL_RUNWAY_HOURS if hours is None else min(hours, settings.RENTAL_RUNWAY_HOURS)
    return rental.price_per_hour * runway


def _validate_request(*, request: RentalRequest, offering: Offering, moment: datetime) -> tuple[datetime, int | None]:
    """The start and the hours of the rental (a reserved term fixes them), or a specific error."""
    if request.residency_zone and offering.site.residency_zone != request.residency_zone:
        raise Unprocessable(
            _("This offering is in the %(zone)s residency zone, not %(wanted)s.")
            % {"zone": offering.site.get_residency_zone_display(), "wanted": request.residency_zone},
            code="residency_zone_mismatch",
            offering_zone=offering.site.residency_zone,
        )
    starts_at = request.starts_at or moment
    if starts_at < moment - START_TOLERANCE:
        raise DomainError(_("A rental cannot start in the past."), code="invalid_start")
    if starts_at > moment + timedelta(days=settings.RENTAL_MAX_SCHEDULE_DAYS):
        raise DomainError(
            _("A rental can be scheduled at most %(n)d days ahead.") % {"n": settings.RENTAL_MAX_SCHEDULE_DAYS},
            code="invalid_start",
        )
    starts_at = max(starts_at, moment)
    if request.mode in (Rental.Mode.ON_DEMAND, Rental.Mode.INTERRUPTIBLE) and request.hours is None:
        return starts_at, None
    if request.mode.startswith("reserved_"):
        return starts_at, Offering.RESERVED_TERMS[request.mode.removeprefix("reserved_")]
    hours = request.hours
    if (
        hours is None
        or hours < offering.min_rental_hours
        or (offering.max_rental_hours and hours > offering.max_rental_hours)
    ):
        raise DomainError(
            _("This offering rents for %(min)d to %(max)s hours.")
            % {"min": offering.min_rental_hours, "max": offering.max_rental_hours or "∞"},
            code="duration_out_of_range",
        )
    return starts_at, hours


def _specs_snapshot(offering: Offering) -> dict:
    site, accelerator = offering.site, offering.accelerator
    return {
        "offering_name": offering.name,
        "provider_name": offering.provider.name,
        "accelerator": accelerator.name,
        "accelerator_slug": accelerator.slug,
        "accelerator_memory_gb": accelerator.memory_gb,
        "accelerators_per_node": offering.accelerators_per_node,
        "vcpu_per_node": offering.vcpu_per_node,
        "ram_gb_per_node": offering.ram_gb_per_node,
        "disk_gb_per_node": offering.disk_gb_per_node,
        "network_gbps": offering.network_gbps,
        "site": site.name,
        "region": site.region,
        "tier": site.tier,
        "min_rental_hours": offering.min_rental_hours,
        "max_rental_hours": offering.max_rental_hours,
        "runway_hours": settings.RENTAL_RUNWAY_HOURS,
        "resume_grace_minutes": settings.RENTAL_RESUME_GRACE_MINUTES,
        "failure_credit_hours": settings.RENTAL_FAILURE_CREDIT_HOURS,
    }


def _capacity_exhausted(*, free: int, nodes: int) -> NoReturn:
    raise CapacityExhausted(
        _("Only %(free)d nodes of this offering are free; %(wanted)d are needed.") % {"free": free, "wanted": nodes},
        free_nodes=free,
        requested_nodes=nodes,
    )


def _admission_contended() -> Conflict:
    """A check failed and a read then found nothing in the way: what it waited on changed meanwhile."""
    return Conflict(_("The offering changed while it was being rented; please try again."), code="admission_contended")


def _nodes_refusal(*, offering_id: int, nodes: int) -> None:
    """Why the nodes check failed: the offering was withdrawn, or too few nodes are free; returns when enough are
    free again (the statement can run again)."""
    offering = Offering.objects.filter(pk=offering_id).values("status", "capacity_nodes", "rented_nodes").first()
    if offering["status"] != Offering.Status.PUBLISHED:
        raise NotFound(_("No published offering with that id."), code="offering_not_found")
    free = offering["capacity_nodes"] - offering["rented_nodes"]
    if free < nodes:
        _capacity_exhausted(free=free, nodes=nodes)


def _residency_refusal(*, rental: Rental, api_key: ApiKey | None) -> None:
    """Raise if the organization's or the API key's residency pin (the gateway's, one rule for both) excludes the
    offering's zone; returns when it does not (the pin changed meanwhile: the statement can run again)."""
    pins = residency_pins(organization_id=rental.organization_id, api_key_id=api_key.pk if api_key else None)
    allowed = residency_zones_allowed(pins)
    if allowed is not None and rental.residency_zone not in allowed:
        raise Unprocessable(
            _("This offering is in the %(zone)s residency zone; your organization or API key is pinned to %(pins)s.")
            % {"zone": rental.residency_zone, "pins": ", ".join(sorted(pins))},
            code="residency_zone_pinned",
            offering_zone=rental.residency_zone,
            pinned_zones=sorted(pins),
        )


def _nodes_take(*, offering_id: int, nodes: int) -> None:
    """Take the nodes with one conditional UPDATE, as the admission's last statement: the offering row is locked
    from here to the commit only. Raises CapacityExhausted, which rolls the whole admission back."""
    taken = Offering.objects.filter(
        pk=offering_id, status=Offering.Status.PUBLISHED, rented_nodes__lte=F("capacity_nodes") - nodes
    ).update(rented_nodes=F("rented_nodes") + nodes)
    if not taken:
        _nodes_refusal(offering_id=offering_id, nodes=nodes)
        raise _admission_contended()


# Every admission reads its offering: compiled once per process (see PreparedQuery).
_published_offering = PreparedQuery(
    lambda pk: Offering.objects.select_related("site", "accelerator", "provider").filter(
        pk=pk, status=Offering.Status.PUBLISHED
    )[:1],
    integers=("pk",),
)


def rental_create(
    *,
    organization: Organization,
    request: RentalRequest,
    created_by: User | None = None,
    api_key: ApiKey | None = None,
    moment: datetime | None = None,
) -> Rental:
    """Admit a rental: take the nodes, count the accelerators against the quota, hold the funds, snapshot the
    price and specs. All or nothing; raises CapacityExhausted (409), QuotaExceeded (403/429),
    InsufficientFunds (402, with how much is missing), or a DomainError for a request that cannot be sold.

    A scheduled rental takes its nodes at admission: they are its own from then on, so it can never be
    crowded out by the time it starts.
    """
    moment = moment or now()
    offering = next(iter(_published_offering.run(pk=request.offering_id)), None)
    if offering is None:
        raise NotFound(_("No published offering with that id."), code="offering_not_found")
    starts_at, hours = _validate_request(request=request, offering=offering, moment=moment)
    estimate = offering_price(offering=offering, accelerators=request.accelerators, hours=hours or 1, mode=request.mode)
    if offering.free_nodes < estimate.nodes:  # as read: refuse early without writing; the real check comes later
        _capacity_exhausted(free=offering.free_nodes, nodes=estimate.nodes)
    rental = Rental(
        organization=organization,
        offering=offering,
        provider=offering.provider,
        created_by=created_by,
        api_key=api_key,
        mode=request.mode,
        nodes=estimate.nodes,
        accelerators=estimate.accelerators,
        price_per_accelerator_hour=estimate.price_per_accelerator_hour,
        specs=_specs_snapshot(offering),
        residency_zone=offering.site.residency_zone,
        metering=offering.metering,
        starts_at=starts_at,
        ends_at=starts_at + timedelta(hours=hours) if hours else None,
        status=Rental.Status.PENDING,
        status_changed_at=moment,
    )
    hold_amount = _admission_hold_amount(rental=rental, hours=hours)
    ordered = _admission_writer()(rental=rental, hold_amount=hold_amount, api_key=api_key, moment=moment)
    rental._prefetched_objects_cache = {"transitions": [ordered]}  # its timeline as written: no query to show it
    if starts_at <= moment:
        transaction.on_commit(provisioning_request)
    logger.info(
        "rental admitted",
        extra={"rental_id": rental.pk, "organization_id": organization.pk, "offering_id": offering.pk},
    )
    return rental


def _admission_hold_texts(*, rental_id: int | str, offering_name: str) -> dict[str, str]:
    """The texts of a rental's hold; with `rental_id="%1$s"` and `%` doubled in the name, a format() template."""
    return {
        "idempotency_key": f"rental-hold:{rental_id}",
        "reference": f"rental:{rental_id}",
        "description": _("Rental #%(id)s: %(name)s") % {"id": rental_id, "name": offering_name},
    }


def _admission_hold_name(*, hold: Hold, rental: Rental) -> None:
    """Give the hold its texts, once the rental has its key."""
    texts = _admission_hold_texts(rental_id=rental.pk, offering_name=rental.offering.name)
    hold.idempotency_key, hold.reference = texts["idempotency_key"], texts["reference"]
    hold.description = texts["description"][:255]


def _admission_hold_expressions(*, rental_key: str, offering_name: str) -> dict[str, Expression]:
    """SQL for the hold's texts when the statement draws the rental's key itself."""
    templates = _admission_hold_texts(rental_id="%1$s", offering_name=offering_name.replace("%", "%%"))
    return {name: (f"left(format(%s::text, {rental_key}), 255)", [template]) for name, template in templates.items()}


def _admission_ordered(rental: Rental) -> RentalTransition:
    return _transition_new(
        rental=rental, from_status="", to=Rental.Status.PENDING, moment=rental.status_changed_at,
        reason=gettext_lazy("Ordered"), actor=rental.created_by,
    )  # fmt: skip


def _admission_writer():
    return _admit_in_one_statement if connection.vendor == "postgresql" else _admit_step_by_step


def _admit_in_one_statement(
    *, rental: Rental, hold_amount: Decimal, api_key: ApiKey | None, moment: datetime
) -> RentalTransition:
    """PostgreSQL: the quota, the funds and the nodes checked and taken, the rental, its first transition and its
    hold written, in one guarded statement (one round trip, no transaction held open by Python; lock order
    quota, ledger accounts, offering). A failed check writes nothing; a read then says why, or opens the row
    that was missing and the statement runs again."""
    hold = Hold(organization_id=rental.organization_id, amount=hold_amount)
    limits = {"organization_id": rental.organization_id, "accelerators": rental.accelerators, "amount": hold_amount,
              "api_key": api_key, "moment": moment}  # fmt: skip
    refusals = {
        "residency": lambda: _residency_refusal(rental=rental, api_key=api_key),
        "quota": lambda: quota_refusal(**limits),
        "funds": lambda: hold_refusal(organization_id=rental.organization_id, amount=hold_amount),
        "nodes": lambda: _nodes_refusal(offering_id=rental.offering_id, nodes=rental.nodes),
    }
    for _attempt in range(ADMISSION_ATTEMPTS):
        statement = GuardedStatement()
        rental_key = statement.key("rental_key", Rental)
        statement.check(
            "residency",
            f"SELECT 1 WHERE {RESIDENCY_PIN_ALLOWS_SQL} AND {{guard}}",
            [rental.organization_id, api_key.pk if api_key else None, rental.residency_zone],
        )
        quota_take_in(statement, **limits)
        hold_texts = _admission_hold_expressions(rental_key=rental_key, offering_name=rental.offering.name)
        hold_id = hold_place_in(statement, hold=hold, expressions=hold_texts)
        statement.check(
            "nodes",
            """SELECT id FROM marketplace_offering
               WHERE id = %s AND status = %s AND rented_nodes <= capacity_nodes - %s AND {guard} FOR UPDATE""",
            [rental.offering_id, Offering.Status.PUBLISHED, rental.nodes],
        )
        ordered = _admission_ordered(rental)
        statement.insert("rental", rental, expressions={"id": rental_key, "hold_id": hold_id})
        statement.insert("ordered", ordered, expressions={"rental_id": rental_key})
        statement.write(
            "nodes_take",
            "UPDATE marketplace_offering SET rented_nodes = rented_nodes + %s WHERE id = %s AND {guard}",
            [rental.nodes, rental.offering_id],
        )
        statement.result("rental_id", rental_key)
        statement.result("hold_id", hold_id)
        failed, results = statement.execute()
        if failed is None:
            rental.pk, hold.pk = results["rental_id"], results["hold_id"]
            _admission_hold_name(hold=hold, rental=rental)  # as the statement wrote them
            ordered.rental, rental.hold = rental, hold
            rental._state.adding, hold._state.adding, ordered._state.adding = False, False, False
            return ordered
        refusals[failed]()
    raise _admission_contended()


@transaction.atomic
def _admit_step_by_step(
    *, rental: Rental, hold_amount: Decimal, api_key: ApiKey | None, moment: datetime
) -> RentalTransition:
    """Other databases (SQLite, the embedded default, serialises writers anyway): the same checks and writes as
    statements of one transaction, the nodes taken last."""
    _residency_refusal(rental=rental, api_key=api_key)
    quota_accelerators_take(organization_id=rental.organization_id, accelerators=rental.accelerators)
    spend_limits_check(organization_id=rental.organization_id, api_key=api_key, amount=hold_amount, moment=moment)
    rental.save()
    ordered = _admission_ordered(rental)
    ordered.save()
    hold = Hold(organization_id=rental.organization_id, amount=hold_amount)
    _admission_hold_name(hold=hold, rental=rental)
    rental.hold = hold_place(
        organization=rental.organization, amount=hold_amount, idempotency_key=hold.idempotency_key,
        reference=hold.reference, description=hold.description,
    )  # fmt: skip
    rental.save(update_fields=["hold"])
    _nodes_take(offering_id=rental.offering_id, nodes=rental.nodes)
    return ordered


# --- Provisioning: the one step the provider agent will replace ---


PROVISIONING_REQUESTED = "rentals:provisioning-requested"
PROVISIONING_REQUEST_SECONDS = 10  # a lost request is made again after this (and the minute tick provisions anyway)


def provisioning_request() -> None:
    """Ask the worker to bring up the rentals that are due: one task serves a burst of admissions. The first
    admission enqueues it; the task clears the mark before it reads what is due, so an admission committed after
    that read enqueues the next one."""
    if cache.add(PROVISIONING_REQUESTED, True, timeout=PROVISIONING_REQUEST_SECONDS):
        from marketplace.tasks import rentals_provision_due_task

        rentals_provision_due_task.delay()


def _due_to_start(moment: datetime):
    return Rental.objects.filter(status=Rental.Status.PENDING, starts_at__lte=moment)


def rentals_provision_due(*, moment: datetime | None = None) -> int:
    """Provision every pending rental whose start is due, each in its own transaction; returns how many."""
    cache.delete(PROVISIONING_REQUESTED)
    moment = moment or now()
    due = list(_due_to_start(moment).values_list("pk", flat=True))
    for rental_id in due:
        rental_provision(rental_id=rental_id, moment=moment)
    return len(due)


@transaction.atomic
def rental_provision(*, rental_id: int, moment: datetime | None = None) -> Rental:
    """Bring a due rental's nodes up; the one step the provider agent takes over. On a node-backed offering the
    rental is placed on free live nodes and runs once their agents take it up (`rental_nodes_ready`), or fails
    when too few are left (nothing was delivered, nothing is charged). On an offering without nodes they are taken
    as up at once: pending → provisioning → running, and the platform's clock starts. Idempotent."""
    from marketplace.services.nodes import offering_is_node_backed, rental_nodes_assign

    moment = moment or now()
    rental = _rental_lock(rental_id)
    if rental.status != Rental.Status.PENDING or rental.starts_at > moment:
        return rental
    _rental_transition(
        rental=rental, to=Rental.Status.PROVISIONING, moment=moment, reason=gettext_lazy("Start time reached")
    )
    if not offering_is_node_backed(offering_id=rental.offering_id):
        _rental_running(rental=rental, moment=moment)
    elif not rental_nodes_assign(rental=rental, moment=moment):
        reason = gettext_lazy("Too few of the offering's nodes were live at the start")
        return rental_fail(rental_id=rental.pk, reason=reason, moment=moment)
    return rental


def _rental_running(*, rental: Rental, moment: datetime) -> None:
    _rental_transition(rental=rental, to=Rental.Status.RUNNING, moment=moment, reason=gettext_lazy("Nodes ready"))
    rental.started_at = rental.metered_until = moment
    rental.save(update_fields=["started_at", "metered_until"])


@transaction.atomic
def rental_nodes_ready(*, placement_id: int, moment: datetime | None = None) -> None:
    """A node's agent took up the rental placed on it; once all the rental's nodes have, it runs. Idempotent."""
    from marketplace.models import RentalNode

    moment = moment or now()
    rental_id = RentalNode.objects.filter(pk=placement_id).values_list("rental_id", flat=True).first()
    rental = _rental_lock(rental_id)
    RentalNode.objects.filter(pk=placement_id, ready_at__isnull=True).update(ready_at=moment)
    waiting = RentalNode.objects.filter(rental=rental, released_at__isnull=True, ready_at__isnull=True).exists()
    if rental.status == Rental.Status.PROVISIONING and not waiting:
        _rental_running(rental=rental, moment=moment)


def rental_moved(*, rental_id: int, from_node: str, to_node: str, moment: datetime) -> None:
    """Tell the buyer that a lost node was replaced (the rental keeps running; jobs on the lost node were lost)."""
    rental = Rental.objects.select_related("organization").get(pk=rental_id)
    notification_send(
        organization=rental.organization,
        kind="rental_moved",
        title=_("Rental #%(id)d moved to another node") % {"id": rental.pk},
        body=_("Node %(old)s went offline at %(time)s; the rental continues on node %(new)s. Jobs that were running "
               "there were lost; you are credited for the time lost.")
        % {"old": from_node, "new": to_node, "time": moment.strftime("%Y-%m-%d %H:%M:%S %Z")},
        link=reverse("rentals:detail", args=[rental.pk]),
    )  # fmt: skip


# --- Ending ---


def _nodes_release(rental: Rental) -> None:
    """The last statement of an ending rental's transaction (lock order: the offering row last)."""
    Offering.objects.filter(pk=rental.offering_id).update(rented_nodes=F("rented_nodes") - rental.nodes)


def _rental_end(*, rental: Rental, to: Rental.Status, moment: datetime, reason: str, actor: User | None) -> None:
    """Move a locked rental to an ended state: meter it up to now, free its nodes, charge and release the hold."""
    rental_accrue(rental=rental, moment=moment)  # before the transition: only a running rental accrues
    _rental_transition(rental=rental, to=to, moment=moment, reason=reason, actor=actor)
    if to == Rental.Status.COMPLETED and rental.started_at is not None:
        rental_commitment_accrue(rental=rental, moment=moment)
    rental.ended_at = moment
    rental.save(update_fields=["ended_at"])
    quota_accelerators_release(organization_id=rental.organization_id, accelerators=rental.accelerators)
    rental_rate(rental=rental)
    hold_release(hold_id=rental.hold_id)
    rental_nodes_release(rental=rental, moment=moment, reason=reason)
    _nodes_release(rental)


@transaction.atomic
def rental_cancel(
    *, rental_id: int, organization: Organization | None = None, actor: User | None = None, moment=None
) -> Rental:
    """Cancel before the start: the hold is released in full."""
    moment = moment or now()
    rental = _rental_lock(rental_id, organization)
    if rental.status not in (Rental.Status.PENDING, Rental.Status.PROVISIONING):
        raise InvalidTransition(
            _("Only a rental that has not started can be cancelled; stop it instead."), current=rental.status
        )
    reason = gettext_lazy("Cancelled by the buyer")
    _rental_end(rental=rental, to=Rental.Status.CANCELLED, moment=moment, reason=reason, actor=actor)
    return rental


@transaction.atomic
def rental_stop(
    *, rental_id: int, organization: Organization | None = None, actor: User | None = None, moment=None
) -> Rental:
    """Stop a running or suspended rental: it is charged up to now (a reserved term: the whole term)."""
    moment = moment or now()
    rental = _rental_lock(rental_id, organization)
    if rental.status not in (Rental.Status.RUNNING, Rental.Status.SUSPENDED):
        raise InvalidTransition(
            _("Only a running or suspended rental can be stopped."), current=rental.status, target="completed"
        )
    _rental_end(
        rental=rental,
        to=Rental.Status.COMPLETED,
        moment=moment,
        reason=gettext_lazy("Stopped by the buyer"),
        actor=actor,
    )
    return rental


@transaction.atomic
def rental_complete(*, rental_id: int, reason: str, moment: datetime | None = None) -> Rental:
    """End a rental whose term is over or whose suspension outlasted the grace period. Idempotent."""
    moment = moment or now()
    rental = _rental_lock(rental_id)
    if rental.status == Rental.Status.COMPLETED:
        return rental
    _rental_end(rental=rental, to=Rental.Status.COMPLETED, moment=moment, reason=reason, actor=None)
    return rental


@transaction.atomic
def rental_fail(*, rental_id: int, reason: str, actor: User | None = None, moment: datetime | None = None) -> Rental:
    """A provider fault ended the rental: it is charged only for the time delivered, then credited per the
    published rule (RENTAL_FAILURE_CREDIT_HOURS at its price, at most what it was charged), which comes out of
    the provider's earnings and the platform fee in their proportion."""
    moment = moment or now()
    rental = _rental_lock(rental_id)
    _rental_end(rental=rental, to=Rental.Status.FAILED, moment=moment, reason=reason, actor=actor)
    rental_credit(
        rental_id=rental.pk,
        amount=rental.price_per_hour * settings.RENTAL_FAILURE_CREDIT_HOURS,
        key=f"rental-failure-credit:{rental.pk}",
        reason=_("Compensation for rental #%(id)d (provider fault)") % {"id": rental.pk},
    )
    notification_send(
        organization=rental.organization,
        kind="rental_failed",
        title=_("Rental #%(id)d failed") % {"id": rental.pk},
        body=_("The provider reported a fault: %(reason)s. You pay only for the time delivered, less a credit.")
        % {"reason": reason},
        link=reverse("rentals:detail", args=[rental.pk]),
    )
    return rental


def rental_credit(*, rental_id: int, amount: Decimal, key: str, reason: str) -> Decimal:
    """Give a buyer `amount` back from what its rental was charged, newest charges first, at most what is left to
    refund of each (so never more than it paid); it comes out of the provider's earnings and the platform fee in
    their proportion. `key` names the credit: each charge's refund is idempotent under it. Returns what was given."""
    given = ZERO
    charges = UsageCharge.objects.filter(rental_id=rental_id, ledger_transaction__isnull=False).order_by("-pk")
    for charge in charges:
        if given >= amount:
            break
        part = min(amount - given, usage_charge_refundable(charge_id=charge.pk))
        if part > 0:
            usage_charge_refund(charge_id=charge.pk, amount=part, idempotency_key=f"{key}:{charge.pk}", reason=reason)
            given += part
    return given


@transaction.atomic
def rental_preempt(*, rental_id: int, reason: str, moment: datetime | None = None) -> Rental:
    """Reclaim an interruptible rental's nodes: billing stops now and the buyer is told."""
    moment = moment or now()
    rental = _rental_lock(rental_id)
    if rental.mode != Rental.Mode.INTERRUPTIBLE:
        raise InvalidTransition(_("Only interruptible rentals can be preempted."), current=rental.status)
    _rental_end(rental=rental, to=Rental.Status.PREEMPTED, moment=moment, reason=reason, actor=None)
    notification_send(
        organization=rental.organization,
        kind="rental_preempted",
        title=_("Rental #%(id)d was preempted") % {"id": rental.pk},
        body=_("Its interruptible capacity was reclaimed; billing stopped at %(time)s.")
        % {"time": moment.strftime("%Y-%m-%d %H:%M:%S %Z")},
        link=reverse("rentals:detail", args=[rental.pk]),
    )
    return rental


# --- Suspension and resumption ---


def _suspend(*, rental: Rental, reason: str, moment: datetime) -> None:
    """Suspend a locked running rental: metered and charged up to now; it keeps its nodes for the grace period."""
    rental_accrue(rental=rental, moment=moment)
    rental_rate(rental=rental)
    _rental_transition(
        rental=rental, to=Rental.Status.SUSPENDED, moment=moment, reason=Rental.SuspensionReason(reason).label
    )
    rental.suspension_reason = reason
    rental.save(update_fields=["suspension_reason"])
    notification_send(
        organization=rental.organization,
        kind="rental_suspended",
        title=_("Rental #%(id)d is suspended") % {"id": rental.pk},
        body=_("%(reason)s. It keeps its nodes for %(n)d minutes: top up or raise the limit to resume it.")
        % {"reason": Rental.SuspensionReason(reason).label, "n": settings.RENTAL_RESUME_GRACE_MINUTES},
        link=reverse("rentals:detail", args=[rental.pk]),
    )


@transaction.atomic
def rental_resume(
    *, rental_id: int, organization: Organization | None = None, actor: User | None = None, moment=None
) -> Rental:
    """Resume a suspended rental once funds and limits allow: the runway is held again and the clock restarts."""
    moment = moment or now()
    rental = _rental_lock(rental_id, organization)
    if rental.status != Rental.Status.SUSPENDED:
        raise InvalidTransition(_("Only a suspended rental can be resumed."), current=rental.status, target="running")
    runway = _runway_needed(rental=rental, moment=moment) - rental.hold.remaining
    spend_limits_check(organization_id=rental.organization_id, api_key=rental.api_key, amount=max(runway, ZERO))
    if runway > 0:
        key = f"rental-resume:{rental.pk}:{moment.isoformat()}"
        hold_increase(hold_id=rental.hold_id, amount=runway, idempotency_key=key)
    _rental_transition(
        rental=rental, to=Rental.Status.RUNNING, moment=moment, reason=gettext_lazy("Resumed"), actor=actor
    )
    rental.metered_until, rental.suspension_reason = moment, ""
    rental.save(update_fields=["metered_until", "suspension_reason"])
    return rental


# --- The metering tick ---


def _runway_needed(*, rental: Rental, moment: datetime) -> Decimal:
    """What the hold should cover ahead of `moment`: the runway, or less when the rental ends sooner."""
    seconds = settings.RENTAL_RUNWAY_HOURS * 3600
    if rental.ends_at is not None:
        seconds = min(seconds, max((rental.ends_at - moment).total_seconds(), 0))
    return quantize_amount(rental.price_per_hour * Decimal(seconds) / 3600)


def _runway_top_up(*, rental: Rental, moment: datetime) -> bool:
    """Keep an on-demand or interruptible rental's hold a runway ahead; with too little money, hold what there is,
    and never more than the monthly cap still has room for (charges never pass what is held, so the rental cannot
    overshoot the cap by a tick). True when the cap's room cut the top-up short."""
    needed = _runway_needed(rental=rental, moment=moment) - rental.hold.remaining
    if needed <= 0:
        return False
    room = spend_cap_room(organization_id=rental.organization_id, moment=moment)
    capped = room is not None and room < needed
    needed = quantize_amount(min(needed, room)) if capped else needed
    if needed > 0:
        key = f"rental-runway:{rental.pk}:{rental.metered_until.isoformat()}"
        hold_increase_what_can_be(hold_id=rental.hold_id, amount=needed, idempotency_key=key)
        rental.hold.refresh_from_db()
    return capped


def rentals_settle(*, rental_ids: list[int], moment: datetime | None = None) -> int:
    """Settle each rental in its own transaction (a batch of the metering tick); returns how many settled."""
    return each_on_its_own(
        rental_ids, lambda rental_id: rental_settle(rental_id=rental_id, moment=moment), what="rental settle"
    )


@transaction.atomic
def rental_settle(*, rental_id: int, moment: datetime | None = None) -> Rental:
    """One metering tick of one rental: meter it up to now, rate new usage, keep the runway held, and suspend it
    when the hold cannot cover the next tick or a spend limit is reached. Suspended rentals resume once funds
    and limits allow, and complete after the grace period. Idempotent: a second run at the same moment changes
    nothing, and a crash rolls the whole tick back."""
    moment = moment or now()
    rental = _rental_lock(rental_id)
    if rental.status == Rental.Status.SUSPENDED:
        _suspended_settle(rental=rental, moment=moment)
        return rental
    rental_accrue(rental=rental, moment=moment)
    rental_rate(rental=rental)
    if rental.status != Rental.Status.RUNNING:
        return rental
    over_cap, keys_over = over_spend_limits(organization_id=rental.organization_id, moment=moment)
    if over_cap or rental.api_key_id in keys_over:
        reason = Rental.SuspensionReason.SPEND_CAP if over_cap else Rental.SuspensionReason.API_KEY_LIMIT
        _suspend(rental=rental, reason=reason, moment=moment)
        return rental
    if rental.is_reserved:
        return rental  # the whole term is held
    capped = _runway_top_up(rental=rental, moment=moment)
    next_tick = quantize_amount(rental.price_per_hour * settings.METERING_TICK_SECONDS / 3600)
    if rental.hold.remaining < min(next_tick, _runway_needed(rental=rental, moment=moment)):
        reason = Rental.SuspensionReason.SPEND_CAP if capped else Rental.SuspensionReason.FUNDS
        _suspend(rental=rental, reason=reason, moment=moment)
    return rental


def _suspended_settle(*, rental: Rental, moment: datetime) -> None:
    if moment >= rental.status_changed_at + timedelta(minutes=settings.RENTAL_RESUME_GRACE_MINUTES):
        _rental_end(
            rental=rental,
            to=Rental.Status.COMPLETED,
            moment=moment,
            reason=gettext_lazy("Suspended longer than the grace period"),
            actor=None,
        )
        return
    runway = _runway_needed(rental=rental, moment=moment)
    over_cap, keys_over = over_spend_limits(organization_id=rental.organization_id, moment=moment)
    spendable = wallet_get(organization=rental.organization).spendable + rental.hold.remaining
    if over_cap or rental.api_key_id in keys_over or spendable < runway:
        return
    try:
        with transaction.atomic():
            rental_resume(rental_id=rental.pk, moment=moment)
    except DomainError as error:  # funds moved away in between: try again next tick
        logger.info("suspended rental not resumed", extra={"rental_id": rental.pk, "code": error.code})
    else:
        rental.refresh_from_db()


def metering_tick(*, moment: datetime | None = None) -> list[int]:
    """The ids of the rentals the tick settles: running and suspended ones. (Reported usage of all rentals is
    rated by the rating run, `usage_rate_pending`, on the same schedule; a rental that ended was rated as it ended.)"""
    moment = moment or now()
    active = Rental.objects.filter(status__in=(Rental.Status.RUNNING, Rental.Status.SUSPENDED))
    for organization_id in set(active.values_list("organization_id", flat=True)):
        spend_alerts_send(organization_id=organization_id, moment=moment)
    return sorted(active.values_list("pk", flat=True))


def rental_lifecycle_due(*, moment: datetime | None = None) -> tuple[list[int], list[int]]:
    """(pending rentals whose start is due, running rentals whose term is over)."""
    moment = moment or now()
    due = _due_to_start(moment).values_list("pk", flat=True)
    over = Rental.objects.filter(status=Rental.Status.RUNNING, ends_at__lte=moment).values_list("pk", flat=True)
    return list(due), list(over)

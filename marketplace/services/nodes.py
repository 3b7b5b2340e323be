"""Provider nodes: tokens, registration, benchmarks, heartbeats, the capacity they give their offering, placement of
rentals on them, and what happens when one goes quiet.

An offering with nodes (even if all are retired) is node-backed: its capacity is the number of its live nodes (online,
verified by a benchmark, not held for review), never less than what is rented (rentals admitted before a node was
lost keep their count until they move or end). Placement gives a rental whole nodes when it starts; it runs once
the node's agent has taken it up.

Lock order, everywhere: a node row, then the rental row (through the rentals service), then other nodes, then the
offering row last. A heartbeat writes its node in a transaction of its own before it touches any rental.

Published rules:
- reliability: a node's uptime over the last NODE_RELIABILITY_WINDOW_DAYS days (or since it registered, if later):
  seconds online over seconds in the window; an offering's is the mean of its registered nodes';
- node outage: when a node stops heartbeating for NODE_OFFLINE_AFTER_SECONDS, each rental on it moves to a free
  live node of the same offering, or fails when there is none (charged only for the time delivered, then the
  failure credit of the rentals service); either way it is credited NODE_OUTAGE_CREDIT_MULTIPLIER × its price for
  the time lost, from the node's last heartbeat to the move or failure (at most what it was charged).
"""

import hmac
import logging
import secrets
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Greatest
from django.utils.timezone import now
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, gettext_noop, override

from accounts.models import Organization, User
from accounts.services import api_key_hash
from billing.money import quantize_amount
from marketplace.core.batches import each_on_its_own
from marketplace.core.errors import Conflict, DomainError, NotFound
from marketplace.models import AcceleratorKind, Job, Node, NodeAccelerator, NodeBenchmark, Offering, Rental, RentalNode
from marketplace.models.nodes import NodeStatusChange
from marketplace.selectors.nodes import offering_reliability
from marketplace.services.offerings import provider_require

logger = logging.getLogger(__name__)

TOKEN_PREFIX_BYTES = 6
TOKEN_SECRET_BYTES = 32
RAM_TOLERANCE = Decimal("0.9")  # the OS reports less memory than is installed
PRECISIONS = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")


class InvalidToken(DomainError):
    status_code, code = 401, "invalid_node_token"


# --- Tokens and the console's actions ---


def _token_new() -> tuple[str, str]:
    return secrets.token_hex(TOKEN_PREFIX_BYTES), secrets.token_urlsafe(TOKEN_SECRET_BYTES)


def _provider_offering(*, provider: Organization, offering_id: int) -> Offering:
    offerings = Offering.objects.filter(pk=offering_id, provider=provider)
    offering = offerings.exclude(status=Offering.Status.RETIRED).first()
    if offering is None:
        raise NotFound(_("No offering of yours with that id."), code="offering_not_found")
    return offering


# Why a node's status changed: stored in English, shown in the reader's language (the history translates them).
MADE_IN_CONSOLE = gettext_noop("Made in the console")
REGISTERED = gettext_noop("Registered by its agent")
HEARD_AGAIN = gettext_noop("Its agent was heard from again")
WENT_QUIET = gettext_noop("No heartbeat within the time-out")
RETIRED = gettext_noop("Retired by the provider")


def _status_change(*, node: Node, to: str, moment: datetime, reason: str) -> None:
    NodeStatusChange.objects.create(node=node, from_status=node.status, to_status=to, at=moment, reason=reason)
    node.status, node.status_changed_at = to, moment


def node_create(*, provider: Organization, offering_id: int, name: str, actor: User) -> tuple[Node, str]:
    """A node awaiting its agent, and its token: `mkn_<id>_<secret>`, shown this once, only its hash kept."""
    provider_require(organization=provider)
    offering = _provider_offering(provider=provider, offering_id=offering_id)
    name = name.strip()
    if not name:
        raise DomainError(_("A node needs a name."), code="name_required", fields={"name": [_("A node needs a name.")]})
    for _attempt in range(3):
        prefix, secret = _token_new()
        try:
            with transaction.atomic():
                moment = now()
                node = Node(
                    provider=provider,
                    offering=offering,
                    name=name[:100],
                    token_prefix=prefix,
                    token_hash=api_key_hash(secret),
                    status_changed_at=moment,
                )
                node.save()
                NodeStatusChange.objects.create(node=node, to_status=node.status, at=moment, reason=MADE_IN_CONSOLE)
            break
        except IntegrityError:  # a prefix collision: draw again
            continue
    else:
        raise Conflict(_("Could not allocate a node id; try again."), code="node_id_collision")
    logger.info("node created", extra={"provider_id": provider.pk, "node_id": node.pk, "actor_id": actor.pk})
    return node, f"mkn_{prefix}_{secret}"


def _provider_node(*, provider: Organization, node_id: int, lock: bool = False) -> Node:
    nodes = Node.objects.filter(provider=provider, pk=node_id)
    node = (nodes.select_for_update() if lock else nodes).first()
    if node is None:
        raise NotFound(_("No node of yours with that id."), code="node_not_found")
    return node


@transaction.atomic
def node_token_rotate(*, provider: Organization, node_id: int, actor: User) -> tuple[Node, str]:
    """A new token for a node (the old one stops working at once); the node keeps its identity and history."""
    node = _provider_node(provider=provider, node_id=node_id, lock=True)
    if node.status == Node.Status.RETIRED:
        raise Conflict(_("A retired node gets no new token."), code="node_retired")
    prefix, secret = _token_new()
    node.token_prefix, node.token_hash = prefix, api_key_hash(secret)
    node.save(update_fields=["token_prefix", "token_hash", "updated_at"])
    logger.info("node token rotated", extra={"node_id": node.pk, "actor_id": actor.pk})
    return node, f"mkn_{prefix}_{secret}"


@transaction.atomic
def node_benchmark_request(*, provider: Organization, node_id: int) -> Node:
    """Ask the node's agent to benchmark again at its next heartbeat (when no job is running)."""
    node = _provider_node(provider=provider, node_id=node_id, lock=True)
    if node.status == Node.Status.RETIRED:
        raise Conflict(_("A retired node cannot be benchmarked."), code="node_retired")
    node.benchmark_requested_at = now()
    node.save(update_fields=["benchmark_requested_at", "updated_at"])
    return node


@transaction.atomic
def node_retire(*, provider: Organization, node_id: int, actor: User) -> Node:
    """Take a node out of service for good: its token stops working. A node serving a rental cannot be retired."""
    node = _provider_node(provider=provider, node_id=node_id, lock=True)
    if node.status == Node.Status.RETIRED:
        return node
    if RentalNode.objects.filter(node=node, released_at__isnull=True).exists():
        raise Conflict(_("This node is serving a rental; retire it when the rental has ended."), code="node_in_use")
    _status_change(node=node, to=Node.Status.RETIRED, moment=now(), reason=RETIRED)
    logger.info("node retired", extra={"node_id": node.pk, "actor_id": actor.pk})
    node.save(update_fields=["status", "status_changed_at", "updated_at"])
    offering_capacity_sync(offering_id=node.offering_id)
    return node


@transaction.atomic
def node_review_clear(*, node_id: int, actor: User) -> Node:
    """Staff vouch for a node held for review (e.g. an accelerator the agent cannot detect, checked by hand): it is
    verified from now and gives capacity while it is online."""
    node = Node.objects.select_for_update().get(pk=node_id)
    if node.status == Node.Status.RETIRED:
        raise Conflict(_("A retired node cannot be cleared."), code="node_retired")
    reasons = "; ".join(r.get("code", "") for r in node.review_reasons)
    node.needs_review, node.review_reasons, node.verified_at = False, [], now()
    node.save(update_fields=["needs_review", "review_reasons", "verified_at", "updated_at"])
    logger.info("node review cleared", extra={"node_id": node.pk, "actor_id": actor.pk, "reasons": reasons})
    _offering_verified_figures(offering_id=node.offering_id)
    offering_capacity_sync(offering_id=node.offering_id)
    return node


def node_authenticate(*, raw_token: str) -> Node:
    """The node for `mkn_<id>_<secret>`; InvalidToken with one message for every failure."""
    invalid = InvalidToken(_("Invalid or retired node token."))
    parts = raw_token.split("_", 2)
    if len(parts) != 3 or parts[0] != "mkn" or not parts[1].isalnum():
        raise invalid
    node = Node.objects.select_related("offering__accelerator", "provider").filter(token_prefix=parts[1]).first()
    if node is None or not hmac.compare_digest(node.token_hash, api_key_hash(parts[2])):
        raise invalid
    if node.status == Node.Status.RETIRED:
        raise invalid
    return node


# --- Capacity ---


def offering_capacity_sync(*, offering_id: int) -> None:
    """A node-backed offering's capacity is its live nodes, never less than what is rented; its reliability is
    refreshed with it (both change with a node's status). The offering row is locked before its nodes are counted,
    so concurrent syncs each count what the previous one committed."""
    offering = Offering.objects.select_for_update().filter(pk=offering_id).first()
    if offering is None or not offering_is_node_backed(offering_id=offering_id):
        return
    live = Node.objects.filter(Node.LIVE, offering_id=offering_id).count()
    Offering.objects.filter(pk=offering_id).update(capacity_nodes=Greatest(Value(live), F("rented_nodes")))
    offering_reliability_refresh(offering_ids=[offering_id])


def offering_reliability_refresh(*, offering_ids: list[int], moment: datetime | None = None) -> None:
    """Keep the offerings' reliability (the mean uptime of their nodes) where ranking reads it."""
    scores = offering_reliability(offering_ids=offering_ids, moment=moment)
    offerings = [
        Offering(pk=pk, reliability=Decimal(scores[pk]).quantize(Decimal("0.0001")) if pk in scores else None)
        for pk in offering_ids
    ]
    Offering.objects.bulk_update(offerings, ["reliability"], batch_size=500)


def offerings_reliability_refresh(*, moment: datetime | None = None) -> int:
    """Every node-backed offering's reliability, as the window moves on (beat, hourly)."""
    offering_ids = sorted(set(Node.objects.values_list("offering_id", flat=True)))
    offering_reliability_refresh(offering_ids=offering_ids, moment=moment)
    return len(offering_ids)


def offering_is_node_backed(*, offering_id: int) -> bool:
    """Once a node was made for an offering, its nodes are its capacity (all retired: none)."""
    return Node.objects.filter(offering_id=offering_id).exists()


# --- Registration ---


def _text(value: object, limit: int) -> str:
    return str(value or "").strip()[:limit]


def _decimal(value: object) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    return number.quantize(Decimal("0.01")) if number.is_finite() and 0 <= number < 10**8 else None


def _count(value: object) -> int | None:
    return value if type(value) is int and 0 <= value < 2**31 else None


def _accelerators_parse(raw: object) -> list[NodeAccelerator]:
    if not isinstance(raw, list):
        raise DomainError(_("accelerators must be a list."), code="invalid")
    accelerators = []
    for item in raw:
        if not isinstance(item, dict) or _count(item.get("index")) is None or not _text(item.get("name"), 120):
            raise DomainError(_("Each accelerator needs an index and a name."), code="invalid")
        accelerators.append(
            NodeAccelerator(
                index=item["index"],
                name=_text(item["name"], 120),
                uuid=_text(item.get("uuid"), 80),
                memory_mib=_count(item.get("memory_mib")),
                driver_version=_text(item.get("driver_version"), 40),
                cuda_version=_text(item.get("cuda_version"), 20),
                compute_capability=_text(item.get("compute_capability"), 10),
                power_limit_w=_decimal(item.get("power_limit_w")),
                mig_enabled=item.get("mig_enabled") is True,
            )
        )
    if len({a.index for a in accelerators}) != len(accelerators):
        raise DomainError(_("Two accelerators have the same index."), code="invalid")
    return accelerators


def _reason(kind: str, code: str, **params) -> dict:
    return {"kind": kind, "code": code, "params": params}


def _hardware_reasons(*, node: Node, accelerators: list[NodeAccelerator], detection_error: str) -> list[dict]:
    """Why the node as registered does not match its offering (empty: it does)."""
    offering, model = node.offering, node.offering.accelerator
    reasons = []
    if detection_error:
        reasons.append(_reason("hardware", "detection_failed", e=detection_error))
    if model.kind != AcceleratorKind.CPU:
        matching = [a for a in accelerators if model.detects(a.name)]
        if not model.detection_pattern:
            reasons.append(_reason("hardware", "undetectable_accelerator", model=str(model)))
        elif len(matching) < offering.accelerators_per_node:
            found = ", ".join(a.name for a in accelerators) or "—"
            n = offering.accelerators_per_node
            reasons.append(_reason("hardware", "accelerators_mismatch", n=n, model=str(model), found=found))
        reasons += [_reason("hardware", "mig_enabled", i=a.index) for a in matching if a.mig_enabled]
    if node.cpu_cores is not None and node.cpu_cores < offering.vcpu_per_node:
        reasons.append(_reason("hardware", "cpu_mismatch", n=offering.vcpu_per_node, m=node.cpu_cores))
    if node.ram_gb is not None and node.ram_gb < offering.ram_gb_per_node * RAM_TOLERANCE:
        reasons.append(_reason("hardware", "ram_mismatch", n=offering.ram_gb_per_node, m=str(node.ram_gb)))
    return reasons


def _review_set(node: Node, *, kind: str, reasons: list[dict]) -> None:
    """Replace the node's review reasons of one kind (hardware or benchmark); the others stay."""
    node.review_reasons = [r for r in node.review_reasons if r.get("kind") != kind] + reasons
    node.needs_review = bool(node.review_reasons)


@transaction.atomic
def node_register(*, node_id: int, facts: dict, moment: datetime | None = None) -> Node:
    """Record what the agent found on the node and bring it online. Registering again (an agent restart) updates
    the same node. The hardware is checked against the offering, and a benchmark asked for, the first time and
    whenever the hardware changed; the same hardware again keeps its verdict (a node staff cleared stays cleared)."""
    moment = moment or now()
    node = Node.objects.select_for_update().select_related("offering__accelerator").get(pk=node_id)
    accelerators = _accelerators_parse(facts.get("accelerators", []))
    before = (list(node.accelerators.values_list("index", "uuid", "name")), node.cpu_cores, node.ram_gb)
    node.hostname = _text(facts.get("hostname"), 255)
    node.cpu_model = _text(facts.get("cpu_model"), 255)
    node.cpu_cores = _count(facts.get("cpu_cores"))
    node.ram_gb = _decimal(facts.get("ram_gb"))
    node.disk_gb = _decimal(facts.get("disk_gb"))
    node.os = _text(facts.get("os"), 255)
    node.agent_version = _text(facts.get("agent_version"), 40)
    node.last_heartbeat_at = moment
    node.accelerators.all().delete()
    for accelerator in accelerators:
        accelerator.node = node
    NodeAccelerator.objects.bulk_create(accelerators)
    after = ([(a.index, a.uuid, a.name) for a in accelerators], node.cpu_cores, node.ram_gb)
    detection_error = _text(facts.get("error"), 500)
    if node.registered_at is None or before != after or detection_error:
        reasons = _hardware_reasons(node=node, accelerators=accelerators, detection_error=detection_error)
        _review_set(node, kind="hardware", reasons=reasons)
    if before != after or (node.verified_at is None and not node.benchmarks.exists()):
        node.benchmark_requested_at, node.verified_at = moment, None  # new or other hardware: prove it
    node.registered_at = node.registered_at or moment
    if node.status != Node.Status.ONLINE:
        _status_change(node=node, to=Node.Status.ONLINE, moment=moment, reason=REGISTERED)
    node.save()
    offering_capacity_sync(offering_id=node.offering_id)
    logger.info("node registered", extra={"node_id": node.pk, "accelerators": len(accelerators)})
    return node


# --- Benchmarks ---


def _figure(value: object) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    return number if number.is_finite() and 0 < number < 10**7 else None


def _benchmark_reasons(*, node: Node, benchmark: NodeBenchmark, error: str) -> list[dict]:
    model = node.offering.accelerator
    if error or not benchmark.tflops:
        return [_reason("benchmark", "benchmark_failed", e=error or "—")]
    if model.kind != AcceleratorKind.CPU and benchmark.backend.endswith("(cpu)"):
        return [_reason("benchmark", "gpu_not_benchmarked")]
    if benchmark.below_datasheet:
        share = int(settings.NODE_BENCHMARK_MIN_RATIO * 100)
        precisions = ", ".join(p.upper() for p in benchmark.below_datasheet)
        return [_reason("benchmark", "below_datasheet", share=share, precisions=precisions)]
    return []


@transaction.atomic
def node_benchmark_record(*, node_id: int, figures: dict, moment: datetime | None = None) -> NodeBenchmark:
    """Store a benchmark: per precision the weakest accelerator's figure, its share of the datasheet, and whether it
    is far below. A node whose benchmark passes is verified (and gives capacity); the offering shows the figures."""
    moment = moment or now()
    node = Node.objects.select_for_update().select_related("offering__accelerator").get(pk=node_id)
    devices = figures.get("devices") if isinstance(figures.get("devices"), list) else []
    devices = [d for d in devices if isinstance(d, dict)][:64]
    tflops: dict[str, Decimal] = {}
    for device in devices:
        measured = device.get("tflops") if isinstance(device.get("tflops"), dict) else {}
        for precision in PRECISIONS:
            value = _figure(measured.get(precision))
            if value is not None:
                tflops[precision] = min(tflops.get(precision, value), value)
    bandwidths = [b for b in (_figure(d.get("memory_bandwidth_gbps")) for d in devices) if b is not None]
    # Precisions the agent measured with a kernel that is not the card's best (e.g. int8 through a generic
    # kernel): shown against the datasheet, but no reason to hold the node.
    not_comparable = {p for d in devices if isinstance(d.get("not_comparable"), dict) for p in d["not_comparable"]}
    model = node.offering.accelerator
    ratios = {}
    for precision, value in tflops.items():
        peak = model.peak_tflops(precision)
        if peak:
            ratios[precision] = (value / peak).quantize(Decimal("0.001"))
    benchmark = NodeBenchmark.objects.create(
        node=node,
        measured_at=moment,
        backend=_text(figures.get("backend"), 80) or "unknown",
        tflops={p: float(v) for p, v in tflops.items()},
        memory_bandwidth_gbps=min(bandwidths).quantize(Decimal("0.1")) if bandwidths else None,
        devices=devices,
        datasheet_ratios={p: float(r) for p, r in ratios.items()},
        below_datasheet=[
            p for p, r in ratios.items() if r < settings.NODE_BENCHMARK_MIN_RATIO and p not in not_comparable
        ],
        errors={
            p: _text(e, 200)
            for d in devices
            if isinstance(d.get("errors"), dict)  # anything else the agent sent is not a figure: ignored, as above
            for p, e in d["errors"].items()
            if p in PRECISIONS
        },
    )
    error = _text(figures.get("error"), 300)
    _review_set(node, kind="benchmark", reasons=_benchmark_reasons(node=node, benchmark=benchmark, error=error))
    node.verified_at = moment if not any(r["kind"] == "benchmark" for r in node.review_reasons) else None
    node.benchmark_requested_at = None
    node.save(update_fields=["review_reasons", "needs_review", "verified_at", "benchmark_requested_at", "updated_at"])
    _offering_verified_figures(offering_id=node.offering_id)
    offering_capacity_sync(offering_id=node.offering_id)
    return benchmark


def _offering_verified_figures(*, offering_id: int) -> None:
    """The offering's verified figures: per precision, the lowest of its verified nodes' latest benchmarks (what
    every node reaches), dated by the latest verification."""
    latest_benchmark = NodeBenchmark.objects.filter(node=OuterRef("pk")).order_by("-measured_at", "-pk").values("pk")
    nodes = Node.objects.filter(offering_id=offering_id, verified_at__isnull=False, needs_review=False).exclude(
        status=Node.Status.RETIRED
    )
    verified = dict(
        nodes.annotate(benchmark_id=Subquery(latest_benchmark[:1])).values_list("benchmark_id", "verified_at")
    )
    figures: dict[str, float] = {}
    for tflops in NodeBenchmark.objects.filter(pk__in=[pk for pk in verified if pk]).values_list("tflops", flat=True):
        for precision, value in tflops.items():
            figures[precision] = min(figures.get(precision, value), value)
    latest = max((at for pk, at in verified.items() if pk), default=None)
    Offering.objects.filter(pk=offering_id).update(verified_tflops=figures, verified_at=latest)


# --- Heartbeats and placements ---


def node_heartbeat(*, node_id: int, telemetry: dict, moment: datetime | None = None) -> dict:
    """Record a heartbeat and answer what the agent should do: benchmark, the rentals placed on it, jobs to stop.
    Rentals the agent now serves for the first time start running (the platform's clock starts then)."""
    moment = moment or now()
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node_id)
        came_back = node.status == Node.Status.OFFLINE
        # A sweep that took the lock first may have marked it offline at a later moment than this heartbeat's:
        # the history stays in order.
        moment = max(moment, node.status_changed_at)
        node.last_heartbeat_at, node.telemetry = moment, telemetry if isinstance(telemetry, dict) else {}
        if came_back:
            _status_change(node=node, to=Node.Status.ONLINE, moment=moment, reason=HEARD_AGAIN)
        node.save(update_fields=["last_heartbeat_at", "telemetry", "status", "status_changed_at", "updated_at"])
        if came_back:
            offering_capacity_sync(offering_id=node.offering_id)
    from marketplace.services.rentals import rental_nodes_ready

    active = RentalNode.objects.filter(node_id=node_id, released_at__isnull=True)
    for placement_id in active.filter(ready_at__isnull=True).values_list("pk", flat=True):
        rental_nodes_ready(placement_id=placement_id, moment=moment)
    placements = list(active.select_related("rental"))
    running = node.telemetry.get("running_jobs", [])
    running = [job_id for job_id in running if type(job_id) is int] if isinstance(running, list) else []
    stop = Job.objects.filter(node_id=node_id, pk__in=running).filter(
        Q(cancel_requested_at__isnull=False) | Q(status__in=Job.ENDED_STATUSES)
    )
    return {
        "heartbeat_seconds": settings.NODE_HEARTBEAT_SECONDS,
        "benchmark_wanted": node.benchmark_requested_at is not None,
        "placements": [
            {
                "rental": p.rental_id,
                "accelerator_indices": p.accelerator_indices,
                "metering": p.rental.metering,
                "status": p.rental.status,
            }
            for p in placements
        ],
        "cancel_jobs": sorted(stop.values_list("pk", flat=True)),
    }


def _free_live_nodes(*, offering_id: int, exclude: set[int] = frozenset()):
    return (
        Node.objects.filter(Node.LIVE, offering_id=offering_id)
        .exclude(pk__in=exclude)
        .exclude(pk__in=RentalNode.objects.filter(released_at__isnull=True).values("node_id"))
        .order_by("-last_heartbeat_at", "pk")
    )


def rental_nodes_assign(
    *,
    rental: Rental,
    moment: datetime,
    count: int | None = None,
    accelerators: int | None = None,
    exclude: set[int] = frozenset(),
) -> list[RentalNode]:
    """Place a locked rental on `count` free live nodes of its offering (default: all its nodes and accelerators;
    a move replaces one node and its accelerators): whole nodes, the accelerators spread over them in index order.
    Empty when too few are free (nothing written)."""
    count = count or rental.nodes
    candidates = list(
        _free_live_nodes(offering_id=rental.offering_id, exclude=exclude)
        .select_for_update(skip_locked=True)
        .prefetch_related("accelerators")[:count]
    )
    if len(candidates) < count:
        return []
    per_node = rental.specs.get("accelerators_per_node") or rental.offering.accelerators_per_node
    left, placements = accelerators or rental.accelerators, []
    for node in candidates:
        model = rental.offering.accelerator
        indices = [a.index for a in node.accelerators.all() if model.detects(a.name)] or list(range(per_node))
        taken = indices[: min(per_node, left)]
        left -= len(taken)
        placements.append(RentalNode(rental=rental, node=node, accelerator_indices=taken, assigned_at=moment))
    return RentalNode.objects.bulk_create(placements)


def _source_text(reason) -> str:
    """A lazy (platform) reason as its untranslated text, so that each reader sees it in their own language."""
    with override(None):
        return str(reason)[:255]


def rental_nodes_release(*, rental: Rental, moment: datetime, reason: str) -> None:
    """A rental has ended: its nodes are free, its queued jobs cancelled and its running jobs told to stop."""
    RentalNode.objects.filter(rental=rental, released_at__isnull=True).update(
        released_at=moment, release_reason=_source_text(reason)
    )
    Job.objects.filter(rental=rental, status=Job.Status.QUEUED).update(
        status=Job.Status.CANCELLED, finished_at=moment, updated_at=moment
    )
    Job.objects.filter(rental=rental, status=Job.Status.RUNNING, cancel_requested_at__isnull=True).update(
        cancel_requested_at=moment, updated_at=moment
    )


# --- Nodes that go quiet ---


def nodes_sweep(*, moment: datetime | None = None) -> int:
    """Mark every node gone quiet offline, each in its own transaction (its rentals move or fail with credit); one
    that fails is logged and tried again next sweep. Returns how many went offline."""
    return each_on_its_own(
        nodes_gone_quiet(moment=moment),
        lambda node_id: node_mark_offline(node_id=node_id, moment=moment),
        what="node sweep",
    )


def nodes_gone_quiet(*, moment: datetime | None = None) -> list[int]:
    moment = moment or now()
    cutoff = moment - timedelta(seconds=settings.NODE_OFFLINE_AFTER_SECONDS)
    return list(
        Node.objects.filter(status=Node.Status.ONLINE, last_heartbeat_at__lt=cutoff).values_list("pk", flat=True)
    )


def _outage_credit(*, rental: Rental, lost_from: datetime, moment: datetime) -> Decimal:
    seconds = Decimal(max((moment - lost_from).total_seconds(), 0))
    credit = rental.price_per_hour * settings.NODE_OUTAGE_CREDIT_MULTIPLIER * seconds / 3600
    return quantize_amount(credit)


@transaction.atomic
def node_mark_offline(*, node_id: int, moment: datetime | None = None) -> Node:
    """A node whose agent went quiet is offline: its rental moves to a free live node of the offering, or fails;
    either way it is credited per the outage rule (module docstring). Idempotent: a node heard from meanwhile, or
    already offline, is left alone."""
    from marketplace.services.rentals import rental_credit, rental_fail, rental_moved

    moment = moment or now()
    node = Node.objects.select_for_update().get(pk=node_id)
    cutoff = moment - timedelta(seconds=settings.NODE_OFFLINE_AFTER_SECONDS)
    if node.status != Node.Status.ONLINE or (node.last_heartbeat_at and node.last_heartbeat_at >= cutoff):
        return node
    lost_from = node.last_heartbeat_at or moment
    _status_change(node=node, to=Node.Status.OFFLINE, moment=moment, reason=WENT_QUIET)
    node.save(update_fields=["status", "status_changed_at", "updated_at"])
    Job.objects.filter(node=node, status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).update(
        status=Job.Status.LOST, finished_at=moment, updated_at=moment
    )
    for placement in RentalNode.objects.filter(node=node, released_at__isnull=True):
        rental = (
            Rental.objects.select_for_update(of=("self",))
            .select_related("offering__accelerator")
            .get(pk=placement.rental_id)
        )
        credit = _outage_credit(rental=rental, lost_from=lost_from, moment=moment)
        placement.released_at, placement.release_reason = moment, WENT_QUIET
        placement.save(update_fields=["released_at", "release_reason"])
        replacement = rental_nodes_assign(
            rental=rental,
            moment=moment,
            count=1,
            accelerators=len(placement.accelerator_indices),
            exclude={node.pk},
        )
        if replacement:
            rental_moved(rental_id=rental.pk, from_node=node.name, to_node=replacement[0].node.name, moment=moment)
        else:
            reason = gettext_lazy("Its node went offline and no other node of the offering was free")
            rental_fail(rental_id=rental.pk, reason=reason, moment=moment)
        rental_credit(
            rental_id=rental.pk,
            amount=credit,
            key=f"node-outage:{node.pk}:{placement.pk}",
            reason=_("Node outage credit for rental #%(id)d") % {"id": rental.pk},
        )
    offering_capacity_sync(offering_id=node.offering_id)
    logger.warning("node offline", extra={"node_id": node.pk, "last_heartbeat": lost_from.isoformat()})
    return node

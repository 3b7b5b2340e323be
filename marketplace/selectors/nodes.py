"""Reads of nodes, their reliability, and jobs."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.utils.timezone import now

from accounts.models import Organization
from marketplace.models import Job, JobLogChunk, Node, Rental, RentalNode
from marketplace.models.nodes import NodeStatusChange


def node_list_for_provider(*, provider: Organization) -> QuerySet[Node]:
    return (
        Node.objects.filter(provider=provider)
        .select_related("offering")
        .prefetch_related("accelerators")
        .order_by("-created_at", "-pk")
    )


def node_uptime(*, node: Node, changes: list[NodeStatusChange], moment: datetime) -> float | None:
    """Seconds online over seconds in the window (marketplace.services.nodes); None before the node registered."""
    if node.registered_at is None:
        return None
    start = max(moment - timedelta(days=settings.NODE_RELIABILITY_WINDOW_DAYS), node.registered_at)
    if moment <= start:
        return 1.0
    online, status, since = 0.0, None, start
    for change in changes:
        if change.to_status == Node.Status.AWAITING:  # made in the console: before registration, not downtime
            continue
        at = min(max(change.at, start), moment)
        if status == Node.Status.ONLINE:
            online += (at - since).total_seconds()
        status, since = change.to_status, at
    if status == Node.Status.ONLINE:
        online += (moment - since).total_seconds()
    return online / (moment - start).total_seconds()


def _window_changes(node_ids: list[int], moment: datetime) -> dict[int, list[NodeStatusChange]]:
    """Each node's status changes that matter for the window: the last one before it, and those in it."""
    start = moment - timedelta(days=settings.NODE_RELIABILITY_WINDOW_DAYS)
    changes: dict[int, list[NodeStatusChange]] = {pk: [] for pk in node_ids}
    for change in NodeStatusChange.objects.filter(node_id__in=node_ids, at__lte=moment).order_by("node_id", "at", "pk"):
        history = changes[change.node_id]
        if change.at <= start and history and history[-1].at <= start:
            history[-1] = change  # only the latest change before the window says where it started
        else:
            history.append(change)
    return changes


def nodes_reliability(*, nodes: list[Node], moment: datetime | None = None) -> dict[int, float | None]:
    """Each node's uptime share over the window, from one read of their status changes."""
    moment = moment or now()
    changes = _window_changes([node.pk for node in nodes], moment)
    return {node.pk: node_uptime(node=node, changes=changes[node.pk], moment=moment) for node in nodes}


def node_reliability(*, node: Node, moment: datetime | None = None) -> float | None:
    return nodes_reliability(nodes=[node], moment=moment)[node.pk]


def offering_reliability(*, offering_ids: list[int], moment: datetime | None = None) -> dict[int, float]:
    """Each offering's reliability: the mean uptime of its registered, not retired nodes (absent: none yet)."""
    moment = moment or now()
    nodes = list(
        Node.objects.filter(offering_id__in=offering_ids, registered_at__isnull=False).exclude(
            status=Node.Status.RETIRED
        )
    )
    changes = _window_changes([n.pk for n in nodes], moment)
    per_offering: dict[int, list[float]] = {}
    for node in nodes:
        uptime = node_uptime(node=node, changes=changes[node.pk], moment=moment)
        if uptime is not None:
            per_offering.setdefault(node.offering_id, []).append(uptime)
    return {pk: sum(values) / len(values) for pk, values in per_offering.items()}


def rental_placements(*, rental: Rental) -> QuerySet[RentalNode]:
    return RentalNode.objects.filter(rental=rental).select_related("node").order_by("assigned_at", "pk")


def job_list(*, organization: Organization) -> QuerySet[Job]:
    return Job.objects.filter(organization=organization).order_by("-created_at", "-pk")


def job_log(*, job: Job, after: int = -1) -> QuerySet[JobLogChunk]:
    return JobLogChunk.objects.filter(job=job, seq__gt=after).order_by("seq")


def rental_jobs(*, rental: Rental) -> QuerySet[Job]:
    return (
        Job.objects.filter(rental=rental)
        .select_related("node")
        .prefetch_related(Prefetch("log_chunks", queryset=JobLogChunk.objects.order_by("seq")))
        .order_by("-created_at", "-pk")
    )

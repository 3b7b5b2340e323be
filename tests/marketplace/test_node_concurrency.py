"""Real parallel connections on PostgreSQL: rentals provisioned at once land on different nodes, a queued job is
claimed once, a node's sweep and its heartbeat do not both win."""

from datetime import timedelta

import pytest
from django.utils.timezone import now

from marketplace.models import Job, Node, Rental, RentalNode
from marketplace.services import jobs as job_services
from marketplace.services import nodes as node_services
from marketplace.services import rentals as rental_services
from tests.concurrency import race
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund
from tests.factories.nodes import cpu_offering, live_node, rental_on_node

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def test_rentals_provisioned_at_once_each_get_their_own_node(require_postgres):
    offering = cpu_offering()
    nodes = [live_node(offering, name=f"n{index}")[0] for index in range(3)]
    buyer = OrganizationFactory()
    fund(buyer, "1000.00")
    order = rental_services.RentalRequest(offering_id=offering.pk, accelerators=1)
    rentals = [rental_services.rental_create(organization=buyer, request=order) for _index in range(3)]

    race(3, lambda index: rental_services.rental_provision(rental_id=rentals[index].pk))

    placed = RentalNode.objects.filter(released_at__isnull=True)
    assert sorted(placed.values_list("node_id", flat=True)) == sorted(node.pk for node in nodes)
    assert set(Rental.objects.values_list("status", flat=True)) == {Rental.Status.PROVISIONING}


def test_a_queued_job_is_claimed_once_by_parallel_claims(require_postgres):
    rental, node, _token = rental_on_node()
    job = Job.objects.create(organization=rental.organization, rental=rental, command=["true"], time_limit_seconds=9)

    claims = race(6, lambda _index: job_services.job_claim(node=node))

    assert [claim[0].pk for claim in claims if claim] == [job.pk]
    assert Job.objects.get(pk=job.pk).status == Job.Status.RUNNING


def test_a_heartbeat_racing_the_sweep_leaves_one_consistent_state(require_postgres, settings):
    settings.NODE_OFFLINE_AFTER_SECONDS = 60
    offering = cpu_offering()
    node, _token = live_node(offering)
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=now() - timedelta(minutes=5))

    def act(index: int) -> None:
        if index == 0:
            node_services.node_mark_offline(node_id=node.pk)
        else:
            node_services.node_heartbeat(node_id=node.pk, telemetry={})

    race(2, act)

    node.refresh_from_db()
    offering.refresh_from_db()
    changes = list(node.status_changes.values_list("to_status", flat=True))  # in time order
    # either the sweep came first (offline, then back online) or the heartbeat did (nothing to sweep)
    assert node.status == Node.Status.ONLINE and offering.capacity_nodes == 1
    assert changes[-2:] in (["offline", "online"], ["awaiting", "online"])
    assert node.status_changes.order_by("-pk").first().to_status == "online"

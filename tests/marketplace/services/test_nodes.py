from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import translation
from django.utils.timezone import now

from billing.models import UsageCharge
from billing.selectors import wallet_get
from marketplace.core.errors import Conflict
from marketplace.models import Job, Metering, Node, Offering, Rental, RentalNode
from marketplace.selectors.nodes import node_reliability, offering_reliability
from marketplace.services import nodes as services
from marketplace.services import rentals as rental_services
from marketplace.services.offerings import offering_update
from tests.factories.accounts import OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory, accelerator
from tests.factories.nodes import (
    cpu_facts,
    cpu_figures,
    cpu_offering,
    h100_facts,
    h100_figures,
    live_node,
    node_for,
    provider_user,
)

pytestmark = pytest.mark.django_db


def h100_offering(**fields) -> Offering:
    return OfferingFactory(**{"accelerators_per_node": 1, "capacity_nodes": 0, **fields})


# --- Tokens ---


def test_a_node_token_is_shown_once_and_only_its_hash_kept():
    node, token = node_for(h100_offering())

    assert token.startswith(f"mkn_{node.token_prefix}_")
    assert token.split("_", 2)[2] not in node.token_hash
    assert services.node_authenticate(raw_token=token) == node


@pytest.mark.parametrize("mangle", [lambda t: t + "x", lambda t: t.replace("mkn_", "mk_"), lambda t: "mkn_zz_zz"])
def test_a_wrong_token_is_refused_with_one_message(mangle):
    _node, token = node_for(h100_offering())

    with pytest.raises(services.InvalidToken) as refused:
        services.node_authenticate(raw_token=mangle(token))
    assert refused.value.status_code == 401 and refused.value.code == "invalid_node_token"


def test_a_rotated_token_replaces_the_old_one_and_a_retired_node_has_none():
    offering = h100_offering()
    node, old = node_for(offering)

    _node, new = services.node_token_rotate(provider=offering.provider, node_id=node.pk, actor=provider_user(offering))

    with pytest.raises(services.InvalidToken):
        services.node_authenticate(raw_token=old)
    assert services.node_authenticate(raw_token=new) == node
    services.node_retire(provider=offering.provider, node_id=node.pk, actor=provider_user(offering))
    with pytest.raises(services.InvalidToken):
        services.node_authenticate(raw_token=new)


def test_a_node_goes_only_into_the_providers_own_offering():
    other = h100_offering()
    offering = h100_offering()

    with pytest.raises(services.NotFound):
        services.node_create(provider=offering.provider, offering_id=other.pk, name="n", actor=provider_user(offering))


# --- Registration and benchmarks ---


def test_registering_the_real_h100_matches_its_offering_and_asks_for_a_benchmark():
    offering = h100_offering()
    node, _token = node_for(offering)

    node = services.node_register(node_id=node.pk, facts=h100_facts())

    assert node.status == Node.Status.ONLINE and not node.needs_review
    assert node.benchmark_requested_at is not None and node.verified_at is None
    (accelerator,) = node.accelerators.all()
    assert (accelerator.name, accelerator.memory_mib, accelerator.compute_capability) == (
        "NVIDIA H100 80GB HBM3",
        81559,
        "9.0",
    )
    offering.refresh_from_db()
    assert offering.capacity_nodes == 0  # registered, not yet verified


def test_registering_again_updates_the_same_node():
    offering = h100_offering()
    node, _token = node_for(offering)
    services.node_register(node_id=node.pk, facts=h100_facts())
    services.node_benchmark_record(node_id=node.pk, figures=h100_figures())

    services.node_register(node_id=node.pk, facts=h100_facts(hostname="renamed"))

    assert Node.objects.count() == 1
    node.refresh_from_db()
    assert node.hostname == "renamed" and node.accelerators.count() == 1
    assert node.verified_at is not None and node.benchmark_requested_at is None  # same hardware: still verified


@pytest.mark.parametrize(
    ("facts", "code"),
    [
        (h100_facts(count=0), "accelerators_mismatch"),
        (h100_facts(accelerators=[{"index": 0, "name": "NVIDIA H100 PCIe"}]), "accelerators_mismatch"),
        (h100_facts(error="nvidia-smi exited 9: NVIDIA-SMI has failed"), "detection_failed"),
        (h100_facts(cpu_cores=8), "cpu_mismatch"),
        (h100_facts(ram_gb=64), "ram_mismatch"),
        (
            h100_facts(accelerators=[{"index": 0, "name": "NVIDIA H100 80GB HBM3", "mig_enabled": True}]),
            "mig_enabled",
        ),
    ],
)
def test_hardware_that_does_not_match_the_offering_holds_the_node_for_review(facts, code):
    node, _token = node_for(h100_offering())

    node = services.node_register(node_id=node.pk, facts=facts)

    assert node.needs_review and code in [reason["code"] for reason in node.review_reasons]


def test_the_real_h100_figures_verify_the_node_and_show_on_the_offering():
    offering = h100_offering()
    node, _token = node_for(offering)
    services.node_register(node_id=node.pk, facts=h100_facts())

    benchmark = services.node_benchmark_record(node_id=node.pk, figures=h100_figures())

    assert benchmark.tflops["bf16"] == 802.0
    assert benchmark.datasheet_ratios == {
        "fp64": 0.843, "fp32": 0.769, "tf32": 0.839, "fp16": 0.773, "bf16": 0.811, "fp8": 0.740, "int8": 0.064
    }  # fmt: skip
    assert benchmark.below_datasheet == []  # int8 came from a generic kernel: shown, not held against the node
    node.refresh_from_db()
    assert node.is_live
    offering.refresh_from_db()
    assert offering.is_verified and offering.verified_tflops["bf16"] == 802.0
    assert offering.capacity_nodes == 1


def test_a_comparable_precision_far_below_the_datasheet_holds_the_node():
    offering = h100_offering()
    node, _token = node_for(offering)
    services.node_register(node_id=node.pk, facts=h100_facts())
    figures = h100_figures()
    figures["devices"][0]["tflops"]["bf16"] = 400.0  # 40 % of 989.4

    benchmark = services.node_benchmark_record(node_id=node.pk, figures=figures)

    assert benchmark.below_datasheet == ["bf16"]
    node.refresh_from_db()
    assert node.needs_review and node.verified_at is None
    with translation.override("en"):
        assert node.review_messages == ["Below 50% of the datasheet at BF16."]
    with translation.override("zh-hans"):
        assert node.review_messages == ["BF16 低于标称值的 50%。"]


def test_a_benchmark_far_below_the_datasheet_holds_the_node_and_gives_no_capacity():
    offering = h100_offering()
    node, _token = node_for(offering)
    services.node_register(node_id=node.pk, facts=h100_facts())

    services.node_benchmark_record(node_id=node.pk, figures=h100_figures(scale=0.4))

    node.refresh_from_db()
    assert node.needs_review and node.review_reasons[0]["code"] == "below_datasheet"
    offering.refresh_from_db()
    assert offering.capacity_nodes == 0 and not offering.is_verified


def test_a_gpu_node_benchmarked_on_its_cpu_is_not_verified():
    offering = h100_offering()
    node, _token = node_for(offering)
    services.node_register(node_id=node.pk, facts=h100_facts())

    services.node_benchmark_record(node_id=node.pk, figures=cpu_figures())

    node.refresh_from_db()
    assert [r["code"] for r in node.review_reasons] == ["gpu_not_benchmarked"]


def test_a_cpu_node_is_verified_by_its_numpy_benchmark():
    offering = cpu_offering()
    node, _token = node_for(offering)
    services.node_register(node_id=node.pk, facts=cpu_facts())

    benchmark = services.node_benchmark_record(node_id=node.pk, figures=cpu_figures())

    assert benchmark.datasheet_ratios == {} and benchmark.errors == {"bf16": "not measured on a CPU"}
    offering.refresh_from_db()
    assert offering.capacity_nodes == 1 and offering.verified_tflops == {"fp64": 0.1, "fp32": 0.2}


# --- Placement, heartbeats, outages ---


def started_rental(offering: Offering, *, moment=None, funds: str = "1000.00") -> Rental:
    buyer = OrganizationFactory()
    fund(buyer, funds)
    order = rental_services.RentalRequest(offering_id=offering.pk, accelerators=1)
    rental = rental_services.rental_create(organization=buyer, request=order, moment=moment)
    return rental_services.rental_provision(rental_id=rental.pk, moment=moment)


def test_a_rental_on_a_node_backed_offering_runs_once_its_agent_takes_it_up():
    offering = cpu_offering()
    node, _token = live_node(offering)

    rental = started_rental(offering)

    assert rental.status == Rental.Status.PROVISIONING and rental.started_at is None
    placement = RentalNode.objects.get(rental=rental)
    assert (placement.node, placement.accelerator_indices) == (node, [0])
    answer = services.node_heartbeat(node_id=node.pk, telemetry={"running_jobs": []})
    rental.refresh_from_db()
    assert rental.status == Rental.Status.RUNNING and rental.started_at is not None
    assert answer["placements"] == [
        {"rental": rental.pk, "accelerator_indices": [0], "metering": "lifecycle", "status": "running"}
    ]


def test_an_offering_whose_nodes_are_gone_cannot_be_rented():
    offering = cpu_offering()
    node, _token = live_node(offering)
    services.node_retire(provider=offering.provider, node_id=node.pk, actor=provider_user(offering))

    with pytest.raises(rental_services.CapacityExhausted):
        started_rental(offering)


def test_a_node_that_goes_quiet_moves_its_rental_to_a_free_node_and_credits_the_lost_time():
    offering = cpu_offering(on_demand_price=Decimal("36.00"))
    moment = now()
    start = moment - timedelta(minutes=10)
    first, _token = live_node(offering, name="first", moment=start)
    second, _token = live_node(offering, name="second", moment=start)
    rental = started_rental(offering, moment=start)
    placed_on = RentalNode.objects.get(rental=rental).node
    services.node_heartbeat(node_id=placed_on.pk, telemetry={}, moment=start)
    spare = second if placed_on == first else first
    Node.objects.filter(pk=placed_on.pk).update(last_heartbeat_at=moment - timedelta(seconds=100))
    Node.objects.filter(pk=spare.pk).update(last_heartbeat_at=moment)
    rental_services.rental_settle(rental_id=rental.pk, moment=moment)  # ten minutes charged: ¥6.00
    available = wallet_get(organization=rental.organization).available

    services.node_mark_offline(node_id=placed_on.pk, moment=moment)

    rental.refresh_from_db()
    assert rental.status == Rental.Status.RUNNING and rental.charged_amount == Decimal("6.00")
    assert RentalNode.objects.get(rental=rental, released_at__isnull=True).node == spare
    placed_on.refresh_from_db()
    assert placed_on.status == Node.Status.OFFLINE
    # 2 × ¥36 an hour for the 100 s since the lost node's last heartbeat
    assert wallet_get(organization=rental.organization).available - available == Decimal("2.00")


def test_a_node_that_goes_quiet_with_no_spare_fails_its_rental_and_stops_its_jobs():
    offering = cpu_offering(on_demand_price=Decimal("36.00"), metering=Metering.REPORTED)
    node, _token = live_node(offering)
    rental = started_rental(offering)
    services.node_heartbeat(node_id=node.pk, telemetry={})
    job = Job.objects.create(
        organization=rental.organization, rental=rental, node=node, command=["sleep", "9"], time_limit_seconds=60,
        status=Job.Status.RUNNING,
    )  # fmt: skip
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=now() - timedelta(minutes=5))

    assert services.nodes_gone_quiet() == [node.pk]
    services.node_mark_offline(node_id=node.pk)
    services.node_mark_offline(node_id=node.pk)  # a second sweep changes nothing

    rental.refresh_from_db()
    assert rental.status == Rental.Status.FAILED
    job.refresh_from_db()
    assert job.status == Job.Status.LOST
    assert not RentalNode.objects.filter(rental=rental, released_at__isnull=True).exists()
    offering.refresh_from_db()
    assert (offering.capacity_nodes, offering.rented_nodes) == (0, 0)
    assert not UsageCharge.objects.filter(rental=rental).exists()  # nothing was reported: nothing charged


def test_a_node_heard_from_again_comes_back_online_and_gives_capacity_again():
    offering = cpu_offering()
    node, _token = live_node(offering)
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=now() - timedelta(minutes=5))
    services.node_mark_offline(node_id=node.pk)
    offering.refresh_from_db()
    assert offering.capacity_nodes == 0

    services.node_heartbeat(node_id=node.pk, telemetry={})

    offering.refresh_from_db()
    assert offering.capacity_nodes == 1


def test_a_node_serving_a_rental_cannot_be_retired():
    offering = cpu_offering()
    node, _token = live_node(offering)
    started_rental(offering)

    with pytest.raises(Conflict):
        services.node_retire(provider=offering.provider, node_id=node.pk, actor=provider_user(offering))


def test_reliability_is_the_share_of_the_window_online():
    offering = cpu_offering()
    start = now() - timedelta(hours=10)
    node, _token = live_node(offering, moment=start)
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=start + timedelta(hours=6))
    services.node_mark_offline(node_id=node.pk, moment=start + timedelta(hours=6, minutes=2))
    services.node_heartbeat(node_id=node.pk, telemetry={}, moment=start + timedelta(hours=8, minutes=2))
    node.refresh_from_db()

    reliability = node_reliability(node=node, moment=start + timedelta(hours=10))

    assert reliability == pytest.approx(8 / 10)  # offline from 6:02 to 8:02 of 10 hours
    assert offering_reliability(offering_ids=[offering.pk], moment=start + timedelta(hours=10)) == {
        offering.pk: pytest.approx(0.8)
    }


def test_a_node_backed_offerings_capacity_cannot_be_set_by_hand():
    offering = cpu_offering()
    live_node(offering)

    with pytest.raises(services.DomainError) as refused:
        offering_update(offering_id=offering.pk, actor=provider_user(offering), capacity_nodes=10)
    offering_update(offering_id=offering.pk, actor=provider_user(offering), capacity_nodes=1, name="Renamed")

    assert "capacity_nodes" in refused.value.extra["fields"]
    offering.refresh_from_db()
    assert (offering.capacity_nodes, offering.name) == (1, "Renamed")


def test_a_node_staff_cleared_stays_cleared_when_its_agent_restarts_on_the_same_hardware():
    offering = cpu_offering(accelerator=accelerator("huawei-ascend-910b"))
    node, _token = node_for(offering)
    ascend = h100_facts(accelerators=[{"index": 0, "name": "Ascend910B", "uuid": "npu-0"}])
    services.node_register(node_id=node.pk, facts=ascend)
    services.node_review_clear(node_id=node.pk, actor=provider_user(offering))

    services.node_register(node_id=node.pk, facts=ascend)  # the agent restarts
    cleared = Node.objects.get(pk=node.pk)
    services.node_register(node_id=node.pk, facts={**ascend, "cpu_cores": 4})  # other hardware: checked again

    assert not cleared.needs_review and cleared.is_live
    node.refresh_from_db()
    assert node.needs_review and {r["code"] for r in node.review_reasons} == {"undetectable_accelerator"}


def test_the_offerings_verified_figures_are_the_lowest_of_each_nodes_latest_benchmark():
    offering = h100_offering()
    first, _token = live_node(offering, name="first")
    second, _token = live_node(offering, name="second")
    slower = h100_figures()
    slower["devices"][0]["tflops"]["bf16"] = 700.0
    services.node_benchmark_record(node_id=second.pk, figures=slower)
    offering.refresh_from_db()
    assert offering.verified_tflops["bf16"] == 700.0

    services.node_benchmark_record(node_id=second.pk, figures=h100_figures())  # its latest replaces the earlier

    offering.refresh_from_db()
    assert offering.verified_tflops["bf16"] == 802.0 and offering.capacity_nodes == 2

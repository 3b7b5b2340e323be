"""Nodes as their agent registers them: an H100 node as the real readings describe it, or a CPU-only one."""

import json
from datetime import datetime, timedelta
from pathlib import Path

from django.db.models import F
from django.utils.timezone import now

from accounts.models import User
from marketplace.models import Metering, Node, Offering, Rental, RentalNode, RentalTransition
from marketplace.services import nodes as services
from marketplace.services import rentals as rental_services
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory, accelerator

FIXTURES = Path(__file__).parent.parent / "agent" / "fixtures"
H100_PROBE = json.loads((FIXTURES / "h100-80gb-hbm3" / "gpu-probe.json").read_text())


def h100_facts(count: int = 1, **overrides) -> dict:
    """Registration facts of a node with `count` of the fixture's H100 (nvidia-smi's readings)."""
    accelerators = [
        {"index": i, "name": "NVIDIA H100 80GB HBM3", "uuid": f"GPU-{i:08d}", "memory_mib": 81559,
         "driver_version": "580.159.04", "cuda_version": "13.0", "compute_capability": "9.0",
         "power_limit_w": 700.0, "mig_enabled": False}
        for i in range(count)
    ]  # fmt: skip
    return {"hostname": "gpu-node-1", "cpu_model": "AMD EPYC 9654", "cpu_cores": 192, "ram_gb": 2015.5,
            "disk_gb": 30000, "os": "Linux", "agent_version": "0.1.0", "accelerators": accelerators,
            "source": "nvidia-smi", "error": "", **overrides}  # fmt: skip


def cpu_facts(**overrides) -> dict:
    return {"hostname": "cpu-node-1", "cpu_model": "AMD EPYC", "cpu_cores": 2, "ram_gb": 24.0, "disk_gb": 200,
            "os": "Linux", "agent_version": "0.1.0", "accelerators": [], "source": "none", "error": "",
            **overrides}  # fmt: skip


def h100_figures(scale: float = 1.0) -> dict:
    """The fixture's measured H100 figures (gpu-probe.json), times `scale`."""
    measured = H100_PROBE["measured_dense_tflops"]
    tflops = {p: round(v * scale, 1) for p, v in measured.items() if p != "int8_tops"}
    tflops["int8"] = round(measured["int8_tops"] * scale, 1)
    return {"backend": "torch 2.11.0+cu130 (cuda 13.0)", "devices": [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "tflops": tflops,
         "memory_bandwidth_gbps": H100_PROBE["measured_d2d_copy_GBps"] * scale, "errors": {},
         "not_comparable": {"int8": "torch._int_mm is a generic kernel"}}]}  # fmt: skip


def cpu_figures() -> dict:
    return {"backend": "numpy 2.4.6 (cpu)", "devices": [
        {"index": None, "name": "AMD EPYC", "tflops": {"fp64": 0.1, "fp32": 0.2}, "memory_bandwidth_gbps": 20.0,
         "errors": {"bf16": "not measured on a CPU"}}]}  # fmt: skip


def cpu_offering(**fields) -> Offering:
    defaults = {"accelerator": accelerator("cpu-node"), "accelerators_per_node": 1, "vcpu_per_node": 1,
                "ram_gb_per_node": 1, "capacity_nodes": 0}  # fmt: skip
    return OfferingFactory(**{**defaults, **fields})


def provider_user(offering: Offering) -> User:
    return MembershipFactory(organization=offering.provider).user


def node_for(offering: Offering, name: str = "node") -> tuple[Node, str]:
    return services.node_create(
        provider=offering.provider, offering_id=offering.pk, name=name, actor=provider_user(offering)
    )


def live_node(offering: Offering, *, name: str = "node", moment: datetime | None = None) -> tuple[Node, str]:
    """A node that registered and passed its benchmark: it gives the offering one node of capacity."""
    node, token = node_for(offering, name)
    moment = moment or now()  # after it was made: its history stays in time order
    cpu = offering.accelerator.slug == "cpu-node"
    facts = cpu_facts() if cpu else h100_facts(offering.accelerators_per_node)
    services.node_register(node_id=node.pk, facts=facts, moment=moment)
    services.node_benchmark_record(node_id=node.pk, figures=cpu_figures() if cpu else h100_figures(), moment=moment)
    node.refresh_from_db()
    assert node.is_live, node.review_reasons
    return node, token


def rental_on_node(offering: Offering | None = None, *, funds: str = "100.00") -> tuple[Rental, Node, str]:
    """A buyer's rental running on a live node (CPU-only, metered by reports unless `offering` says otherwise): the
    node's agent has taken it up. Returns the rental, the node and the node's token."""
    offering = offering or cpu_offering(metering=Metering.REPORTED)
    node, token = live_node(offering)
    buyer = OrganizationFactory()
    fund(buyer, funds)
    order = rental_services.RentalRequest(offering_id=offering.pk, accelerators=1)
    rental = rental_services.rental_create(organization=buyer, request=order)
    rental_services.rental_provision(rental_id=rental.pk)
    services.node_heartbeat(node_id=node.pk, telemetry={})
    rental.refresh_from_db()
    return rental, node, token


def rental_on_node_running_an_hour() -> tuple[Rental, Node, str]:
    """A rental on a live node that has been running for an hour (made now, then moved back in time whole)."""
    rental, node, token = rental_on_node()
    hour = timedelta(hours=1)
    Rental.objects.filter(pk=rental.pk).update(
        created_at=F("created_at") - hour,
        started_at=F("started_at") - hour,
        status_changed_at=F("status_changed_at") - hour,
    )
    RentalTransition.objects.filter(rental=rental).update(at=F("at") - hour)
    RentalNode.objects.filter(rental=rental).update(assigned_at=F("assigned_at") - hour, ready_at=F("ready_at") - hour)
    rental.refresh_from_db()
    return rental, node, token

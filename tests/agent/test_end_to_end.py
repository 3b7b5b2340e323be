"""The platform on a live server and the real agent as a child process on loopback (CPU-only, NumPy benchmark):
the node registers and is benchmarked, a buyer rents it and runs `python -c` work, the log streams to the API, the
exit status and the usage arrive, and the ledger charges exactly the reported seconds. Then the agent is killed
mid-job: the node goes offline, the rental fails and is credited, and the agent restarted with the same token is
the same node."""

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from billing.models import UsageEvent
from billing.selectors import wallet_get
from billing.services.rating import usage_rate_pending
from marketplace.models import Job, Metering, Node, Offering, Rental
from marketplace.services.rentals import rentals_provision_due
from marketplace.tasks import nodes_sweep_task
from tests.conftest import skip_or_fail
from tests.factories.accounts import MembershipFactory, OrganizationFactory, api_key_for
from tests.factories.billing import fund
from tests.factories.nodes import cpu_offering

# The reference accelerators (the CPU node type among them) come from a data migration: keep them between tests.
pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)
ROOT = Path(__file__).resolve().parents[2]
PRICE = Decimal("36.00")  # per accelerator-hour: one second costs ¥0.01


def wait_for(condition, *, timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connections.close_all()  # read what the server's threads committed
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def platform(transactional_db, live_server, settings):
    if connection.vendor != "postgresql":  # the live server shares SQLite's in-memory test database between threads
        skip_or_fail("postgres", "the agent's parallel requests need PostgreSQL; set DATABASE_URL=postgres://…")
    settings.NODE_HEARTBEAT_SECONDS = 1
    provider_offering = cpu_offering(on_demand_price=PRICE, metering=Metering.REPORTED)
    provider_key, provider_secret = api_key_for(
        provider_offering.provider, user=MembershipFactory(organization=provider_offering.provider).user
    )
    buyer = OrganizationFactory()
    fund(buyer, "100.00")
    _key, buyer_secret = api_key_for(buyer, user=MembershipFactory(organization=buyer).user)
    return {
        "url": live_server.url,
        "offering": provider_offering,
        "provider": APIClient(HTTP_AUTHORIZATION=f"Bearer {provider_secret}"),
        "buyer": APIClient(HTTP_AUTHORIZATION=f"Bearer {buyer_secret}"),
        "buyer_org": buyer,
    }


@pytest.fixture
def start_agent(tmp_path):
    started = []

    def start(url: str, token: str) -> subprocess.Popen:
        log = open(tmp_path / f"agent-{len(started)}.log", "w")  # noqa: SIM115 — closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "agent", "--url", url, "--token", token, "--work-dir", str(tmp_path / "work"),
             "--heartbeat-seconds", "0.3", "--usage-seconds", "0.5", "--benchmark-size", "128",
             "--benchmark-seconds", "0.02"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        started.append((process, log))
        return process

    yield start
    for process, log in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
        print((Path(log.name)).read_text())  # shown when a test fails


def make_node(platform) -> tuple[int, str]:
    response = platform["provider"].post(
        "/api/v1/provider/nodes/", {"offering": platform["offering"].pk, "name": "loopback-1"}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["id"], response.json()["token"]


def rent_and_run(platform, node_id: int) -> Rental:
    response = platform["buyer"].post(
        "/api/v1/rentals/", {"offering": platform["offering"].pk, "accelerators": 1, "mode": "on_demand"}, format="json"
    )
    assert response.status_code == 201, response.content
    rentals_provision_due()  # what the worker does on the admission's request
    rental = Rental.objects.get(pk=response.json()["id"])
    wait_for(lambda: Rental.objects.get(pk=rental.pk).status == Rental.Status.RUNNING, what="the agent to take it up")
    return rental


def submit(platform, rental: Rental, code: str) -> int:
    response = platform["buyer"].post(
        "/api/v1/jobs/", {"rental": rental.pk, "command": [sys.executable, "-c", code], "time_limit_seconds": 60},
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    return response.json()["id"]


def test_a_rented_cpu_node_runs_a_job_streams_its_log_and_is_charged_the_reported_seconds(platform, start_agent):
    # given: a node made in the console and its agent started with the token
    node_id, token = make_node(platform)
    start_agent(platform["url"], token)
    wait_for(lambda: Node.objects.get(pk=node_id).is_live, what="registration and benchmark")
    node = Node.objects.get(pk=node_id)
    assert node.benchmarks.get().backend.startswith("numpy ") and node.benchmarks.get().tflops["fp64"] > 0
    assert Offering.objects.get(pk=platform["offering"].pk).capacity_nodes == 1
    rental = rent_and_run(platform, node_id)

    # when: the buyer runs work on it
    work = "import os, time\nprint('hello from the node', flush=True)\ntime.sleep(1.2)\n"
    work += "print('gpus:', repr(os.environ['CUDA_VISIBLE_DEVICES']))"
    job_id = submit(platform, rental, work)
    wait_for(lambda: Job.objects.get(pk=job_id).is_ended, what="the job to end")

    # then: its output and exit status arrived, and its seconds were reported and charged exactly
    job = platform["buyer"].get(f"/api/v1/jobs/{job_id}/").json()
    assert (job["status"], job["exit_code"]) == ("succeeded", 0)
    log = "".join(chunk["text"] for chunk in platform["buyer"].get(f"/api/v1/jobs/{job_id}/log/").json())
    assert log == "hello from the node\ngpus: '0'\n"
    events = UsageEvent.objects.filter(rental=rental)
    reported = sum(event.quantity for event in events)
    job_row = Job.objects.get(pk=job_id)
    assert reported == Decimal((job_row.finished_at - job_row.started_at) / timedelta(microseconds=1)) / 10**6
    assert Decimal("1.2") < reported < Decimal("10")
    usage_rate_pending()
    rental.refresh_from_db()
    assert rental.charged_amount == (reported * PRICE / 3600).quantize(Decimal("1e-8"))


def test_a_killed_agent_takes_its_node_offline_the_rental_fails_with_credit_and_a_restart_is_the_same_node(
    platform, start_agent, settings
):
    # given: a job running on the node
    node_id, token = make_node(platform)
    agent = start_agent(platform["url"], token)
    wait_for(lambda: Node.objects.get(pk=node_id).is_live, what="registration and benchmark")
    rental = rent_and_run(platform, node_id)
    job_id = submit(platform, rental, "import time\nfor i in range(40):\n    print(i, flush=True); time.sleep(0.1)")
    wait_for(lambda: UsageEvent.objects.filter(rental=rental).exists(), what="the first usage report")
    usage_rate_pending()

    # when: the agent dies mid-job and stays quiet past the timeout
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    settings.NODE_OFFLINE_AFTER_SECONDS = 1
    time.sleep(1.5)
    charged = Rental.objects.get(pk=rental.pk).charged_amount
    available = wallet_get(organization=platform["buyer_org"]).available
    assert nodes_sweep_task() == 1  # what beat runs every NODE_SWEEP_SECONDS

    # then: the node is offline, the rental failed (no other node), the job is lost and the buyer credited
    node = Node.objects.get(pk=node_id)
    assert node.status == Node.Status.OFFLINE
    rental.refresh_from_db()
    assert rental.status == Rental.Status.FAILED
    assert Job.objects.get(pk=job_id).status == Job.Status.LOST
    assert charged > 0 and wallet_get(organization=platform["buyer_org"]).available > available
    # and restarted with the same token, the agent is the same node again
    start_agent(platform["url"], token)
    wait_for(lambda: Node.objects.get(pk=node_id).status == Node.Status.ONLINE, what="the node back online")
    assert Node.objects.filter(provider=platform["offering"].provider).count() == 1

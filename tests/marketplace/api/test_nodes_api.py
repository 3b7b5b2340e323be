"""/api/v1/agent/ (node tokens), /api/v1/provider/nodes/ and /api/v1/jobs/."""

import base64
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now
from rest_framework.test import APIClient

from billing.models import UsageEvent
from marketplace.models import Job, JobLogChunk, Metering, Node
from tests.factories.nodes import (
    cpu_facts,
    cpu_figures,
    cpu_offering,
    live_node,
    node_for,
    rental_on_node,
    rental_on_node_running_an_hour,
)
from tests.factories.rentals import reported_rental

pytestmark = pytest.mark.django_db


def agent(token: str) -> APIClient:
    return APIClient(HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.fixture
def running(db):
    """A reported-metered rental running on a live CPU node, its buyer, and the node's agent client."""
    rental, node, token = rental_on_node()
    return {"node": node, "agent": agent(token), "rental": rental, "buyer": rental.organization}


# --- Agent authentication ---


@pytest.mark.parametrize(
    "authorization", [None, "Bearer ", "Bearer mkn_nope_nope", "Token abc", "Bearer mk_live_abc_def"]
)
def test_the_agent_routes_take_a_valid_node_token_only(db, authorization):
    client = APIClient(HTTP_AUTHORIZATION=authorization) if authorization else APIClient()

    response = client.post("/api/v1/agent/heartbeat", {"telemetry": {}}, format="json")

    assert response.status_code == 401
    assert response.json()["error"]["code"] in {"not_authenticated", "invalid_node_token"}


def test_an_api_key_is_not_a_node_token(organization, api_client_for):
    response = api_client_for(organization).post("/api/v1/agent/register", {}, format="json")

    assert response.status_code == 401


def test_registration_heartbeat_and_benchmark_through_the_api():
    node, token = node_for(cpu_offering())
    client = agent(token)

    registered = client.post("/api/v1/agent/register", cpu_facts(), format="json")
    benchmarked = client.post("/api/v1/agent/benchmarks", cpu_figures(), format="json")
    heartbeat = client.post("/api/v1/agent/heartbeat", {"telemetry": {"load_average": [0.1, 0, 0]}}, format="json")

    assert registered.status_code == 200 and registered.json()["benchmark_wanted"] is True
    assert registered.json()["needs_review"] is False
    assert benchmarked.status_code == 201 and benchmarked.json()["tflops"] == {"fp64": 0.1, "fp32": 0.2}
    assert heartbeat.json() == {"heartbeat_seconds": 15, "benchmark_wanted": False, "placements": [], "cancel_jobs": []}
    node.refresh_from_db()
    assert node.is_live and node.telemetry == {"load_average": [0.1, 0, 0]}


def test_garbage_registration_is_a_clear_400_not_a_server_error():
    offering = cpu_offering()
    _node, token = live_node(offering)

    response = agent(token).post(
        "/api/v1/agent/register", {"accelerators": [{"index": "zero"}]}, format="json", HTTP_ACCEPT_LANGUAGE="en"
    )

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Each accelerator needs an index and a name."


# --- Jobs, logs and usage through the agent ---


def test_a_job_is_claimed_run_logged_and_finished_by_its_nodes_agent(running, api_client_for):
    buyer = api_client_for(running["buyer"])
    files = {"main.py": base64.b64encode(b"print('hi')").decode()}
    submitted = buyer.post(
        "/api/v1/jobs/", {"rental": running["rental"].pk, "command": ["python", "main.py"], "files": files},
        format="json",
    )  # fmt: skip
    job_id = submitted.json()["id"]
    client = running["agent"]

    claimed = client.post("/api/v1/agent/jobs/claim")
    started = client.post(f"/api/v1/agent/jobs/{job_id}/start", {"started_at": now().isoformat()}, format="json")
    chunks = [{"seq": 0, "stream": "stdout", "text": "hi\n"}, {"seq": 1, "stream": "stderr", "text": "warn\n"}]
    client.post(f"/api/v1/agent/jobs/{job_id}/log", {"chunks": chunks}, format="json")
    client.post(f"/api/v1/agent/jobs/{job_id}/log", {"chunks": chunks}, format="json")  # a resend: kept once
    finished = client.post(
        f"/api/v1/agent/jobs/{job_id}/finish",
        {"status": "succeeded", "exit_code": 0, "started_at": now().isoformat(), "finished_at": now().isoformat()},
        format="json",
    )

    assert submitted.status_code == 201
    assert claimed.json()["files"] == files and claimed.json()["accelerator_indices"] == [0]
    assert claimed.json()["metering"] == "reported" and started.status_code == 200
    assert finished.json() == {"status": "succeeded", "cancel_requested": False}
    assert client.post("/api/v1/agent/jobs/claim").status_code == 204
    log = buyer.get(f"/api/v1/jobs/{job_id}/log/").json()
    assert [(c["seq"], c["stream"], c["text"]) for c in log] == [(0, "stdout", "hi\n"), (1, "stderr", "warn\n")]
    assert [c["seq"] for c in buyer.get(f"/api/v1/jobs/{job_id}/log/?after=0").json()] == [1]
    assert Job.objects.get(pk=job_id).log_bytes == 8


def test_usage_resent_after_a_lost_answer_is_counted_once(db):
    rental, _node, token = rental_on_node_running_an_hour()  # its first 12.5 s are over
    running = {"agent": agent(token)}
    start = rental.started_at
    event = {
        "rental": rental.pk, "idempotency_key": "job:1:usage:0", "dimension": "accelerator_seconds",
        "quantity": "12.5", "period_start": start.isoformat(),
        "period_end": (start + timedelta(seconds=12.5)).isoformat(),
    }  # fmt: skip

    first = running["agent"].post("/api/v1/agent/usage-events", {"events": [event]}, format="json")
    resent = running["agent"].post("/api/v1/agent/usage-events", {"events": [event]}, format="json")

    assert first.json()["accepted"] == 1 and resent.json()["duplicates"] == 1
    assert UsageEvent.objects.filter(rental=rental).count() == 1


def test_a_nodes_agent_reaches_nothing_of_another_node_or_provider(running, api_client_for):
    other_offering = cpu_offering(metering=Metering.REPORTED)
    _other, other_token = live_node(other_offering)
    intruder = agent(other_token)
    job = Job.objects.create(
        organization=running["buyer"], rental=running["rental"], node=running["node"], command=["true"],
        time_limit_seconds=60, status=Job.Status.RUNNING,
    )  # fmt: skip
    rental = running["rental"]
    event = {
        "rental": rental.pk, "idempotency_key": "x", "dimension": "accelerator_seconds", "quantity": "1",
        "period_start": rental.started_at.isoformat(),
        "period_end": (rental.started_at + timedelta(seconds=1)).isoformat(),
    }  # fmt: skip

    for path, body in [
        (f"/api/v1/agent/jobs/{job.pk}/start", {"started_at": now().isoformat()}),
        (f"/api/v1/agent/jobs/{job.pk}/log", {"chunks": [{"seq": 0, "stream": "stdout", "text": "x"}]}),
        (f"/api/v1/agent/jobs/{job.pk}/finish", {"status": "failed", "exit_code": 1, "started_at": now().isoformat(),
                                                  "finished_at": now().isoformat()}),
    ]:  # fmt: skip
        response = intruder.post(path, body, format="json")
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "job_not_found"
    usage = intruder.post("/api/v1/agent/usage-events", {"events": [event]}, format="json").json()
    assert usage["results"][0]["code"] == "rental_not_found"
    assert intruder.post("/api/v1/agent/jobs/claim").status_code == 204
    assert not JobLogChunk.objects.exists() and Job.objects.get(pk=job.pk).status == Job.Status.RUNNING


# --- The provider's nodes ---


def test_a_provider_makes_a_node_and_sees_its_token_once(api_client_for):
    offering = cpu_offering()
    client = api_client_for(offering.provider)

    made = client.post("/api/v1/provider/nodes/", {"offering": offering.pk, "name": "rack-1"}, format="json")
    listed = client.get("/api/v1/provider/nodes/").json()["results"]
    shown = client.get(f"/api/v1/provider/nodes/{made.json()['id']}/").json()

    assert made.status_code == 201 and made.json()["token"].startswith("mkn_")
    assert "token" not in listed[0] and "token" not in shown
    assert shown["status"] == "awaiting" and shown["benchmarks"] == [] and shown["reliability"] is None


def test_another_providers_offering_is_not_found(api_client_for):
    offering, other = cpu_offering(), cpu_offering()

    response = api_client_for(offering.provider).post(
        "/api/v1/provider/nodes/", {"offering": other.pk, "name": "x"}, format="json"
    )

    assert response.status_code == 404 and response.json()["error"]["code"] == "offering_not_found"


def test_the_node_list_costs_the_same_queries_for_one_node_or_many(api_client_for):
    offering = cpu_offering()
    client = api_client_for(offering.provider)
    live_node(offering, name="first")
    client.get("/api/v1/provider/nodes/")  # the key's first use is recorded once
    with CaptureQueriesContext(connection) as one:
        client.get("/api/v1/provider/nodes/")
    for index in range(5):
        live_node(offering, name=f"more-{index}")

    with CaptureQueriesContext(connection) as many:
        response = client.get("/api/v1/provider/nodes/")

    assert response.json()["count"] == 6
    assert len(many) == len(one)


def test_rotate_benchmark_and_retire_through_the_api(api_client_for):
    offering = cpu_offering()
    node, old = live_node(offering)
    client = api_client_for(offering.provider)

    rotated = client.post(f"/api/v1/provider/nodes/{node.pk}/rotate-token/")
    asked = client.post(f"/api/v1/provider/nodes/{node.pk}/benchmark/")
    retired = client.post(f"/api/v1/provider/nodes/{node.pk}/retire/")

    assert rotated.json()["token"] != old
    assert asked.json()["benchmark_requested_at"] is not None
    assert retired.json()["status"] == "retired"
    assert agent(rotated.json()["token"]).post("/api/v1/agent/heartbeat", {}, format="json").status_code == 401


# --- The buyer's jobs ---


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"command": "python -c 1"}, "invalid", "command"),
        ({"command": ["python"], "environment": {"1BAD": "x"}}, "invalid_job", "environment"),
        ({"command": ["python"], "files": {"../escape.py": "eA=="}}, "invalid_job", "files"),
        ({"command": ["python"], "files": {"a.py": "not base64!"}}, "invalid_job", "files"),
        ({"command": ["python"], "time_limit_seconds": 10**9}, "invalid_job", "time_limit_seconds"),
    ],
)
def test_a_job_that_cannot_run_is_refused_with_the_field_that_is_wrong(running, api_client_for, body, code, field):
    response = api_client_for(running["buyer"]).post(
        "/api/v1/jobs/", {"rental": running["rental"].pk, **body}, format="json"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == code and field in response.json()["error"]["details"]["fields"]


def test_a_job_on_a_rental_without_agent_nodes_is_refused(api_client_for):
    rental = reported_rental()

    response = api_client_for(rental.organization).post(
        "/api/v1/jobs/", {"rental": rental.pk, "command": ["true"]}, format="json"
    )

    assert response.status_code == 409 and response.json()["error"]["code"] == "rental_without_nodes"


def test_cancelling_a_queued_job_ends_it_and_a_running_one_asks_its_agent(running, api_client_for):
    buyer = api_client_for(running["buyer"])
    queued = buyer.post("/api/v1/jobs/", {"rental": running["rental"].pk, "command": ["true"]}, format="json").json()
    running_job = buyer.post("/api/v1/jobs/", {"rental": running["rental"].pk, "command": ["sleep", "9"]},
                             format="json").json()  # fmt: skip
    Job.objects.filter(pk=running_job["id"]).update(status=Job.Status.RUNNING, node=running["node"])

    cancelled = buyer.post(f"/api/v1/jobs/{queued['id']}/cancel/").json()
    asked = buyer.post(f"/api/v1/jobs/{running_job['id']}/cancel/").json()
    heartbeat = (
        running["agent"]
        .post("/api/v1/agent/heartbeat", {"telemetry": {"running_jobs": [running_job["id"]]}}, format="json")
        .json()
    )
    again = buyer.post(f"/api/v1/jobs/{queued['id']}/cancel/")

    assert cancelled["status"] == "cancelled"
    assert asked["status"] == "running" and asked["cancel_requested_at"] is not None
    assert heartbeat["cancel_jobs"] == [running_job["id"]]
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_ended"


def test_stopping_the_rental_stops_its_jobs_and_frees_its_node(running, api_client_for):
    buyer = api_client_for(running["buyer"])
    job = buyer.post("/api/v1/jobs/", {"rental": running["rental"].pk, "command": ["true"]}, format="json").json()

    buyer.post(f"/api/v1/rentals/{running['rental'].pk}/stop/")

    assert Job.objects.get(pk=job["id"]).status == Job.Status.CANCELLED
    node = Node.objects.get(pk=running["node"].pk)
    assert not node.placements.filter(released_at__isnull=True).exists()


def test_a_node_token_opens_nothing_but_the_agent_routes(running):
    job = Job.objects.create(organization=running["buyer"], rental=running["rental"], command=["true"],
                             time_limit_seconds=9)  # fmt: skip
    client = running["agent"]

    rental, node = running["rental"].pk, running["node"].pk
    for path in ["/api/v1/rentals/", f"/api/v1/rentals/{rental}/", f"/api/v1/jobs/{job.pk}/",
                 f"/api/v1/jobs/{job.pk}/log/", "/api/v1/provider/nodes/", f"/api/v1/provider/nodes/{node}/",
                 "/api/v1/wallet/"]:  # fmt: skip
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert client.post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 401
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED

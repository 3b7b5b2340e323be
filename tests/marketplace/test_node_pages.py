"""Node pages of the provider console and the jobs on a rental's page, through Django's test client."""

from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils.timezone import now

from marketplace.models import Job, JobLogChunk, Metering, Node
from marketplace.selectors.catalogue import offering_list
from marketplace.services import nodes as node_services
from marketplace.services.placement import PlacementRequest, placement_quote
from tests.factories.accounts import MembershipFactory, OrganizationFactory, UserFactory, staff_login
from tests.factories.marketplace import accelerator
from tests.factories.nodes import cpu_offering, h100_facts, h100_figures, live_node, node_for, rental_on_node

pytestmark = pytest.mark.django_db


@pytest.fixture
def provider_client(client):
    offering = cpu_offering(metering=Metering.REPORTED)
    client.force_login(MembershipFactory(organization=offering.provider).user)
    client.offering = offering
    return client


def test_a_provider_makes_a_node_and_sees_its_token_once(provider_client):
    offering = provider_client.offering

    made = provider_client.post("/console/nodes/", {"offering": offering.pk, "name": "rack-7"})
    listed = provider_client.get("/console/nodes/").content.decode()

    node = Node.objects.get(name="rack-7")
    page = made.content.decode()
    assert made.status_code == 200 and 'data-testid="node-token"' in page and f"mkn_{node.token_prefix}_" in page
    assert "marketplace-agent" in page
    assert "rack-7" in listed and f"mkn_{node.token_prefix}_" not in listed


def test_the_node_page_shows_hardware_benchmarks_and_review(client):
    offering = cpu_offering(accelerator=accelerator("nvidia-h100-sxm"), vcpu_per_node=8)
    client.force_login(MembershipFactory(organization=offering.provider).user)
    node, _token = node_for(offering)
    node_services.node_register(node_id=node.pk, facts=h100_facts())
    figures = h100_figures()
    figures["devices"][0]["tflops"]["bf16"] = 300.0
    node_services.node_benchmark_record(node_id=node.pk, figures=figures)

    page = client.get(f"/console/nodes/{node.pk}/").content.decode()

    assert "NVIDIA H100 80GB HBM3" in page and "GPU-00000000" in page
    assert "Held for review" in page or "待审核" in page
    assert "BF16 300.0 (30%) ⚠" in page
    assert 'id="benchmark-chart-data"' in page


def test_another_providers_node_is_not_found(provider_client):
    other, _token = live_node(cpu_offering())

    assert provider_client.get(f"/console/nodes/{other.pk}/").status_code == 404
    assert provider_client.post(f"/console/nodes/{other.pk}/retire/").status_code == 404
    assert Node.objects.get(pk=other.pk).status == Node.Status.ONLINE


def test_console_actions_rotate_benchmark_retire(provider_client):
    node, old = live_node(provider_client.offering)

    rotated = provider_client.post(f"/console/nodes/{node.pk}/rotate-token/").content.decode()
    provider_client.post(f"/console/nodes/{node.pk}/benchmark/")
    provider_client.post(f"/console/nodes/{node.pk}/retire/")

    node.refresh_from_db()
    assert f"mkn_{node.token_prefix}_" in rotated and old not in rotated
    assert node.benchmark_requested_at is not None and node.status == Node.Status.RETIRED


def test_the_node_list_costs_the_same_queries_for_one_node_or_many(provider_client):
    live_node(provider_client.offering, name="first")
    provider_client.get("/console/nodes/")
    with CaptureQueriesContext(connection) as one:
        provider_client.get("/console/nodes/")
    for index in range(4):
        live_node(provider_client.offering, name=f"n{index}")

    with CaptureQueriesContext(connection) as many:
        page = provider_client.get("/console/nodes/").content.decode()

    assert page.count("/console/nodes/") >= 5 and len(many) == len(one)


# --- Jobs on the rental page ---


@pytest.fixture
def buyer_on_a_node(client):
    rental, node, _token = rental_on_node()
    client.force_login(MembershipFactory(organization=rental.organization).user)
    client.rental, client.node = rental, node
    return client


def test_a_buyer_runs_a_job_from_the_rental_page_and_reads_its_log(buyer_on_a_node):
    rental = buyer_on_a_node.rental
    page = buyer_on_a_node.get(f"/rentals/{rental.pk}/").content.decode()
    assert 'data-testid="rental-nodes"' in page and 'data-testid="job-form"' in page

    submitted = buyer_on_a_node.post(
        f"/rentals/{rental.pk}/jobs/",
        {"command": "python -c 'print(42)'", "environment": "SEED=7\nMODE=fast", "time_limit_minutes": 5},
    )
    job = Job.objects.get(rental=rental)
    JobLogChunk.objects.create(job=job, seq=0, stream="stdout", text="42\n", at=now())
    fragment = buyer_on_a_node.get(f"/rentals/{rental.pk}/jobs/{job.pk}/").content.decode()

    assert submitted.status_code == 302 and submitted["Location"].endswith(f"#job-{job.pk}")
    assert job.command == ["python", "-c", "print(42)"] and job.environment == {"SEED": "7", "MODE": "fast"}
    assert job.time_limit_seconds == 300
    assert "42\n" in fragment and 'hx-trigger="every 2s"' in fragment  # queued: it keeps polling


def test_a_job_line_that_cannot_be_read_is_shown_next_to_the_field(buyer_on_a_node):
    rental = buyer_on_a_node.rental

    response = buyer_on_a_node.post(
        f"/rentals/{rental.pk}/jobs/", {"command": "python -c 'unclosed", "time_limit_minutes": 5}
    )

    assert response.status_code == 400 and not Job.objects.exists()
    assert "invalid-feedback" in response.content.decode()


def test_another_organizations_job_is_not_found(buyer_on_a_node, client):
    rental = buyer_on_a_node.rental
    job = Job.objects.create(organization=rental.organization, rental=rental, command=["true"], time_limit_seconds=9)
    outsider = MembershipFactory(organization=OrganizationFactory()).user
    buyer_on_a_node.force_login(outsider)

    assert buyer_on_a_node.get(f"/rentals/{rental.pk}/jobs/{job.pk}/").status_code == 404
    assert buyer_on_a_node.post(f"/rentals/{rental.pk}/jobs/{job.pk}/cancel/").status_code == 404
    assert (
        buyer_on_a_node.post(f"/rentals/{rental.pk}/jobs/", {"command": "true", "time_limit_minutes": 1}).status_code
        == 404
    )
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED


def test_the_rental_page_costs_the_same_queries_for_one_job_or_many(buyer_on_a_node):
    rental = buyer_on_a_node.rental
    buyer_on_a_node.post(f"/rentals/{rental.pk}/jobs/", {"command": "true", "time_limit_minutes": 1})
    buyer_on_a_node.get(f"/rentals/{rental.pk}/")
    with CaptureQueriesContext(connection) as one:
        buyer_on_a_node.get(f"/rentals/{rental.pk}/")
    for _index in range(4):
        buyer_on_a_node.post(f"/rentals/{rental.pk}/jobs/", {"command": "true", "time_limit_minutes": 1})

    with CaptureQueriesContext(connection) as many:
        buyer_on_a_node.get(f"/rentals/{rental.pk}/")

    assert len(many) == len(one)


def test_the_offering_page_shows_verified_figures_price_per_verified_tflops_and_reliability(client):
    offering = cpu_offering(accelerator=accelerator("nvidia-h100-sxm"), vcpu_per_node=8, on_demand_price="20.05")
    live_node(offering)

    page = client.get(f"/offerings/{offering.pk}/").content.decode()

    assert 'data-testid="verified-figures"' in page
    assert "802.0 TFLOPS" in page and "81%" in page  # BF16 against 989.4
    assert "¥0.0250" in page  # ¥20.05 / 802 TFLOPS
    assert 'data-testid="reliability"' in page and "100.0%" in page


def test_the_catalogue_sorts_by_reliability_and_quotes_break_price_ties_by_it():
    steady, shaky = cpu_offering(on_demand_price="5.00"), cpu_offering(on_demand_price="5.00")
    start = now() - timedelta(hours=10)
    live_node(steady, moment=start)
    node, _token = live_node(shaky, moment=start)
    Node.objects.filter(pk=node.pk).update(last_heartbeat_at=start)
    node_services.node_mark_offline(node_id=node.pk, moment=start + timedelta(hours=5))
    node_services.node_heartbeat(node_id=node.pk, telemetry={})

    ranked = list(offering_list(filters={"sort": "-reliability"}).filter(pk__in=[steady.pk, shaky.pk]))
    quotes = placement_quote(
        request=PlacementRequest(accelerators=1, hours=1),
        offerings=offering_list().filter(pk__in=[shaky.pk, steady.pk]),
    ).quotes

    assert [o.pk for o in ranked] == [steady.pk, shaky.pk]
    assert ranked[1].reliability < ranked[0].reliability == 1
    assert [q.offering.pk for q in quotes] == [steady.pk, shaky.pk]


def test_staff_see_nodes_in_the_admin_and_clear_one_held_for_review(client):
    offering = cpu_offering(accelerator=accelerator("huawei-ascend-910b"), vcpu_per_node=1)
    node, _token = node_for(offering)
    node_services.node_register(node_id=node.pk, facts=h100_facts(accelerators=[{"index": 0, "name": "Ascend910B"}]))
    staff_login(client, UserFactory(is_staff=True, is_superuser=True))

    listed = client.get("/admin/marketplace/node/")
    shown = client.get(f"/admin/marketplace/node/{node.pk}/change/")
    cleared = client.post("/admin/marketplace/node/", {"action": "clear_review", "_selected_action": [node.pk]})

    assert listed.status_code == shown.status_code == 200 and "token_hash" not in shown.content.decode()
    assert cleared.status_code == 302
    node.refresh_from_db()
    assert not node.needs_review and node.verified_at is not None
    offering.refresh_from_db()
    assert offering.capacity_nodes == 1


def test_the_node_history_reads_in_the_readers_language(provider_client):
    node, _token = live_node(provider_client.offering)

    english = provider_client.get(f"/console/nodes/{node.pk}/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    chinese = provider_client.get(f"/console/nodes/{node.pk}/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()

    assert "(Registered by its agent)" in english and "(Made in the console)" in english
    assert "(由其代理注册)" in chinese and "(在控制台创建)" in chinese


def test_working_files_go_with_a_job_from_the_page_within_the_limit(buyer_on_a_node, settings):
    rental = buyer_on_a_node.rental
    settings.JOB_FILES_MAX_BYTES = 10

    accepted = buyer_on_a_node.post(
        f"/rentals/{rental.pk}/jobs/",
        {"command": "python main.py", "time_limit_minutes": 1,
         "files": [SimpleUploadedFile("main.py", b"print(1)"), SimpleUploadedFile("a.txt", b"x")]},
    )  # fmt: skip
    refused = buyer_on_a_node.post(
        f"/rentals/{rental.pk}/jobs/",
        {"command": "true", "time_limit_minutes": 1, "files": [SimpleUploadedFile("big.bin", b"0" * 11)]},
    )

    assert accepted.status_code == 302
    assert Job.objects.get().files == {"main.py": "cHJpbnQoMSk=", "a.txt": "eA=="}
    assert refused.status_code == 400 and Job.objects.count() == 1


def test_the_catalogue_shows_each_offerings_reliability(client):
    offering = cpu_offering(name="Steady CPU")
    live_node(offering)

    page = client.get("/offerings/?q=Steady", HTTP_ACCEPT_LANGUAGE="en").content.decode()

    assert "Steady CPU" in page and "verified</span><span" in page and " 100.0%</span>" in page

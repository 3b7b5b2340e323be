"""A provider makes a node and gets its agent's token; the node registers and is verified; a buyer rents it, runs a
command from the rental page and watches its output arrive live. The agent's side is played by its services here
(the real agent process runs end to end in tests/agent/test_end_to_end.py)."""

import pytest
from django.utils.timezone import now
from playwright.sync_api import expect

from marketplace.models import Job, Metering, Node, Rental
from marketplace.services import jobs as job_services
from marketplace.services import nodes as node_services
from marketplace.services import rentals as rental_services
from tests.factories.accounts import PASSWORD, MembershipFactory
from tests.factories.billing import fund
from tests.factories.nodes import cpu_facts, cpu_figures, cpu_offering

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


def sign_in(page, user) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("E-mail").fill(user.email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_make_a_node_rent_it_and_watch_a_job_run(page, screenshot, monkeypatch):
    monkeypatch.setattr("marketplace.views.rentals.JOB_LOG_POLL_SECONDS", 1)
    offering = cpu_offering(name="CPU Lingang", metering=Metering.REPORTED)
    provider_user = MembershipFactory(organization=offering.provider).user

    # a provider makes the node in the console and sees its token once
    sign_in(page, provider_user)
    page.goto("/console/nodes/")
    form = page.get_by_test_id("node-form")
    form.get_by_label("Offering").select_option(label=offering.name)
    form.get_by_label("Name").fill("rack-7")
    form.get_by_role("button").click()
    token = page.get_by_test_id("node-token").text_content().strip()
    node = Node.objects.get(name="rack-7")
    assert token.startswith(f"mkn_{node.token_prefix}_")
    screenshot(page, "node-token")

    # its agent registers and benchmarks it: the console shows it verified
    assert node_services.node_authenticate(raw_token=token) == node
    node_services.node_register(node_id=node.pk, facts=cpu_facts())
    node_services.node_benchmark_record(node_id=node.pk, figures=cpu_figures())
    page.goto(f"/console/nodes/{node.pk}/")
    expect(page.get_by_test_id("node-status").first).to_have_text("Online")
    expect(page.get_by_test_id("node-benchmarks")).to_contain_text("FP64 0.1")

    # a buyer rents it; the agent takes the rental up at its heartbeat
    buyer = MembershipFactory()
    fund(buyer.organization, "100.00")
    order = rental_services.RentalRequest(offering_id=offering.pk, accelerators=1)
    rental = rental_services.rental_create(organization=buyer.organization, request=order)
    rental_services.rental_provision(rental_id=rental.pk)
    node_services.node_heartbeat(node_id=node.pk, telemetry={})
    assert Rental.objects.get(pk=rental.pk).status == Rental.Status.RUNNING
    page.context.clear_cookies()
    sign_in(page, buyer.user)
    page.goto(f"/rentals/{rental.pk}/")
    expect(page.get_by_test_id("rental-nodes")).to_contain_text("rack-7")

    # when: the buyer runs a command from the page
    job_form = page.get_by_test_id("job-form")
    job_form.get_by_label("Command").fill("python -c \"print('hello from rack-7')\"")
    job_form.get_by_role("button", name="Run on the node").click()
    job = Job.objects.get(rental=rental)
    card = page.get_by_test_id(f"job-{job.pk}")
    expect(card.get_by_test_id("job-status")).to_have_text("Queued")
    claimed, _placement = job_services.job_claim(node=node)
    job_services.job_start(node=node, job_id=claimed.pk, started_at=now().isoformat())
    job_services.job_log_append(
        node=node, job_id=job.pk, chunks=[{"seq": 0, "stream": "stdout", "text": "hello from rack-7\n"}]
    )

    # then: its output and its end arrive without a reload
    expect(card.get_by_test_id("job-log")).to_contain_text("hello from rack-7")
    expect(card.get_by_test_id("job-status")).to_have_text("Running")
    moment = now().isoformat()
    job_services.job_finish(node=node, job_id=job.pk, status="succeeded", exit_code=0, started_at=moment,
                            finished_at=moment)  # fmt: skip
    expect(card.get_by_test_id("job-status")).to_have_text("Succeeded")
    expect(card).to_contain_text("exit 0")
    screenshot(page, "job-log")

"""A buyer tries a model from its page and publishes an application on it; a second buyer finds the application,
tries it and reviews it; the seller sees what it earned. The pages call a real gateway and the demo model server."""

import threading
from decimal import Decimal

import pytest
from playwright.sync_api import expect

from marketplace.demo_model.server import DemoModelServer, DemoModelSettings
from marketplace.models import ModelCall
from marketplace.services.model_calls import model_calls_capture
from tests.factories.accounts import PASSWORD, MembershipFactory
from tests.factories.billing import fund
from tests.factories.gateway import GatewayServer
from tests.factories.marketplace import ModelServiceFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def gateway(settings):
    """The demo model server and the gateway on loopback ports; the pages send their calls there."""
    upstream = DemoModelServer(
        ("127.0.0.1", 0),
        DemoModelSettings(time_to_first_token=0, tokens_per_second=0, reply_tokens=24, api_key="sk-demo"),
    )
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    settings.GATEWAY_REDIS_URL = ""  # the embedded default's counters: every call's record is written at once
    settings.GATEWAY_DIRECTORY_SECONDS = 0  # an application published mid-test is callable at once
    with GatewayServer() as server:
        settings.GATEWAY_PUBLIC_URL = server.url
        server.upstream_url = f"http://127.0.0.1:{upstream.server_port}/v1"
        yield server
    upstream.shutdown()
    upstream.server_close()


def sign_in(page, email: str) -> None:
    page.context.clear_cookies()
    page.goto("/accounts/login/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign in")).to_have_count(0)


def try_it(page, message: str) -> None:
    page.get_by_label("Your message").fill(message)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_test_id("try-it").locator("[data-try-it-usage]")).to_contain_text("tokens")


def test_try_a_model_publish_an_application_another_buyer_uses_and_reviews_it_the_seller_earns(
    page, screenshot, gateway
):
    # given two funded buyers and a chat model on the demo model server
    seller = MembershipFactory(organization__name="Studio 工作室", role="owner")
    buyer = MembershipFactory(organization__name="Law firm 律所", role="owner")
    fund(seller.organization, "50.00")
    fund(buyer.organization, "50.00")
    service = ModelServiceFactory(
        name="Qwen2.5 72B",
        slug="qwen2-5-72b-instruct",
        upstream_base_url=gateway.upstream_url,
        upstream_api_key="sk-demo",
    )

    # when the first buyer tries the model from its page
    sign_in(page, seller.user.email)
    page.goto(f"/models/{service.pk}/")
    try_it(page, "Say hello")
    # then the answer streamed in, and the call is its organization's
    expect(page.locator("[data-try-it-output]")).not_to_be_empty()
    assert ModelCall.objects.get().organization_id == seller.organization_id
    screenshot(page, "model-try-it")

    # when it publishes an application on that model at ¥0.05 a call
    page.goto("/sell/apps/new/")
    page.get_by_label("Name", exact=True).fill("Contract reviewer")
    page.get_by_label("Slug").fill("contract-reviewer")
    page.get_by_label("Tagline").fill("Finds the risky clauses")
    page.get_by_label("Category").select_option("knowledge")
    page.get_by_label("Description").fill("Paste a contract.")
    page.get_by_label("Model service").select_option(str(service.pk))
    page.get_by_label("System prompt").fill("You review contracts.")
    page.get_by_label("Pricing").select_option("per_call")
    page.get_by_label("Price", exact=True).fill("0.05")
    page.get_by_role("button", name="Save draft").click()
    page.get_by_role("button", name="Publish").click()
    expect(page.get_by_test_id("application-status")).to_have_text("Published")

    # when a second buyer finds it in the storefront, tries it and reviews it
    sign_in(page, buyer.user.email)
    page.goto("/apps/?q=contract")
    page.get_by_role("link", name="Contract reviewer").click()
    expect(page.get_by_test_id("application-price")).to_contain_text("¥0.0500 per call")
    try_it(page, "Clause 7: either party may end this at any time.")
    page.reload()
    review = page.get_by_test_id("review-form")
    review.get_by_label("★★★★★", exact=True).check()
    review.get_by_label("Review").fill("Found the clause our lawyer missed.")
    review.get_by_role("button", name="Publish review").click()
    # then the review is published with its stars
    expect(page.get_by_test_id("reviews")).to_contain_text("Found the clause our lawyer missed.")
    expect(page.get_by_test_id("reviews")).to_contain_text("Law firm 律所")
    screenshot(page, "application-reviewed")

    # when the capture task has run, the seller looks at its console
    model_calls_capture()
    sign_in(page, seller.user.email)
    page.goto("/sell/")
    # then it earned the price less the 10 % platform fee
    expect(page.get_by_test_id("seller-applications")).to_contain_text("¥0.0450")
    app_call = ModelCall.objects.get(application__slug="contract-reviewer")
    assert (app_call.organization_id, app_call.application_amount) == (buyer.organization_id, Decimal("0.05"))
    screenshot(page, "seller-console")

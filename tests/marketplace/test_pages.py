"""Storefront and console pages through Django's test client (browser flows live in tests/browser/)."""

import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace.core.regions import Region
from marketplace.models import Application, ModelService, Offering, Site, SiteTier
from marketplace.services.nodes import node_authenticate
from tests.factories.accounts import MembershipFactory
from tests.factories.marketplace import (
    ModelServiceFactory,
    OfferingFactory,
    ProviderOrganizationFactory,
    SiteFactory,
    accelerator,
)


def test_seed_demo_is_idempotent_and_covers_every_region_and_tier(db):
    call_command("seed_demo", stdout=io.StringIO())
    counts = (Site.objects.count(), Offering.objects.count(), ModelService.objects.count(), Application.objects.count())
    second_run = io.StringIO()
    call_command("seed_demo", stdout=second_run)
    assert (
        Site.objects.count(), Offering.objects.count(), ModelService.objects.count(), Application.objects.count()
    ) == counts  # fmt: skip
    assert "(0 new objects)" in second_run.getvalue()
    assert set(Site.objects.values_list("region", flat=True)) == set(Region.values)
    assert set(Site.objects.values_list("tier", flat=True)) == set(SiteTier.values)
    assert Offering.objects.filter(status="published", accelerator__is_domestic=True).count() >= 4
    assert set(ModelService.objects.values_list("status", flat=True)) == {"published"}  # the demo model serves them
    # an application of each pricing, published, sold by the demo buyer
    applications = Application.objects.select_related("current_version", "seller")
    assert {app.current_version.pricing for app in applications} == {"per_call", "per_1k_tokens", "subscription"}
    assert {(app.status, app.seller.memberships.get().user.email) for app in applications} == {
        ("published", "buyer@demo.local")
    }


def test_seed_demo_makes_a_node_for_the_demo_agent_and_writes_its_token(db, tmp_path):
    token_file = tmp_path / "demo-node-token"

    call_command("seed_demo", node_token_file=str(token_file), stdout=io.StringIO())
    call_command("seed_demo", node_token_file=str(token_file), stdout=io.StringIO())  # each run: a new token

    node = node_authenticate(raw_token=token_file.read_text())
    assert (node.name, node.status, node.offering.status) == ("demo-node-1", "awaiting", "published")
    assert node.offering.metering == "reported" and node.offering.accelerator.slug == "cpu-node"
    assert oct(token_file.stat().st_mode)[-3:] == "600"


def test_offering_list_htmx_returns_the_results_fragment(db, client):
    OfferingFactory(name="Visible H100")
    full = client.get("/offerings/?region=yangtze-delta")
    fragment = client.get("/offerings/?region=yangtze-delta", HTTP_HX_REQUEST="true")
    assert "Visible H100" in full.content.decode() and "<html" in full.content.decode()
    assert "Visible H100" in fragment.content.decode() and "<html" not in fragment.content.decode()


def test_offering_list_shows_an_empty_state_that_says_what_to_do(db, client):
    OfferingFactory()
    body = client.get("/offerings/?region=ningxia", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "No offering matches these filters" in body


def test_offering_list_page_query_count_is_the_same_for_10_and_1000_offerings(db, client):
    provider, site = ProviderOrganizationFactory(), SiteFactory()
    OfferingFactory.create_batch(10, provider=provider, site=site)
    with CaptureQueriesContext(connection) as few:
        client.get("/offerings/?sort=price_per_tflops&precision=fp8")
    OfferingFactory.create_batch(990, provider=provider, site=site)
    with CaptureQueriesContext(connection) as many:
        response = client.get("/offerings/?sort=price_per_tflops&precision=fp8")
    assert response.status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)


def test_draft_offering_detail_is_404_for_buyers(db, client):
    draft = OfferingFactory(status=Offering.Status.DRAFT)
    assert client.get(f"/offerings/{draft.pk}/").status_code == 404


def test_price_calculator_prices_whole_nodes_and_reserved_terms(db, client):
    offering = OfferingFactory(on_demand_price=Decimal("10"), reserved_1m_discount_percent=Decimal("20"))
    on_demand = client.get(f"/offerings/{offering.pk}/price/?accelerators=3&hours=10&mode=on_demand")
    reserved = client.get(f"/offerings/{offering.pk}/price/?accelerators=8&hours=1&mode=reserved_1m")
    assert on_demand.context["estimate"].total_price == Decimal("800")  # one 8-accelerator node × 10 h × ¥10
    assert reserved.context["estimate"].total_price == Decimal("8") * 8 * 720  # ¥8 after 20 % off, 30 days


def test_compare_shows_up_to_four(db, client):
    offerings = OfferingFactory.create_batch(5)
    query = "&".join(f"ids={o.pk}" for o in offerings)
    response = client.get(f"/offerings/compare/?{query}")
    assert len(response.context["offerings"]) == 4
    assert response.context["too_many"] is True


def test_placement_page_ranks_and_explains(db, client):
    OfferingFactory(name="East", site=SiteFactory(residency_zone="cn-east"))
    OfferingFactory(name="South", site=SiteFactory(residency_zone="cn-south"))
    response = client.get("/placement/?accelerators=8&hours=4&precision=bf16&residency_zone=cn-east")
    result = response.context["result"]
    assert [q.offering.name for q in result.quotes] == ["East"]
    assert [(o.name, r) for o, r in result.excluded] == [("South", "wrong_zone")]


def test_estimator_page(db, client):
    response = client.get("/estimator/?parameters=175000000000&tokens=300000000000&precision=bf16&mfu=0.5")
    assert response.status_code == 200
    assert response.context["estimate"].petaflop_days == Decimal("3645.8")
    assert response.context["rows"][0][0] == accelerator("nvidia-h100-sxm")  # fastest at BF16 (tied with H800)


def test_model_services_list_hides_drafts_and_secrets(db, client):
    ModelServiceFactory(name="Public Qwen")
    ModelServiceFactory(name="Secret draft", status="draft")
    body = client.get("/models/").content.decode()
    assert "Public Qwen" in body and "Secret draft" not in body
    assert "sk-upstream-secret-never-shown" not in body


def test_a_model_service_page_shows_how_to_call_it_through_the_gateway(db, client):
    # given
    service = ModelServiceFactory(slug="qwen-7b")
    # when
    response = client.get(f"/models/{service.pk}/")
    # then: the gateway's address on this site and the service's name, never the upstream or its key
    snippet = response.content.decode()
    assert 'base_url="http://testserver/v1"' in snippet
    assert f'model="{service.provider.slug}/qwen-7b"' in snippet
    assert service.upstream_base_url not in snippet and "sk-upstream-secret-never-shown" not in snippet


@pytest.fixture
def provider_client(db, client):
    provider = ProviderOrganizationFactory()
    user = MembershipFactory(organization=provider).user
    client.force_login(user)
    return client, provider


def test_provider_creates_publishes_and_buyers_see_it(provider_client):
    client, provider = provider_client
    site = SiteFactory()
    response = client.post(
        "/console/offerings/new/",
        {
            "name": "Console H100", "description": "Ready", "site": site.pk,
            "accelerator": accelerator("nvidia-h100-sxm").pk, "accelerators_per_node": 8, "vcpu_per_node": 96,
            "ram_gb_per_node": 1024, "disk_gb_per_node": 4000, "network_gbps": 200, "capacity_nodes": 2,
            "on_demand_price": "17.5", "min_rental_hours": 1,
        },
    )  # fmt: skip
    offering = Offering.objects.get(name="Console H100")
    client.post(f"/console/offerings/{offering.pk}/status/", {"status": "published"})
    assert response.status_code == 302
    assert "Console H100" in client.get("/offerings/").content.decode()


def test_console_form_shows_the_services_refusal_next_to_the_field(provider_client):
    client, provider = provider_client
    offering = OfferingFactory(provider=provider, capacity_nodes=4, rented_nodes=3)
    data = {
        "name": offering.name, "description": "x", "site": offering.site_id, "accelerator": offering.accelerator_id,
        "accelerators_per_node": 8, "vcpu_per_node": 96, "ram_gb_per_node": 1024, "disk_gb_per_node": 4000,
        "network_gbps": 200, "capacity_nodes": 2, "on_demand_price": "17.5", "min_rental_hours": 1,
    }  # fmt: skip
    response = client.post(f"/console/offerings/{offering.pk}/", data)
    assert response.status_code == 200
    assert response.context["form"].errors["capacity_nodes"]
    offering.refresh_from_db()
    assert offering.capacity_nodes == 4


def test_provider_cannot_open_another_providers_offering_in_the_console(provider_client):
    client, _provider = provider_client
    theirs = OfferingFactory()
    assert client.get(f"/console/offerings/{theirs.pk}/").status_code == 404
    assert client.post(f"/console/offerings/{theirs.pk}/status/", {"status": "retired"}).status_code == 404


def test_console_model_service_form_never_shows_the_key(provider_client):
    client, provider = provider_client
    service = ModelServiceFactory(provider=provider)
    body = client.get(f"/console/model-services/{service.pk}/").content.decode()
    assert "sk-upstream-secret-never-shown" not in body


@pytest.mark.parametrize("path", ["/", "/offerings/", "/models/", "/placement/", "/estimator/", "/offerings/compare/"])
def test_storefront_pages_render(db, client, path):
    OfferingFactory()
    assert client.get(path).status_code == 200


def test_the_list_fetches_its_count_separately(db, client):
    OfferingFactory.create_batch(3, site=SiteFactory(region="guizhou"))
    OfferingFactory()
    page = client.get("/offerings/?region=guizhou", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    count = client.get("/offerings/count/?region=guizhou", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'hx-get="/offerings/count/?region=guizhou' in page
    assert "3 offerings" in count


def test_the_count_is_capped(db, client, monkeypatch):
    from marketplace.views.storefront import CappedPaginator

    monkeypatch.setattr(CappedPaginator, "COUNT_CAP", 2)
    OfferingFactory.create_batch(3)
    count = client.get("/offerings/count/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "More than 2 offerings" in count


def test_console_status_change_reports_the_status_label(provider_client):
    client, provider = provider_client
    offering = OfferingFactory(provider=provider)
    response = client.post(
        f"/console/offerings/{offering.pk}/status/", {"status": "paused"}, follow=True, HTTP_ACCEPT_LANGUAGE="en"
    )
    messages = [str(m) for m in response.context["messages"]]
    assert messages == [f"“{offering.name}” is now Paused."]


def test_seed_demo_gives_the_demo_buyer_test_mode_credit_once(db, settings):
    from billing.models import TopUp

    settings.STRIPE_SECRET_KEY, settings.BILLING_TEST_TOPUPS = "", True
    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())
    assert list(TopUp.objects.values_list("organization__memberships__user__email", "amount", "mode")) == [
        ("buyer@demo.local", Decimal("5000.00"), "test")
    ]


def test_seed_demo_gives_the_demo_buyer_a_rental_history_once(db, settings):
    from marketplace.models import Rental

    settings.STRIPE_SECRET_KEY, settings.BILLING_TEST_TOPUPS = "", True
    call_command("seed_demo", stdout=io.StringIO())
    call_command("seed_demo", stdout=io.StringIO())
    rentals = Rental.objects.filter(organization__memberships__user__email="buyer@demo.local").order_by("pk")
    assert [r.status for r in rentals] == ["completed", "completed", "running"]
    # billed through the real services: 2 × ¥2.80 × 3 h and 8 × ¥9.80 × 2 h, the running one so far
    assert [r.charged_amount for r in rentals[:2]] == [Decimal("16.80"), Decimal("156.80")]
    assert rentals[2].charged_amount > 0 and rentals[2].hold.remaining > 0


def test_offering_rows_on_the_list_page_are_escaped(db, client):
    OfferingFactory(name="<script>alert(1)</script> H100")
    page = client.get("/offerings/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; H100" in page
    assert "<script>alert(1)" not in page


def test_invalid_facets_are_reported_and_the_others_still_apply(db, client):
    OfferingFactory(name="Lingang node", site=SiteFactory(region=Region.YANGTZE_DELTA))
    OfferingFactory(name="Gui'an node", site=SiteFactory(region=Region.GUIZHOU))
    page = client.get("/offerings/?region=yangtze-delta&min_price=cheap", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "Some filters were not understood and were ignored" in page and "min_price" in page
    assert "Lingang node" in page and "Gui&#x27;an node" not in page


@pytest.mark.parametrize("query", ["page=99999999999999999999", "page=99999999999999999999&min_memory_gb=1e30"])
def test_the_catalogue_page_past_any_row_or_a_facet_past_its_range_is_an_empty_page(client, db, query):
    # given
    OfferingFactory()
    client.raise_request_exception = False
    # when
    response = client.get(f"/offerings/?{query}")
    # then
    assert response.status_code == 200
    assert response.context["page"].object_list == []

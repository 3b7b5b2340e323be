from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketplace.models import Offering
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.marketplace import (
    ModelServiceFactory,
    OfferingFactory,
    ProviderOrganizationFactory,
    SiteFactory,
)

NEW_OFFERING = {
    "name": "8× H100 · Lingang",
    "description": "NVLink, InfiniBand 400G",
    "accelerator": "nvidia-h100-sxm",
    "accelerators_per_node": 8,
    "vcpu_per_node": 128,
    "ram_gb_per_node": 1024,
    "disk_gb_per_node": 8000,
    "network_gbps": 400,
    "capacity_nodes": 6,
    "on_demand_price": "18.50",
    "interruptible_price": "9.90",
    "reserved_1m_discount_percent": "20",
}


@pytest.fixture
def provider(db):
    return ProviderOrganizationFactory()


@pytest.fixture
def provider_client(provider, api_client_for):
    return api_client_for(provider, user=MembershipFactory(organization=provider).user)


def test_provider_creates_and_publishes_an_offering_that_buyers_then_see(provider_client, api_client_for):
    # given
    site = SiteFactory()
    buyer = api_client_for(OrganizationFactory())
    # when
    created = provider_client.post("/api/v1/provider/offerings/", {**NEW_OFFERING, "site": site.slug}, format="json")
    hidden = buyer.get("/api/v1/offerings/").json()["results"]
    published = provider_client.post(
        f"/api/v1/provider/offerings/{created.json()['id']}/status/", {"status": "published"}, format="json"
    )
    listed = buyer.get("/api/v1/offerings/").json()
    # then
    assert created.status_code == 201, created.content
    assert created.json()["status"] == "draft"
    assert hidden == []
    assert published.json()["status"] == "published"
    assert [o["name"] for o in listed["results"]] == ["8× H100 · Lingang"]
    assert listed["results"][0]["is_verified"] is False


def test_buyer_key_cannot_write_provider_endpoints(db, api_client_for):
    # given: a buyer organization, even with a key that holds every scope
    buyer = api_client_for(OrganizationFactory())
    # when
    response = buyer.post("/api/v1/provider/offerings/", {**NEW_OFFERING, "site": SiteFactory().slug}, format="json")
    # then
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "provider_required"
    assert not Offering.objects.exists()


def test_provider_key_without_provider_scope_gets_403(provider, api_client_for):
    client = api_client_for(provider, scopes=["read", "rent"])
    response = client.get("/api/v1/provider/offerings/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "scope_required"


def test_provider_cannot_edit_another_providers_offering(provider_client):
    # given
    theirs = OfferingFactory(name="Theirs")
    # when
    response = provider_client.patch(f"/api/v1/provider/offerings/{theirs.pk}/", {"name": "Mine now"}, format="json")
    status_change = provider_client.post(
        f"/api/v1/provider/offerings/{theirs.pk}/status/", {"status": "retired"}, format="json"
    )
    # then
    assert response.status_code == status_change.status_code == 404
    theirs.refresh_from_db()
    assert (theirs.name, theirs.status) == ("Theirs", "published")


def test_price_change_through_the_api_lands_in_the_history(provider, provider_client, api_client_for):
    offering = OfferingFactory(provider=provider)
    provider_client.patch(f"/api/v1/provider/offerings/{offering.pk}/", {"on_demand_price": "16.00"}, format="json")
    history = api_client_for(OrganizationFactory()).get(f"/api/v1/offerings/{offering.pk}/price-history/").json()
    assert [row["on_demand_price"] for row in history["results"]] == ["16.00000000"]


def test_partial_update_changes_only_the_fields_sent(provider, provider_client):
    offering = OfferingFactory(provider=provider, interruptible_price=Decimal("9"), min_rental_hours=4)
    provider_client.patch(f"/api/v1/provider/offerings/{offering.pk}/", {"name": "Renamed"}, format="json")
    offering.refresh_from_db()
    assert (offering.name, offering.interruptible_price, offering.min_rental_hours) == ("Renamed", Decimal("9"), 4)


def test_validation_errors_name_the_field(provider_client):
    response = provider_client.post(
        "/api/v1/provider/offerings/",
        {**NEW_OFFERING, "site": SiteFactory().slug, "interruptible_price": "30"},
        format="json",
    )
    assert response.status_code == 400
    assert list(response.json()["error"]["details"]["fields"]) == ["interruptible_price"]


def test_no_response_ever_contains_an_upstream_secret(provider, provider_client, api_client_for):
    # given
    ModelServiceFactory(provider=provider, upstream_api_key="sk-upstream-secret-never-shown")
    created = provider_client.post(
        "/api/v1/provider/model-services/",
        {
            "name": "DeepSeek V3", "slug": "deepseek-v3", "model_family": "deepseek", "modality": "chat",
            "context_length": 65536, "max_output_tokens": 8192, "precision": "fp8",
            "input_price_per_1k_tokens": "0.002", "output_price_per_1k_tokens": "0.008", "rate_limit_rpm": 100,
            "rate_limit_tpm": 100000, "residency_zone": "cn-east", "upstream_base_url": "http://127.0.0.1:9/v1",
            "upstream_api_key": "sk-second-secret-value",
        },
        format="json",
    )  # fmt: skip
    buyer = api_client_for(OrganizationFactory())
    # when: every serialised model service, for the provider and for a buyer
    public_list = buyer.get("/api/v1/model-services/")
    provider_list = provider_client.get("/api/v1/provider/model-services/")
    bodies = [created.content, public_list.content, provider_list.content]
    bodies += [buyer.get(f"/api/v1/model-services/{item['id']}/").content for item in public_list.json()["results"]]
    bodies += [
        provider_client.get(f"/api/v1/provider/model-services/{item['id']}/").content
        for item in provider_list.json()["results"]
    ]
    # then
    assert created.status_code == 201, created.content
    assert created.json()["has_upstream_api_key"] is True
    for body in bodies:
        assert b"sk-upstream-secret-never-shown" not in body
        assert b"sk-second-secret-value" not in body
        assert b'"upstream_api_key"' not in body
    assert len(bodies) == 6


@pytest.mark.parametrize("path", ["/api/v1/offerings/", "/api/v1/model-services/", "/api/v1/provider/offerings/"])
def test_catalogue_list_query_count_is_flat(provider, provider_client, path):
    # given: 10 of each, then 1,000
    OfferingFactory.create_batch(10, provider=provider)
    ModelServiceFactory.create_batch(10, provider=provider)
    provider_client.get(path)
    with CaptureQueriesContext(connection) as few:
        provider_client.get(path + "?page_size=100")
    # when
    OfferingFactory.create_batch(990, provider=provider, site=SiteFactory())
    ModelServiceFactory.create_batch(990, provider=provider)
    # then
    with CaptureQueriesContext(connection) as many:
        response = provider_client.get(path + "?page_size=100")
    assert len(response.json()["results"]) == 100
    assert len(many.captured_queries) == len(few.captured_queries)


def test_placement_quote_endpoint(db, api_client_for):
    OfferingFactory(site=SiteFactory(residency_zone="cn-east"), name="East")
    OfferingFactory(site=SiteFactory(residency_zone="cn-south"), name="South")
    client = api_client_for(OrganizationFactory(), scopes=["read"])
    response = client.post(
        "/api/v1/placements/quote/", {"accelerators": 8, "hours": 24, "residency_zone": "cn-east"}, format="json"
    )
    body = response.json()
    assert response.status_code == 200, body
    assert [q["offering"]["name"] for q in body["quotes"]] == ["East"]
    assert body["quotes"][0]["total_price"] == "3552.00000000"  # 18.5 × 8 accelerators × 24 h
    assert [(e["offering_name"], e["reason"]) for e in body["excluded"]] == [("South", "wrong_zone")]


def test_training_estimate_endpoint(db, api_client_for):
    client = api_client_for(OrganizationFactory(), scopes=["read"])
    response = client.post(
        "/api/v1/placements/estimate/",
        {"parameters": 7_000_000_000, "tokens": 2_000_000_000_000, "mfu": "0.4"},
        format="json",
    )
    body = response.json()
    assert body["total_flops"] == str(6 * 7_000_000_000 * 2_000_000_000_000)
    assert set(body["accelerator_hours"]) >= {"nvidia-h100-sxm", "huawei-ascend-910b"}


def test_offering_list_rows_are_what_the_serializer_writes(db, api_client_for):
    # given: every field filled, so that no formatting difference can hide behind a null
    offering = OfferingFactory(
        interruptible_price=Decimal("9.5"), reserved_1w_discount_percent=Decimal("5"),
        reserved_1m_discount_percent=Decimal("12.5"), reserved_3m_discount_percent=Decimal("20"),
        max_rental_hours=720, verified_tflops={"bf16": "801.9"}, site=SiteFactory(pue=Decimal("1.18")),
        rented_nodes=1,
    )  # fmt: skip
    offering.published_at = offering.verified_at = offering.created_at
    offering.save()
    client = api_client_for(OrganizationFactory())
    # when
    listed = client.get("/api/v1/offerings/").json()["results"]
    detail = client.get(f"/api/v1/offerings/{offering.pk}/").json()
    # then
    assert listed == [detail]


def test_offering_pages_link_forward_without_counting(db, api_client_for):
    OfferingFactory.create_batch(3)
    client = api_client_for(OrganizationFactory())
    first = client.get("/api/v1/offerings/?page_size=2").json()
    second = client.get(first["next"]).json()
    assert len(first["results"]) == 2 and first["previous"] is None
    assert len(second["results"]) == 1 and second["next"] is None
    assert second["previous"].endswith("/api/v1/offerings/?page_size=2")
    assert client.get("/api/v1/offerings/?page=9").status_code == 404
    assert client.get("/api/v1/offerings/?page=abc").json()["error"]["code"] == "not_found"

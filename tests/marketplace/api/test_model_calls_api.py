"""/api/v1/model-calls/ (the caller's records) and /api/v1/provider/model-calls/ (calls on a provider's services)."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.services.gateway import gateway_funds_grow
from marketplace.services.model_calls import model_calls_capture
from tests.factories.accounts import OrganizationFactory, ProviderProfileFactory
from tests.factories.billing import fund
from tests.factories.marketplace import ModelCallFactory, ModelServiceFactory


@pytest.fixture
def service(db):
    return ModelServiceFactory()


def test_a_buyer_lists_its_own_calls_newest_first_and_filters_them(api_client_for, organization, service):
    # given
    older = ModelCallFactory(organization=organization, model_service=service)
    failed = ModelCallFactory(organization=organization, model_service=service, status_code=502, cost=0)
    ModelCallFactory(model_service=service)  # someone else's
    client = api_client_for(organization)
    # when
    listed = client.get("/api/v1/model-calls/").json()
    failures = client.get("/api/v1/model-calls/?status_code=502").json()
    # then
    assert [row["id"] for row in listed["results"]] == [failed.pk, older.pk]
    assert listed["results"][1]["model_service"] == f"{service.provider.slug}/{service.slug}"
    assert listed["results"][1]["cost"] == "0.00050000"
    assert [row["id"] for row in failures["results"]] == [failed.pk]


def test_a_provider_sees_calls_on_its_services_with_earnings_and_not_who_made_them(api_client_for, service):
    # given: a captured call (10 % platform fee)
    buyer = OrganizationFactory()
    fund(buyer, "10.00")
    gateway_funds_grow(organization_id=buyer.pk, needed=Decimal("1"), count_available_here=True)
    call = ModelCallFactory(organization=buyer, model_service=service)
    model_calls_capture()
    # when
    body = api_client_for(service.provider).get("/api/v1/provider/model-calls/").json()
    # then
    [row] = body["results"]
    assert (row["id"], row["cost"], row["earnings"]) == (call.pk, "0.00050000", "0.00045000")
    assert "organization" not in row and "api_key" not in row


def test_only_approved_providers_list_provider_calls(api_client_for, organization):
    assert api_client_for(organization).get("/api/v1/provider/model-calls/").status_code == 403


@pytest.mark.parametrize("path", ["/api/v1/model-calls/", "/api/v1/provider/model-calls/"])
def test_call_lists_query_count_does_not_grow_with_rows(api_client_for, organization, django_assert_num_queries, path):
    # given: the organization both calls and provides
    ProviderProfileFactory(organization=organization)
    own_service = ModelServiceFactory(provider=organization)
    ModelCallFactory(organization=organization, model_service=own_service)
    client = api_client_for(organization)
    client.get(path)
    with CaptureQueriesContext(connection) as few:
        assert client.get(path).status_code == 200
    # when
    for _ in range(10):
        ModelCallFactory(organization=organization, model_service=ModelServiceFactory(provider=organization))
    # then
    with django_assert_num_queries(len(few.captured_queries)):
        client.get(path)

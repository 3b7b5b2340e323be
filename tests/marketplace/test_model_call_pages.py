"""Model API usage pages: the caller's calls, charts and CSV; a provider's calls and earnings per model service."""

import csv
import io
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.services.gateway import gateway_funds_grow
from marketplace.services.model_calls import model_calls_capture
from tests.factories.accounts import MembershipFactory, OrganizationFactory
from tests.factories.billing import fund
from tests.factories.marketplace import ModelCallFactory, ModelServiceFactory, ProviderOrganizationFactory


@pytest.fixture
def service(db):
    return ModelServiceFactory(slug="qwen-test")


@pytest.fixture
def signed_in(client, organization, owner):
    client.force_login(owner)
    return client


def test_the_usage_page_shows_the_callers_calls_by_model_and_day_and_no_one_elses(signed_in, organization, service):
    # given
    ModelCallFactory(organization=organization, model_service=service, prompt_tokens=111, completion_tokens=22)
    ModelCallFactory(organization=organization, model_service=service, status_code=502, cost=0, error_code="x")
    ModelCallFactory(model_service=service, prompt_tokens=999)  # another organization's
    # when
    page = signed_in.get("/model-usage/", HTTP_ACCEPT_LANGUAGE="en")
    # then
    html = page.content.decode()
    assert page.status_code == 200
    assert f"{service.provider.slug}/qwen-test" in html
    assert "111 / 22" in html and "999" not in html
    by_day = page.context["day_chart"]
    assert sum(by_day["calls"]) == 2 and by_day["amounts"][-1] == "0.00"  # ¥0.0005 shows as 0.00 in the chart
    assert page.context["by_service"][0]["calls"] == 2


def test_the_usage_csv_has_one_row_per_call(signed_in, organization, service):
    # given
    call = ModelCallFactory(organization=organization, model_service=service)
    ModelCallFactory(model_service=service)
    # when
    body = b"".join(signed_in.get("/model-usage.csv").streaming_content).decode()
    # then
    header, *rows = list(csv.reader(io.StringIO(body)))
    assert header[:4] == ["time", "call_id", "api_key", "requested_model"]
    assert [row[1] for row in rows] == [str(call.call_id)]
    assert rows[0][header.index("cost")] == "0.00050000"


def test_the_usage_page_query_count_does_not_grow_with_calls(signed_in, organization, service):
    ModelCallFactory(organization=organization, model_service=service)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert signed_in.get("/model-usage/").status_code == 200
        return len(captured)

    few = queries()
    for _ in range(5):
        ModelCallFactory(organization=organization, model_service=ModelServiceFactory())
    assert queries() == few


def test_a_provider_sees_calls_and_earnings_per_model_service(client, service):
    # given: a captured call on the provider's service (10 % fee) and one not captured yet
    buyer = OrganizationFactory()
    fund(buyer, "10.00")
    gateway_funds_grow(organization_id=buyer.pk, needed=Decimal("1"), count_available_here=True)
    ModelCallFactory(organization=buyer, model_service=service)
    model_calls_capture()
    ModelCallFactory(organization=buyer, model_service=service)
    client.force_login(MembershipFactory(organization=service.provider).user)
    # when
    page = client.get("/console/model-calls/", HTTP_ACCEPT_LANGUAGE="en")
    # then
    [row] = page.context["by_service"]
    assert (row["calls"], row["cost"], row["earned"]) == (2, Decimal("0.001"), Decimal("0.00045"))
    html = page.content.decode()
    assert "pending" in html and buyer.name not in html


def test_the_provider_page_is_for_approved_providers(signed_in):
    assert signed_in.get("/console/model-calls/").status_code in (302, 403)


def test_the_provider_page_query_count_does_not_grow_with_calls(db, client):
    provider = ProviderOrganizationFactory()
    client.force_login(MembershipFactory(organization=provider).user)
    ModelCallFactory(model_service=ModelServiceFactory(provider=provider))

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/console/model-calls/").status_code == 200
        return len(captured)

    few = queries()
    for _ in range(5):
        ModelCallFactory(model_service=ModelServiceFactory(provider=provider))
    assert queries() == few

"""Bad input gets a clear answer in the API's error shape with a code, never a server error (issue 23, item 8)."""

import pytest
from rest_framework.test import APIClient

from billing.models import TopUp
from marketplace.models import Node
from marketplace.services.nodes import node_create
from tests.api.test_conventions import assert_error
from tests.factories.accounts import ProviderProfileFactory
from tests.factories.marketplace import OfferingFactory

HUGE = "99999999999999999999"  # past a 64-bit integer: no database column or offset holds it


@pytest.fixture
def client(organization, owner, api_client_for):
    ProviderProfileFactory(organization=organization)
    client = api_client_for(organization, user=owner)
    client.raise_request_exception = False  # a server error is an answer here, not an exception of the test
    return client


@pytest.mark.parametrize("path", ["/api/v1/offerings/", "/api/v1/rentals/", "/api/v1/api-keys/"])
def test_a_page_number_past_any_offset_is_404_invalid_page(client, path):
    # when
    response = client.get(f"{path}?page={HUGE}")
    # then
    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("facet", ["min_memory_gb", "min_accelerators_per_node"])
def test_a_filter_number_past_its_columns_range_matches_nothing_not_a_server_error(client, facet):
    # given: an offering that any smaller bound would match
    OfferingFactory()
    # when
    response = client.get(f"/api/v1/offerings/?{facet}={HUGE}000")
    # then
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


def test_a_filter_number_past_its_columns_range_on_a_plain_list_is_a_clear_answer(client):
    # when
    response = client.get(f"/api/v1/model-services/?min_context_length={HUGE}000")
    # then
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


def test_an_id_too_large_for_its_column_is_a_clear_answer_and_nothing_is_written(client, organization):
    # given
    offering = OfferingFactory(provider=organization)
    # when
    response = client.post(
        "/api/v1/provider/nodes/", f'{{"name": "n1", "offering": {HUGE}}}', content_type="application/json"
    )
    rental = client.post(
        "/api/v1/rentals/", f'{{"offering": {HUGE}, "accelerators": 1}}', content_type="application/json"
    )
    # then
    assert response.status_code in (400, 404), response.content
    assert set(response.json()["error"]) == {"code", "message", "details"}
    assert rental.status_code in (400, 404), rental.content
    assert set(rental.json()["error"]) == {"code", "message", "details"}
    assert Node.objects.filter(offering=offering).count() == 0


@pytest.mark.parametrize(
    ("amount", "code"),
    [("1e30", "amount_out_of_range"), ('"1e30"', "amount_out_of_range"), ('"-1e30"', "amount_out_of_range"),
     ("1e400", "invalid_amount")],
)  # fmt: skip
def test_a_top_up_amount_out_of_every_range_is_400_with_a_code(client, organization, settings, amount, code):
    # given
    settings.STRIPE_SECRET_KEY, settings.BILLING_TEST_TOPUPS = "", True
    # when
    response = client.post("/api/v1/top-ups/", f'{{"amount": {amount}}}', content_type="application/json")
    # then
    assert_error(response, 400, code)
    assert TopUp.objects.filter(organization=organization).count() == 0


def test_a_body_over_the_upload_limit_is_413_request_too_large_in_the_error_shape(client, settings):
    # given
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    body = '{"name": "%s"}' % ("x" * 2048)
    # when
    response = client.post("/api/v1/api-keys/", body, content_type="application/json")
    # then
    assert response["Content-Type"] == "application/json"
    assert_error(response, 413, "request_too_large")


def test_a_body_over_the_default_limit_of_2_5_mb_is_413_request_too_large(client):
    # when
    response = client.post("/api/v1/api-keys/", '{"name": "%s"}' % ("x" * 2_700_000), content_type="application/json")
    # then
    assert_error(response, 413, "request_too_large")


@pytest.mark.parametrize("query", ["created_after=2026-13-45", "date_form=2026-01-01", "kind=capture&colour=red"])
def test_an_unknown_filter_is_400_unknown_parameter_not_ignored(client, query):
    # when
    response = client.get(f"/api/v1/transactions/?{query}")
    # then
    assert_error(response, 400, "unknown_parameter")
    assert response.json()["error"]["details"]["parameters"]


def test_an_invalid_filter_value_is_400_invalid(client):
    # when
    response = client.get("/api/v1/transactions/?date_from=2026-13-45")
    # then
    assert_error(response, 400, "invalid")
    assert set(response.json()["error"]["details"]["fields"]) == {"date_from"}


@pytest.mark.parametrize(
    "query", ["", "page=1", "page_size=5", "ordering=-created_at", "kind=capture&date_from=2026-01-01", "format=json"]
)
def test_known_parameters_are_still_accepted(client, query):
    # when
    response = client.get(f"/api/v1/transactions/?{query}")
    # then
    assert response.status_code == 200, response.content


@pytest.fixture
def node_client(organization, owner):
    ProviderProfileFactory(organization=organization)
    offering = OfferingFactory(provider=organization)
    node, token = node_create(provider=organization, offering_id=offering.pk, name="n1", actor=owner)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    client.raise_request_exception = False
    return client


def test_an_agents_benchmark_with_errors_of_the_wrong_shape_records_no_errors_not_a_server_error(node_client):
    # given
    body = {"backend": "cuda", "devices": [{"index": 0, "name": "H100", "tflops": {}, "errors": [None, None]}]}
    # when
    response = node_client.post("/api/v1/agent/benchmarks", body, format="json")
    # then
    assert response.status_code == 201, response.content
    assert response.json()["errors"] == {}


def test_an_agents_job_end_with_a_status_of_the_wrong_type_is_400_invalid(node_client):
    # given
    moment = "2026-01-01T00:00:00Z"
    body = {"status": {}, "exit_code": None, "started_at": moment, "finished_at": moment}
    # when
    response = node_client.post("/api/v1/agent/jobs/1/finish", body, format="json")
    # then
    assert response.status_code == 400, response.content
    assert set(response.json()["error"]) == {"code", "message", "details"}

"""Property run of the API against its own OpenAPI schema: no 5xx, no response that breaks the schema."""

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.factories.accounts import MembershipFactory, OrganizationFactory, ProviderProfileFactory, api_key_for

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)


@pytest.fixture
def api_schema(db):
    # Like Django's test client: requests made in-process must not close the test's database connection.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _payments_as_in_development(settings):
    # Without Stripe keys a production platform answers top-ups with 503 `payments_unavailable` (documented); the
    # property run uses the development configuration, where top-ups run in test mode and answer 201 or 400.
    settings.STRIPE_SECRET_KEY, settings.BILLING_TEST_TOPUPS = "", True


@pytest.fixture
def auth_headers(db):
    organization = OrganizationFactory()
    owner = MembershipFactory(organization=organization).user
    ProviderProfileFactory(organization=organization)
    _key, secret = api_key_for(organization, user=owner)
    return {"Authorization": f"Bearer {secret}"}


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case, auth_headers):
    case.call_and_validate(headers=auth_headers, checks=list(CHECKS))


def test_schema_documents_every_route_and_the_error_shape(client, db):
    document = client.get("/api/schema/?format=json").json()
    assert {"/api/v1/me/", "/api/v1/organizations/", "/api/v1/api-keys/", "/api/v1/api-keys/{id}/revoke/"} <= set(
        document["paths"]
    )
    assert "Error" in document["components"]["schemas"]
    create = document["paths"]["/api/v1/api-keys/"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in create["parameters"]]
    assert {"400", "401", "403", "409", "422", "429"} <= set(create["responses"])

"""Property run of the API against its own OpenAPI schema (CI: on PostgreSQL): every route, with two organizations'
keys (and the agent's routes with a node's token), answers no 5xx and nothing that breaks the schema."""

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
from schemathesis.config import SchemathesisConfig

from marketplace.services.nodes import node_create
from tests.factories.accounts import MembershipFactory, OrganizationFactory, ProviderProfileFactory, api_key_for
from tests.factories.billing import fund
from tests.factories.marketplace import OfferingFactory

# The coverage phase would add some 140 boundary cases to every operation (13,000 calls, minutes): the fuzzing
# phase's examples, with both organizations' keys, cover each route within CI's time.
CONFIG = SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": False}}})
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
    yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application(), config=CONFIG)
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _payments_as_in_development(settings):
    # Without Stripe keys a production platform answers top-ups with 503 `payments_unavailable` (documented); the
    # property run uses the development configuration, where top-ups run in test mode and answer 201 or 400.
    settings.STRIPE_SECRET_KEY, settings.BILLING_TEST_TOPUPS = "", True


@pytest.fixture
def credentials(db):
    """Two organizations' keys, and a node's token for the agent's routes: a provider with an offering and a node
    (its keys reach the provider routes and see rows of their own), and a funded buyer. Every route is called with
    both keys, so a path that only one of them may take is answered, in the error shape, to the other."""
    provider = OrganizationFactory()
    provider_owner = MembershipFactory(organization=provider).user
    ProviderProfileFactory(organization=provider)
    offering = OfferingFactory(provider=provider)
    _node, node_token = node_create(provider=provider, offering_id=offering.pk, name="node-1", actor=provider_owner)
    buyer = OrganizationFactory()
    buyer_owner = MembershipFactory(organization=buyer).user
    fund(buyer, "1000.00")
    return {
        "keys": [
            {"Authorization": f"Bearer {api_key_for(organization, user=user)[1]}"}
            for organization, user in ((provider, provider_owner), (buyer, buyer_owner))
        ],
        "node": {"Authorization": f"Bearer {node_token}"},
    }


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case, credentials):
    # the agent's routes take a node's token, every other route an API key: each organization's in turn
    headers = [credentials["node"]] if case.path.startswith("/api/v1/agent/") else credentials["keys"]
    for each in headers:
        case.call_and_validate(headers=each, checks=list(CHECKS))


def test_schema_documents_every_route_and_the_error_shape(client, db):
    document = client.get("/api/schema/?format=json").json()
    assert {"/api/v1/me/", "/api/v1/organizations/", "/api/v1/api-keys/", "/api/v1/api-keys/{id}/revoke/"} <= set(
        document["paths"]
    )
    assert "Error" in document["components"]["schemas"]
    create = document["paths"]["/api/v1/api-keys/"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in create["parameters"]]
    assert {"400", "401", "403", "409", "422", "429"} <= set(create["responses"])

import os

import pytest
from django.core.cache import cache
from django.db import connection
from kombu import Connection
from rest_framework.test import APIClient

from tests.factories.accounts import MembershipFactory, OrganizationFactory, api_key_for
from tests.workers import BROKERS

REQUIRED = {
    "postgres": "REQUIRE_POSTGRES",
    "redis": "REQUIRE_REDIS",
    "rabbitmq": "REQUIRE_RABBITMQ",
    "browser": "REQUIRE_BROWSER",
}


def skip_or_fail(marker: str, reason: str) -> None:
    """CI sets REQUIRE_<X>=1: there a missing dependency fails the test instead of skipping it."""
    if os.environ.get(REQUIRED[marker]) == "1":
        pytest.fail(f"{reason} ({REQUIRED[marker]}=1 demands it)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2's cost is a production property; tests only need hashing to be correct.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _loopback_upstreams(settings):
    # The fake model upstreams of the tests run on this machine, as `make run`'s demo model server does; production
    # names no network, and the tests of that refusal set the setting back to none.
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.0/8"]


@pytest.fixture(autouse=True)
def _clean_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(params=["rabbitmq", "redis"])
def broker_url(request):
    """Each real broker in turn (Redis, RabbitMQ): a crash test runs on both."""
    url = BROKERS[request.param]
    try:
        with Connection(url, connect_timeout=3) as probe:
            probe.ensure_connection(max_retries=1)
    except Exception:
        skip_or_fail(request.param, f"needs a {request.param} broker at {url}")
    return url


@pytest.fixture
def require_postgres(db):
    if connection.vendor != "postgresql":
        skip_or_fail("postgres", "needs PostgreSQL for real parallel connections; set DATABASE_URL=postgres://…")


@pytest.fixture(params=["one_statement", "step_by_step"])
def admission_path(request, db, monkeypatch):
    """Run a rental admission test through both of the service's paths: the guarded single statement
    (PostgreSQL) and the transaction of ORM statements (other databases), so that both keep one contract."""
    from marketplace.services import rentals

    if request.param == "one_statement" and connection.vendor != "postgresql":
        skip_or_fail("postgres", "the single-statement admission needs PostgreSQL; set DATABASE_URL=postgres://…")
    writer = {"one_statement": rentals._admit_in_one_statement, "step_by_step": rentals._admit_step_by_step}
    monkeypatch.setattr(rentals, "_admission_writer", lambda: writer[request.param])
    return request.param


@pytest.fixture
def organization(db):
    return OrganizationFactory()


@pytest.fixture
def owner(organization):
    return MembershipFactory(organization=organization).user


@pytest.fixture
def api_client_for(db):
    """An API client that authenticates as a fresh key of the organization (all scopes unless told)."""

    def make(organization, **key_kwargs) -> APIClient:
        _key, secret = api_key_for(organization, **key_kwargs)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
        return client

    return make


@pytest.fixture(params=["in_sets", "rental_by_rental"])
def rating_path(request, db, monkeypatch):
    """Run a rating test through both of the rating run's paths: in sets of rows (PostgreSQL) and one rental at a
    time (other databases), so that both keep one contract."""
    from billing.services import rating

    if request.param == "in_sets" and connection.vendor != "postgresql":
        skip_or_fail("postgres", "rating in sets needs PostgreSQL; set DATABASE_URL=postgres://…")
    runner = {"in_sets": rating._rate_in_sets, "rental_by_rental": rating._rate_rental_by_rental}
    monkeypatch.setattr(rating, "_rating_runner", lambda: runner[request.param])
    return request.param

import os
import threading
from decimal import Decimal

import pytest

from marketplace.demo_model.server import DemoModelServer, DemoModelSettings
from marketplace.gateway import counters as counter_stores
from tests.conftest import skip_or_fail
from tests.factories.accounts import OrganizationFactory, api_key_for
from tests.factories.billing import fund
from tests.factories.gateway import GatewayServer
from tests.factories.marketplace import ModelServiceFactory

TEST_REDIS_URL = os.environ.get("TEST_GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/13")


@pytest.fixture(autouse=True)
def _committed_data(django_db_serialized_rollback, transactional_db):
    """The gateway reads the database from its own thread, so tests commit; the data migrations' rows are put back
    afterwards, as for every transactional test here."""


@pytest.fixture
def one_minute(monkeypatch):
    """Every call counted in the same one-minute rate-limit window, however long the test takes."""
    monkeypatch.setattr(counter_stores, "rate_window", lambda: 29_000_000)


@pytest.fixture
def demo_upstream():
    server = DemoModelServer(
        ("127.0.0.1", 0),
        DemoModelSettings(time_to_first_token=0, tokens_per_second=0, reply_tokens=20, api_key="sk-demo"),
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["database", "redis"])
def counters(request, settings):
    """Every gateway test runs on both places the counts can live: the database (embedded default) and Redis."""
    if request.param == "redis":
        import redis

        client = redis.Redis.from_url(TEST_REDIS_URL)
        try:
            client.flushdb()
        except redis.ConnectionError:
            skip_or_fail("redis", f"needs Redis at {TEST_REDIS_URL}")
        settings.GATEWAY_REDIS_URL = TEST_REDIS_URL
        yield request.param
        client.flushdb()
        return
    settings.GATEWAY_REDIS_URL = ""
    yield request.param


@pytest.fixture
def gateway(transactional_db, counters):
    with GatewayServer() as server:
        yield server


@pytest.fixture
def buyer(transactional_db):
    organization = OrganizationFactory()
    fund(organization, Decimal("100.00"))
    return organization


@pytest.fixture
def buyer_key(buyer):
    return api_key_for(buyer, scopes=["gateway"])[1]


@pytest.fixture
def chat_service(transactional_db, demo_upstream):
    return ModelServiceFactory(
        slug="qwen2-5-72b-instruct",
        upstream_base_url=f"http://127.0.0.1:{demo_upstream.server_port}/v1",
        upstream_api_key="sk-demo",
    )


@pytest.fixture
def embeddings_service(transactional_db, demo_upstream):
    return ModelServiceFactory(
        slug="bge-m3",
        modality="embeddings",
        max_output_tokens=None,
        input_price_per_1k_tokens=Decimal("0.0005"),
        output_price_per_1k_tokens=Decimal("0.0005"),
        upstream_base_url=f"http://127.0.0.1:{demo_upstream.server_port}/v1",
        upstream_api_key="sk-demo",
    )

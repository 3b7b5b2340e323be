"""A model service's upstream URL cannot point the platform at its own network: loopback, private, link-local,
multicast and reserved addresses (or names resolving to them) are refused when the URL is written, with a 400 and
its code, unless the network is named in GATEWAY_UPSTREAM_ALLOWED_NETWORKS."""

from decimal import Decimal

import pytest

from marketplace.core.errors import DomainError
from marketplace.models import ModelService
from marketplace.services import offerings as services
from tests.factories.accounts import MembershipFactory
from tests.factories.marketplace import ModelServiceFactory, ProviderOrganizationFactory

FIELDS = {
    "name": "Q", "slug": "qwen-72b", "model_family": "qwen", "modality": "chat", "context_length": 4096,
    "max_output_tokens": 1024, "precision": "bf16", "input_price_per_1k_tokens": Decimal("0.01"),
    "output_price_per_1k_tokens": Decimal("0.02"), "rate_limit_rpm": 10, "rate_limit_tpm": 1000,
    "residency_zone": "cn-east",
}  # fmt: skip
INSIDE = [
    "http://127.0.0.1:9/v1",
    "http://localhost:9/v1",  # a name that resolves to loopback
    "http://127.1:9/v1",
    "http://[::1]:9/v1",
    "http://[::ffff:127.0.0.1]:9/v1",
    "http://10.1.2.3/v1",
    "http://172.16.0.5/v1",
    "http://192.168.1.1/v1",
    "http://100.64.0.1/v1",  # carrier-grade NAT
    "http://169.254.169.254/latest/meta-data",  # cloud metadata
    "http://[fe80::1]/v1",
    "http://[fd00::1]/v1",
    "http://224.0.0.1/v1",
    "http://240.0.0.1/v1",
    "http://0.0.0.0:8000/v1",
]


@pytest.fixture
def provider(db):
    return ProviderOrganizationFactory()


@pytest.fixture
def actor(provider):
    return MembershipFactory(organization=provider).user


@pytest.fixture
def production(settings):
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = []


@pytest.mark.parametrize("url", INSIDE)
def test_model_service_create_refuses_an_upstream_inside_the_platform(provider, actor, production, url):
    # when
    with pytest.raises(DomainError) as refused:
        services.model_service_create(provider=provider, actor=actor, upstream_base_url=url, **FIELDS)
    # then
    assert (refused.value.status_code, refused.value.code) == (400, "upstream_url_forbidden")
    assert list(refused.value.extra["fields"]) == ["upstream_base_url"]
    assert ModelService.objects.count() == 0


def test_model_service_update_refuses_moving_the_upstream_inside(provider, actor, production):
    # given
    service = ModelServiceFactory(provider=provider, upstream_base_url="http://203.0.113.10/v1")
    # when
    with pytest.raises(DomainError) as refused:
        services.model_service_update(
            model_service_id=service.pk, actor=actor, upstream_base_url="http://169.254.169.254/v1"
        )
    # then
    assert refused.value.code == "upstream_url_forbidden"
    service.refresh_from_db()
    assert service.upstream_base_url == "http://203.0.113.10/v1"


def test_a_public_upstream_is_accepted(provider, actor, production):
    service = services.model_service_create(
        provider=provider, actor=actor, upstream_base_url="https://8.8.8.8/v1", **FIELDS
    )
    assert service.upstream_base_url == "https://8.8.8.8/v1"


def test_an_upstream_in_a_named_network_is_accepted(provider, actor, settings):
    # given: the network of make run's demo model server named
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    # when
    service = services.model_service_create(
        provider=provider, actor=actor, upstream_base_url="http://127.0.0.1:8001/v1", **FIELDS
    )
    # then: that network only
    assert service.upstream_base_url == "http://127.0.0.1:8001/v1"
    with pytest.raises(DomainError, match="10.0.0.1"):
        services.model_service_update(model_service_id=service.pk, actor=actor, upstream_base_url="http://10.0.0.1/v1")


def test_the_api_answers_400_with_the_code(provider, production, api_client_for):
    # given
    client = api_client_for(provider, user=MembershipFactory(organization=provider).user)
    # when
    response = client.post(
        "/api/v1/provider/model-services/",
        {**FIELDS, "input_price_per_1k_tokens": "0.01", "output_price_per_1k_tokens": "0.02",
         "upstream_base_url": "http://localhost:6379/v1"},
        format="json",
    )  # fmt: skip
    # then
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "upstream_url_forbidden"
    assert list(response.json()["error"]["details"]["fields"]) == ["upstream_base_url"]
    assert ModelService.objects.count() == 0


def test_the_console_form_shows_the_refusal_next_to_the_url(provider, production, client):
    # given
    client.force_login(MembershipFactory(organization=provider).user)
    # when
    response = client.post(
        "/console/model-services/new/",
        {**FIELDS, "description": "", "max_output_tokens": 1024, "upstream_base_url": "http://169.254.169.254/v1"},
        HTTP_ACCEPT_LANGUAGE="en",
    )
    # then: the form again, its URL field refused, nothing saved
    assert response.status_code == 200
    assert response.context["form"].errors["upstream_base_url"] == [
        "The upstream must be a public http(s) address; 169.254.169.254 is inside a private, loopback, link-local or "
        "reserved network."
    ]
    assert ModelService.objects.count() == 0

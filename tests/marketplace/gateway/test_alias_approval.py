"""A model service joins its model's public alias only once staff approved it: a new provider cannot undercut a
popular model's alias and receive its callers' prompts. Until then it is callable by its own `provider/slug` name."""

from decimal import Decimal

import openai
import pytest

from tests.factories.marketplace import ModelServiceFactory

MESSAGES = [{"role": "user", "content": "hello"}]


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)


@pytest.fixture
def undercutter(chat_service, demo_upstream):
    """A new provider's service of the same model, far cheaper, not approved for the alias."""
    return ModelServiceFactory(
        slug=chat_service.slug,
        input_price_per_1k_tokens=Decimal("0.00000001"),
        output_price_per_1k_tokens=Decimal("0.00000001"),
        upstream_base_url=f"http://127.0.0.1:{demo_upstream.server_port}/v1",
        upstream_api_key="sk-demo",
        alias_approved_at=None,
    )


def test_an_unapproved_service_does_not_answer_its_alias(gateway, buyer_key, chat_service, undercutter):
    # when: a caller names the alias
    completion = client_for(gateway, buyer_key).chat.completions.create(
        model=chat_service.slug, messages=MESSAGES, max_tokens=3
    )
    # then: the approved service answers, however cheaper the other is
    assert completion.model == f"{chat_service.provider.slug}/{chat_service.slug}"


def test_an_unapproved_service_is_callable_by_its_own_name(gateway, buyer_key, undercutter):
    name = f"{undercutter.provider.slug}/{undercutter.slug}"
    completion = client_for(gateway, buyer_key).chat.completions.create(model=name, messages=MESSAGES, max_tokens=3)
    assert completion.model == name


def test_an_alias_with_no_approved_service_is_not_found(gateway, buyer_key, demo_upstream):
    # given
    ModelServiceFactory(
        slug="fresh-model", upstream_base_url=f"http://127.0.0.1:{demo_upstream.server_port}/v1", alias_approved_at=None
    )
    # when
    with pytest.raises(openai.NotFoundError) as raised:
        client_for(gateway, buyer_key).chat.completions.create(model="fresh-model", messages=MESSAGES)
    # then
    assert raised.value.code == "model_not_found"

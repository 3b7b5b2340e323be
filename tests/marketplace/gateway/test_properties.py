"""Property run of the gateway's routes: whatever JSON a caller sends, with either of two organizations' keys, the
answer is never a server error, and an error is in OpenAI's shape with a code."""

import http.client
import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories.accounts import OrganizationFactory, api_key_for
from tests.factories.billing import fund

JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
# Mostly the shapes a caller means to send, so that calls get past routing to the checks of their content.
MODELS = (
    st.sampled_from(["qwen2-5-72b-instruct", "bge-m3", "nope/none", "app:none", ""])
    | st.just("qwen2-5-72b-instruct")
    | JSON_VALUES
)
PART = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]) | JSON_VALUES}, optional={
    "text": st.text(max_size=20) | JSON_VALUES, "image_url": JSON_VALUES})  # fmt: skip
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]) | JSON_VALUES},
    optional={"content": st.text(max_size=40) | st.lists(PART, max_size=3) | JSON_VALUES},
)
CHAT = st.fixed_dictionaries(
    {"model": MODELS, "messages": st.lists(MESSAGE, min_size=1, max_size=3) | JSON_VALUES},
    optional={"max_tokens": JSON_VALUES,
              "temperature": JSON_VALUES, "stream_options": JSON_VALUES},
)  # fmt: skip
EMBEDDINGS = st.fixed_dictionaries(
    {"model": MODELS},
    optional={"input": st.text(max_size=20) | st.lists(st.text(max_size=10), max_size=3) | JSON_VALUES},
)
CALLS = st.tuples(st.just("/v1/chat/completions"), CHAT) | st.tuples(st.just("/v1/embeddings"), EMBEDDINGS)
ERROR_KEYS = {"message", "type", "param", "code"}


def post(gateway, path: str, body: bytes, key: str) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request("POST", path, body=body, headers={"Authorization": f"Bearer {key}"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.parametrize("counters", ["database"], indirect=True)  # the counts' store is not what this run tests
def test_the_gateway_answers_any_json_without_a_server_error(gateway, buyer_key, chat_service, embeddings_service):
    # given: two organizations' keys
    other = OrganizationFactory()
    fund(other, Decimal("100.00"))
    keys = [buyer_key, api_key_for(other, scopes=["gateway"])[1]]

    @given(call=CALLS, which=st.sampled_from([0, 1]))
    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def run(call, which):
        path, body = call
        # when
        status, answer = post(gateway, path, json.dumps(body).encode(), keys[which])
        # then
        assert status < 500 or status in (502, 504), (status, answer, body)
        assert status == 200 or set(answer["error"]) == ERROR_KEYS, (status, answer, body)
        assert status == 200 or isinstance(answer["error"]["code"], str), (status, answer, body)

    run()

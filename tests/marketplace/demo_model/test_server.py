"""The demo model server against the official `openai` client: chat (whole and streamed), embeddings (float and
base64), usage counts by its own tokenizer, latency knobs and OpenAI-shaped errors."""

import http.client
import json
import threading
import time

import openai
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from marketplace.demo_model import generator
from marketplace.demo_model.server import DemoModelServer, DemoModelSettings
from marketplace.management.commands.seed_demo import MODEL_SERVICES

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "How many H100 hours fit a 算力 budget?"},
]


def serve(settings: DemoModelSettings):
    server = DemoModelServer(("127.0.0.1", 0), settings)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def demo_server():
    server = serve(DemoModelSettings(time_to_first_token=0, tokens_per_second=0, reply_tokens=20, api_key="sk-demo"))
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def client(demo_server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{demo_server.server_port}/v1", api_key="sk-demo", max_retries=0)


def test_a_chat_completion_answers_deterministically_with_its_usage(client):
    # when
    first = client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES)
    again = client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES)
    # then: the same conversation gets the same reply, quoting the question, 20 tokens long
    reply = first.choices[0].message.content
    assert reply == again.choices[0].message.content
    assert reply.startswith("Demo reply to : How many H100 hours fit a 算 力")
    assert (first.choices[0].finish_reason, first.model) == ("stop", "qwen2-5-72b-instruct")
    # and usage counts tokens as the documented tokenizer does: the prompt's text plus 3 per message and 3 to prime
    prompt = generator.REPLY_PRIMING_TOKENS + sum(
        generator.MESSAGE_OVERHEAD_TOKENS + len(generator.tokens_of(m["content"])) for m in MESSAGES
    )
    assert len(generator.tokens_of("How many H100 hours fit a 算力 budget?")) == 10
    assert (first.usage.prompt_tokens, first.usage.completion_tokens, first.usage.total_tokens) == (
        prompt, 20, prompt + 20
    )  # fmt: skip
    assert len(generator.tokens_of(reply)) == 20  # the reply re-counted gives its completion tokens


def test_max_tokens_cuts_the_reply_short_with_finish_reason_length(client):
    completion = client.chat.completions.create(model="deepseek-v3", messages=MESSAGES, max_tokens=5)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 5 == len(generator.tokens_of(completion.choices[0].message.content))


def test_a_stream_sends_the_same_reply_token_by_token_then_its_usage(client):
    # given
    whole = client.chat.completions.create(model="glm-4-9b-chat", messages=MESSAGES)
    # when
    stream = client.chat.completions.create(
        model="glm-4-9b-chat", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    # then: a role chunk, one chunk per token, a finish chunk, then the usage alone
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert len(pieces) == 20 and "".join(pieces) == whole.choices[0].message.content
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert (chunks[-1].choices, chunks[-1].usage.model_dump(include={"prompt_tokens", "completion_tokens"})) == (
        [], {"prompt_tokens": whole.usage.prompt_tokens, "completion_tokens": 20}
    )  # fmt: skip
    # and without include_usage no chunk carries usage, as OpenAI does
    plain = list(client.chat.completions.create(model="glm-4-9b-chat", messages=MESSAGES, stream=True))
    assert all(chunk.usage is None for chunk in plain) and plain[-1].choices[0].finish_reason == "stop"


def test_embeddings_are_unit_vectors_that_bring_similar_texts_closer_in_float_and_base64(client):
    texts = ["GPU rental price per hour", "price per hour of a GPU rental", "区域 数据 驻留"]
    # when: the client asks for base64 by default; and for floats explicitly
    by_default = client.embeddings.create(model="bge-m3", input=texts)
    as_floats = client.embeddings.create(model="bge-m3", input=texts, encoding_format="float", dimensions=64)
    # then
    vectors = [item.embedding for item in by_default.data]
    assert [len(v) for v in vectors] == [384] * 3 and [len(d.embedding) for d in as_floats.data] == [64] * 3
    assert all(abs(sum(x * x for x in v) - 1) < 1e-5 for v in vectors)

    def cosine(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > 0.75 and abs(cosine(vectors[0], vectors[2])) < 0.3
    expected = generator.embedding(texts[0])
    assert max(abs(x - y) for x, y in zip(vectors[0], expected, strict=True)) < 1e-6  # float32 on the wire
    assert by_default.usage.prompt_tokens == sum(len(generator.tokens_of(t)) for t in texts)


def test_errors_have_openais_shape_and_status(client, demo_server):
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-nothing", messages=MESSAGES)
    assert unknown.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as wrong_modality:
        client.embeddings.create(model="deepseek-v3", input="x")
    assert wrong_modality.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as no_messages:
        client.chat.completions.create(model="deepseek-v3", messages=[])
    assert no_messages.value.body["param"] == "messages"
    bad_key = openai.OpenAI(base_url=str(client.base_url), api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        bad_key.models.list()
    assert refused.value.body["code"] == "invalid_api_key"
    # and a body that is not JSON, on a connection that stays usable afterwards
    connection = http.client.HTTPConnection("127.0.0.1", demo_server.server_port)
    headers = {"Authorization": "Bearer sk-demo", "Content-Type": "application/json"}
    connection.request("POST", "/v1/chat/completions", body=b"{not json", headers=headers)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())["error"]["type"]) == (400, "invalid_request_error")
    connection.request("GET", "/v1/models", headers=headers)
    assert connection.getresponse().status == 200


def test_it_serves_every_demo_model_service_by_default(client):
    served = {model.id for model in client.models.list()}
    assert served == {slug for _provider, slug, *_rest in MODEL_SERVICES}


def test_the_latency_knobs_pace_the_first_token_and_the_rest():
    server = serve(DemoModelSettings(time_to_first_token=0.15, tokens_per_second=100, reply_tokens=11))
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="x", max_retries=0)
        started = time.perf_counter()
        stream = client.chat.completions.create(model="deepseek-v3", messages=MESSAGES, stream=True)
        arrivals = [
            time.perf_counter() - started for chunk in stream if chunk.choices and chunk.choices[0].delta.content
        ]
        # then: nothing before the time to first token; the ten tokens after it take at least 10 × 10 ms
        assert arrivals[0] >= 0.15
        assert arrivals[-1] - arrivals[0] >= 0.1
    finally:
        server.shutdown()
        server.server_close()


def test_the_command_refuses_a_model_without_its_modality():
    with pytest.raises(CommandError, match="NAME=chat or NAME=embeddings"):
        call_command("serve_demo_model", "--model", "llama", "--port", "0")

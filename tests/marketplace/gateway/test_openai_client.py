"""The official `openai` client, unchanged, against the gateway with the demo model server as the upstream: chat
(whole and streamed), embeddings, the model list; usage passed through, costs settled and captured."""

import json
import socket
import threading
import time
from decimal import Decimal

import openai
import pytest

from marketplace.demo_model.server import DemoModelServer, DemoModelSettings
from marketplace.models import ModelCall
from marketplace.services.model_calls import model_calls_capture
from tests.factories.gateway import written_calls
from tests.factories.marketplace import ModelServiceFactory

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "How many H100 hours fit a 算力 budget?"},
]


@pytest.fixture
def client(gateway, buyer_key):
    return openai.OpenAI(base_url=gateway.url, api_key=buyer_key, max_retries=0)


def test_a_chat_completion_passes_through_with_its_usage_and_is_recorded(gateway, client, chat_service, buyer):
    # when
    completion = client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, max_tokens=12)
    # then: the upstream's answer, named by the service that served it
    assert completion.model == f"{chat_service.provider.slug}/qwen2-5-72b-instruct"
    assert completion.choices[0].message.content.startswith("Demo reply to :")
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (23, 12)
    [call] = written_calls(gateway)
    assert (call.organization_id, call.model_service_id, call.status_code, call.stream) == (
        buyer.pk,
        chat_service.pk,
        200,
        False,
    )
    assert (call.prompt_tokens, call.completion_tokens, call.tokens_estimated) == (23, 12, False)
    # 23 × 0.002/1K + 12 × 0.006/1K
    assert call.cost == Decimal("0.000118")
    assert call.residency_zone == chat_service.residency_zone
    assert call.api_key.last_used_at == call.created_at  # the key page shows the gateway's use too


def test_a_stream_passes_through_chunk_by_chunk_and_bills_the_upstreams_usage(gateway, client, chat_service):
    # when: a caller that did not ask for usage
    stream = client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, stream=True)
    chunks = list(stream)
    # then: every chunk has a choice (the usage chunk the gateway asked the upstream for is not passed on) and
    # names the service, as a whole answer does
    assert all(chunk.choices for chunk in chunks)
    assert {chunk.model for chunk in chunks} == {f"{chat_service.provider.slug}/qwen2-5-72b-instruct"}
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text.startswith("Demo reply to :")
    [call] = written_calls(gateway)
    assert (call.stream, call.status_code, call.prompt_tokens, call.completion_tokens) == (True, 200, 23, 20)
    assert call.tokens_estimated is False
    assert call.first_token_ms is not None


def test_a_stream_with_include_usage_ends_with_the_usage_chunk(gateway, client, chat_service):
    # when
    stream = client.chat.completions.create(
        model="qwen2-5-72b-instruct", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    # then
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (23, 20)
    [call] = written_calls(gateway)
    assert call.completion_tokens == 20


def test_embeddings_float_and_base64_with_usage(gateway, client, embeddings_service):
    # when: the client asks for base64 by default, and for floats when told
    by_default = client.embeddings.create(model="bge-m3", input=["算力 market", "GPU hours"])
    as_floats = client.embeddings.create(model="bge-m3", input="GPU hours", encoding_format="float")
    # then
    assert len(by_default.data) == 2 and len(by_default.data[0].embedding) == 384
    assert as_floats.data[0].embedding == pytest.approx(by_default.data[1].embedding, abs=1e-6)
    assert by_default.usage.prompt_tokens == 5  # 算, 力, market; GPU, hours
    calls = written_calls(gateway)
    assert [(c.endpoint, c.prompt_tokens, c.completion_tokens) for c in calls] == [
        ("embeddings", 5, 0),
        ("embeddings", 2, 0),
    ]
    assert calls[0].cost == Decimal("0.0000025")  # 5 × 0.0005/1K


def test_the_model_list_names_each_published_service(client, chat_service, embeddings_service):
    # when
    models = client.models.list()
    # then
    provider = chat_service.provider.slug
    assert sorted(m.id for m in models.data) == sorted(
        [f"{provider}/qwen2-5-72b-instruct", f"{embeddings_service.provider.slug}/bge-m3"]
    )
    assert client.models.retrieve(f"{provider}/qwen2-5-72b-instruct").owned_by == provider


def test_captured_calls_move_the_callers_held_funds_to_the_provider_and_the_platform(
    gateway, client, chat_service, buyer
):
    # given: three calls
    for _ in range(3):
        client.chat.completions.create(model="qwen2-5-72b-instruct", messages=MESSAGES, max_tokens=12)
    calls = written_calls(gateway)
    # when
    assert model_calls_capture() == 3
    # then: one transaction takes 3 × 0.000118 from the buyer's held funds; the provider earns it less 10 %
    [capture] = {call.ledger_transaction for call in ModelCall.objects.all()}
    postings = {(p.account.organization_id, p.account.kind): p.amount for p in capture.postings.all()}
    assert postings == {
        (buyer.pk, "held"): Decimal("-0.000354"),
        (chat_service.provider_id, "earnings"): Decimal("0.00031860"),
        (None, "platform_revenue"): Decimal("0.00003540"),
    }
    assert sum(postings.values()) == 0
    assert {call.cost for call in calls} == {Decimal("0.000118")}
    assert model_calls_capture() == 0  # nothing is captured twice


def test_a_caller_that_hangs_up_mid_stream_is_billed_what_the_upstream_generated(gateway, buyer_key):
    # given: an upstream that takes half a second over its 20 tokens
    paced = DemoModelServer(("127.0.0.1", 0), DemoModelSettings(time_to_first_token=0, tokens_per_second=40,
                                                                reply_tokens=20))  # fmt: skip
    threading.Thread(target=paced.serve_forever, daemon=True).start()
    service = ModelServiceFactory(slug="qwen2-5-72b-instruct",
                                  upstream_base_url=f"http://127.0.0.1:{paced.server_port}/v1")  # fmt: skip
    body = json.dumps({"model": "qwen2-5-72b-instruct", "messages": MESSAGES, "stream": True}).encode()
    # when: the caller reads the first bytes and hangs up
    with socket.create_connection(("127.0.0.1", gateway.port)) as connection:
        connection.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {buyer_key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        assert connection.recv(64).startswith(b"HTTP/1.1 200")
    time.sleep(1)
    # then: the call is recorded as closed by the client, with the upstream's own usage of the whole reply
    [call] = written_calls(gateway)
    paced.shutdown()
    paced.server_close()
    assert (call.model_service_id, call.status_code, call.error_code) == (service.pk, 499, "client_closed_request")
    assert (call.prompt_tokens, call.completion_tokens, call.tokens_estimated) == (23, 20, False)


class LingeringUpstream:
    """An upstream that sends a whole stream, [DONE] included, then keeps the response open a while before ending
    it: a caller may hang up in between, having had everything."""

    def __init__(self, linger: float = 0.5):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port, self.linger = self.listener.getsockname()[1], linger
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        connection, _address = self.listener.accept()
        with connection:
            connection.recv(65536)
            events = [
                {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": "Hello there"}, "finish_reason": None}]},
                {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [
                    {"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [],
                 "usage": {"prompt_tokens": 23, "completion_tokens": 2, "total_tokens": 25}},
            ]  # fmt: skip
            body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + f"{len(body):x}\r\n".encode()
                + body
                + b"\r\n"
            )
            time.sleep(self.linger)
            connection.sendall(b"0\r\n\r\n")


def test_a_caller_that_hangs_up_after_the_end_of_the_stream_had_it_all(gateway, client):
    upstream = LingeringUpstream()
    service = ModelServiceFactory(slug="lingering", upstream_base_url=f"http://127.0.0.1:{upstream.port}/v1")

    with client.chat.completions.create(model="lingering", messages=MESSAGES, stream=True) as stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    time.sleep(upstream.linger + 0.5)

    [call] = written_calls(gateway)
    assert text == "Hello there"
    assert (call.model_service_id, call.status_code, call.error_code) == (service.pk, 200, "")
    assert (call.prompt_tokens, call.completion_tokens) == (23, 2)

"""An upstream's `usage` is billed only within what the request allows: never above the call's reservation."""

import json
import threading
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from marketplace.gateway import tokens
from tests.factories.gateway import written_calls
from tests.factories.marketplace import ModelServiceFactory

MESSAGES = [{"role": "user", "content": "hello"}]  # 3 + 3 + 1 tokens by the gateway's count, 11 by its byte bound


class LyingUpstream(BaseHTTPRequestHandler):
    """Answers every chat call with one short reply and whatever `usage` the test set."""

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(self.server.words)},
                              "finish_reason": "stop"}],
                 "usage": self.server.usage}  # fmt: skip
        if body.get("stream"):
            chunks = [
                {**reply, "object": "chat.completion.chunk", "usage": None,
                 "choices": [{"index": 0, "delta": {"content": f"{word} "}, "finish_reason": None}]}
                for word in self.server.words
            ]  # fmt: skip
            last = {**reply, "object": "chat.completion.chunk", "choices": []}
            data = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in [*chunks, last])
            data = (data + "data: [DONE]\n\n").encode()
            content_type = "text/event-stream"
        else:
            data, content_type = json.dumps(reply).encode(), "application/json"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        return None


@pytest.fixture
def lying_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), LyingUpstream)
    server.usage, server.words = {}, ["hi"]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def lying_service(transactional_db, lying_upstream):
    return ModelServiceFactory(
        slug="liar-7b", upstream_base_url=f"http://127.0.0.1:{lying_upstream.server_port}/v1", upstream_api_key="k"
    )


def call(gateway, key: str, *, stream: bool = False, max_tokens: int = 10):
    client = openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)
    answer = client.chat.completions.create(model="liar-7b", messages=MESSAGES, max_tokens=max_tokens, stream=stream)
    return list(answer) if stream else answer


def bounded_cost(service) -> Decimal:
    """What the call may cost at most: its prompt's limit and its max_tokens at the service's price."""
    prompt = tokens.prompt_tokens_limit(tokens.prompt_tokens_bound(MESSAGES), tokens.prompt_tokens(MESSAGES))
    return (service.input_price_per_1k_tokens * prompt + service.output_price_per_1k_tokens * 10) / 1000


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("reported", [2 * 10**7, 10**9], ids=["2e7", "1e9"])
def test_an_upstream_that_reports_huge_usage_is_billed_at_the_requests_bound(
    gateway, buyer, buyer_key, lying_upstream, lying_service, stream, reported
):
    # given: an upstream that claims tens of millions of tokens for a call capped at 10 output tokens
    lying_upstream.usage = {"prompt_tokens": reported, "completion_tokens": reported}
    # when
    call(gateway, buyer_key, stream=stream)
    # then: billed at the bound, flagged, and the service is tried last by aliases for a while
    [record] = written_calls(gateway)
    assert (record.prompt_tokens, record.completion_tokens, record.usage_clamped) == (
        tokens.prompt_tokens_limit(tokens.prompt_tokens_bound(MESSAGES), tokens.prompt_tokens(MESSAGES)),
        10,
        True,
    )
    assert record.cost == bounded_cost(lying_service)
    assert lying_service.pk in gateway.gateway.directory._unhealthy_until


@pytest.mark.parametrize(
    ("usage", "billed_prompt"),
    [
        ({"prompt_tokens": -5000, "completion_tokens": -5000}, 11),
        ({"prompt_tokens": 3.5, "completion_tokens": 2.5}, 11),
        ({"prompt_tokens": 7}, 7),
        ({"prompt_tokens": "7", "completion_tokens": True}, 11),
    ],
    ids=["negative", "fractional", "missing", "not-numbers"],
)
def test_counts_that_are_no_counts_are_billed_at_the_bound_and_the_call_is_recorded(
    gateway, buyer, buyer_key, lying_upstream, lying_service, usage, billed_prompt
):
    # given
    lying_upstream.usage = usage
    # when
    call(gateway, buyer_key)
    # then: the record is written (on every database), at the bound, flagged; no funds appear from nowhere
    [record] = written_calls(gateway)
    assert (record.prompt_tokens, record.completion_tokens, record.usage_clamped) == (billed_prompt, 10, True)
    expected = lying_service.input_price_per_1k_tokens * billed_prompt + lying_service.output_price_per_1k_tokens * 10
    assert record.cost == expected / 1000


def test_an_honest_upstream_is_billed_what_it_reports_and_not_flagged(
    gateway, buyer, buyer_key, lying_upstream, lying_service
):
    # given
    lying_upstream.usage = {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
    # when
    call(gateway, buyer_key)
    # then
    [record] = written_calls(gateway)
    assert (record.prompt_tokens, record.completion_tokens, record.usage_clamped) == (9, 1, False)
    assert lying_service.pk not in gateway.gateway.directory._unhealthy_until


def test_a_whole_answer_over_the_size_cap_ends_with_a_clear_error_and_costs_nothing(
    gateway, buyer, buyer_key, lying_upstream, lying_service, settings
):
    # given
    settings.GATEWAY_MAX_ANSWER_BYTES = 4096
    lying_upstream.usage, lying_upstream.words = {"prompt_tokens": 7, "completion_tokens": 1000}, ["word"] * 1000
    # when
    with pytest.raises(openai.APIStatusError) as raised:
        call(gateway, buyer_key, max_tokens=2000)
    # then
    assert (raised.value.status_code, raised.value.code) == (502, "upstream_answer_too_large")
    [record] = written_calls(gateway)
    assert (record.status_code, record.error_code, record.cost) == (502, "upstream_answer_too_large", 0)


def test_a_stream_over_the_size_cap_is_cut_off_and_billed_for_what_was_delivered(
    gateway, buyer, buyer_key, lying_upstream, lying_service, settings
):
    # given: a stream of 1,000 one-word events, each some 230 bytes
    settings.GATEWAY_MAX_ANSWER_BYTES = 20_000
    lying_upstream.usage, lying_upstream.words = {"prompt_tokens": 7, "completion_tokens": 1000}, ["word"] * 1000
    # when
    with pytest.raises(openai.APIError) as raised:
        call(gateway, buyer_key, stream=True, max_tokens=2000)
    # then: the stream ends with the error, and the call is billed for the words the caller got
    assert "upstream_answer_too_large" in str(raised.value.body) + str(raised.value.code)
    [record] = written_calls(gateway)
    assert (record.status_code, record.error_code, record.tokens_estimated) == (502, "upstream_answer_too_large", True)
    assert 0 < record.completion_tokens < 1000
    assert (
        record.cost
        == (
            lying_service.input_price_per_1k_tokens * 7
            + lying_service.output_price_per_1k_tokens * record.completion_tokens
        )
        / 1000
    )

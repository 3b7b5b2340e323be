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

    usage: dict = {}

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                 "usage": self.server.usage}  # fmt: skip
        if body.get("stream"):
            chunk = {**reply, "object": "chat.completion.chunk", "usage": None,
                     "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}  # fmt: skip
            last = {**reply, "object": "chat.completion.chunk", "choices": []}
            data = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode()
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
    server.usage = {}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def lying_service(transactional_db, lying_upstream):
    return ModelServiceFactory(
        slug="liar-7b", upstream_base_url=f"http://127.0.0.1:{lying_upstream.server_port}/v1", upstream_api_key="k"
    )


def call(gateway, key: str, *, stream: bool = False) -> None:
    client = openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)
    answer = client.chat.completions.create(model="liar-7b", messages=MESSAGES, max_tokens=10, stream=stream)
    if stream:
        list(answer)


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

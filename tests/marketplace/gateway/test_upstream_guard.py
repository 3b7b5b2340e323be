"""The gateway cannot be pointed inside the platform: an upstream on a loopback, private or link-local address (or a
name resolving to one) is refused when connecting, with a clear error and no byte sent; redirects are never
followed. The upstream's network is allowed only when GATEWAY_UPSTREAM_ALLOWED_NETWORKS names it."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from tests.factories.gateway import written_calls
from tests.factories.marketplace import ModelServiceFactory

MESSAGES = [{"role": "user", "content": "hello"}]


class Recorder(ThreadingHTTPServer):
    """An HTTP server that counts the requests it gets and answers each with `status` and `headers`."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes = b"{}") -> None:
        self.hits: list[str] = []
        self.answer = (status, headers, body)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler) -> None:  # noqa: N805
                handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
                self.hits.append(handler.path)
                status, headers, body = self.answer
                handler.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    handler.send_header(name, value)
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args) -> None:  # noqa: N805
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def internal():
    """A service inside the platform that must never be reached: it answers 200 with a secret."""
    server = Recorder(200, {"Content-Type": "application/json"}, b'{"secret": "internal"}')
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def production(settings):
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = []


def client_for(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url, api_key=key, max_retries=0)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "127.1"])
def test_an_upstream_on_loopback_is_refused_when_connecting(gateway, buyer_key, internal, production, host):
    # given: a service whose upstream (written before the rule, or by a name that resolves there now) is loopback
    ModelServiceFactory(slug="inside", upstream_base_url=f"http://{host}:{internal.server_port}/v1")
    # when
    with pytest.raises(openai.APIStatusError) as raised:
        client_for(gateway, buyer_key).chat.completions.create(model="inside", messages=MESSAGES)
    # then: a clear gateway error, nothing sent there, nothing charged
    assert (raised.value.status_code, raised.value.code) == (502, "upstream_forbidden")
    assert internal.hits == []
    [call] = written_calls(gateway)
    assert (call.status_code, call.error_code, call.cost) == (502, "upstream_forbidden", 0)


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://10.255.255.1:9/v1"])
def test_an_upstream_on_a_private_or_link_local_address_is_refused_without_connecting(
    gateway, buyer_key, production, url
):
    # given
    ModelServiceFactory(slug="inside", upstream_base_url=url)
    # when
    with pytest.raises(openai.APIStatusError) as raised:
        client_for(gateway, buyer_key).chat.completions.create(model="inside", messages=MESSAGES)
    # then: refused, not tried (it would time out or be refused: upstream_unavailable)
    assert (raised.value.status_code, raised.value.code) == (502, "upstream_forbidden")


def test_an_alias_passes_over_a_forbidden_upstream_to_an_allowed_one(gateway, buyer_key, chat_service, settings):
    # given: the demo upstream's port allowed only by its network, and a cheaper service of the alias on a link-local
    # address
    settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS = ["127.0.0.1/32"]
    ModelServiceFactory(
        slug=chat_service.slug,
        input_price_per_1k_tokens=chat_service.input_price_per_1k_tokens / 2,
        upstream_base_url="http://169.254.169.254/v1",
    )
    # when
    completion = client_for(gateway, buyer_key).chat.completions.create(
        model=chat_service.slug, messages=MESSAGES, max_tokens=3
    )
    # then
    assert completion.model == f"{chat_service.provider.slug}/{chat_service.slug}"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_from_an_upstream_is_not_followed(gateway, buyer_key, internal, status):
    # given: an upstream (allowed, as the tests' loopback is) that redirects the gateway to an internal service
    redirector = Recorder(status, {"Location": f"http://127.0.0.1:{internal.server_port}/v1/chat/completions"})
    ModelServiceFactory(slug="redirects", upstream_base_url=f"http://127.0.0.1:{redirector.server_port}/v1")
    # when
    with pytest.raises(openai.APIStatusError) as raised:
        client_for(gateway, buyer_key).chat.completions.create(model="redirects", messages=MESSAGES)
    redirector.shutdown()
    redirector.server_close()
    # then: the upstream's answer is a failure of the service; the internal one was never called
    assert (raised.value.status_code, raised.value.code) == (502, "upstream_error")
    assert "internal" not in raised.value.response.text
    assert (redirector.hits, internal.hits) == (["/v1/chat/completions"], [])

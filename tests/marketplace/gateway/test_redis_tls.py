"""The gateway's Redis client speaks the URLs the settings accept: `rediss://` (TLS) with a password, against a
Redis started here with a self-signed certificate."""

import asyncio
import shutil
import socket
import subprocess
import time
from decimal import Decimal

import hiredis
import openai
import pytest
import redis

from marketplace.gateway.redis_pipe import RedisPipe, RedisPipeError
from tests.conftest import skip_or_fail
from tests.factories.gateway import GatewayServer, written_calls

PASSWORD = "s3cret/with:odd@chars"
QUOTED_PASSWORD = "s3cret%2Fwith%3Aodd%40chars"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    """A redis-server that speaks only TLS, with a self-signed certificate for 127.0.0.1 and a password."""
    if shutil.which("redis-server") is None or shutil.which("openssl") is None:
        skip_or_fail("redis", "needs redis-server (built with TLS) and openssl")
    folder = tmp_path_factory.mktemp("tls-redis")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, ssl=True, ssl_ca_certs=str(cert))
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                skip_or_fail("redis", f"redis-server did not start with TLS: {server.stderr.read().decode()[-500:]}")
            time.sleep(0.05)
    client.close()
    yield port, cert
    server.terminate()
    server.wait(timeout=10)


def pipe_answers(url: str, *commands: tuple) -> list:
    async def scenario():
        pipe = RedisPipe(url)
        try:
            return [await pipe.execute(*command) for command in commands]
        finally:
            await pipe.close()

    return asyncio.run(scenario())


def test_a_rediss_url_with_a_password_and_the_ca_connects_over_tls(tls_redis):
    # given: the server's own certificate named as the CA to trust
    port, cert = tls_redis
    url = f"rediss://:{QUOTED_PASSWORD}@127.0.0.1:{port}/3?ssl_ca_certs={cert}"
    # when
    answers = pipe_answers(url, ("SET", "tls:probe", "1"), ("INCR", "tls:probe"), ("CLIENT", "INFO"))
    # then: authenticated, in database 3, over TLS
    assert answers[:2] == [b"OK", 2]
    assert b" db=3 " in answers[2]
    assert redis.Redis.from_url(url).get("tls:probe") == b"2"


def test_ssl_cert_reqs_none_connects_without_checking_the_certificate(tls_redis):
    port, _cert = tls_redis
    url = f"rediss://:{QUOTED_PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=none"
    assert pipe_answers(url, ("PING",)) == [b"PONG"]


def test_a_certificate_nobody_vouches_for_is_refused(tls_redis):
    # given: a rediss URL that names no CA, so the self-signed certificate is checked against the system's
    port, _cert = tls_redis
    url = f"rediss://:{QUOTED_PASSWORD}@127.0.0.1:{port}/0"
    # when / then
    with pytest.raises(RedisPipeError, match="CERTIFICATE_VERIFY_FAILED"):
        pipe_answers(url, ("PING",))


def test_a_wrong_password_is_refused(tls_redis):
    port, cert = tls_redis
    url = f"rediss://:wrong@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    with pytest.raises(hiredis.ReplyError, match="WRONGPASS"):
        pipe_answers(url, ("PING",))


def test_a_gateway_call_counts_in_a_tls_redis(tls_redis, settings, buyer, buyer_key, chat_service):
    # given: the gateway's counters in the TLS Redis
    port, cert = tls_redis
    url = f"rediss://:{QUOTED_PASSWORD}@127.0.0.1:{port}/5?ssl_ca_certs={cert}"
    redis.Redis.from_url(url).flushdb()
    settings.GATEWAY_REDIS_URL = url
    # when
    with GatewayServer() as gateway:
        client = openai.OpenAI(base_url=gateway.url, api_key=buyer_key, max_retries=0)
        answer = client.chat.completions.create(
            model=chat_service.slug, messages=[{"role": "user", "content": "hello"}], max_tokens=8
        )
        calls = written_calls(gateway)
    # then: served, its funds and rate counters kept in that Redis, and its record written
    assert answer.model == f"{chat_service.provider.slug}/{chat_service.slug}"
    keys = redis.Redis.from_url(url).keys("gw:*")
    assert f"gw:funds:{buyer.pk}".encode() in keys
    assert [(call.status_code, call.cost > Decimal("0")) for call in calls] == [(200, True)]

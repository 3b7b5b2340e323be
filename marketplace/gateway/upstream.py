"""The one pooled HTTP client a web worker calls model upstreams with."""

import aiohttp
from django.conf import settings

from marketplace.core.upstreams import address_allowed, allowed_networks


class UpstreamUnreachable(Exception):
    """No byte came back (refused, reset or timed out connecting): safe to try another service of the model."""


class UpstreamForbidden(Exception):
    """The upstream's host is, or now resolves to, an address the platform does not call (see core.upstreams)."""


class GuardedConnector(aiohttp.TCPConnector):
    """Connects only to addresses core.upstreams allows: every address a name resolves to (cached or not) or an IP
    literal is checked just before connecting, so a name that resolves elsewhere since it was written is caught.
    Runs once per new connection, not per call (connections are kept alive)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.networks = allowed_networks()

    async def _resolve_host(self, host, port, traces=None):
        hosts = await super()._resolve_host(host, port, traces=traces)
        allowed = [entry for entry in hosts if address_allowed(entry["host"], self.networks)]
        if not allowed:
            raise UpstreamForbidden(f"{host} resolves to {', '.join(entry['host'] for entry in hosts)}")
        return allowed


def client_session() -> aiohttp.ClientSession:
    """Keep-alive connections shared by every call of this worker; connect and read time-outs from settings."""
    return aiohttp.ClientSession(
        connector=GuardedConnector(limit=settings.GATEWAY_MAX_CONNECTIONS, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.GATEWAY_CONNECT_TIMEOUT_SECONDS,
            sock_read=settings.GATEWAY_READ_TIMEOUT_SECONDS,
        ),
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )


async def upstream_post(session: aiohttp.ClientSession, *, url: str, api_key: str, body: bytes):
    """POST `body`; the response once its headers are in (a redirect is answered as it is, never followed). Raises
    UpstreamUnreachable when none came, UpstreamForbidden when the host is not one the platform calls."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        return await session.post(url, data=body, headers=headers, allow_redirects=False)
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ConnectionTimeoutError) as error:
        raise UpstreamUnreachable(str(error)) from error
    except aiohttp.InvalidURL as error:  # e.g. 127.1: a legacy IPv4 form aiohttp refuses to map onto an address
        raise UpstreamForbidden(str(error)) from error

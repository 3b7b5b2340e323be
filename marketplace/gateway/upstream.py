"""The one pooled HTTP client a web worker calls model upstreams with."""

import aiohttp
from django.conf import settings


class UpstreamUnreachable(Exception):
    """No byte came back (refused, reset or timed out connecting): safe to try another service of the model."""


def client_session() -> aiohttp.ClientSession:
    """Keep-alive connections shared by every call of this worker; connect and read time-outs from settings."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.GATEWAY_MAX_CONNECTIONS, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.GATEWAY_CONNECT_TIMEOUT_SECONDS,
            sock_read=settings.GATEWAY_READ_TIMEOUT_SECONDS,
        ),
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )


async def upstream_post(session: aiohttp.ClientSession, *, url: str, api_key: str, body: bytes):
    """POST `body`; the response once its headers are in. Raises UpstreamUnreachable when none came."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    try:
        return await session.post(url, data=body, headers=headers)
    except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, aiohttp.ConnectionTimeoutError) as error:
        raise UpstreamUnreachable(str(error)) from error

"""Which addresses the platform may call on a provider's behalf (a model service's upstream).

A provider writes the URL, so the gateway must not become a way into the platform's own network: an address that is
loopback, private, link-local (cloud metadata), multicast, reserved or unspecified is refused, unless it lies in a
network named in GATEWAY_UPSTREAM_ALLOWED_NETWORKS (`make run` names its demo model server; production names none).
The URL is checked when written and every address is checked again when the gateway connects, because a name can
resolve elsewhere later (DNS rebinding). Redirects are never followed, so an upstream cannot point the gateway on.
"""

import ipaddress
import socket
from collections.abc import Iterable
from functools import cache
from urllib.parse import urlsplit

from django.conf import settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(names: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(name, strict=False) for name in names)


def allowed_networks() -> tuple[Network, ...]:
    """The networks named in GATEWAY_UPSTREAM_ALLOWED_NETWORKS (CIDRs; a bare address is one host)."""
    return _networks(tuple(settings.GATEWAY_UPSTREAM_ALLOWED_NETWORKS))


def address_allowed(address: str, networks: Iterable[Network]) -> bool:
    """True for a public address, or one inside an allowed network. An IPv4-mapped IPv6 address is judged as the
    IPv4 address it carries."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in networks):
        return True
    return not (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


def upstream_url_refusal(url: str) -> str | None:
    """Why the platform must not call `url` (None: it may): the host is, or resolves to, an address it refuses.
    A name that does not resolve now passes here; the gateway checks again when it connects."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return url
    if parts.scheme not in ("http", "https") or not host:
        return host or url
    networks = allowed_networks()
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return None
    for *_ignored, sockaddr in infos:
        if not address_allowed(str(sockaddr[0]), networks):
            return str(sockaddr[0])
    return None

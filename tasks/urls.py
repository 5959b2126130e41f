"""Which URLs webhooks and job callbacks may be sent to: public addresses only, unless configuration allows more.

Checked when a URL is registered and again before every delivery, since the
name may resolve elsewhere by then.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why."""


def _allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: list[str]) -> bool:
    for network in networks:
        parsed = ipaddress.ip_network(network, strict=False)
        if address.version == parsed.version and address in parsed:
            return True
    return False


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeUrl(f"the host {host!r} does not resolve ({exc.strerror})") from None
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def check_url(url: str, allowed_networks: list[str]) -> None:
    """Raises ``UnsafeUrl`` unless ``url`` is http(s) and every address its host resolves to is allowed.

    Public (globally routable) addresses are allowed; private, loopback,
    link-local, multicast and reserved ones only when inside ``allowed_networks``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must start with http:// or https://")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeUrl("the URL has an invalid port") from None
    for address in resolve(parts.hostname, port):
        mapped = getattr(address, "ipv4_mapped", None) or address
        if mapped.is_global and not mapped.is_multicast:
            continue
        if _allowed(mapped, allowed_networks):
            continue
        raise UnsafeUrl(
            f"the host {parts.hostname!r} resolves to {address}, a private, loopback or reserved address "
            "(allow its network with WEBHOOK_ALLOWED_NETWORKS)"
        )

"""Which URLs webhooks and job callbacks may be sent to: public addresses only, unless configuration allows more.

Checked when a URL is registered, before every delivery, and on the socket
itself once connected (``guarded_session``), so a name that resolves elsewhere
by then (DNS rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """The URL may not be called; the message says why."""


class Unresolvable(UnsafeUrl):
    """The host does not resolve now; that may pass, so a delivery is tried again."""


def _allowed(address: Address, networks: list[str]) -> bool:
    for network in networks:
        parsed = ipaddress.ip_network(network, strict=False)
        if address.version == parsed.version and address in parsed:
            return True
    return False


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv6 one (mapped, 6to4, Teredo, NAT64, IPv4-compatible), if any."""
    if address.version != 6:
        return None
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in _NAT64 or (int(address) >> 32 == 0 and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_address(raw: str, allowed_networks: list[str]) -> None:
    """Raises ``UnsafeUrl`` unless ``raw`` (an IP address) is public or inside ``allowed_networks``."""
    address = ipaddress.ip_address(raw.split("%", 1)[0])
    if _allowed(address, allowed_networks):
        return
    for candidate in filter(None, (address, _embedded_ipv4(address))):
        if not candidate.is_global or candidate.is_multicast:
            if _allowed(candidate, allowed_networks):
                continue
            raise UnsafeUrl(
                f"{address} is a private, loopback or reserved address "
                "(allow its network with WEBHOOK_ALLOWED_NETWORKS)"
            )


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Unresolvable(f"the host {host!r} does not resolve ({exc.strerror})") from None
    except (UnicodeError, ValueError):
        raise UnsafeUrl(f"the host {host!r} is not a valid name") from None
    return [info[4][0] for info in infos]


def check_url(url: str, allowed_networks: list[str]) -> None:
    """Raises ``UnsafeUrl`` unless ``url`` is http(s) and every address its host resolves to is allowed.

    Public (globally routable) addresses are allowed; private, loopback,
    link-local, multicast and reserved ones only when inside ``allowed_networks``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL is malformed") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must start with http:// or https://")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL must not carry credentials")
    for address in resolve(parts.hostname, port or (443 if parts.scheme == "https" else 80)):
        try:
            check_address(address, allowed_networks)
        except UnsafeUrl as exc:
            raise UnsafeUrl(f"the host {parts.hostname!r} resolves to {exc}") from None


class _PeerCheck:
    """Checks the connected socket's peer before anything is sent; subclasses set ``allowed_networks``."""

    allowed_networks: tuple[str, ...] = ()

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        peer = self.sock.getpeername()[0]  # type: ignore[attr-defined]
        try:
            check_address(peer, list(self.allowed_networks))
        except UnsafeUrl:
            self.close()  # type: ignore[attr-defined]
            raise


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, allowed_networks: list[str]) -> None:
        networks = {"allowed_networks": tuple(allowed_networks)}
        http = type("GuardedHTTPConnection", (_PeerCheck, HTTPConnection), networks)
        https = type("GuardedHTTPSConnection", (_PeerCheck, HTTPSConnection), networks)
        self.pool_classes = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self.pool_classes


def guarded_session(allowed_networks: list[str]) -> requests.Session:
    """A session that refuses, once connected and before sending anything, a peer address ``check_url`` would."""
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(allowed_networks)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session

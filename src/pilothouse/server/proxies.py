"""What a request says about its client when reverse proxies stand in front: the client's address and
whether it came over HTTPS. ``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only from the
addresses of ``server.trusted_proxies``; from anyone else they are the client's own claims."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Literal

from starlette.requests import Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyPolicy:
    """Client address and scheme of requests, and the Secure flag their cookies get."""

    def __init__(
        self, trusted: Sequence[str] = (), secure_cookies: Literal["auto", "always", "never"] = "auto"
    ) -> None:
        self._trusted: tuple[Network, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in trusted)
        self.secure_cookies = secure_cookies

    def _is_trusted(self, address: str | None) -> bool:
        if not self._trusted or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._trusted)

    def client_ip(self, request: Request) -> str:
        """The client's address: the peer's, or behind trusted proxies the nearest address in
        ``X-Forwarded-For`` that is not one of theirs."""
        peer = request.client.host if request.client else "unknown"
        if not self._is_trusted(peer):
            return peer
        forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",")]
        for address in reversed([a for a in forwarded if a]):
            if not self._is_trusted(address):
                return address[:64]
        return peer

    def is_https(self, request: Request) -> bool:
        """True if the client's connection is HTTPS: this server's own TLS, or a trusted proxy's
        ``X-Forwarded-Proto: https``."""
        if request.url.scheme == "https":
            return True
        if not self._is_trusted(request.client.host if request.client else None):
            return False
        proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
        return proto == "https"

    def secure_cookie(self, request: Request) -> bool:
        """The Secure flag of a cookie set in answer to ``request`` (``server.secure_cookies``)."""
        if self.secure_cookies == "auto":
            return self.is_https(request)
        return self.secure_cookies == "always"

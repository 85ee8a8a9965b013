"""Where the server may send an outbound webhook (a budget alert), as pure checks: the URL's form, and
whether an address it resolves to is public or allowed.

By default a webhook may only reach public addresses: loopback, private (RFC 1918, unique-local),
link-local (cloud metadata at 169.254.169.254), carrier-grade NAT, multicast, reserved and unspecified
addresses are refused, as are IPv4 addresses written inside IPv6 ones (``::ffff:127.0.0.1``, 6to4,
NAT64). The resolving and the sending live in :mod:`pilothouse.gateway.webhooks`: every address a host
resolves to is checked, and the request goes to the checked address. ``webhook_allow`` (a setting)
names hosts, addresses or networks (CIDR) that are allowed anyway: internal receivers.

A URL with credentials (``https://user:pw@host/``) is refused: they would be stored in plaintext and
shown to every reader of the budgets; a receiver that needs a secret takes it in the path or query,
which only admins see (:func:`displayed_webhook_url`)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")  # IPv4-translated (RFC 2765): ::ffff:0:a.b.c.d


class WebhookRefused(ValueError):
    """A webhook URL the server will not send to; the message says why."""


@dataclass(frozen=True, slots=True)
class WebhookUrl:
    """A webhook URL's parts: ``scheme`` (http or https), ``host`` (lower case, no brackets),
    ``port`` and ``target`` (the path and query)."""

    scheme: str
    host: str
    port: int
    target: str


def parse_webhook_url(url: str) -> WebhookUrl:
    """The parts of an http(s) webhook URL; :class:`WebhookRefused` for another scheme, no host, a bad
    port or credentials in it."""
    if not isinstance(url, str) or len(url) > 2048:
        raise WebhookRefused("the webhook URL must be an http(s) URL of at most 2,048 characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"the webhook URL cannot be read: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused("the webhook URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise WebhookRefused(
            "credentials in a webhook URL (user:password@) are not accepted: they would be stored and "
            "shown in plaintext; put a secret token in the URL's path or query instead"
        )
    host = (parts.hostname or "").lower()
    if not host:
        raise WebhookRefused("the webhook URL has no host")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return WebhookUrl(parts.scheme, host, port or (443 if parts.scheme == "https" else 80), target)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64 or address in _SIIT:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    packed = address.packed
    if packed[:12] == bytes(12) and int(address) > 1:  # IPv4-compatible (deprecated) ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    return None


def _is_allowed(host: str, address: Address, allowed: Sequence[str]) -> bool:
    for entry in allowed:
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == host:
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name that is not this one
    return False


def address_refusal(host: str, address: str, allowed: Sequence[str] = ()) -> str | None:
    """Why ``host``, resolved to ``address``, may not receive a webhook (None: it may): an address
    that is not public (loopback, private, link-local, multicast, reserved, unspecified, shared), also
    when written inside an IPv6 address, unless ``allowed`` names the host, the address or a network
    holding it."""
    try:
        parsed: Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{host} resolved to something that is not an IP address ({address!r})"
    if _is_allowed(host, parsed, allowed):
        return None
    checked: list[Address] = [parsed]
    if isinstance(parsed, ipaddress.IPv6Address) and (inner := _embedded_ipv4(parsed)) is not None:
        checked.append(inner)
    for candidate in checked:
        if _is_allowed(host, candidate, allowed):
            return None
        if not candidate.is_global or candidate.is_multicast:
            return (
                f"{host} resolves to {candidate}, which is not a public address (loopback, private, "
                "link-local, multicast or reserved); add it to the webhook_allow setting to allow an "
                "internal receiver"
            )
    return None


def displayed_webhook_url(url: str | None, *, full: bool) -> str | None:
    """A webhook URL as shown: never with credentials; the path and query (where a receiver's secret
    token lives) only when ``full`` (to admins), ``scheme://host:port/…`` otherwise."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(unreadable URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    if not full:
        return f"{parts.scheme}://{netloc}/…"
    return parts._replace(netloc=netloc).geturl()

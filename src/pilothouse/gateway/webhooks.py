"""Sending outbound webhooks (budget alerts) only where they may go: the host is resolved, every
address it resolves to is checked (:func:`pilothouse.domain.webhooks.address_refusal`), and the request
is sent to the checked address itself (the ``Host`` header and TLS name stay the host's), so a DNS
answer that changes between the check and the connection (rebinding) cannot redirect it. The check runs
when a budget is created (a clear 400) and again at every send."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pilothouse.domain.webhooks import WebhookRefused, WebhookUrl, address_refusal, parse_webhook_url

WEBHOOK_TIMEOUT_S = 15.0  # one webhook, all of it: resolving, connecting, sending, the answer's head

if TYPE_CHECKING:  # httpx is imported with the first webhook: it pulls rich and pygments in at import
    import httpx


def _checked(url: WebhookUrl, infos: list[Any], allowed: Sequence[str]) -> list[str]:
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise WebhookRefused(f"{url.host} does not resolve to any address")
    for address in addresses:
        if (why := address_refusal(url.host, address, allowed)) is not None:
            raise WebhookRefused(why)
    return addresses


async def resolve_webhook(url: str, allowed: Sequence[str] = ()) -> tuple[WebhookUrl, list[str]]:
    """The URL's parts and the addresses its host resolves to, every one of them allowed; raises
    :class:`WebhookRefused` (a bad URL, a host that does not resolve, or any address refused). The
    host is resolved as the connection would (numeric forms such as ``2130706433`` or ``0x7f.1`` too)."""
    parts = parse_webhook_url(url)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.host, parts.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookRefused(f"{parts.host} does not resolve: {exc}") from None
    return parts, _checked(parts, infos, allowed)


def resolve_webhook_sync(url: str, allowed: Sequence[str] = ()) -> tuple[WebhookUrl, list[str]]:
    """:func:`resolve_webhook` for code that is not async (the CLI)."""
    parts = parse_webhook_url(url)
    try:
        infos = socket.getaddrinfo(parts.host, parts.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise WebhookRefused(f"{parts.host} does not resolve: {exc}") from None
    return parts, _checked(parts, infos, allowed)


async def post_webhook(
    client: httpx.AsyncClient,
    url: str,
    content: bytes,
    allowed: Sequence[str] = (),
    timeout_s: float = WEBHOOK_TIMEOUT_S,
) -> httpx.Response:
    """POST ``content`` (JSON) to ``url`` after checking where it goes, connecting to the checked
    address; raises :class:`WebhookRefused` or httpx's errors. The whole exchange (resolving, sending,
    the answer's head) takes at most ``timeout_s``, and the answer's body is never read: a receiver
    that drips its answer, or sends gigabytes, cannot hold the sender or fill its memory (httpx's
    own timeout is per read, and ``post`` reads the whole body). The response has its status and
    headers only."""
    import httpx

    try:
        async with asyncio.timeout(timeout_s):
            return await _post_checked(client, url, content, allowed)
    except TimeoutError:
        raise httpx.TimeoutException(f"the webhook took longer than {timeout_s:g} s") from None


async def _post_checked(
    client: httpx.AsyncClient, url: str, content: bytes, allowed: Sequence[str]
) -> httpx.Response:
    parts, addresses = await resolve_webhook(url, allowed)
    address = addresses[0]
    host_in_url = f"[{address}]" if ":" in address else address
    default_port = 443 if parts.scheme == "https" else 80
    host_header = parts.host if parts.port == default_port else f"{parts.host}:{parts.port}"
    if ":" in parts.host and parts.port == default_port:
        host_header = f"[{parts.host}]"
    elif ":" in parts.host:
        host_header = f"[{parts.host}]:{parts.port}"
    request = client.build_request(
        "POST",
        f"{parts.scheme}://{host_in_url}:{parts.port}{parts.target}",
        content=content,
        headers={"content-type": "application/json", "host": host_header},
        extensions={"sni_hostname": parts.host} if parts.scheme == "https" else None,
    )
    response = await client.send(request, stream=True)
    await response.aclose()  # the body is not wanted: the connection is dropped, not drained
    return response

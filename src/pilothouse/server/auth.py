"""API-key authentication with a short in-process cache, so that a warm request never waits on the
database to check its key."""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from pilothouse.domain.keys import ApiKey, Scope, hash_secret, key_identity
from pilothouse.server.errors import ApiError
from pilothouse.server.proxies import ProxyPolicy
from pilothouse.server.throttle import FailureThrottle
from pilothouse.store.sql import SqlStore

DEFAULT_PROJECT = "default"
PROJECT_HEADER = "x-pilothouse-project"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key (None for the admin secret) and the project the call acts on."""

    project_id: str
    key: ApiKey | None
    is_admin: bool = False

    @property
    def identity(self) -> str:
        """Who this caller is recorded as: ``key:NAME`` or ``admin`` (:func:`key_identity`)."""
        return key_identity(None if self.key is None else self.key.name)

    def allows(self, scope: Scope) -> bool:
        """True if this caller may use ``scope``."""
        return self.is_admin or (self.key is not None and self.key.allows(scope))


def bearer_secret(request: Request) -> str | None:
    """The secret from ``Authorization: Bearer`` (or ``x-api-key``, as Anthropic clients send it), or the
    password of HTTP Basic auth, as the Langfuse SDK sends ``public_key:secret_key``: the secret is a
    Pilothouse key and the user name (Langfuse's public key) is ignored."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        if scheme.lower() == "basic" and value.strip():
            return _basic_password(value.strip())
        return None
    return request.headers.get("x-api-key") or None


def _basic_password(credentials: str) -> str | None:
    """The password of ``base64(user:password)``; None when it does not decode."""
    if len(credentials) > 4096:
        return None
    try:  # a header of non-ASCII bytes (read as latin-1) is a ValueError of b64decode's own
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon and password else None


GOOD_KEY_MEMORY_S = 3600.0  # how long a key that worked still passes a throttled address
KEY_PREFIX_CHARS = 10  # what an API key's stored prefix holds (and a guesser's key throttle is keyed by)


def too_many_failures(wait_s: float) -> ApiError:
    """The 429 of a client whose failed authentications used up its allowance."""
    seconds = max(1, math.ceil(wait_s))
    return ApiError(
        429,
        f"Too many failed authentications from this client; retry in {seconds} s.",
        code="too_many_auth_failures",
        headers={"Retry-After": str(seconds)},
    )


class KeyAuthenticator:
    """Resolves secrets to principals; caches lookups (hits and misses) for ``ttl_s`` seconds. Failed
    keys are throttled per client address and key prefix (:class:`FailureThrottle`)."""

    def __init__(
        self,
        store: SqlStore,
        admin_key: str | None,
        ttl_s: float = 10.0,
        *,
        throttle: FailureThrottle | None = None,
        proxies: ProxyPolicy | None = None,
    ) -> None:
        self.store = store
        self._admin_hash = hash_secret(admin_key) if admin_key else None
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}
        self.throttle = throttle if throttle is not None else FailureThrottle()
        self.proxies = proxies if proxies is not None else ProxyPolicy()
        # keys (digests) that authenticated lately: still let through from a throttled address, so
        # that one client retrying a revoked key behind a shared proxy does not lock out the others
        self._good: dict[str, float] = {}

    async def authenticate(self, request: Request, scope: Scope | tuple[Scope, ...]) -> Principal:
        """The caller of ``request`` if its key has ``scope`` (or one of them); raises 401/403
        otherwise."""
        secret = bearer_secret(request)
        if secret is None:
            raise ApiError(
                401,
                "Missing API key. Send it as 'Authorization: Bearer <key>' (create one with "
                "'pilothouse keys create').",
                code="invalid_api_key",
            )
        address = self.proxies.client_ip(request)
        prefix = secret[:KEY_PREFIX_CHARS]
        digest = hash_secret(secret)
        wait = self.throttle.retry_after_s(address, prefix)
        if wait > 0 and self._good.get(digest, 0.0) < time.monotonic():
            raise too_many_failures(wait)
        if self._admin_hash is not None and hmac.compare_digest(digest, self._admin_hash):
            project = request.headers.get(PROJECT_HEADER) or DEFAULT_PROJECT
            return Principal(project, None, is_admin=True)
        key = await self._lookup(digest, secret)
        if key is None or not key.active:
            await self.throttle.failed(address, prefix)
            raise ApiError(401, "Invalid API key (unknown or revoked).", code="invalid_api_key")
        wanted = scope if isinstance(scope, tuple) else (scope,)
        if not any(key.allows(one) for one in wanted):
            names = "' or '".join(one.value for one in wanted)
            raise ApiError(403, f"This key lacks the '{names}' scope.", code="insufficient_scope")
        if digest not in self._good:  # API keys only: 256 random bits, so no guesser's oracle
            if len(self._good) > 10_000:
                self._good.clear()
            self._good[digest] = time.monotonic() + GOOD_KEY_MEMORY_S
        return Principal(key.project_id, key)

    async def _lookup(self, digest: str, secret: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await run_in_threadpool(self.store.find_api_key, secret)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now + self.ttl_s, key)
        return key

    def forget(self) -> None:
        """Drop the cache (after a key is revoked in this process)."""
        self._cache.clear()

"""The SDK's prompt client: ``pilothouse.get_prompt(name, label=..., fallback=...)``.

A prompt is fetched once over HTTP (``GET /api/prompts/{name}``) and then served from memory. After
``cache_seconds`` an entry is stale: it is still returned at once, and one background thread fetches
the new version (stale-while-revalidate), so no call of the application waits on the network once a
prompt was fetched. With the server down the application keeps working: the last version fetched is
served as long as the process lives, and a prompt never fetched comes from the ``fallback`` given in
code (a version numbered 0 whose ``fallback`` is true)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx

from pilothouse.domain.prompts import PRODUCTION, PromptError, PromptVersion, prompt_from_document

__all__ = ["PromptClient", "PromptUnavailable", "configure_prompts", "get_prompt"]

log = logging.getLogger("pilothouse.prompts")

_RETRY_SECONDS = 5.0  # after a failed refresh, the next one waits this long (or the cache time if shorter)


class PromptUnavailable(RuntimeError):
    """The prompt could not be fetched, none was fetched before, and no fallback was given."""


@dataclass(slots=True)
class _Entry:
    prompt: PromptVersion
    fresh_until: float
    refreshing: bool = False


class PromptClient:
    """Prompts of one Pilothouse server, cached in this process."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        cache_seconds: float = 60.0,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self.cache_seconds = cache_seconds
        self._http = httpx.Client(headers=headers, timeout=timeout_s, transport=transport)
        self._cache: dict[tuple[str, str | None, int | None], _Entry] = {}
        self._lock = threading.Lock()
        self.last_error: str | None = None  # why the last fetch failed, for logs and tests

    def get(
        self,
        name: str,
        *,
        label: str | None = None,
        version: int | None = None,
        fallback: str | Sequence[Mapping[str, Any]] | None = None,
        cache_seconds: float | None = None,
    ) -> PromptVersion:
        """The prompt ``name`` at ``label`` (default ``production``) or at ``version``: from memory when
        fetched before (a stale entry is refreshed in the background), else fetched now; if that fails,
        ``fallback`` (a template string, or a list of chat messages) as version 0. Raises
        :class:`PromptUnavailable` when there is nothing to serve."""
        key = (name, label if version is not None or label is not None else PRODUCTION, version)
        entry = self._cache.get(key)
        if entry is None and label is not None and version is not None:
            raise ValueError("give get_prompt a label or a version, not both")
        if entry is not None:
            if entry.fresh_until < time.monotonic() and not entry.refreshing:
                self._refresh_later(key, entry, cache_seconds)
            return entry.prompt
        try:
            prompt = self._fetch(key)
        except PromptUnavailable as exc:
            if fallback is None:
                raise
            log.warning("prompt %r: %s; serving the fallback given in code", name, exc)
            return _fallback_prompt(name, fallback)
        ttl = self.cache_seconds if cache_seconds is None else cache_seconds
        self._cache[key] = _Entry(prompt, time.monotonic() + ttl)
        return prompt

    def invalidate(self) -> None:
        """Forget every cached prompt (the next call of each fetches it)."""
        self._cache.clear()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def _refresh_later(
        self, key: tuple[str, str | None, int | None], entry: _Entry, ttl: float | None
    ) -> None:
        with self._lock:
            if entry.refreshing:
                return
            entry.refreshing = True
        threading.Thread(target=self._refresh, args=(key, entry, ttl), daemon=True).start()

    def _refresh(self, key: tuple[str, str | None, int | None], entry: _Entry, ttl: float | None) -> None:
        seconds = self.cache_seconds if ttl is None else ttl
        try:
            prompt = self._fetch(key)
        except PromptUnavailable as exc:  # keep serving the last version; try again a little later
            log.warning(
                "prompt %r: refresh failed (%s); serving version %d", key[0], exc, entry.prompt.version
            )
            entry.fresh_until = time.monotonic() + min(seconds, _RETRY_SECONDS)
            entry.refreshing = False
            return
        self._cache[key] = _Entry(prompt, time.monotonic() + seconds)

    def _fetch(self, key: tuple[str, str | None, int | None]) -> PromptVersion:
        name, label, version = key
        params: dict[str, str] = {"version": str(version)} if version is not None else {"label": str(label)}
        try:
            response = self._http.get(f"{self.base_url}/api/prompts/{quote(name, safe='')}", params=params)
        except httpx.HTTPError as exc:
            self.last_error = f"cannot reach {self.base_url}: {type(exc).__name__}"
            raise PromptUnavailable(self.last_error) from None
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            self.last_error = f"HTTP {response.status_code}: {message}"
            raise PromptUnavailable(self.last_error)
        try:
            document = response.json()
            prompt = prompt_from_document(name, document, version=int(document["version"]))
        except (ValueError, KeyError, TypeError, PromptError) as exc:
            self.last_error = f"unreadable answer: {exc}"
            raise PromptUnavailable(self.last_error) from None
        labels = document.get("labels")
        return _with(prompt, labels=tuple(labels) if isinstance(labels, list) else ())


def _with(prompt: PromptVersion, **changes: Any) -> PromptVersion:
    return replace(prompt, **changes)


def _fallback_prompt(name: str, fallback: str | Sequence[Mapping[str, Any]]) -> PromptVersion:
    document: dict[str, Any] = {
        "prompt": fallback if isinstance(fallback, str) else [dict(m) for m in fallback]
    }
    return _with(prompt_from_document(name, document, version=0), fallback=True)


_default: PromptClient | None = None
_default_lock = threading.Lock()


def default_client() -> PromptClient:
    """The process's client for :func:`get_prompt`: ``$PILOTHOUSE_BASE_URL`` and ``$PILOTHOUSE_API_KEY``
    (as ``pilothouse.init``), cached ``$PILOTHOUSE_PROMPT_CACHE_SECONDS`` (60)."""
    global _default
    client = _default
    if client is None:
        from pilothouse.config import ClientSettings

        with _default_lock:
            if _default is None:
                env = ClientSettings()
                key = env.api_key.get_secret_value() if env.api_key else None
                _default = PromptClient(env.base_url, key, cache_seconds=env.prompt_cache_seconds)
            client = _default
    return client


def configure_prompts(client: PromptClient | None) -> None:
    """Make ``client`` the one :func:`get_prompt` uses (None: the default one, made on next use)."""
    global _default
    with _default_lock:
        _default = client


def get_prompt(
    name: str,
    label: str | None = None,
    *,
    version: int | None = None,
    fallback: str | Sequence[Mapping[str, Any]] | None = None,
    cache_seconds: float | None = None,
) -> PromptVersion:
    """The prompt ``name`` at ``label`` (default ``production``) or ``version``, from the registry of the
    Pilothouse server, cached in memory with a background refresh (see :class:`PromptClient`)::

        prompt = pilothouse.get_prompt("support-answer", fallback="Answer briefly: {{question}}")
        messages = prompt.messages({"question": question})
    """
    return (_default or default_client()).get(
        name, label=label, version=version, fallback=fallback, cache_seconds=cache_seconds
    )

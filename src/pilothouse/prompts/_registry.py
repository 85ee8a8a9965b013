"""The prompt registry service: every use case of prompts (list, read by label or version, create a
version, move a label, diff, history, record a promotion's decision) written once, over the store.
The HTTP API, the CLI, the UI and the gateway call it.

Reads are cached in the process (a gateway resolves a prompt reference per request with one dict
lookup). A change made through this process clears its entries at once; a change made by another
process reaches this one through :class:`~pilothouse.prompts._watch.ChangeWatcher` (Redis pub/sub when
configured, else a poll of the newest event's number), never by waiting out a time to live."""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pilothouse.domain.prompts import (
    PromptError,
    PromptEvent,
    PromptRef,
    PromptSummary,
    PromptVersion,
    check_label,
    check_name,
    check_request_fields,
    diff_versions,
    prompt_from_document,
)
from pilothouse.store.prompts import PromptStore, UnknownVersion
from pilothouse.store.sql import SqlStore

__all__ = ["PromptNotFound", "PromptRegistry", "in_canary"]

_CACHE_LIMIT = 10_000  # resolved references kept per process; past it the cache starts over
_ABSENT_LIMIT = 1_000  # references to no prompt, kept apart

CacheKey = tuple[str, str, str | None, int | None]


MIN_CANARY_SHARE = 0.001  # a smaller share would never gather the evidence to decide


class PromptNotFound(LookupError):
    """No such prompt, label or version in the project."""


class PromptRegistry:
    """Prompts of every project over one database, with a per-process cache of resolved references."""

    def __init__(self, store: SqlStore) -> None:
        self.prompts = PromptStore(store)
        self._cache: dict[CacheKey, PromptVersion | None] = {}
        self._canaries: dict[CacheKey, tuple[PromptVersion, float] | None] = {}
        self._absent: dict[CacheKey, None] = {}  # references known to name nothing
        self._generation = 0  # bumped by every clearing: a read that started before it is not cached
        self._lock = threading.Lock()
        self._listeners: list[Callable[[str, str], None]] = []

    # -- reading ------------------------------------------------------------------------------------

    def is_cached(self, project_id: str, ref: PromptRef) -> bool:
        """Whether :meth:`resolve` of ``ref`` would answer from memory (no database read)."""
        key = (project_id, ref.name, ref.label, ref.version)
        known = key in self._cache or key in self._absent
        return known and (ref.label is None or key in self._canaries or key in self._absent)

    def resolve(self, project_id: str, ref: PromptRef, sticky: str | None = None) -> PromptVersion:
        """The version ``ref`` names (cached); :class:`PromptNotFound` when there is none. When the
        label runs a canary, its share of ``sticky`` keys (an end user: always the same answer for
        the same key) get the canary's version instead; without a key the share is drawn at random."""
        key = (project_id, ref.name, ref.label, ref.version)
        found = self._cache.get(key, False)
        if found is False and key not in self._absent:
            found = self._remember(
                self._cache,
                key,
                lambda: self.prompts.get(project_id, ref.name, label=ref.label, version=ref.version),
            )
        if not isinstance(found, PromptVersion):
            raise PromptNotFound(_missing(ref))
        if ref.label is None:
            return found
        canary = self._canaries.get(key, False)
        if canary is False:
            label = ref.label
            canary = self._remember(
                self._canaries, key, lambda: self.prompts.canary(project_id, ref.name, label)
            )
        if isinstance(canary, tuple) and in_canary(ref.name, sticky, canary[1]):
            return canary[0]
        return found

    def canary(self, project_id: str, name: str, label: str) -> tuple[PromptVersion, float] | None:
        """The canary a label runs (its version and share of traffic), or None (uncached, for people)."""
        return self.prompts.canary(project_id, check_name(name), check_label(label))

    def _remember(self, cache: dict[CacheKey, Any], key: CacheKey, read: Callable[[], Any]) -> Any:
        """``read()``, kept in ``cache`` unless a change was heard meanwhile."""
        generation = self._generation
        found = read()
        with self._lock:
            if generation == self._generation:
                # references to nothing are kept apart, fewer of them: a flood of made-up names must
                # not push the prompts in use out of the cache
                if found is None and cache is self._cache:
                    cache, limit = self._absent, _ABSENT_LIMIT
                else:
                    limit = _CACHE_LIMIT
                if len(cache) >= limit:
                    cache.clear()
                cache[key] = found
        return found

    def get(
        self, project_id: str, name: str, *, label: str | None = None, version: int | None = None
    ) -> PromptVersion:
        """A version by number or by label (``latest`` when neither is given), uncached (for people)."""
        check_name(name)
        if label is not None:
            check_label(label, settable=False)
        found = self.prompts.get(
            project_id, name, label=label or (None if version else "latest"), version=version
        )
        if found is None:
            if not self.prompts.versions(project_id, name, limit=1):
                raise PromptNotFound(f"no prompt named {name!r}")
            raise PromptNotFound(_missing(PromptRef(name, label=label or "latest", version=version)))
        return found

    def list_prompts(self, project_id: str) -> list[PromptSummary]:
        """The project's prompts, by name."""
        return self.prompts.list_prompts(project_id)

    def versions(self, project_id: str, name: str) -> list[PromptVersion]:
        """A prompt's versions, newest first; :class:`PromptNotFound` for an unknown prompt."""
        found = self.prompts.versions(project_id, check_name(name))
        if not found:
            raise PromptNotFound(f"no prompt named {name!r}")
        return found

    def diff(self, project_id: str, name: str, old: int, new: int) -> list[str]:
        """The unified diff from version ``old`` to version ``new``."""
        return diff_versions(self.get(project_id, name, version=old), self.get(project_id, name, version=new))

    def history(self, project_id: str, name: str | None = None, limit: int = 100) -> list[PromptEvent]:
        """Who changed what and when, newest first (of one prompt or of the whole project);
        :class:`PromptNotFound` for an unknown prompt (a stored one has its 'create' entry at least)."""
        if name is not None:
            check_name(name)
        events = self.prompts.history(project_id, name, max(1, min(limit, 1000)))
        if name is not None and not events:
            raise PromptNotFound(f"no prompt named {name!r}")
        return events

    # -- writing ------------------------------------------------------------------------------------

    def create(
        self,
        project_id: str,
        name: str,
        document: Mapping[str, Any],
        *,
        actor: str | None,
        labels: tuple[str, ...] | list[str] = (),
    ) -> PromptVersion:
        """Store a new version from a JSON document (:func:`~pilothouse.domain.prompts.prompt_from_document`)
        and point ``labels`` at it; :class:`PromptError` names what is wrong."""
        checked_labels = tuple(dict.fromkeys(check_label(label) for label in labels))
        if len(checked_labels) > 16:
            raise PromptError("at most 16 labels at once")
        prompt = prompt_from_document(name, document)
        check_request_fields(prompt)  # on storing only: a version stored before a rule stays readable
        created = self.prompts.add_version(project_id, prompt, actor=actor, labels=checked_labels)
        self.changed(project_id, name)
        return created

    def set_label(
        self,
        project_id: str,
        name: str,
        label: str,
        version: int,
        *,
        actor: str | None,
        action: str = "label",
        detail: Mapping[str, Any] | None = None,
    ) -> int | None:
        """Point ``label`` at ``version`` (a rollback is this too) and return where it pointed before.
        A label that already points at ``version`` is left as it is (no history entry; its canary goes
        on): the return value equals ``version`` then."""
        check_name(name)
        check_label(label)
        try:
            previous = self.prompts.set_label(
                project_id, name, label, version, actor=actor, action=action, detail=detail
            )
        except UnknownVersion as exc:
            raise PromptNotFound(str(exc)) from None
        if previous != version:
            self.changed(project_id, name)
        return previous

    def set_canary(
        self,
        project_id: str,
        name: str,
        label: str,
        version: int | None,
        share: float = 0.1,
        *,
        actor: str | None,
        score: str | None = None,
        margin: float | None = None,
    ) -> int:
        """Send ``share`` (0 < share < 1) of ``label``'s traffic, sticky per end user, to ``version``;
        ``version`` None stops the canary. Moving the label (promotion or rollback) ends it too.
        ``score`` and ``margin`` decide this canary instead of the server's ``canary_score`` and
        ``canary_margin``. Returns the version the label itself points at."""
        check_name(name)
        check_label(label)
        decide: dict[str, Any] = {}
        if score is not None:
            if not isinstance(score, str) or not 0 < len(score) <= 200:
                raise PromptError("a canary's score is a score name of 1 to 200 characters")
            decide["score"] = score
        if margin is not None:
            if isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 <= margin <= 1e9:
                raise PromptError("a canary's margin is a number >= 0, in the score's units")
            decide["margin"] = float(margin)
        if version is not None and not (isinstance(share, int | float) and MIN_CANARY_SHARE <= share < 1):
            raise PromptError(
                f"a canary's share is a number between 0 and 1, at least {MIN_CANARY_SHARE} "
                "(0.1: a tenth of the traffic)"
            )
        current = self.get(project_id, name, label=label)  # PromptNotFound: no such prompt or label
        if version is None and self.prompts.canary(project_id, name, label) is None:
            raise PromptError(f"no canary is running on {name!r} {label!r}: nothing to stop")
        if version is not None and current.version == version:
            raise PromptError(
                f"{label!r} already points at version {version}; a canary needs another version"
            )
        try:
            main = self.prompts.set_canary(
                project_id, name, label, version, float(share), actor=actor, decide=decide
            )
        except UnknownVersion as exc:
            raise PromptNotFound(str(exc)) from None
        self.changed(project_id, name)
        return main

    def record_refusal(
        self,
        project_id: str,
        name: str,
        label: str,
        version: int,
        *,
        actor: str | None,
        detail: Mapping[str, Any],
    ) -> None:
        """Record a promotion that the gate refused (the label stays where it was)."""
        self.prompts.add_event(
            project_id, name, "refuse", version=version, label=label, actor=actor, detail=detail
        )
        self.changed(project_id, name)

    # -- changes ------------------------------------------------------------------------------------

    def on_change(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(project_id, name)`` after each change made in this process (the watcher
        publishes them to other processes)."""
        self._listeners.append(listener)

    def changed(self, project_id: str, name: str, *, local: bool = True) -> None:
        """Forget what is cached of ``name`` (a change made here, or heard from another process)."""
        with self._lock:
            self._generation += 1
            for cache in (self._cache, self._canaries, self._absent):
                for key in [k for k in cache if k[0] == project_id and k[1] == name]:
                    del cache[key]
        if local:
            for listener in self._listeners:
                listener(project_id, name)


def in_canary(name: str, sticky: str | None, share: float) -> bool:
    """Whether ``sticky`` (an end user, a session) falls in a canary's ``share``: a hash of the key
    and the prompt's name, so a user stays in one arm and different prompts split users differently."""
    if share <= 0:
        return False
    if sticky is None:
        return random.random() < share
    digest = hashlib.blake2b(f"{name}\x00{sticky}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < share * 2**64


def _missing(ref: PromptRef) -> str:
    if ref.version is not None:
        return f"prompt {ref.name!r} has no version {ref.version}"
    return f"prompt {ref.name!r} has no label {ref.label!r} (or no such prompt)"

"""The gateway's semantic cache: a request whose question means the same as one answered before (cosine
similarity of sentence embeddings above a threshold) gets that answer.

Answers are only shared within a scope: the same project, model, system prompt and parameters, so a
different instruction or temperature never reuses an answer. Multi-turn conversations are left out
unless enabled (the same last question means something else in another conversation). A sample of
hits is re-checked against a fresh answer from the model; the share of hits whose fresh answer agrees
(embedding similarity of the two answers above ``answer_threshold``) is the route's measured
precision, and a route whose precision falls below ``precision_floor`` is switched off.

Embeddings come from a local model (all-MiniLM-L6-v2 by default), computed in a worker thread. With
Redis, the processes of one server share their entries and switched-off routes
(gateway/shared_semantic_cache.py, through the ``on_add`` and ``on_route_off`` hooks).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from pilothouse.config import SemanticCacheSettings
from pilothouse.gateway.cache import CachedAnswer

if TYPE_CHECKING:
    import numpy as np  # imported where used: the gateway starts without numpy unless this cache is on

log = logging.getLogger("pilothouse.cache")

Embedder = Callable[[list[str]], Sequence[Sequence[float]]]
# (entry id, scope key, project, vector, answer, expiry on this cache's clock): an entry just added
Added = tuple[str, str, str, "np.ndarray", CachedAnswer, float]
_SCOPE_IGNORED = frozenset({"messages", "stream", "stream_options", "user"})


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def question_and_scope(
    project_id: str, request: Mapping[str, Any], multi_turn: bool
) -> tuple[str, str] | None:
    """(the text to embed, the scope key) of a chat request, or None when it is not eligible (several
    choices, tools, or a conversation with earlier turns unless ``multi_turn``)."""
    messages = request.get("messages")
    if not isinstance(messages, list) or request.get("n", 1) != 1 or request.get("tools"):
        return None
    system = [
        _text(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]
    turns = [m for m in messages if isinstance(m, dict) and m.get("role") not in ("system", "developer")]
    if not turns or turns[-1].get("role") != "user":
        return None
    if len(turns) > 1 and not multi_turn:
        return None
    question = "\n".join(_text(m.get("content")) for m in turns).strip()
    if not question:
        return None
    params = {k: v for k, v in request.items() if k not in _SCOPE_IGNORED}
    scope_source = orjson.dumps([project_id, system, params], option=orjson.OPT_SORT_KEYS)
    return question, hashlib.sha256(scope_source).hexdigest()


@dataclass
class _Scope:
    vectors: np.ndarray  # (n, dim) float32, rows L2-normalised
    answers: list[CachedAnswer] = field(default_factory=list)
    expiries: list[float] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)  # unique over processes: a shared entry is added once


@dataclass
class RouteStats:
    """Semantic cache figures of one model name."""

    hits: int = 0
    misses: int = 0
    verified: int = 0
    agreed: int = 0
    enabled: bool = True

    @property
    def precision(self) -> float | None:
        """Share of re-checked hits whose fresh answer agreed (None before any re-check)."""
        return self.agreed / self.verified if self.verified else None

    def as_dict(self) -> dict[str, Any]:
        """The figures as JSON values."""
        return {
            "hits": self.hits,
            "misses": self.misses,
            "verified": self.verified,
            "agreed": self.agreed,
            "precision": self.precision,
            "enabled": self.enabled,
        }


@dataclass(slots=True)
class SemanticLookup:
    """One request's pass through the semantic cache."""

    route: str
    scope: str
    question: str
    vector: np.ndarray
    answer: CachedAnswer | None = None
    similarity: float | None = None
    project_id: str = ""


class SemanticCache:
    """Embeddings and answers per scope (a scope is one project's system prompt and parameters), in
    process memory; precision measured per route. The figures a project reads (:meth:`report`) are
    its own; whether a route is switched off is decided over every project's re-checked hits (it is a
    property of the model and the threshold), so that one flag is the gateway's."""

    def __init__(
        self,
        settings: SemanticCacheSettings,
        embed: Embedder,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._embed = embed
        self._clock = clock
        self._rng = rng or random.Random()
        self._scopes: dict[str, _Scope] = {}
        self._scope_projects: dict[str, str] = {}  # scope key -> its project
        self.routes: dict[str, RouteStats] = {}  # every project's figures: what switches a route off
        self.project_routes: dict[tuple[str, str], RouteStats] = {}  # (project, route) -> figures
        self.dimension: int | None = None  # of the embeddings, once one was computed
        self.on_add: Callable[[Added], None] | None = None  # called on the event loop: no I/O there
        self.on_route_off: Callable[[str, float, int], None] | None = None  # (route, precision, re-checks)
        self._id_prefix = secrets.token_hex(6)
        self._added = 0

    def _vectors(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        vectors = np.asarray(self._embed(texts), dtype=np.float32)
        self.dimension = int(vectors.shape[1])
        return vectors

    def now(self) -> float:
        """This cache's clock (what entries' expiries are on)."""
        return self._clock()

    def warm_up(self) -> None:
        """Load the embedding model now (start-up) rather than on the first request."""
        self._vectors(["warm up"])

    async def lookup(self, project_id: str, request: Mapping[str, Any]) -> SemanticLookup | None:
        """The closest cached answer above the threshold in the request's scope; None when the request
        is not eligible or its route is switched off."""
        route = str(request.get("model"))
        stats = self.routes.setdefault(route, RouteStats())
        if not stats.enabled:
            return None
        found = question_and_scope(project_id, request, self.settings.multi_turn)
        if found is None:
            return None
        question, scope_key = found
        vector = (await asyncio.to_thread(self._vectors, [question]))[0]
        result = SemanticLookup(route, scope_key, question, vector, project_id=project_id)
        scope = self._scopes.get(scope_key)
        if scope is not None and scope.answers:
            similarities = scope.vectors[: len(scope.answers)] @ vector
            best = int(similarities.argmax())
            result.similarity = float(similarities[best])
            if result.similarity >= self.settings.threshold and scope.expiries[best] > self._clock():
                result.answer = scope.answers[best]
        mine = self.project_routes.setdefault((project_id, route), RouteStats())
        if result.answer is None:
            stats.misses += 1
            mine.misses += 1
        else:
            stats.hits += 1
            mine.hits += 1
        return result

    def add(self, lookup: SemanticLookup, answer: CachedAnswer) -> None:
        """Remember the answer to a request that missed."""
        self._added += 1
        entry_id = f"{self._id_prefix}-{self._added}"
        expiry = self._clock() + self.settings.ttl_s
        self.insert(lookup.scope, lookup.project_id, [entry_id], lookup.vector[None, :], [answer], [expiry])
        if self.on_add is not None:
            self.on_add((entry_id, lookup.scope, lookup.project_id, lookup.vector, answer, expiry))

    def insert(
        self,
        scope_key: str,
        project_id: str,
        ids: list[str],
        vectors: np.ndarray,
        answers: list[CachedAnswer],
        expiries: list[float],
    ) -> int:
        """Add entries to a scope (expiries on this cache's clock; ids already there are skipped), the
        expired dropped and the oldest beyond ``max_entries``; how many were added."""
        import numpy as np

        scope = self._scopes.get(scope_key)
        if scope is None:
            scope = self._scopes[scope_key] = _Scope(np.empty((0, vectors.shape[1]), np.float32))
            self._scope_projects[scope_key] = project_id
        elif self._scope_projects.get(scope_key) != project_id or scope.vectors.shape[1] != vectors.shape[1]:
            return 0  # a scope key is one project's, with one embedding model
        known = set(scope.ids)
        new = [i for i, entry_id in enumerate(ids) if entry_id not in known]
        if not new:
            return 0
        now = self._clock()
        scope.vectors = np.vstack([scope.vectors[: len(scope.answers)], vectors[new]])
        scope.answers += [answers[i] for i in new]
        scope.expiries += [expiries[i] for i in new]
        scope.ids += [ids[i] for i in new]
        live = [i for i, expiry in enumerate(scope.expiries) if expiry > now][-self.settings.max_entries :]
        if len(live) != len(scope.answers):
            scope.vectors = scope.vectors[live]
            scope.answers = [scope.answers[i] for i in live]
            scope.expiries = [scope.expiries[i] for i in live]
            scope.ids = [scope.ids[i] for i in live]
        return len(new)

    def should_verify(self) -> bool:
        """Whether this hit is one of the sample re-checked against a fresh answer."""
        return self._rng.random() < self.settings.verify_sample

    async def record_verification(
        self, route: str, cached_text: str, fresh_text: str, project_id: str = ""
    ) -> bool:
        """Compare a hit's cached answer with a fresh one; switch the route off when its measured
        precision falls below the floor. Whether they agreed."""
        vectors = await asyncio.to_thread(self._vectors, [cached_text or " ", fresh_text or " "])
        agreed = float(vectors[0] @ vectors[1]) >= self.settings.answer_threshold
        mine = self.project_routes.setdefault((project_id, route), RouteStats())
        mine.verified += 1
        mine.agreed += agreed
        stats = self.routes.setdefault(route, RouteStats())
        stats.verified += 1
        stats.agreed += agreed
        precision = stats.precision
        if (
            stats.enabled
            and stats.verified >= self.settings.min_verified
            and precision is not None
            and precision < self.settings.precision_floor
        ):
            stats.enabled = False
            if self.on_route_off is not None:
                self.on_route_off(route, precision, stats.verified)
            log.warning(
                "semantic cache switched off for model %r: precision %.2f over %d re-checked hits is "
                "below the floor %.2f",
                route,
                precision,
                stats.verified,
                self.settings.precision_floor,
            )
        return agreed

    def switch_off(self, route: str, why: str) -> None:
        """Switch a route's semantic cache off because another process did (``why`` is logged)."""
        stats = self.routes.setdefault(route, RouteStats())
        if stats.enabled:
            stats.enabled = False
            log.warning("semantic cache switched off for model %r: %s", route, why)

    def report(self, project_id: str) -> dict[str, Any]:
        """Settings and the per-route figures of one project (its entries, hits, misses, re-checks;
        ``enabled`` is the route's, for every project)."""
        routes = {}
        for (project, route), stats in sorted(self.project_routes.items()):
            if project == project_id:
                shared = self.routes.get(route)
                routes[route] = {**stats.as_dict(), "enabled": shared is None or shared.enabled}
        return {
            "threshold": self.settings.threshold,
            "precision_floor": self.settings.precision_floor,
            "entries": sum(
                len(scope.answers)
                for key, scope in self._scopes.items()
                if self._scope_projects.get(key) == project_id
            ),
            "routes": routes,
        }


def local_embedder(model: str) -> Embedder:
    """Embeddings from the in-process sentence model ``model`` (see providers.local_embedding)."""
    from pilothouse.providers.base import Deployment
    from pilothouse.providers.local_embedding import LocalEmbeddingProvider

    provider = LocalEmbeddingProvider(Deployment(name=model, provider="local", model=model))

    def embed(texts: list[str]) -> Sequence[Sequence[float]]:
        vectors, _tokens = provider.embed_texts(texts)
        return vectors

    return embed

"""What the app holds for its lifetime, passed in by the app factory (no module globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pilothouse.costs.pricing import Pricer
from pilothouse.gateway.budgets import BudgetGuard
from pilothouse.gateway.cache import ResponseCache
from pilothouse.gateway.cascade import CascadeSettings, Verifier
from pilothouse.gateway.limits import RateLimiter
from pilothouse.gateway.router import Router
from pilothouse.gateway.semantic_cache import SemanticCache
from pilothouse.server.auth import KeyAuthenticator
from pilothouse.server.ingest import IngestQueue
from pilothouse.server.metrics import GatewayMetrics
from pilothouse.server.settings import Settings
from pilothouse.store.sql import SqlStore

Cascade = tuple[CascadeSettings, Verifier]


@dataclass(slots=True)
class AppState:
    """Settings, store, ingest queue, authenticator and model router of one running app."""

    settings: Settings
    store: SqlStore
    ingest: IngestQueue
    auth: KeyAuthenticator
    router: Router
    limiter: RateLimiter
    metrics: GatewayMetrics
    pricer: Pricer
    budgets: BudgetGuard
    cache: ResponseCache | None = None
    semantic: SemanticCache | None = None
    cascades: dict[str, Cascade] = field(default_factory=dict)

"""What the app holds for its lifetime, made by the app factory and passed to every handler through
``request.app.state.pilothouse`` (no module globals)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from pilothouse.config import Settings
from pilothouse.evals import Evaluations
from pilothouse.gateway import Gateway
from pilothouse.gateway.budgets import BudgetGuard
from pilothouse.gateway.redis_client import RedisProbe
from pilothouse.gateway.stored_responses import ResponseStore, StoredResponses
from pilothouse.improve.canary import CanaryController
from pilothouse.prompts import PromptRegistry
from pilothouse.quality.monitors import MonitorWorker
from pilothouse.quality.online import OnlineEvaluators, OnlineWorker
from pilothouse.server.auth import KeyAuthenticator
from pilothouse.server.body import BodyBudget
from pilothouse.server.ingest import IngestQueue
from pilothouse.server.json_decoder import JsonDecoder
from pilothouse.server.metrics import GatewayMetrics
from pilothouse.server.metrics_shared import SharedMetrics
from pilothouse.server.retention import RetentionWorker
from pilothouse.server.spool import Spool
from pilothouse.store.refreshed import Refreshed
from pilothouse.store.sql import SqlStore


@dataclass(slots=True)
class Services:
    """The services of one running app: settings, the store and its ingest queue, key checks, the
    gateway (with its router and caches), the budgets it enforces, the metrics, the evaluations
    (eval runs compared with the quality gate), in the durable mode the spool that every
    acknowledged span and gateway call is on before its answer is sent, and a probe of Redis when one
    is configured."""

    settings: Settings
    store: SqlStore
    ingest: IngestQueue
    auth: KeyAuthenticator
    gateway: Gateway
    budgets: BudgetGuard
    metrics: GatewayMetrics
    evaluations: Evaluations
    prompts: PromptRegistry  # the prompt registry (its cache kept current by a ChangeWatcher)
    spool: Spool | None = None
    redis: RedisProbe | None = None  # the Redis of shared limits, budgets and cache, for /health
    monitors: MonitorWorker | None = None  # the monitors' background job (None: monitor_interval_s 0)
    online: OnlineEvaluators | None = None  # the online evaluators (docs/online-evals.md)
    online_worker: OnlineWorker | None = None  # their worker in this process (server.online_evals)
    canaries: CanaryController | None = None  # the canaries' background job (None: canary_interval_s 0)
    retention: RetentionWorker | None = None  # the retention job (None: retention_interval_s 0)
    disk_bytes: Refreshed[int] | None = None  # the database's size on disk (/health, the Keys page)
    # /metrics summed over the processes of `serve --workers N` (through Redis), else None
    shared_metrics: SharedMetrics | None = None
    # large OTLP bodies decompressed and checked at once, in a thread (server/collector.py): one, so
    # that a decoded JSON tree (several times its body) is held once, not per concurrent request
    decode_slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    json_decoder: JsonDecoder = field(default_factory=JsonDecoder)  # large OTLP/JSON bodies
    # the bytes of request bodies (OTLP, gateway, /api JSON) held at once, read or being decoded
    body_budget: BodyBudget = field(default_factory=lambda: BodyBudget(64 * 1024 * 1024))
    # Responses API answers for previous_response_id (server/openai_surfaces.py)
    responses: StoredResponses = field(
        default_factory=lambda: ResponseStore(10_000, 64 * 1024 * 1024, 86400.0)
    )

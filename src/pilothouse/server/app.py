"""The app factory: one ASGI app with the collector, the query API and health, its dependencies
passed in (``create_app(settings, store)``)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from pilothouse.config import Settings
from pilothouse.costs.catalogue import PriceCatalogue
from pilothouse.costs.pricing import Pricer
from pilothouse.domain.traces import SpanRecord
from pilothouse.evals import Evaluations
from pilothouse.evals.verifier import add_cascades
from pilothouse.gateway import Caches, Gateway, GatewayError, InProcessModel, RedisFaults, redis_unavailable
from pilothouse.gateway.budgets import BudgetGuard, make_budget_ledger
from pilothouse.gateway.cache import make_response_cache
from pilothouse.gateway.config import ConfigError, GatewayConfig, load_gateway_config
from pilothouse.gateway.limits import make_rate_limiter
from pilothouse.gateway.redis_client import RedisProbe, RedisUnavailable
from pilothouse.gateway.router import Router
from pilothouse.gateway.semantic_cache import SemanticCache, local_embedder
from pilothouse.gateway.shared_breakers import SharedBreakers
from pilothouse.gateway.shared_semantic_cache import SharedSemanticCache
from pilothouse.gateway.stored_responses import RedisResponseStore, ResponseStore
from pilothouse.improve.canary import CanaryController, CanarySettings
from pilothouse.prompts import ChangeWatcher, PromptRegistry
from pilothouse.quality.guardrails import build_guardrails
from pilothouse.quality.monitors import MonitorWorker
from pilothouse.quality.online import OnlineEvaluators, OnlineWorker, WorkerOptions
from pilothouse.server import (
    api,
    costs_api,
    evals_api,
    evaluators_api,
    gateway_api,
    monitors_api,
    openai_surfaces,
    prompts_api,
    review_api,
    trace_lists,
)
from pilothouse.server.auth import KeyAuthenticator
from pilothouse.server.body import MAX_BODY_WAITING, BodyBudget
from pilothouse.server.collector import (
    LANGFUSE_NOT_SERVED,
    LANGFUSE_OTLP_PATH,
    LANGFUSE_PROJECTS_PATH,
    export_logs,
    export_metrics,
    export_traces,
    langfuse_projects,
)
from pilothouse.server.durable import replay_spool
from pilothouse.server.errors import UNKNOWN_PATH_ROUTE, ApiError, FastJSONResponse, error_response
from pilothouse.server.ingest import IngestQueue, PendingExport, SpanSink
from pilothouse.server.metrics import GatewayMetrics, Gauge
from pilothouse.server.metrics_shared import SharedMetrics
from pilothouse.server.proxies import ProxyPolicy
from pilothouse.server.request_ids import (
    add_request_id,
    cors_middleware,
    unprefixed_path,
    with_request_id,
)
from pilothouse.server.retention import RetentionWorker, disk_size
from pilothouse.server.spool import Spool
from pilothouse.server.spool_records import interim_records, span_records
from pilothouse.server.state import Services
from pilothouse.server.throttle import FailureThrottle
from pilothouse.store.costs import CostStore
from pilothouse.store.engine import tighten_private_file
from pilothouse.store.refreshed import Refreshed
from pilothouse.store.sql import SqlStore

T = TypeVar("T")
log = logging.getLogger("pilothouse.server")


async def _kept(value: Refreshed[T]) -> T:
    """A value /health reports, from memory while it is fresh (no thread hop: under load each hop waits
    for the GIL behind the ingest writer), else read in a thread."""
    return value.get() if not value.stale else await run_in_threadpool(value.get)


async def health(request: Request) -> Response:
    """Liveness, the ingest queue's depth and Redis: ``status`` is ``degraded`` (with the ``reasons``)
    while Redis is unreachable, still answered 200: the process is alive and serves what does not need
    Redis; restarting it would not bring Redis back (docs/deployment.md, "Health")."""
    state: Services = request.app.state.pilothouse
    # the process id tells which of several worker processes answered (docs/deploy.md)
    body: dict[str, object] = {
        "status": "ok",
        "ingest_pending": state.ingest.pending,
        "ingest_accepted": state.ingest.stats.accepted,  # since this process started
        "pid": os.getpid(),
    }
    reasons: list[str] = []
    jobs: dict[str, int] = {}  # passes this process ran of each background job: one process holds each
    if state.monitors is not None:
        jobs["monitors"] = state.monitors.passes
    if state.retention is not None:
        jobs["retention"] = state.retention.passes
    if state.disk_bytes is not None:  # every process, whether or not it runs the retention job
        try:
            disk_bytes: int = await _kept(state.disk_bytes)
            body["disk_bytes"] = disk_bytes
        except Exception as exc:  # the database is unreachable: say so, still 200 (the process lives)
            reasons.append(f"database size unknown: {type(exc).__name__}")
    if jobs:
        body["jobs"] = jobs
    if state.redis is not None:
        error = await state.redis.error()
        body["redis"] = "ok" if error is None else "unavailable"
        if error is not None:
            reasons.append(error)
    if state.ingest.sink is not None:  # SQLite with workers: the one process that writes the spans
        body["span_writer"] = {"pid": state.ingest.sink.pid, "status": state.ingest.sink.down or "ok"}
    if (writer_down := state.ingest.unavailable) is not None:
        reasons.append(writer_down)  # OTLP exports get 503 until the parent's new writer answers
    if state.spool is not None and (failure := state.spool.failure) is not None:
        reasons.append(failure)  # every span and gateway call gets 503 until a restart
    if state.monitors is not None:  # its watchdog: a job no process runs is visible here
        try:
            monitors = state.monitors.health_of(await _kept(state.monitors.lease))
            body["monitors"] = monitors
            reasons.extend(monitors["reasons"])
        except Exception as exc:
            reasons.append(f"the monitors' job state is unknown: {type(exc).__name__}")
    if state.online_worker is not None:  # the watchdog: a stalled worker is visible here
        watchdog = state.online_worker.health()
        body["online_evals"] = watchdog
        reasons.extend(watchdog["reasons"])
    if reasons:
        body["status"] = "degraded"
        body["reasons"] = reasons
    return FastJSONResponse(body)


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


# a client whose base URL already ends in /v1 where the SDK adds /v1 itself (Anthropic's), or twice
DOUBLED_V1 = (
    " The path has /v1 twice: an OpenAI client's base_url ends in /v1, an Anthropic client's is the"
    " server's address alone."
)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    route = request.scope.get("route")
    if status == 405 and getattr(route, "path", None) == UNKNOWN_PATH_ROUTE:
        status = 404  # only the UI's catch-all page matched the path: there is no such endpoint
    message = {404: "Not found.", 405: "Method not allowed."}.get(status, str(exc.detail))
    if status == 404 and request.url.path.startswith("/v1/v1/"):
        message += DOUBLED_V1
    elif status == 404 and request.url.path.startswith("/api/public/"):
        message += LANGFUSE_NOT_SERVED
    return gateway_api.surface_error_response(request.url.path, ApiError(status, message))


async def _redis_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RedisUnavailable)
    return gateway_api.surface_error_response(request.url.path, redis_unavailable(exc))


async def _server_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, DBAPIError) and (isinstance(exc, OperationalError) or exc.connection_invalidated):
        # the database cannot be reached (PostgreSQL restarting, its connections ended, a network
        # cut, SQLite's lock held too long): the client retries, as for Redis; not a 500
        log.warning("the database is unavailable: %s", (str(exc.orig or exc).splitlines() or ["?"])[0])
        unavailable = ApiError(
            503,
            "The database of this server cannot be reached; retry shortly.",
            code="database_unavailable",
            headers={"Retry-After": "1"},
        )
        return gateway_api.surface_error_response(request.url.path, unavailable)
    log.exception("unhandled error", exc_info=exc)
    failed = ApiError(500, "Internal server error; the server log has the details.")
    return gateway_api.surface_error_response(request.url.path, failed)


_CIRCUIT_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def _gauges(router: Router, ingest: IngestQueue) -> list[Gauge]:
    return [
        Gauge(
            "pilothouse_deployment_circuit_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open.",
            ("model", "deployment"),
            lambda: [
                ((h["model"], h["deployment"]), _CIRCUIT_VALUES[h["state"]]) for h in router.health_report()
            ],
        ),
        Gauge(
            "pilothouse_deployment_in_flight",
            "Requests in flight per deployment.",
            ("model", "deployment"),
            lambda: [((h["model"], h["deployment"]), float(h["in_flight"])) for h in router.health_report()],
        ),
        Gauge(
            "pilothouse_ingest_pending_spans",
            "Spans accepted, not yet stored.",
            (),
            lambda: [((), float(ingest.pending))],
        ),
        Gauge(
            "pilothouse_ingest_spans",
            "Spans by fate since start: accepted, rejected (429), written, failed.",
            ("fate",),
            lambda: [
                (("accepted",), float(ingest.stats.accepted)),
                (("rejected",), float(ingest.stats.rejected)),
                (("written",), float(ingest.stats.written)),
                (("failed",), float(ingest.stats.failed)),
            ],
        ),
    ]


def build_gateway(settings: Settings, config: GatewayConfig, store: SqlStore) -> tuple[Gateway, BudgetGuard]:
    """The server's gateway: the config's models, prices, caches, cascade routes (a cascade's judge
    is a model of this same gateway) and guardrails, rate limits and budgets (shared in Redis when
    configured). A bad cascade verifier or guard setting is a config error at start-up. Its recorder
    is set when the app starts."""
    router = Router(config)  # providers are created now, so a bad config fails before serving
    budgets = BudgetGuard(
        CostStore(store), make_budget_ledger(settings.redis_url), webhook_allow=settings.webhook_allow
    )
    semantic = (
        SemanticCache(config.semantic_cache, local_embedder(config.semantic_cache.model))
        if config.semantic_cache.enabled
        else None
    )
    gateway = Gateway(
        router,
        Pricer(PriceCatalogue.packaged(config.prices)),
        limiter=make_rate_limiter(settings.redis_url),
        budgets=budgets,
        caches=Caches(make_response_cache(config.cache, settings.redis_url), semantic),
        redis_faults=RedisFaults(
            limits_fail_open=settings.limits_fail_open,
            budgets_fail_open=settings.budgets_fail_open,
            cache_fail_open=settings.cache_fail_open,
        ),
        guardrails=build_guardrails(config.guardrails, config.source),
    )
    try:
        add_cascades(gateway, config.cascades)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return gateway, budgets


def _span_key(span: SpanRecord) -> tuple[str, str]:
    return span.observation.trace_id, span.observation.id


def _online_worker(settings: Settings, online: OnlineEvaluators, gateway: Gateway) -> OnlineWorker | None:
    """The online evaluators' worker of this process, started (None when ``online_evals`` is off). Its
    judges are models of this server's gateway: routed, traced, priced and budgeted like any call."""
    if not settings.online_evals:
        return None
    served = frozenset(gateway.model_names())

    def judge_model(name: str) -> InProcessModel | None:
        return InProcessModel(gateway, name, description=f"the gateway's {name}") if name in served else None

    worker = OnlineWorker(
        online,
        judge_model,
        WorkerOptions(
            poll_s=settings.online_evals_poll_s,
            settle_s=settings.online_evals_settle_s,
            lease_s=settings.online_evals_lease_s,
            max_attempts=settings.online_evals_max_attempts,
            concurrency=settings.online_evals_concurrency,
            stall_s=settings.online_evals_stall_s,
        ),
    )
    worker.start()
    return worker


def create_app(
    settings: Settings,
    store: SqlStore | None = None,
    gateway_config: GatewayConfig | None = None,
    *,
    span_sink: SpanSink | None = None,
    instance: str = "",
) -> FastPathApp:
    """The Pilothouse ASGI app. The store is opened (and migrated) from the settings if not given,
    and the gateway's models come from the settings' config file unless given; the ingest queue
    starts with the app and drains when it stops (into ``span_sink`` when given: the SQLite span
    writer of ``serve --workers N``, which the app closes after). With Redis the circuit breakers are
    shared with every process using it, and ``instance`` (one server's workers) sums ``/metrics``
    over its processes. With ``settings.durable`` the spool folder is taken now (another process
    holding it is an error), and replayed when the app starts."""
    config = gateway_config if gateway_config is not None else load_gateway_config(settings.config)
    own_store = store is None
    if own_store and settings.database_url is None:  # the default SQLite file in our home folder
        tighten_private_file(settings.home / "pilothouse.db")
    the_store = store if store is not None else SqlStore.from_url(settings.resolved_database_url)
    gateway, budgets = build_gateway(settings, config, the_store)
    prompts = PromptRegistry(the_store)
    gateway.prompts = prompts
    spool = Spool(settings.resolved_spool_dir) if settings.durable else None
    the_store.durable_span_writes = settings.durable
    the_store.copy_spans = settings.ingest_copy

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ingest = IngestQueue(
            the_store,
            max_spans=settings.ingest_queue_spans,
            max_bytes=settings.ingest_queue_bytes,
            batch_spans=settings.ingest_batch_spans,
            pricer=gateway.pricer,
            spool=spool,
            sink=span_sink,
        )
        # Labels name configured models and deployments only: a client cannot add series
        metrics = GatewayMetrics(
            gateway.model_names(), [h["deployment"] for h in gateway.router.health_report()]
        )
        metrics.gauges = _gauges(gateway.router, ingest)

        # the durable mode: the spool segment of each started stream's interrupted record, by span
        interim_segments: dict[tuple[str, str], int] = {}

        def record(span: SpanRecord) -> None:  # every gateway call, through the queue: never waits
            metrics.observe_call(span)
            if spool is None:
                accepted = ingest.offer([span])
            else:  # on the spool before the answer is sent (the surface awaits the flush)
                export = PendingExport(span.project_id, 1, records=[span], durable=span_records([span]))
                # its interrupted record, if any, is done with once this record is committed
                export.superseded_segment = interim_segments.pop(_span_key(span), None)
                accepted = ingest.offer(export, force=True)
            if not accepted:
                log.warning("ingest queue full: the trace of a gateway call was not recorded")

        def record_interim(span: SpanRecord) -> None:  # a stream that starts: on the spool only
            assert spool is not None
            interim_segments[_span_key(span)] = spool.append(interim_records([span]))

        gateway.record = record
        gateway.interim = record_interim if spool is not None else None
        redis_url = settings.redis_url
        breakers = SharedBreakers(gateway.router, redis_url, settings.store_id) if redis_url else None
        if breakers is not None:
            breakers.start(asyncio.get_running_loop())
        watcher = ChangeWatcher(
            prompts, poll_seconds=settings.prompt_poll_seconds, redis_url=settings.redis_url
        )
        await asyncio.to_thread(watcher.start)
        auth = KeyAuthenticator(
            the_store,
            settings.admin_key,
            settings.key_cache_seconds,
            throttle=FailureThrottle(
                settings.auth_failures_burst, settings.auth_failures_per_minute, settings.redis_url
            ),
            proxies=ProxyPolicy(settings.trusted_proxies, settings.secure_cookies),
        )
        app.state.pilothouse = Services(
            settings=settings,
            store=the_store,
            ingest=ingest,
            auth=auth,
            gateway=gateway,
            budgets=budgets,
            metrics=metrics,
            shared_metrics=(
                SharedMetrics(metrics, settings.redis_url, instance)
                if settings.redis_url and instance
                else None
            ),
            evaluations=Evaluations.over(the_store),
            prompts=prompts,
            spool=spool,
            redis=RedisProbe(settings.redis_url) if settings.redis_url else None,
            body_budget=BodyBudget(
                settings.max_inflight_body_bytes,
                settings.body_wait_seconds,
                MAX_BODY_WAITING,
                settings.large_body_bytes_per_second,
            ),
            responses=(
                RedisResponseStore(
                    settings.redis_url, settings.stored_responses_bytes, settings.stored_responses_ttl_s
                )
                if settings.redis_url and settings.stored_responses
                else ResponseStore(
                    settings.stored_responses,
                    settings.stored_responses_bytes,
                    settings.stored_responses_ttl_s,
                )
            ),
            monitors=(
                MonitorWorker(
                    the_store, interval_s=settings.monitor_interval_s, webhook_allow=settings.webhook_allow
                )
                if settings.monitor_interval_s > 0
                else None
            ),
            online=OnlineEvaluators(the_store, gateway.model_names()),
            canaries=(
                CanaryController(
                    the_store, prompts, CanarySettings.of(settings), interval_s=settings.canary_interval_s
                )
                if settings.canary_interval_s > 0
                else None
            ),
            retention=(
                RetentionWorker(the_store, interval_s=settings.retention_interval_s)
                if settings.retention_interval_s > 0
                else None
            ),
            disk_bytes=disk_size(the_store),
        )
        if spool is not None and spool.leftover:
            # what a killed process acknowledged, stored before any request and before the budgets
            # read their spend
            await asyncio.to_thread(replay_spool, spool, ingest, settings)
        if gateway.caches.semantic is not None:
            await asyncio.to_thread(gateway.caches.semantic.warm_up)  # the embedding model loads first
        shared_semantic = (
            SharedSemanticCache(gateway.caches.semantic, redis_url, settings.store_id)
            if redis_url and gateway.caches.semantic is not None
            else None
        )
        if shared_semantic is not None:
            shared_semantic.start(asyncio.get_running_loop())  # other processes' entries load meanwhile
        await budgets.reload()  # budgets and their spend so far: requests never wait for them
        # anyio's event-loop backend and its worker threads start now, not inside the first request
        # that needs a thread (an API key's first lookup): importing them costs ~40 ms of CPU.
        await run_in_threadpool(lambda: None)
        budgets.start()
        if app.state.pilothouse.monitors is not None:
            app.state.pilothouse.monitors.start()  # a pass every monitor_interval_s, off the request path
        worker = _online_worker(settings, app.state.pilothouse.online, gateway)
        app.state.pilothouse.online_worker = worker
        if app.state.pilothouse.canaries is not None:
            app.state.pilothouse.canaries.start()  # a check of the running canaries every canary_interval_s
        if app.state.pilothouse.retention is not None:
            app.state.pilothouse.retention.start()
        if app.state.pilothouse.shared_metrics is not None:
            app.state.pilothouse.shared_metrics.start()
        # Objects alive after start-up (modules, tables, compiled SQL) are never garbage; moving them out
        # of the collector's view keeps full collections, and so response-time spikes, short.
        gc.freeze()
        try:
            yield
        finally:
            await asyncio.to_thread(watcher.stop)
            if app.state.pilothouse.monitors is not None:
                await app.state.pilothouse.monitors.close()
            if worker is not None:
                await worker.stop()  # before the gateway its judges call closes
            if app.state.pilothouse.canaries is not None:
                await app.state.pilothouse.canaries.close()
            if app.state.pilothouse.retention is not None:
                await app.state.pilothouse.retention.close()
            if breakers is not None:
                await asyncio.to_thread(breakers.stop)
            if shared_semantic is not None:
                await asyncio.to_thread(shared_semantic.stop)
            await gateway.close()
            await auth.throttle.close()
            await app.state.pilothouse.responses.close()
            if app.state.pilothouse.redis is not None:
                await app.state.pilothouse.redis.close()
            app.state.pilothouse.json_decoder.close()
            ingest.close()
            log.info("ingest drained: %d spans written", ingest.stats.written)
            if span_sink is not None:
                span_sink.close()
            if app.state.pilothouse.shared_metrics is not None:
                await asyncio.to_thread(app.state.pilothouse.shared_metrics.stop)  # its final counts
            if spool is not None:
                spool.close()
            if own_store:
                the_store.close()

    from pilothouse.ui import ui_routes  # here, not at the top: the UI's modules import the server's

    routes = [
        Route("/v1/traces", export_traces, methods=["POST"]),
        Route(LANGFUSE_OTLP_PATH, export_traces, methods=["POST"]),
        Route(LANGFUSE_PROJECTS_PATH, langfuse_projects, methods=["GET"]),
        Route("/v1/logs", export_logs, methods=["POST"]),
        Route("/v1/metrics", export_metrics, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        *trace_lists.routes,  # before api's /api/traces/{trace_id}
        *api.routes,
        *costs_api.routes,
        *evals_api.routes,
        *prompts_api.routes,
        *review_api.routes,
        *monitors_api.routes,
        *evaluators_api.routes,
        *gateway_api.routes,
        *openai_surfaces.routes,
        *ui_routes(settings),  # the web UI at /
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            GatewayError: _api_error,  # the gateway's errors and the surfaces' (ApiError)
            RedisUnavailable: _redis_error,  # /api reading budgets while Redis is down
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    return FastPathApp(app, gateway.model_names(), spool, cors_origins=settings.cors_origins)


Endpoint = Callable[[Request], Awaitable[Response]]


class FastPathApp:
    """The app, with the hottest endpoints (model calls and trace exports) dispatched directly, before
    Starlette's middleware stack and route matching: a few tens of microseconds per request that the
    gateway's latency budget cannot spare (``python benchmarks/gateway.py`` measures it). Everything
    else, lifespan included, goes to the wrapped Starlette app, whose state the handlers read. Every
    ``/v1`` answer carries a request id (``server/request_ids.py``); OpenAI's routes answer without
    the ``/v1`` prefix too; with ``cors_origins`` browsers of those origins may call."""

    def __init__(
        self,
        app: Starlette,
        model_names: list[str],
        spool: Spool | None = None,
        *,
        cors_origins: list[str] | None = None,
    ) -> None:
        self.app = app
        self.model_names = model_names  # what the gateway serves, for the start-up banner
        self.spool = spool  # the durable mode: what a request recorded is on disk before its answer
        self._fast: dict[tuple[str, str], Endpoint] = {
            ("POST", "/v1/chat/completions"): gateway_api.chat_completions,
            ("POST", "/v1/messages"): gateway_api.messages,
            ("POST", "/v1/traces"): export_traces,
            ("POST", LANGFUSE_OTLP_PATH): export_traces,
            ("POST", "/v1/embeddings"): gateway_api.embeddings,
            ("POST", "/v1/responses"): openai_surfaces.create_response,
            ("POST", "/v1/completions"): openai_surfaces.completions,
        }
        self._cors = cors_middleware(self._dispatch, cors_origins) if cors_origins else None

    @property
    def state(self) -> State:
        """The wrapped app's state (``state.pilothouse``: the :class:`Services`)."""
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._cors is not None and scope["type"] == "http":
            await self._cors(scope, receive, send)
        else:
            await self._dispatch(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = (
            self._fast.get((scope.get("method", ""), scope.get("path", "")))
            if scope["type"] == "http"
            else None
        )
        if endpoint is None:
            if scope["type"] == "http" and (path := unprefixed_path(scope)) is not None:
                scope["path"] = path
                endpoint = self._fast.get((scope.get("method", ""), path))
            if endpoint is None:
                if scope["type"] == "http" and scope.get("path", "").startswith("/v1/"):
                    send = with_request_id(send, scope["path"])
                await self.app(scope, receive, send)
                return
        scope["app"] = self.app
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except GatewayError as exc:
            response = error_response(exc)
        except Exception as exc:
            response = await _server_error(request, exc)
        # a stream waits for the spool before its last event instead (gateway_api._events)
        if self.spool is not None and self.spool.unflushed and not isinstance(response, StreamingResponse):
            try:
                await self.spool.flush()  # group commit: one fsync for every request waiting now
            except OSError:
                response = gateway_api.spool_error_response(scope["path"])
        add_request_id(response, scope["path"])
        await response(scope, receive, send)

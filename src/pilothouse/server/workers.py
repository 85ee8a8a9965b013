"""Several server processes on one port: ``pilothouse serve --workers N``.

The parent process binds the listening socket once and hands it to N worker processes (uvicorn's
supervisor: the kernel spreads new connections over the processes accepting on it, and the parent
restarts a worker that dies or hangs). Each worker builds its own app from the same settings, passed
down in one environment variable, so a worker is exactly what ``serve --workers 1`` runs.

What the workers share lives outside them: the database (keys, budgets and spend, sessions and their
revocations, prompts, the monitors' lease) and Redis (rate limits, budget holds, the response cache,
failed-login counters, prompt-change notices, circuit breakers, the counters of ``/metrics``).
docs/deploy.md lists what stays per process.

On SQLite the parent also starts the span writer (:mod:`pilothouse.server.span_writer`): one process
that stores every worker's ingested spans and gateway calls, started again if it dies.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from pilothouse.config import ConfigError
from pilothouse.config._model import Settings
from pilothouse.server.span_writer import WriterAddress, WriterClient, WriterSupervisor

OPTIONS_ENV = "PILOTHOUSE_SERVE_OPTIONS"  # the parent's command-line options, as JSON, for its workers


class WorkersError(ValueError):
    """A worker count the settings cannot run (the message says why and what to do)."""


def check_workers(settings: Settings, workers: int) -> None:
    """Refuse worker counts the store or the durable mode cannot serve correctly."""
    if workers <= 1:
        return
    if not settings.redis_url:
        raise WorkersError(
            "--workers above 1 needs Redis ($PILOTHOUSE_REDIS_URL): rate limits and budget holds are "
            "shared there, and each process would otherwise allow the whole limit"
        )
    if settings.durable:
        raise WorkersError(
            "--durable keeps one spool folder, which one process holds: use --workers 1 with --durable"
        )


def encode_options(config: Path | None, options: dict[str, Any], writer: WriterAddress | None = None) -> str:
    """The serve command's options (those given) as the JSON its workers read back, with the span
    writer's address on SQLite and the server's instance id (its workers' ``/metrics`` share it)."""
    given = {k: v for k, v in options.items() if v is not None}
    return json.dumps(
        {
            "config": str(config) if config is not None else None,
            "options": given,
            "writer": writer.as_json() if writer is not None else None,
            "instance": secrets.token_hex(8),
        }
    )


def worker_app() -> Any:
    """The ASGI app of one worker (uvicorn calls this factory in each worker process): the settings
    the parent resolved, its own store connection pool, ingest queue and gateway."""
    from pilothouse.config import load_config
    from pilothouse.gateway.config import GatewayConfig
    from pilothouse.server.app import create_app
    from pilothouse.server.memory import tune_malloc

    raw = os.environ.get(OPTIONS_ENV)
    if raw is None:
        raise ConfigError(f"{OPTIONS_ENV} is not set: start workers with 'pilothouse serve --workers N'")
    payload = json.loads(raw)
    config = Path(payload["config"]) if payload.get("config") else None
    loaded = load_config(config, **payload.get("options", {}))
    tune_malloc()
    writer = payload.get("writer")
    sink = WriterClient(WriterAddress.from_json(writer)) if writer else None
    return create_app(
        loaded.server,
        gateway_config=GatewayConfig.from_config(loaded),
        span_sink=sink,
        instance=str(payload.get("instance") or ""),
    )


def run_workers(settings: Settings, workers: int, config: Path | None, options: dict[str, Any]) -> None:
    """Serve with ``workers`` processes on ``settings.host:settings.port`` until stopped (Ctrl-C or
    SIGTERM to this parent stops them all). On SQLite the span writer starts first and stops last,
    once the workers have drained their queues into it."""
    supervisor = None
    if settings.resolved_database_url.startswith("sqlite"):
        address = WriterAddress.make(settings.home)
        supervisor = WriterSupervisor(
            address, settings.resolved_database_url, settings.ingest_batch_spans, settings.log_level
        )
        supervisor.start()
    os.environ[OPTIONS_ENV] = encode_options(config, options, supervisor.address if supervisor else None)
    try:
        _serve(settings, workers)
    finally:
        if supervisor is not None:
            supervisor.stop()


def _serve(settings: Settings, workers: int) -> None:
    import uvicorn

    uvicorn.run(
        f"{__name__}:worker_app",
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=30,
    )

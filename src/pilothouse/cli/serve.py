"""``pilothouse serve``: the whole platform in one process."""

from __future__ import annotations

from pathlib import Path

import click

from pilothouse.cli.common import CliError, check_port, shown_url

DEFAULT_BASE_URL = "http://127.0.0.1:4000"  # where the SDK sends without $PILOTHOUSE_BASE_URL


@click.command()
@click.option(
    "--config",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="YAML config: models, fallbacks, router, cache, cascades, server (default: $PILOTHOUSE_CONFIG).",
)
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(1, 65535), help="Port (default 4000).")
@click.option("--database-url", default=None, help="Default: SQLite in $PILOTHOUSE_HOME (./.pilothouse).")
@click.option(
    "--log-level", default=None, type=click.Choice(["debug", "info", "warning", "error", "critical"])
)
@click.option(
    "--durable/--no-durable",
    default=None,
    help="Put every acknowledged span and gateway call on disk (fsync) before answering.",
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 256),
    help="Processes sharing the port. More than 1 needs Redis ($PILOTHOUSE_REDIS_URL, where they share "
    "rate limits, budgets, the cache and circuit breakers) and not --durable; on SQLite one more process "
    "writes every span. Default: the number of CPU cores on PostgreSQL with Redis, else 1.",
)
def serve(
    config: Path | None,
    host: str | None,
    port: int | None,
    database_url: str | None,
    log_level: str | None,
    durable: bool | None,
    workers: int | None,
) -> None:
    """Serve the collector, query API and gateway on one port."""
    import uvicorn

    from pilothouse.config import ConfigError, load_config
    from pilothouse.gateway.config import GatewayConfig
    from pilothouse.server.app import create_app
    from pilothouse.server.workers import WorkersError, check_workers, run_workers

    options = {
        "host": host,
        "port": port,
        "database_url": database_url,
        "log_level": log_level,
        "durable": durable,
        "workers": workers,
    }
    try:
        loaded = load_config(config, **options)
        gateway_config = GatewayConfig.from_config(loaded)
        settings = loaded.server
        processes = settings.resolved_workers
        check_workers(settings, processes)
    except (ConfigError, WorkersError) as exc:
        raise CliError(f"invalid settings: {str(exc).splitlines()[0]}", exit_code=2) from None
    from pilothouse.domain.keys import DEFAULT_SCOPES, Scope
    from pilothouse.store.sql import SqlStore

    check_port(settings.host, settings.port)
    from pilothouse.server.memory import tune_malloc

    tune_malloc()  # large request bodies reuse heap memory instead of faulting in fresh pages
    try:
        store = SqlStore.from_url(settings.resolved_database_url)
        # the owner's key when the store has none: it also opens the UI's Keys page (the admin scope)
        first_key = store.create_first_key("default", "first key", frozenset(DEFAULT_SCOPES) | {Scope.ADMIN})
        # A bad config fails here, before any worker starts; building the app also makes the UI's
        # session secret file, which the workers then all read (instead of racing to make their own).
        app = create_app(settings, store=store, gateway_config=gateway_config)
    except Exception as exc:
        raise CliError(f"cannot start: {str(exc).splitlines()[0]}") from exc
    base = f"http://{settings.host}:{settings.port}"
    key_hint = "<key>"
    if first_key:
        click.echo(
            "Created your first API key (project 'default'; scopes admin, gateway, ingest, read); "
            f"it is shown only now:\n  {first_key}\n"
        )
        key_hint = first_key
    durability = "in-memory ingest"
    if settings.durable:
        durability = f"durable: spool in {settings.resolved_spool_dir}"
    database = shown_url(settings.resolved_database_url)
    if processes > 1:
        durability += f"; {processes} worker processes"
    sdk_line = "" if base == DEFAULT_BASE_URL else f"                 export PILOTHOUSE_BASE_URL={base}\n"
    cli_env = cli_environment(settings.resolved_database_url, config)
    cli_line = f"                 {cli_env}\n" if cli_env else ""
    click.echo(
        f"Pilothouse serving on {base}  (database: {database}; {durability})\n"
        f"  Web UI:        {base}/  (log in with the key; Keys & budgets makes more)\n"
        f"  Send traces:   export PILOTHOUSE_API_KEY={key_hint}\n"
        f"{sdk_line}"
        f"                 OTLP endpoint {base}/v1/traces, or pilothouse.init() in Python\n"
        f"  Read traces:   curl -H 'Authorization: Bearer {key_hint}' {base}/api/traces\n"
        f"{cli_line}"
        f"                 pilothouse traces list\n"
        f"  More keys:     pilothouse keys create --name NAME",
    )
    names = app.model_names
    if names:
        model = "smollm2" if "smollm2" in names else names[0]
        click.echo(
            f"  Models:        {', '.join(names)}\n"
            f"                 (base_url: OpenAI clients {base}/v1, Anthropic clients {base})\n"
            f"  Try one:       curl {base}/v1/chat/completions -H 'Authorization: Bearer {key_hint}' "
            f"-H 'Content-Type: application/json' "
            f'-d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\''
        )
        if "smollm2" in names:
            click.echo("                 (the first smollm2 request converts the model once: about a minute)")
    if processes > 1:
        store.close()  # each worker opens its own
        run_workers(settings, processes, config, options)
        return
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=False,
            proxy_headers=False,  # nothing reads the client address: one middleware less per request
            timeout_graceful_shutdown=30,
        )
    finally:
        store.close()


def cli_environment(database_url: str, config: Path | None) -> str | None:
    """The line a shell needs so that ``pilothouse traces list`` (which reads the environment, not
    serve's options) opens this server's database; None when it already does. A ``--config`` whose
    ``server:`` section moved the database is named by ``PILOTHOUSE_CONFIG``, else the URL itself is
    given (its password hidden)."""
    from pilothouse.config import ConfigError, load_settings

    try:
        if load_settings().resolved_database_url == database_url:
            return None
        if config is not None and load_settings(config.absolute()).resolved_database_url == database_url:
            return f"export PILOTHOUSE_CONFIG={config.absolute()}"
    except ConfigError:
        pass
    return f"export PILOTHOUSE_DATABASE_URL={shown_url(database_url)}"

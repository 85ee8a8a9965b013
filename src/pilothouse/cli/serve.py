"""``pilothouse serve``: the whole platform in one process."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from pilothouse.cli.common import CliError


@click.command()
@click.option("--config", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None)
@click.option("--host", default=None, help="Address to listen on (default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (default 4000).")
@click.option("--database-url", default=None, help="Default: SQLite in $PILOTHOUSE_HOME (./.pilothouse).")
@click.option("--log-level", default=None, type=click.Choice(["debug", "info", "warning", "error"]))
def serve(
    config: Path | None, host: str | None, port: int | None, database_url: str | None, log_level: str | None
) -> None:
    """Serve the collector, query API and gateway on one port."""
    import uvicorn

    from pilothouse.server.app import create_app
    from pilothouse.server.settings import Settings

    try:
        settings = Settings.load(config, host=host, port=port, database_url=database_url, log_level=log_level)
    except (ValidationError, ValueError) as exc:
        raise CliError(f"invalid settings: {str(exc).splitlines()[0]}", exit_code=2) from None
    try:
        app = create_app(settings)
    except Exception as exc:
        raise CliError(f"cannot start: {str(exc).splitlines()[0]}") from exc
    base = f"http://{settings.host}:{settings.port}"
    click.echo(
        f"Pilothouse serving on {base}  (database: {settings.resolved_database_url})\n"
        f"  OTLP traces:  OTEL_EXPORTER_OTLP_ENDPOINT={base}  (POST {base}/v1/traces)\n"
        f"  Query API:    curl -H 'Authorization: Bearer <key>' {base}/api/traces\n"
        f"  A key:        pilothouse keys create --name dev",
        err=True,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )

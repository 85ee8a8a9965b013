"""``pilothouse monitors``: watch a series for a change and alert (database directly, server running or
not; a running server's monitors job evaluates them). The use cases are
:class:`pilothouse.quality.monitors.Monitors`, as the API's."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click

from pilothouse.cli.common import CliError, database_option, open_store
from pilothouse.config import ConfigError, load_settings
from pilothouse.domain.monitors import AlertStatus, MonitorMetric
from pilothouse.quality.monitors import MonitorError, Monitors


def _service(database_url: str | None) -> Monitors:
    try:
        allow = load_settings(database_url=database_url).webhook_allow
    except ConfigError as exc:
        raise CliError(f"invalid settings: {exc}", exit_code=2) from None
    return Monitors(open_store(database_url), allow)


# the API's field names as the CLI's flags, so an error names what the user typed
_FLAGS = {
    "score_name": "--score",
    "webhook_url": "--webhook",
    "baseline_s": "--baseline",
    "prompt_name": "--prompt-name",
    "prompt_version": "--prompt-version",
}


def _failed(exc: MonitorError) -> CliError:
    message = str(exc)
    if exc.param is not None:
        flag = _FLAGS.get(exc.param, "--" + exc.param.replace("_", "-"))
        message = message.replace(f"'{exc.param}'", flag)
    return CliError(message, exit_code=2 if exc.status == 400 else 1)


def _when(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S")


@click.group()
def monitors() -> None:
    """Monitors: alert when a pass rate, score, error rate, latency, cost or token series changes."""


@monitors.command()
@click.option("--name", required=True, help="What the monitor is called in its alerts.")
@click.option("--metric", type=click.Choice([m.value for m in MonitorMetric]), required=True)
@click.option("--score", "score_name", default=None, help="The score's name (score_pass_rate, score_mean).")
@click.option("--threshold", type=float, default=None, help="A score at or above it passes (default 0.5).")
@click.option(
    "--model",
    default=None,
    help="Score monitors: traces of this model, asked for (a gateway route) or served; call metrics: "
    "calls this model served.",
)
@click.option(
    "--route", default=None, help="Only calls (or traces) of this name ('chat ROUTE' for the gateway)."
)
@click.option("--prompt-name", default=None, help="Only traces that used this prompt (score monitors).")
@click.option("--prompt-version", default=None, help="Only traces that used this prompt version.")
@click.option("--shift", type=float, default=None, help="The change to detect: rate points, or sds.")
@click.option("--arl0", type=float, default=None, help="Samples (or minutes) between false alarms.")
@click.option("--baseline", "baseline_s", type=int, default=None, help="Trailing baseline, seconds (7 days).")
@click.option("--webhook", default=None, help="POST each alert here (Slack-compatible JSON).")
@click.option("--project", default="default", show_default=True)
@database_option
def create(project: str, database_url: str | None, webhook: str | None, **options: Any) -> None:
    """Create a monitor; its id is printed alone on the last line."""
    body = {k: v for k, v in options.items() if v is not None}
    if webhook is not None:
        body["webhook_url"] = webhook
    service = _service(database_url)
    try:
        monitor = service.create(project, body)
        unmatched = service.unmatched(monitor)
    except MonitorError as exc:
        raise _failed(exc) from None
    finally:
        service.repository.store.close()
    click.echo(f"Created monitor {monitor.name!r} ({monitor.metric.value}) in project {project!r}", err=True)
    if unmatched:
        click.echo(f"note: {unmatched}", err=True)
    click.echo(monitor.id)


@monitors.command("list")
@click.option("--project", default="default", show_default=True)
@database_option
def list_monitors(project: str, database_url: str | None) -> None:
    """The project's monitors: what each watches, its baseline and how near its threshold it is."""
    service = _service(database_url)
    found = service.all(project)
    service.repository.store.close()
    click.echo(f"{'ID':32}  {'NAME':24}  {'METRIC':18}  {'BASELINE':>10}  {'NEAR':>5}  SILENCED UNTIL")
    for m in found:
        s = m.state
        baseline = "-" if s.baseline is None else f"{s.baseline:.4g}"
        near = "-" if not s.h else f"{s.statistic / s.h:.0%}"
        click.echo(
            f"{m.id:32}  {m.name[:24]:24}  {m.metric.value:18}  {baseline:>10}  {near:>5}  "
            f"{_when(m.silenced_until_ns)}"
        )


@monitors.command()
@click.argument("monitor_id", metavar="MONITOR")
@click.option("--project", default="default", show_default=True)
@database_option
def delete(monitor_id: str, project: str, database_url: str | None) -> None:
    """Delete a monitor (its id or its name) and its alerts."""
    service = _service(database_url)
    try:
        service.delete(project, service.resolve(project, monitor_id))
    except MonitorError as exc:
        raise _failed(exc) from None
    finally:
        service.repository.store.close()
    click.echo(f"Deleted monitor {monitor_id}")


@monitors.command()
@click.option("--project", default="default", show_default=True)
@click.option("--monitor", "monitor_id", default=None, help="Only this monitor's alerts (id or name).")
@click.option("--open", "only_open", is_flag=True, help="Only alerts not yet acknowledged.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@database_option
def alerts(
    project: str, monitor_id: str | None, only_open: bool, limit: int, database_url: str | None
) -> None:
    """The project's alerts, newest first."""
    service = _service(database_url)
    try:
        if monitor_id is not None:
            monitor_id = service.resolve(project, monitor_id)
        found = service.alerts(
            project, monitor_id=monitor_id, status=AlertStatus.OPEN if only_open else None, limit=limit
        )
    except MonitorError as exc:
        raise _failed(exc) from None
    finally:
        service.repository.store.close()
    # the webhook's outcome (sent, answered 500, refused: ...) is what tells a silent receiver apart
    width = max([len("DELIVERY"), *(len(a.delivery or "-") for a in found)])
    click.echo(f"{'ID':32}  {'FIRED (UTC)':19}  {'STATUS':12}  {'DELIVERY':{width}}  MESSAGE")
    for a in found:
        status = "silenced" if a.silenced else a.status.value
        delivery = a.delivery or "-"
        click.echo(f"{a.id:32}  {_when(a.fired_ns):19}  {status:12}  {delivery:{width}}  {a.message}")


@monitors.command()
@click.argument("monitor_id", metavar="MONITOR")
@click.option("--until", required=True, help="A duration (2h, 3d), a time (ISO 8601), or 'off'.")
@click.option("--project", default="default", show_default=True)
@database_option
def silence(monitor_id: str, until: str, project: str, database_url: str | None) -> None:
    """Keep a monitor's alerts (by id or name) quiet, stored not sent, until a time; --until off lifts it."""
    service = _service(database_url)
    try:
        monitor = service.silence(project, service.resolve(project, monitor_id), until)
    except MonitorError as exc:
        raise _failed(exc) from None
    finally:
        service.repository.store.close()
    if monitor.silenced_until_ns is None:
        click.echo(f"Monitor {monitor.name!r} is no longer silenced")
    else:
        click.echo(f"Monitor {monitor.name!r} silenced until {_when(monitor.silenced_until_ns)} UTC")


@monitors.command()
@click.argument("alert_id")
@click.option("--by", default="cli", show_default=True, help="Who acknowledges it.")
@click.option("--project", default="default", show_default=True)
@database_option
def ack(alert_id: str, by: str, project: str, database_url: str | None) -> None:
    """Acknowledge an alert (the monitor alerts again on its next alarm)."""
    service = _service(database_url)
    try:
        alert = service.acknowledge(project, alert_id, by)
    except MonitorError as exc:
        raise _failed(exc) from None
    finally:
        service.repository.store.close()
    click.echo(f"Alert {alert.id} acknowledged by {alert.acknowledged_by}")

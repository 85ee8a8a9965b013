"""``pilothouse evaluators``: online evaluators, worked on the database directly (server running or
not); the servers' workers pick up a change within a poll (docs/online-evals.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import yaml

from pilothouse.cli.common import CliError, database_option, open_store
from pilothouse.domain.timeparse import iso, parse_time_ns
from pilothouse.quality.online import DuplicateEvaluator, OnlineEvaluators, RuleError
from pilothouse.store.sql import SqlStore

_project = click.option("--project", default="default", show_default=True, help="The evaluators' project.")


@click.group()
def evaluators() -> None:
    """Online evaluators: rules that score live traces in the server's background worker."""


def _definition(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", exit_code=2) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not YAML or JSON: {str(exc).splitlines()[0]}", exit_code=2) from None


def _service(database_url: str | None) -> tuple[SqlStore, OnlineEvaluators]:
    store = open_store(database_url)
    return store, OnlineEvaluators(store)


@evaluators.command("list")
@_project
@database_option
def list_evaluators(project: str, database_url: str | None) -> None:
    """The project's evaluators with their counts (current version)."""
    store, online = _service(database_url)
    try:
        statuses = online.statuses(project)
    finally:
        store.close()
    click.echo(
        f"{'NAME':24}  {'VER':>4}  {'STATE':8}  {'SCORER':16}  {'SAMPLE':>7}  "
        f"{'SCORED':>7}  {'UNMEAS':>7}  {'WAITING':>7}"
    )
    for s in statuses:
        e, c = s.evaluator, s.counts
        waiting = c.get("pending", 0) + c.get("running", 0)
        click.echo(
            f"{e.name:24}  {e.version:>4}  {'enabled' if e.enabled else 'paused':8}  "
            f"{e.definition['scorer'].get('type')!s:16}  {e.definition['sampling']:>7.2%}  "
            f"{c.get('scored', 0):>7}  {c.get('unmeasured', 0):>7}  {waiting:>7}"
        )


@evaluators.command()
@click.argument("name")
@_project
@database_option
def show(name: str, project: str, database_url: str | None) -> None:
    """One evaluator as JSON: its rules, version, counts and latest items."""
    store, online = _service(database_url)
    try:
        status = online.status(project, name)
        if status is None:
            raise CliError(f"no evaluator named {name!r} in project {project!r}")
        items = online.online.items(status.evaluator.id, limit=20)
    finally:
        store.close()
    latest = [
        {"trace_id": i.trace_id, "version": i.version, "state": i.state, "value": i.value, "reason": i.reason}
        for i in items
    ]
    click.echo(json.dumps({**status.document(), "items": latest}, indent=2))


@evaluators.command()
@click.argument("name")
@click.option(
    "--file",
    "file_",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The rules: YAML or JSON (docs/online-evals.md).",
)
@click.option("--disabled", is_flag=True, help="Create it paused.")
@_project
@database_option
def create(name: str, file_: Path, disabled: bool, project: str, database_url: str | None) -> None:
    """Create an evaluator; it scores traces stored from now on ('backfill' for older ones)."""
    document = _definition(file_)
    store, online = _service(database_url)
    try:
        row = online.create(project, name, document, enabled=not disabled)
    except RuleError as exc:
        raise CliError(f"invalid evaluator: {exc}", exit_code=2) from None
    except DuplicateEvaluator:
        raise CliError(f"an evaluator named {name!r} exists in project {project!r}", exit_code=2) from None
    finally:
        store.close()
    click.echo(f"created {row.name} v{row.version}")


@evaluators.command()
@click.argument("name")
@click.option(
    "--file",
    "file_",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="New rules (a new version when they differ).",
)
@click.option("--enable/--disable", default=None, help="Resume or pause it.")
@_project
@database_option
def update(
    name: str, file_: Path | None, enable: bool | None, project: str, database_url: str | None
) -> None:
    """Edit an evaluator: new rules are a new version (traces are scored again by it from now on)."""
    if file_ is None and enable is None:
        raise CliError("nothing to change: give --file, --enable or --disable", exit_code=2)
    document = None if file_ is None else _definition(file_)
    store, online = _service(database_url)
    try:
        row = online.update(project, name, document, enable)
    except RuleError as exc:
        raise CliError(f"invalid evaluator: {exc}", exit_code=2) from None
    finally:
        store.close()
    if row is None:
        raise CliError(f"no evaluator named {name!r} in project {project!r}")
    click.echo(f"{row.name} is v{row.version}, {'enabled' if row.enabled else 'paused'}")


@evaluators.command()
@click.argument("name")
@_project
@database_option
def delete(name: str, project: str, database_url: str | None) -> None:
    """Delete an evaluator and its unfinished work (its scores stay on the traces)."""
    store, online = _service(database_url)
    try:
        done = online.delete(project, name)
    finally:
        store.close()
    if not done:
        raise CliError(f"no evaluator named {name!r} in project {project!r}")
    click.echo(f"deleted {name}")


@evaluators.command()
@click.argument("name")
@click.option(
    "--since", default="1d", show_default=True, help="Start: ISO 8601, Unix seconds or a duration back (7d)."
)
@click.option("--until", "until", default="0s", show_default=True, help="End (exclusive), the same forms.")
@_project
@database_option
def backfill(name: str, since: str, until: str, project: str, database_url: str | None) -> None:
    """Queue the traces that started in [--since, --until) for the current version."""
    now = time.time_ns()
    try:
        start, end = parse_time_ns(since, now), parse_time_ns(until, now)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if end <= start:
        raise CliError("--until must be after --since", exit_code=2)
    store, online = _service(database_url)
    try:
        result = online.backfill(project, name, start, end)
    finally:
        store.close()
    if result is None:
        raise CliError(f"no evaluator named {name!r} in project {project!r}")
    more = " (stopped at the limit: backfill the rest with a later --since)" if result.truncated else ""
    click.echo(
        f"looked at {result.traces} traces from {iso(start)} to {iso(end)}; queued {result.queued}{more}"
    )

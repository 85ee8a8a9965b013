"""``pilothouse prompts``: the prompt registry on the configured database (server running or not):
list, show, create a version, diff two versions, move a label (rollback too), the audit list, and a
promotion gated by an eval (``promote``, exit codes as ``pilothouse gate``). The canary commands are
in :mod:`pilothouse.cli.prompts_canary`."""

from __future__ import annotations

import contextlib
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pilothouse.cli.common import CliError, database_option, open_store, run_async

# a prompt version's file: its template (bounded by the registry) with room for YAML's comments
MAX_PROMPT_FILE_BYTES = 512 * 1024

if TYPE_CHECKING:
    from pilothouse.prompts import PromptRegistry
    from pilothouse.store.sql import SqlStore

project_option = click.option("--project", default="default", show_default=True, help="The project.")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name (a container without one)
        return "cli"


@contextmanager
def _registry(database_url: str | None, *, create: bool = False) -> Iterator[tuple[PromptRegistry, SqlStore]]:
    from pilothouse.prompts import PromptRegistry

    store = open_store(database_url, create=create)
    try:
        yield PromptRegistry(store), store
    finally:
        store.close()


@contextmanager
def _usage_errors() -> Iterator[None]:
    from pilothouse.prompts import PromptError, PromptNotFound

    try:
        yield
    except PromptNotFound as exc:
        raise CliError(str(exc), exit_code=2) from None
    except PromptError as exc:
        raise CliError(str(exc), exit_code=2) from None


def _published(database_url: str | None, project: str, name: str) -> None:
    """Tell the servers on Redis at once (without Redis they see it by polling the database)."""
    from pilothouse.config import ConfigError, load_settings
    from pilothouse.prompts import publish_change

    with contextlib.suppress(ConfigError):  # settings the command itself read already
        publish_change(load_settings(database_url=database_url).redis_url, project, name)


@click.group("prompts")
def prompts() -> None:
    """The prompt registry: versions, labels, diffs, history, gated promotion and canaries."""


@prompts.command("list")
@project_option
@database_option
def list_command(project: str, database_url: str | None) -> None:
    """The project's prompts: newest version and labels."""
    with _registry(database_url) as (registry, _):
        found = registry.list_prompts(project)
    if not found:
        click.echo(f"no prompts in project {project!r} (create one with 'pilothouse prompts create')")
        return
    for summary in found:
        labels = ", ".join(f"{label}={at}" for label, at in sorted(summary.labels.items())) or "no labels"
        click.echo(f"{summary.name}  {summary.kind}  latest {summary.latest}  {labels}")


@prompts.command("show")
@click.argument("name")
@click.option("--label", default=None, help="The version a label points at (default: latest).")
@click.option("--version", "version", type=click.IntRange(min=1), default=None, help="A version number.")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
@project_option
@database_option
def show(
    name: str, label: str | None, version: int | None, as_json: bool, project: str, database_url: str | None
) -> None:
    """One version of prompt NAME: template, model, parameters, labels."""
    import json

    if label is not None and version is not None:
        raise CliError("give --label or --version, not both", exit_code=2)
    with _registry(database_url) as (registry, _), _usage_errors():
        found = registry.get(project, name, label=label, version=version)
    document = found.document()
    if as_json:
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    click.echo(f"{found.name}@{found.version}  {found.kind}  labels: {', '.join(found.labels) or '-'}")
    click.echo(f"created by {found.created_by or '-'}" + (f": {found.message}" if found.message else ""))
    click.echo(f"model {found.model or '-'}  parameters {json.dumps(dict(found.parameters))}")
    click.echo(f"variables: {', '.join(found.variables) or '-'}")
    click.echo("---")
    if isinstance(found.template, str):
        click.echo(found.template)
    else:
        for message in found.template:
            click.echo(f"[{message.get('role')}] {message.get('content')}")


@prompts.command("create")
@click.argument("name")
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="A YAML or JSON version: prompt (text or messages), model, parameters, tools, response_format.",
)
@click.option("--text", default=None, help="A text prompt (instead of --file).")
@click.option("--model", default=None, help="The model (overrides the file's).")
@click.option("--label", "labels", multiple=True, help="A label to point at the new version (repeatable).")
@click.option("--message", default=None, help="What changed (kept with the version).")
@project_option
@database_option
def create(
    name: str,
    file: Path | None,
    text: str | None,
    model: str | None,
    labels: tuple[str, ...],
    message: str | None,
    project: str,
    database_url: str | None,
) -> None:
    """Store a new version of prompt NAME (versions are never changed; the number is printed last)."""
    import yaml

    from pilothouse.config import FileTooLarge, load_yaml, read_small_text

    if (file is None) == (text is None):
        raise CliError("give --file or --text", exit_code=2)
    document: Any = {"prompt": text}
    if file is not None:
        try:
            text = read_small_text(file, MAX_PROMPT_FILE_BYTES, "a prompt version")
            document = load_yaml(text, str(file))
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror}", exit_code=2) from None
        except FileTooLarge as exc:
            raise CliError(str(exc), exit_code=2) from None
        except yaml.YAMLError as exc:
            raise CliError(" ".join(str(exc).split()), exit_code=2) from None
        if not isinstance(document, dict):
            raise CliError(f"{file}: a prompt version is a mapping with 'prompt'", exit_code=2)
    if model is not None:
        document["model"] = model
    if message is not None:
        document["message"] = message
    with _registry(database_url, create=True) as (registry, _), _usage_errors():
        created = registry.create(project, name, document, actor=_actor(), labels=labels)
    _published(database_url, project, name)
    click.echo(f"created {created.name}@{created.version} (labels: {', '.join(created.labels)})")
    click.echo(created.version)


@prompts.command("diff")
@click.argument("name")
@click.argument("old", type=click.IntRange(min=1))
@click.argument("new", type=click.IntRange(min=1))
@project_option
@database_option
def diff(name: str, old: int, new: int, project: str, database_url: str | None) -> None:
    """The unified diff of prompt NAME from version OLD to version NEW."""
    with _registry(database_url) as (registry, _), _usage_errors():
        lines = registry.diff(project, name, old, new)
    click.echo("\n".join(lines) if lines else f"versions {old} and {new} are the same")


@prompts.command("label")
@click.argument("name")
@click.argument("label")
@click.argument("version", type=click.IntRange(min=1))
@project_option
@database_option
def label(name: str, label: str, version: int, project: str, database_url: str | None) -> None:
    """Point LABEL of prompt NAME at VERSION (a rollback is this too). Every server process serves the
    new version within a second. To gate the move on an eval, use 'pilothouse prompts promote'."""
    with _registry(database_url) as (registry, _), _usage_errors():
        previous = registry.set_label(project, name, label, version, actor=_actor())
    if previous == version:
        click.echo(f"{name}: {label} already points at version {version}; nothing changed")
        return
    _published(database_url, project, name)
    was = "nowhere" if previous is None else f"version {previous}"
    click.echo(f"{name}: {label} -> version {version} (was {was})")


@prompts.command("history")
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=1, max=1000), default=50, show_default=True)
@project_option
@database_option
def history(name: str, limit: int, project: str, database_url: str | None) -> None:
    """Who changed prompt NAME, what and when (newest first)."""
    import datetime as dt

    with _registry(database_url) as (registry, _), _usage_errors():
        events = registry.history(project, name, limit)
    for event in events:
        when = dt.datetime.fromtimestamp(event.created_ns / 1e9, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        reason = event.detail.get("reason", "")
        what = {
            "create": f"created version {event.version}",
            "label": f"{event.label} -> {event.version} (was {event.previous or '-'})",
            "promote": f"promoted {event.version} to {event.label} (was {event.previous or '-'})",
            "refuse": f"refused promoting {event.version} to {event.label}: {event.detail.get('reason', '')}",
            "canary-promote": f"canary {event.version} promoted to {event.label}: {reason}",
            "canary-rollback": f"canary {event.version} rolled back on {event.label}: {reason}",
            "canary": (
                f"canary stopped on {event.label}"
                if event.version is None
                else f"canary on {event.label}: {event.detail.get('share')} of traffic to {event.version}"
            ),
        }.get(event.action, event.action)
        click.echo(f"{when}  {event.actor or '-'}  {what}")


@prompts.command("promote")
@click.argument("name")
@click.option(
    "--version", "version", type=click.IntRange(min=1), required=True, help="The candidate version."
)
@click.option("--to", "label", default="production", show_default=True, help="The label to move on pass.")
@click.option("--dataset", default=None, help="The eval's dataset: a file or a stored dataset's name.")
@click.option(
    "--scorer",
    "scorers",
    multiple=True,
    help="A scorer: a type ('exact', 'contains') or a YAML mapping ('{type: regex, value: ...}'); "
    "repeatable.",
)
@click.option(
    "--spec",
    "spec_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="An eval spec to run instead (its target's prompt is set to each version).",
)
@click.option("--model", default=None, help="The target model (default: the prompt's).")
@click.option("--config", "config", default=None, help="The gateway config file of in-process models.")
@click.option("--metric", "metrics", multiple=True, help="A metric to gate on (default: all).")
@click.option("--margin", "margins", multiple=True, metavar="[METRIC=]VALUE", help="As 'pilothouse gate'.")
@click.option("--alpha", type=float, default=None, help="One-sided significance level (default 0.05).")
@click.option("--allow-uncalibrated", is_flag=True, help="Gate on metrics of uncalibrated judges.")
@project_option
@database_option
def promote(
    name: str,
    version: int,
    label: str,
    dataset: str | None,
    scorers: tuple[str, ...],
    spec_file: Path | None,
    model: str | None,
    config: str | None,
    metrics: tuple[str, ...],
    margins: tuple[str, ...],
    alpha: float | None,
    allow_uncalibrated: bool,
    project: str,
    database_url: str | None,
) -> None:
    """Move LABEL (--to) of prompt NAME to --version only if an eval says it is no worse: the same eval
    runs on the version the label points at now and on the candidate, and the quality gate compares
    them. The decision is kept in the prompt's history. Exit status as 'pilothouse gate': 0 pass (the
    label moved), 1 regression, 3 inconclusive, 2 usage error."""
    from pilothouse.cli.gate import usage_error
    from pilothouse.config import load_yaml
    from pilothouse.domain.datasets import DatasetError
    from pilothouse.evals import ComparisonError, Evaluations
    from pilothouse.evals.calls import TargetConfigError
    from pilothouse.evals.runner import RunError
    from pilothouse.evals.spec import SpecError, read_spec_file
    from pilothouse.improve.promotion import PromotionError, promote_prompt

    spec, base_dir = _promotion_spec(spec_file, dataset, scorers, load_yaml, read_spec_file, SpecError)
    target = dict(spec.get("target") or {})
    if model is not None:
        target["model"] = model
    if config is not None:
        target["config"] = config
    spec["target"] = target
    with _registry(database_url) as (registry, store), _usage_errors():
        try:
            result = run_async(
                promote_prompt(
                    Evaluations.over(store),
                    registry,
                    project_id=project,
                    name=name,
                    version=version,
                    label=label,
                    spec=spec,
                    base_dir=base_dir,
                    actor=_actor(),
                    metrics=metrics,
                    margin=list(margins) or None,
                    alpha=alpha,
                    allow_uncalibrated=allow_uncalibrated,
                )
            )
        except ComparisonError as exc:
            raise usage_error(exc) from None
        except (PromotionError, SpecError, DatasetError, TargetConfigError, RunError) as exc:
            raise CliError(str(exc), exit_code=2) from None
    if result.moved:
        _published(database_url, project, name)
    if result.comparison is not None:
        for r in result.comparison.results:
            click.echo(f"{r.metric.name}: {r.verdict.value} ({r.explanation})")
        runs = f"runs {result.comparison.baseline.id[:8]} (v{result.baseline_version}) -> "
        click.echo(runs + f"{result.comparison.candidate.id[:8]} (v{version})")
    outcome = "PROMOTED" if result.moved else "NOT PROMOTED"
    click.echo(f"{outcome}: {name}@{version} to {label!r}: {result.reason} (exit {result.exit_code})")
    sys.exit(result.exit_code)


def _promotion_spec(
    spec_file: Path | None,
    dataset: str | None,
    scorers: tuple[str, ...],
    load_yaml: Any,
    read_spec: Any,
    spec_error: Any,
) -> tuple[dict[str, Any], Path]:
    """The eval spec a promotion runs: --spec's, or one made of --dataset and --scorer."""
    if spec_file is not None:
        if dataset is not None or scorers:
            raise CliError("give --spec, or --dataset with --scorer, not both", exit_code=2)
        try:
            data = read_spec(spec_file)
        except spec_error as exc:
            raise CliError(str(exc), exit_code=2) from None
        if not isinstance(data, dict):
            raise CliError(f"{spec_file}: a spec is a mapping with dataset, target and scorers", exit_code=2)
        return data, spec_file.resolve().parent
    if dataset is None or not scorers:
        raise CliError("give --dataset and at least one --scorer (or --spec FILE)", exit_code=2)
    import yaml

    parsed: list[Any] = []
    for text in scorers:
        try:
            value = load_yaml(text, "--scorer")
        except yaml.YAMLError as exc:
            raise CliError(" ".join(str(exc).split()), exit_code=2) from None
        parsed.append({"type": value} if isinstance(value, str) else value)
    return {"dataset": dataset, "target": {}, "scorers": parsed}, Path.cwd()


# the canary commands live apart (registered on the group above when this module loads)
from pilothouse.cli import prompts_canary  # noqa: E402, F401
from pilothouse.cli.prompts_optimise import optimise  # noqa: E402  (its module: this one is long enough)

prompts.add_command(optimise)

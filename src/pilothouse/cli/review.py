"""``pilothouse review``: score configs, annotation queues, reviewers, agreement, calibration labels and
corrected outputs sent to a dataset (the review service over the database directly)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pilothouse.cli.common import CliError, database_option, open_store

if TYPE_CHECKING:
    from pilothouse.quality.review import ReviewService

_project = click.option("--project", default="default", show_default=True, help="The project it belongs to.")


@contextmanager
def _service(database_url: str | None) -> Iterator[ReviewService]:
    """The review service over the configured database; review errors become one-line CLI errors."""
    from pilothouse.quality.review import ReviewError, ReviewService

    store = open_store(database_url)
    try:
        yield ReviewService(store)
    except ReviewError as exc:
        raise CliError(str(exc), exit_code=2) from None
    finally:
        store.close()


@click.group()
def review() -> None:
    """Human review: score configs, annotation queues, reviewers, agreement (Cohen's kappa), labels for
    judge calibration, and corrected outputs sent to a dataset."""


# -- score configs ------------------------------------------------------------------------------------------


@review.group()
def configs() -> None:
    """Score configurations: what reviewers answer about each item."""


@configs.command("create")
@click.argument("name")
@click.option("--kind", type=click.Choice(["boolean", "categorical", "numeric"]), required=True)
@click.option("--min", "min_value", type=float, default=None, help="Numeric: the lowest value.")
@click.option("--max", "max_value", type=float, default=None, help="Numeric: the highest value.")
@click.option("--category", "categories", multiple=True, help="Categorical: a label (2-20; repeat).")
@click.option("--description", default="", help="Shown to reviewers next to the control.")
@_project
@database_option
def create_config(
    name: str,
    kind: str,
    min_value: float | None,
    max_value: float | None,
    categories: tuple[str, ...],
    description: str,
    project: str,
    database_url: str | None,
) -> None:
    """Create a score config; its name is printed alone on the last line."""
    with _service(database_url) as service:
        config = service.create_config(
            project,
            name,
            kind,
            description=description,
            min_value=min_value,
            max_value=max_value,
            categories=categories,
        )
    click.echo(config.name)


@configs.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_project
@database_option
def list_configs(as_json: bool, project: str, database_url: str | None) -> None:
    """The project's score configs."""
    with _service(database_url) as service:
        found = service.configs(project)
    for c in found:
        if as_json:
            click.echo(json.dumps({"name": c.name, "kind": c.kind.value, "description": c.description,
                                   "min_value": c.min_value, "max_value": c.max_value,
                                   "categories": list(c.categories)}))  # fmt: skip
            continue
        if c.categories:
            shape = ", ".join(c.categories)
        elif c.min_value is not None and c.max_value is not None:
            shape = f"{c.min_value:g}..{c.max_value:g}"
        else:
            shape = "true/false"
        click.echo(f"{c.name}\t{c.kind.value}\t{shape}\t{c.description}")
    if not found:
        click.echo("no score config yet: pilothouse review configs create NAME --kind boolean", err=True)


# -- queues -------------------------------------------------------------------------------------------------


@review.group()
def queues() -> None:
    """Annotation queues: traces waiting for people."""


@queues.command("create")
@click.argument("name")
@click.option("--config", "config_names", multiple=True, help="A score config reviewers answer (repeat).")
@click.option("--description", default="")
@click.option("--reviews-per-item", type=click.IntRange(1, 10), default=1, show_default=True,
              help="Reviewers each item needs (2+ measures agreement between reviewers).")  # fmt: skip
@click.option("--lease-seconds", type=click.IntRange(10, 86400), default=600, show_default=True,
              help="How long an item a reviewer opened stays theirs.")  # fmt: skip
@_project
@database_option
def create_queue(
    name: str,
    config_names: tuple[str, ...],
    description: str,
    reviews_per_item: int,
    lease_seconds: int,
    project: str,
    database_url: str | None,
) -> None:
    """Create a queue; its name is printed alone on the last line."""
    with _service(database_url) as service:
        queue = service.create_queue(
            project,
            name,
            config_names,
            description=description,
            reviews_per_item=reviews_per_item,
            lease_seconds=lease_seconds,
        )
    click.echo(queue.name)


@queues.command("list")
@_project
@database_option
def list_queues(project: str, database_url: str | None) -> None:
    """The project's queues with their pending and completed items."""
    with _service(database_url) as service:
        found = service.queues(project)
    for queue, counts in found:
        click.echo(
            f"{queue.name}\tpending {counts['pending']}\tcompleted {counts['completed']}\t"
            f"configs {','.join(queue.config_names) or '-'}"
        )
    if not found:
        click.echo("no queue yet: pilothouse review queues create NAME --config CONFIG", err=True)


@queues.command("add")
@click.argument("queue")
@click.argument("trace_ids", nargs=-1, required=True)
@click.option("--reason", default="", help="Why these traces need a person.")
@_project
@database_option
def add(queue: str, trace_ids: tuple[str, ...], reason: str, project: str, database_url: str | None) -> None:
    """Put traces in a queue by id; prints how many were new."""
    with _service(database_url) as service:
        added, unknown = service.add_traces(project, queue, trace_ids, reason)
    if unknown:
        click.echo(f"not traces of project {project!r}: {', '.join(unknown)}", err=True)
    click.echo(added)
    if unknown and not added:
        sys.exit(1)


@queues.command("fill")
@click.argument("queue")
@click.option("--name", default=None, help="Trace name.")
@click.option("--model", default=None)
@click.option("--user-id", default=None)
@click.option("--tag", "tags", multiple=True)
@click.option("--status", type=click.Choice(["ok", "error"]), default=None)
@click.option("--since", default=None, help="Start of the time range: an ISO time or '24h', '7d' ago.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--reason", default="", help="Why these traces need a person.")
@_project
@database_option
def fill(
    queue: str,
    name: str | None,
    model: str | None,
    user_id: str | None,
    tags: tuple[str, ...],
    status: str | None,
    since: str | None,
    limit: int,
    reason: str,
    project: str,
    database_url: str | None,
) -> None:
    """Put the newest traces matching the filters in a queue; prints how many were new."""
    from starlette.datastructures import QueryParams

    from pilothouse.server.api import trace_query_from_params
    from pilothouse.server.errors import ApiError

    pairs = [(k, v) for k, v in (("name", name), ("model", model), ("user_id", user_id), ("status", status),
                                 ("from", since)) if v]  # fmt: skip
    pairs += [("tag", tag) for tag in tags]
    try:
        query = trace_query_from_params(QueryParams(pairs), time.time_ns())
    except ApiError as exc:
        raise CliError(exc.message, exit_code=2) from None
    with _service(database_url) as service:
        click.echo(service.fill_from_filter(project, queue, query, limit=limit, reason=reason))


@queues.command("to-dataset")
@click.argument("queue")
@click.argument("dataset")
@_project
@database_option
def to_dataset(queue: str, dataset: str, project: str, database_url: str | None) -> None:
    """Make or extend DATASET with the queue's corrected outputs as expected answers (a new version)."""
    with _service(database_url) as service:
        version, created, count = service.send_to_dataset(project, queue, dataset)
    state = "new version" if created else "unchanged, newest version"
    click.echo(f"{dataset}: {state} {version.version} with {version.item_count} items ({count} corrected)")


# -- what reviews give --------------------------------------------------------------------------------------


@review.command()
@click.argument("config")
@click.option("--json", "as_json", is_flag=True)
@_project
@database_option
def agreement(config: str, as_json: bool, project: str, database_url: str | None) -> None:
    """Cohen's kappa on a score config: between reviewers, and between each automated score of the same
    name (judge, code, online) and the reviewers."""
    with _service(database_url) as service:
        report = service.agreement(project, config)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    kind = "quadratic-weighted kappa" if report.weighted else "Cohen's kappa"
    click.echo(f"{config} ({kind})")
    rows = [
        ("reviewers (pooled)", report.pooled),
        *((f"{a.rater_a} vs {a.rater_b}", a) for a in report.reviewers),
    ]
    rows += [(f"{a.rater_a} vs reviewers", a) for a in report.automated]
    for label, a in rows:
        kappa = "undefined" if a.kappa is None else f"{a.kappa:.3f}"
        agree = "-" if a.observed is None else f"{a.observed:.1%}"
        click.echo(f"  {label:<32} n {a.n:>5}  agreement {agree:>6}  kappa {kappa}")


@review.command()
@click.argument("config")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSONL here (default: standard output).")  # fmt: skip
@_project
@database_option
def labels(config: str, output: Path | None, project: str, database_url: str | None) -> None:
    """Reviewers' answers to a boolean or numeric config as a labels file for 'pilothouse judge
    calibrate SPEC --labels FILE' (numeric: add --label-threshold)."""
    with _service(database_url) as service:
        rows, ties = service.calibration_labels(project, config)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text)
    click.echo(f"{len(rows)} labelled items ({ties} left out: reviewers tied)", err=True)


# -- reviewers ----------------------------------------------------------------------------------------------


@review.group()
def users() -> None:
    """People who log in to the web UI to review, each score recorded under their name."""


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    value: Any = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return str(value)


@users.command("create")
@click.argument("username")
@click.option("--display-name", default=None)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@_project
@database_option
def create_user(
    username: str, display_name: str | None, password_stdin: bool, project: str, database_url: str | None
) -> None:
    """Create a reviewer who logs in with USERNAME and a password (stored as a scrypt hash)."""
    password = _password(password_stdin)
    with _service(database_url) as service:
        user = service.add_user(project, username, password, display_name)
    click.echo(user.username)


@users.command("list")
@_project
@database_option
def list_users(project: str, database_url: str | None) -> None:
    """The project's reviewers."""
    with _service(database_url) as service:
        found = service.reviewers.list_users(project)
    for user in found:
        click.echo(f"{user.username}\t{user.display_name}\t{'disabled' if user.disabled else 'active'}")


@users.command("disable")
@click.argument("username")
@_project
@database_option
def disable_user(username: str, project: str, database_url: str | None) -> None:
    """Stop a reviewer logging in (their scores stay)."""
    with _service(database_url) as service:
        if not service.reviewers.disable_user(project, username):
            raise CliError(f"there is no user {username!r} in project {project!r}")
    click.echo(f"disabled {username}")

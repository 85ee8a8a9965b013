"""``pilothouse prompts canary`` (split a label's traffic with another version, optionally with the
score and margin that decide it) and ``pilothouse prompts canary-status`` (where the canary's
sequential test stands, and the canary controller's past decisions)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import click

from pilothouse.cli.common import CliError, database_option
from pilothouse.cli.prompts import _actor, _published, _registry, _usage_errors, project_option, prompts


@prompts.command("canary")
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(min=1), default=None, help="The canary's version.")
@click.option(
    "--share",
    type=click.FloatRange(0.001, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="The canary's share of the label's traffic, from 0.001 to below 1.",
)
@click.option(
    "--label", "label", default="production", show_default=True, help="The label whose traffic is split."
)
@click.option("--stop", is_flag=True, help="End the canary (the label keeps its version).")
@click.option(
    "--score",
    default=None,
    help="The score name that decides this canary (default: the canary_score setting).",
)
@click.option(
    "--margin",
    type=click.FloatRange(min=0, max=1e9),
    default=None,
    help="Its non-inferiority margin, in the score's units (default: the canary_margin setting).",
)
@project_option
@database_option
def canary(
    name: str,
    version: int | None,
    share: float,
    label: str,
    stop: bool,
    score: str | None,
    margin: float | None,
    project: str,
    database_url: str | None,
) -> None:
    """Send --share of LABEL's gateway traffic (sticky per end user) to --version, or --stop. Moving
    the label ('label', 'promote') ends the canary. Spans record which version each call used. With a
    score (--score, or the canary_score setting) the server promotes or rolls it back on evidence."""
    if stop == (version is not None):
        raise CliError("give --version (and --share), or --stop", exit_code=2)
    with _registry(database_url) as (registry, _), _usage_errors():
        main = registry.set_canary(
            project, name, label, version, share, actor=_actor(), score=score, margin=margin
        )
    _published(database_url, project, name)
    if version is None:
        click.echo(f"{name}: canary on {label} stopped; all traffic gets version {main}")
    else:
        click.echo(
            f"{name}: {share * 100:g}% of {label} traffic -> version {version}, the rest -> version {main}"
        )


@prompts.command("canary-status")
@click.argument("name")
@click.option("--label", "label", default="production", show_default=True, help="The label running it.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@project_option
@database_option
def canary_status_command(
    name: str, label: str, as_json: bool, project: str, database_url: str | None
) -> None:
    """Where LABEL's canary stands: its arms' scored traces and means, the sequential test's bounds
    and verdict now (canary_score, canary_margin, canary_alpha, canary_min_samples of the settings),
    and the canary controller's past decisions (promoted or rolled back, with their figures)."""
    import orjson

    from pilothouse.config import ConfigError, load_settings
    from pilothouse.improve.canary import CanarySettings, canary_status

    try:
        settings = CanarySettings.of(load_settings(database_url=database_url))
    except ConfigError as exc:
        raise CliError(str(exc), exit_code=2) from None
    with _registry(database_url) as (registry, store), _usage_errors():
        status = canary_status(store, registry, settings, project, name, label)
    if as_json:
        click.echo(orjson.dumps(status.document(), option=orjson.OPT_INDENT_2).decode())
        return
    for line in _canary_lines(status.document()):
        click.echo(line)


def _canary_lines(doc: dict[str, Any]) -> Iterator[str]:
    if not doc["running"]:
        yield f"{doc['name']}: no canary runs on {doc['label']}"
    else:
        yield (
            f"{doc['name']}: {doc['share']:.0%} of {doc['label']} traffic -> version "
            f"{doc['canary_version']}, the rest -> version {doc['version']}"
        )
        test = doc["test"]
        if test is None:
            yield "  no score decides it (set canary_score): it runs until a person ends it"
        else:
            yield (
                f"  {doc['score']}: control n={test['control']['n']} mean={test['control']['mean']}, "
                f"canary n={test['canary']['n']} mean={test['canary']['mean']}"
            )
            yield f"  {test['verdict']}: {test['reason']} (margin {doc['margin']}, alpha {doc['alpha']})"
    for event in doc["decisions"]:
        detail = event["detail"]
        what = "promoted" if event["action"] == "canary-promote" else "rolled back"
        yield (
            f"  decision: version {event['version']} {what} (control {event['previous_version']}): "
            f"{detail.get('reason', '')}"
        )

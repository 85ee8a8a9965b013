"""``pilothouse judge``: calibrate a judge scorer against human labels (:mod:`pilothouse.evals.calibration`)
and list the calibrations stored; ``pilothouse gate`` looks them up for judge-graded metrics."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pilothouse.cli.common import CliError, database_option, open_store

if TYPE_CHECKING:
    from pilothouse.domain.calibrations import Calibration, Judgement
    from pilothouse.evals.calibration import LabelledItem
    from pilothouse.evals.scoring import Scorer


@click.group()
def judge() -> None:
    """Judge calibration: how far a model-graded scorer agrees with human labels."""


def _choose_scorer(
    data: Mapping[str, Any], scorers: Sequence[Scorer], wanted: str | None, source: str
) -> tuple[Mapping[str, Any], Scorer]:
    from pilothouse.evals.scoring import grades_with_judge

    entries = data["scorers"]
    judged = [
        (entry, scorer)
        for entry, scorer in zip(entries, scorers, strict=True)
        if isinstance(entry, Mapping) and grades_with_judge(entry)
    ]
    names = ", ".join(scorer.name for _, scorer in judged)
    if not judged:
        raise CliError(
            f"{source} has no model-graded scorer (rubric, pairwise, factuality, answer-relevance, "
            "faithfulness, or hallucination with a judge) to calibrate",
            exit_code=2,
        )
    if wanted is not None:
        chosen = [(entry, scorer) for entry, scorer in judged if scorer.name == wanted]
        if not chosen:
            raise CliError(f"{source} has no judge scorer named {wanted!r} (judge scorers: {names})", 2)
        return chosen[0]
    if len(judged) > 1:
        raise CliError(f"{source} has {len(judged)} judge scorers ({names}): pick one with --scorer", 2)
    return judged[0]


def _target_prompt(data: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    target = data.get("target")
    if not isinstance(target, Mapping):
        return None
    if isinstance(target.get("prompt"), str):
        return [{"role": "user", "content": target["prompt"]}]
    messages = target.get("messages")
    if isinstance(messages, list) and all(isinstance(m, Mapping) for m in messages):
        return messages
    return None


async def _judge_all(
    scorer: Scorer, items: list[LabelledItem], concurrency: int, swap: bool, quiet: bool
) -> list[Judgement]:
    from pilothouse.evals.calibration import judge_labelled
    from pilothouse.evals.judges import Judge

    judge = getattr(scorer, "judge", None)
    done = 0
    step = max(1, len(items) // 10)

    def progress(_judgement: Judgement) -> None:
        nonlocal done
        done += 1
        if not quiet and (done % step == 0 or done == len(items)):
            click.echo(f"judged {done}/{len(items)}", err=True)

    if isinstance(judge, Judge):
        await judge.model.start()
    try:
        return await judge_labelled(scorer, items, concurrency=concurrency, swap=swap, on_judged=progress)
    finally:
        if isinstance(judge, Judge):
            await judge.model.close()


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _print_calibration(calibration: Calibration, labels: Path) -> None:
    from pilothouse.evals.calibration import kappa_strength

    m, c = calibration.metrics, calibration.metrics.confusion
    kappa = "n/a" if m.kappa is None else f"{m.kappa:.3f}"
    interval = (
        f"95% CI {m.kappa_low:.2f} to {m.kappa_high:.2f}; "
        if m.kappa_low is not None and m.kappa_high is not None
        else ""
    )
    flip = "n/a" if m.flip_rate is None else _pct(m.flip_rate)
    errors = [j.error for j in calibration.judgements if j.passed is None and j.error]
    mark = "n/a" if m.threshold is None else f">= {m.threshold:g}"
    lines = [
        f"judge calibration of {calibration.scorer_name!r} ({calibration.scorer_type}, judge "
        f"{calibration.judge_model}) against {m.n} human labels in {labels}",
        f"  agreement      {_pct(m.agreement):>7}  ({c.tp + c.tn} of {m.measured} measured items)",
        f"  Cohen's kappa  {kappa:>7}  ({interval}{kappa_strength(m.kappa)}; 0 is chance, 1 perfect)",
        f"  TPR            {_pct(m.tpr):>7}  (the judge passes {c.tp} of {c.tp + c.fn} items people pass)",
        f"  TNR            {_pct(m.tnr):>7}  (the judge fails {c.tn} of {c.tn + c.fp} items people fail)",
        f"  unmeasured     {m.unmeasured:>7}  (judge replies that could not be read: left out of the rates)",
        *(f"                          e.g. {_clip(error, 150)}" for error in errors[:1]),
        f"  position swap  {flip:>7}  ({m.swap_note})",
        f"  pass mark      {mark:>7}  (the judge's value on its 0-1 scale that counts as a pass)",
        f"stored as version {calibration.version} of judge {calibration.fingerprint[:12]} "
        f"(project {calibration.project_id}; labels sha256 {calibration.labels_sha256[:12]})",
    ]
    for line in lines:
        click.echo(line)


@judge.command("calibrate")
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option(
    "--labels",
    "labels_file",
    required=True,
    type=click.Path(path_type=Path),
    help="JSONL, CSV or YAML: per item the variables, output, expected, context and the human label.",
)
@click.option(
    "--scorer", default=None, help="The judge scorer to calibrate (needed when the spec has several)."
)
@click.option("--label-field", default="label", show_default=True, help="The key of the human label.")
@click.option(
    "--label-threshold",
    type=float,
    default=None,
    help="Human labels are scores: those >= this pass (default: labels are pass/fail, true/false, 1/0).",
)
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=4, show_default=True, help="Judge calls in flight."
)
@click.option("--no-swap", is_flag=True, help="Skip the position-swap check where it costs judge calls.")
@click.option("--project", default="default", show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@database_option
def calibrate_command(
    spec_file: Path,
    labels_file: Path,
    scorer: str | None,
    label_field: str,
    label_threshold: float | None,
    concurrency: int,
    no_swap: bool,
    project: str,
    quiet: bool,
    database_url: str | None,
) -> None:
    """Grade the human-labelled items with SPEC_FILE's judge scorer and store how far the two agree.

    SPEC_FILE is an eval spec (only its judge, scorers and target messages are read) or a file with
    just judge and scorers. Prints agreement, Cohen's kappa, TPR, TNR, the unmeasured count and the
    position-swap flip rate, then the calibration's id alone on the last line. Exit status 2 for a
    spec or labels file that cannot be used."""
    import asyncio

    from pilothouse.domain.datasets import DatasetError
    from pilothouse.evals.calibration import (
        calibration_metrics,
        judge_fingerprint,
        judge_identity,
        labelled_items,
    )
    from pilothouse.evals.datasets import read_items
    from pilothouse.evals.judges import Judge
    from pilothouse.evals.spec import SpecError, parse_scorers, read_spec_file
    from pilothouse.store.calibrations import CalibrationStore

    source = str(spec_file)
    try:
        data = read_spec_file(spec_file)
        scorers, _judges = parse_scorers(data, base_dir=spec_file.resolve().parent, source=source)
    except SpecError as exc:
        raise CliError(str(exc), exit_code=2) from None
    entry, chosen = _choose_scorer(data, scorers, scorer, source)
    try:
        labels_bytes = labels_file.read_bytes()
        items = labelled_items(
            read_items(labels_file),
            label_field=label_field,
            label_threshold=label_threshold,
            prompt=_target_prompt(data),
        )
    except OSError as exc:
        raise CliError(f"cannot read the labels {labels_file}: {exc.strerror}", exit_code=2) from None
    except DatasetError as exc:
        raise CliError(str(exc), exit_code=2) from None
    if not items:
        raise CliError(f"{labels_file} has no labelled item", exit_code=2)
    judgements = asyncio.run(_judge_all(chosen, items, concurrency, not no_swap, quiet))
    metrics = calibration_metrics(
        judgements,
        threshold=getattr(chosen, "threshold", None),
        position_swap=getattr(chosen, "position_swap", None),
        scorer_type=str(entry["type"]),
        swap_skipped=no_swap,
    )
    judge_options = data.get("judge")
    identity = judge_identity(entry, judge_options)
    client = getattr(chosen, "judge", None)
    store = CalibrationStore(open_store(database_url, create=True))
    try:
        calibration = store.add(
            project,
            fingerprint=judge_fingerprint(entry, judge_options),
            scorer_name=chosen.name,
            scorer_type=str(entry["type"]),
            judge_model=identity["judge"]["model"],
            identity=identity,
            metrics=metrics,
            judgements=judgements,
            labels_sha256=hashlib.sha256(labels_bytes).hexdigest(),
            labels_source=str(labels_file),
            judge_endpoint=client.model.endpoint() if isinstance(client, Judge) else None,
        )
    finally:
        store.store.close()
    _print_calibration(calibration, labels_file)
    click.echo(calibration.id)


@judge.command("list")
@click.option("--project", default="default", show_default=True)
@click.option("--judge", "fingerprint", default=None, help="Only this judge (a fingerprint or its prefix).")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per calibration.")
@database_option
def list_command(
    project: str, fingerprint: str | None, limit: int, as_json: bool, database_url: str | None
) -> None:
    """Stored calibrations, newest first."""
    import json

    from pilothouse.domain.timeparse import iso
    from pilothouse.store.calibrations import CalibrationStore

    store = CalibrationStore(open_store(database_url))
    try:
        found = store.list_calibrations(project, limit, fingerprint)
    finally:
        store.store.close()
    if as_json:
        for calibration in found:
            record = {
                **calibration.summary(),
                "scorer_name": calibration.scorer_name,
                "scorer_type": calibration.scorer_type,
                "metrics": calibration.metrics.as_dict(),
                "identity": calibration.identity,
                "labels_sha256": calibration.labels_sha256,
                "labels_source": calibration.labels_source,
                "judge_endpoint": calibration.judge_endpoint,
            }
            click.echo(json.dumps(record, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    columns = ("id", "created", "judge", "scorer", "model", "n", "agreement", "kappa", "TPR", "TNR", "flips")
    for column in columns:
        table.add_column(column, justify="right" if column in columns[5:] else "left")
    for c in found:
        m = c.metrics
        table.add_row(
            c.id,
            iso(c.created_ns)[:19],
            c.label,
            f"{c.scorer_name} ({c.scorer_type})",
            str(c.judge_model),
            str(m.n) + (f" ({m.unmeasured} unmeasured)" if m.unmeasured else ""),
            _pct(m.agreement),
            "n/a" if m.kappa is None else f"{m.kappa:.3f}",
            _pct(m.tpr),
            _pct(m.tnr),
            _pct(m.flip_rate),
        )
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    console.print(table)
    if not found:
        click.echo("no calibration yet: pilothouse judge calibrate SPEC.yaml --labels LABELS.jsonl", err=True)

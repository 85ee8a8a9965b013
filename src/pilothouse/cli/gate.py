"""``pilothouse gate``: is the candidate run no worse than the baseline? A non-inferiority test per
metric (:mod:`pilothouse.evals.gate`), reports in Markdown, JUnit XML and JSON.

A metric graded by a judge (``rubric``, ``pairwise``, ``factuality``, ...) needs a calibration of that
judge against human labels (``pilothouse judge calibrate``): without one the gate refuses (exit 2)
unless ``--allow-uncalibrated``; with one, its kappa, TPR and TNR are printed next to the metric, and
``--min-kappa`` refuses a weakly calibrated judge.

Exit status: 0 pass, 1 regression, 3 inconclusive (the report says how many items would decide),
2 usage error (unknown run, a metric not in both runs, a bad option, an uncalibrated judge).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pilothouse.cli.common import CliError, database_option
from pilothouse.cli.evals import eval_store, find_run

if TYPE_CHECKING:
    from pilothouse.domain.calibrations import Calibration
    from pilothouse.domain.evals import EvalRun
    from pilothouse.evals.gate import MetricResult, MetricSpec, MetricValues
    from pilothouse.store.evals import EvalStore

DEFAULT_REPORT_DIR = "pilothouse-gate"


def _metric_names(baseline: EvalRun, candidate: EvalRun, wanted: tuple[str, ...]) -> list[str]:
    shared = [name for name in baseline.scorers if name in candidate.scorers]
    for name in wanted:
        if name not in shared:
            raise CliError(
                f"metric {name!r} is not in both runs (baseline: {', '.join(baseline.scorers) or 'none'}; "
                f"candidate: {', '.join(candidate.scorers) or 'none'})",
                exit_code=2,
            )
    if not shared:
        raise CliError("the baseline and the candidate have no metric (scorer) in common", exit_code=2)
    return list(dict.fromkeys(wanted)) or shared


def _load(
    store: EvalStore, baseline: EvalRun, candidate: EvalRun, name: str
) -> tuple[MetricSpec, MetricValues, MetricValues]:
    from pilothouse.evals.gate import MetricSpec, MetricValues

    runs = [store.metric_values(run.id, name) for run in (baseline, candidate)]
    binary = all(v in (0.0, 1.0) for by_item, _ in runs for values in by_item.values() for v in values)
    spec = MetricSpec(name, "binary" if binary else "continuous")
    (base_items, base_unmeasured), (cand_items, cand_unmeasured) = runs
    return spec, MetricValues(base_items, base_unmeasured), MetricValues(cand_items, cand_unmeasured)


def _judge_calibrations(
    store: EvalStore,
    runs: tuple[EvalRun, EvalRun],
    names: list[str],
    allow_uncalibrated: bool,
    min_kappa: float | None,
) -> dict[str, Calibration | None]:
    """The calibration of the judge of every judge-graded metric (the candidate's judge; the baseline's
    too when the runs graded with different judges); a usage error for a missing or weak one."""
    from pilothouse.evals.calibration import judged_metrics
    from pilothouse.store.calibrations import CalibrationStore

    calibrations = CalibrationStore(store.store)
    baseline, candidate = runs
    judged = [(candidate, judged_metrics(candidate.spec)), (baseline, judged_metrics(baseline.spec))]
    found: dict[str, Calibration | None] = {}
    for name in names:
        uses = [(run, metrics[name]) for run, metrics in judged if name in metrics]
        if len({m.fingerprint for _, m in uses}) > 1:
            click.echo(f"warning: the runs graded {name!r} with different judges (or judge specs)", err=True)
        for run, metric in uses:
            calibration = calibrations.latest(run.project_id, metric.fingerprint)
            if calibration is None and not allow_uncalibrated:
                raise CliError(
                    f"metric {name!r} is graded by a judge ({metric.scorer_type}, model "
                    f"{metric.judge_model}) with no calibration: run 'pilothouse judge calibrate "
                    f"SPEC.yaml --labels LABELS.jsonl --scorer {name}' (--project {run.project_id}), "
                    "or pass --allow-uncalibrated",
                    exit_code=2,
                )
            if calibration is not None and not calibration.metrics.measured and not allow_uncalibrated:
                raise CliError(
                    f"metric {name!r}: its judge's calibration {calibration.id} (v{calibration.version}) "
                    f"could read none of the judge's {calibration.metrics.n} replies, so it shows nothing; "
                    "fix the judge and calibrate again, or pass --allow-uncalibrated",
                    exit_code=2,
                )
            kappa = calibration.metrics.kappa if calibration is not None else None
            if calibration is not None and min_kappa is not None and (kappa is None or kappa < min_kappa):
                shown = "undefined" if kappa is None else f"{kappa:.3f}"
                raise CliError(
                    f"metric {name!r}: its judge's calibration {calibration.id} (v{calibration.version}) has "
                    f"kappa {shown}, below --min-kappa {min_kappa:g}",
                    exit_code=2,
                )
            found.setdefault(name, calibration)
    return found


def _print(
    results: list[MetricResult],
    baseline: EvalRun,
    candidate: EvalRun,
    judges: dict[str, Calibration | None],
) -> None:
    from rich.console import Console
    from rich.table import Table

    from pilothouse.evals.gate import GateVerdict, overall_verdict

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=160)
    colours = {GateVerdict.PASS: "green", GateVerdict.REGRESSION: "red", GateVerdict.INCONCLUSIVE: "yellow"}
    table = Table(
        title=f"gate: baseline {baseline.id[:8]} -> candidate {candidate.id[:8]}", title_justify="left"
    )
    for column in (
        "metric",
        "verdict",
        "baseline",
        "candidate",
        "delta [CI]",
        "p (worse)",
        "margin",
        "paired",
    ):
        table.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
    for r in results:
        scale = 100.0 if r.metric.kind == "binary" else 1.0
        unit = " pts" if r.metric.kind == "binary" else ""
        base = "n/a" if r.baseline is None else f"{scale * r.baseline.mean:.4g}"
        cand = "n/a" if r.candidate is None else f"{scale * r.candidate.mean:.4g}"
        delta = (
            "n/a"
            if r.comparison is None
            else f"{scale * r.delta:+.3g}{unit} [{scale * r.delta_low:+.3g}, {scale * r.delta_high:+.3g}]"
        )
        colour = colours[r.verdict]
        table.add_row(
            r.metric.name,
            f"[{colour}]{r.verdict.value}[/{colour}]",
            base + ("%" if unit else ""),
            cand + ("%" if unit else ""),
            delta,
            "n/a" if r.comparison is None else f"{r.p_value:.4g}",
            f"{scale * r.margin:.3g}{unit}",
            str(r.n_paired),
        )
    console.print(table)
    from pilothouse.evals.gate import judge_calibration_text

    for r in results:
        console.print(f"- {r.metric.name}: {r.explanation}")
        if r.metric.name in judges:
            console.print(f"  judge: {judge_calibration_text(judges[r.metric.name])}")
        if r.unmeasured_baseline or r.unmeasured_candidate:
            console.print(
                f"  unmeasured values (left out): baseline {r.unmeasured_baseline}, "
                f"candidate {r.unmeasured_candidate}"
            )
    overall = overall_verdict(results)
    colour = colours[overall]
    console.print(f"[bold {colour}]{overall.value.upper()}[/bold {colour}] (exit {overall.exit_code})")


@click.command()
@click.option("--baseline", required=True, metavar="RUN", help="The run to compare against.")
@click.option("--candidate", required=True, metavar="RUN", help="The run that must be no worse.")
@click.option(
    "--metric", "metrics", multiple=True, help="A scorer to gate on (repeatable; default: all shared)."
)
@click.option(
    "--margin",
    type=float,
    default=None,
    help="Largest acceptable loss, on the metric's scale (0.02 = 2 points of pass rate; "
    "default 2 points, or 2%% of the baseline mean for continuous metrics).",
)
@click.option("--alpha", type=float, default=0.05, show_default=True, help="One-sided significance level.")
@click.option(
    "--allow-uncalibrated",
    is_flag=True,
    help="Gate on judge-graded metrics whose judge has no calibration (the reports say so).",
)
@click.option(
    "--min-kappa",
    type=float,
    default=None,
    help="Refuse (exit 2) a judge-graded metric whose calibration's Cohen's kappa is below this.",
)
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_REPORT_DIR,
    show_default=True,
    help="Where gate.md, gate.xml (JUnit) and gate.json are written.",
)
@database_option
def gate(
    baseline: str,
    candidate: str,
    metrics: tuple[str, ...],
    margin: float | None,
    alpha: float,
    allow_uncalibrated: bool,
    min_kappa: float | None,
    report_dir: Path,
    database_url: str | None,
) -> None:
    """Non-inferiority test of CANDIDATE against BASELINE, per metric.

    A metric graded by a judge needs the judge's calibration ('pilothouse judge calibrate'), unless
    --allow-uncalibrated. Exit status: 0 pass, 1 regression, 3 inconclusive (with the sample size
    that would decide), 2 usage error."""
    from pilothouse.evals.gate import (
        compare_metric,
        overall_verdict,
        render_json,
        render_junit,
        render_markdown,
    )

    if not 0 < alpha < 0.5:
        raise CliError(f"--alpha must be between 0 and 0.5, not {alpha}", exit_code=2)
    if margin is not None and not margin >= 0:
        raise CliError(f"--margin must be a number >= 0, not {margin}", exit_code=2)
    if min_kappa is not None and not -1 <= min_kappa <= 1:
        raise CliError(f"--min-kappa must be between -1 and 1, not {min_kappa}", exit_code=2)
    store = eval_store(database_url)
    try:
        base_run, cand_run = find_run(store, baseline), find_run(store, candidate)
        names = _metric_names(base_run, cand_run, metrics)
        judges = _judge_calibrations(store, (base_run, cand_run), names, allow_uncalibrated, min_kappa)
        results = []
        for name in names:
            spec, base_values, cand_values = _load(store, base_run, cand_run, name)
            try:
                results.append(compare_metric(spec, base_values, cand_values, margin=margin, alpha=alpha))
            except ValueError as exc:
                raise CliError(f"{name}: {exc}", exit_code=2) from None
    finally:
        store.store.close()
    for run in (base_run, cand_run):
        if run.status.value != "completed":
            click.echo(f"warning: run {run.id} is {run.status.value}, not completed", err=True)
    if base_run.dataset_version_id != cand_run.dataset_version_id:
        click.echo(
            f"warning: the runs used different datasets ({base_run.dataset}@{base_run.dataset_version} and "
            f"{cand_run.dataset}@{cand_run.dataset_version}); items are paired by id",
            err=True,
        )
    _print(results, base_run, cand_run, judges)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        for suffix, render in (("md", render_markdown), ("xml", render_junit), ("json", render_json)):
            (report_dir / f"gate.{suffix}").write_text(
                render(results, base_run.id, cand_run.id, judges), encoding="utf-8"
            )
    except OSError as exc:
        raise CliError(f"cannot write the reports to {report_dir}: {exc.strerror}") from None
    click.echo(f"reports: {report_dir / 'gate.md'}, {report_dir / 'gate.xml'}, {report_dir / 'gate.json'}")
    sys.exit(overall_verdict(results).exit_code)

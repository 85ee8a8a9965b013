"""``pilothouse gate``: is the candidate run no worse than the baseline? A non-inferiority test per
metric (:mod:`pilothouse.evals.gate`), reports in Markdown, JUnit XML and JSON.

A metric graded by a judge (``rubric``, ``pairwise``, ``factuality``, ...) needs a calibration of that
judge against human labels (``pilothouse judge calibrate``): without one the gate refuses (exit 2)
unless ``--allow-uncalibrated``; with one, its kappa, TPR and TNR are printed next to the metric, and
``--min-kappa`` refuses a weakly calibrated judge.

Each gate is recorded as a look of the (baseline run, candidate configuration) pair and spends its share
of alpha (0.9 alpha at the first look, then 0.1 alpha halved at each further look), so gating again
after adding items or re-running the candidate cannot raise the error rates.

Exit status: 0 pass, 1 regression, 3 inconclusive (the report says how many items the next look needs),
2 usage error (unknown run, the same run twice, runs with no item in common, a metric of the baseline
the candidate lacks, a bad option, an uncalibrated judge).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from pilothouse.cli.common import CliError, database_option
from pilothouse.cli.evals import evaluations

if TYPE_CHECKING:
    from pilothouse.evals import Comparison, ComparisonError

DEFAULT_REPORT_DIR = "pilothouse-gate"

# How the command line spells the settings a comparison error names.
OPTIONS = {
    "alpha": "--alpha",
    "margin": "--margin",
    "min_kappa": "--min-kappa",
    "allow_uncalibrated": "--allow-uncalibrated",
    "metric": "--metric",
    "changed_limit": "--limit",
    "lower_is_better": "--lower-is-better",
    "group_by": "--group-by",
}


def usage_error(exc: ComparisonError) -> CliError:
    """A comparison the service refused, as the CLI's usage error (exit 2)."""
    message = exc.message(OPTIONS)
    if exc.code == "eval_run_not_found":
        message += " (see 'pilothouse eval list')"
    return CliError(message, exit_code=2)


def _print(comparison: Comparison) -> None:
    from rich.console import Console
    from rich.table import Table

    from pilothouse.evals.gate import GateVerdict, judge_calibration_text, look_text

    results, judges = comparison.results, comparison.judges
    baseline, candidate = comparison.baseline, comparison.candidate
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
        "p (Holm)",
        "p (margin)",
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
            _p(r.p_value),
            _p(r.p_adjusted),
            _p(r.p_pass),
            f"{scale * r.margin:.3g}{unit}",
            str(r.n_paired),
        )
    console.print(table)
    for r in results:
        console.print(f"- {r.metric.name}: {r.explanation}")
        if r.metric.name in judges:
            console.print(f"  judge: {judge_calibration_text(judges[r.metric.name])}")
        if r.unmeasured_baseline or r.unmeasured_candidate:
            console.print(
                f"  unmeasured values: baseline {r.unmeasured_baseline}, candidate {r.unmeasured_candidate}"
            )
    if comparison.not_gated:
        console.print(f"not gated (only the candidate has them): {', '.join(comparison.not_gated)}")
    console.print(look_text(comparison.decision))
    overall = comparison.verdict
    colour = colours[overall]
    console.print(f"[bold {colour}]{overall.value.upper()}[/bold {colour}] (exit {overall.exit_code})")


def _p(p: float) -> str:
    return "n/a" if p != p else f"{p:.4g}"


@click.command()
@click.option("--baseline", required=True, metavar="RUN", help="The run to compare against.")
@click.option("--candidate", required=True, metavar="RUN", help="The run that must be no worse.")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="A metric to gate on (repeatable; default: every metric of the baseline).",
)
@click.option(
    "--margin",
    "margins",
    multiple=True,
    metavar="[METRIC=]VALUE",
    help="Largest acceptable loss (repeatable): 0.02 for every metric on its scale (2 points of pass "
    "rate), METRIC=0.01 for one metric, METRIC=10% (or 10%) relative: a share of the baseline's "
    "failure rate (pass/fail) or mean (continuous). Default 2 points, or 2% of the baseline mean.",
)
@click.option(
    "--lower-is-better",
    "lower_is_better",
    multiple=True,
    metavar="METRIC",
    help="A metric where lower is better (repeatable); latency_ms and cost_usd (the target call's, "
    "gated when named with --metric) are built in.",
)
@click.option(
    "--group-by",
    default=None,
    metavar="KEY",
    help="A dataset metadata key of related items (a document, a conversation): test per group.",
)
@click.option(
    "--alpha",
    type=float,
    default=0.05,
    show_default=True,
    help="One-sided significance level, spent over the looks of this baseline and candidate.",
)
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
    margins: tuple[str, ...],
    lower_is_better: tuple[str, ...],
    group_by: str | None,
    alpha: float,
    allow_uncalibrated: bool,
    min_kappa: float | None,
    report_dir: Path,
    database_url: str | None,
) -> None:
    """Non-inferiority test of CANDIDATE against BASELINE, per metric (every metric of the baseline,
    or those named with --metric), family-wise over the metrics.

    Each gate is a look of the baseline and the candidate's configuration, recorded in the database:
    the first spends 0.9 alpha, later ones (more items, a re-run) what is left. A metric graded by a
    judge needs the judge's calibration ('pilothouse judge calibrate'), unless --allow-uncalibrated.
    Exit status: 0 pass, 1 regression, 3 inconclusive (with the items the next look needs), 2 usage
    error."""
    from pilothouse.evals import ComparisonError
    from pilothouse.evals.gate import render_json, render_junit, render_markdown

    with evaluations(database_url) as service:
        try:
            comparison = service.compare_runs(
                baseline,
                candidate,
                metrics=metrics,
                margin=margins or None,
                alpha=alpha,
                lower_is_better=lower_is_better,
                group_by=group_by,
                allow_uncalibrated=allow_uncalibrated,
                min_kappa=min_kappa,
                changed_limit=0,  # the gate's reports list no items
                record_look=True,
            )
        except ComparisonError as exc:
            raise usage_error(exc) from None
    for warning in comparison.warnings:
        click.echo(f"warning: {warning}", err=True)
    _print(comparison)
    judges, not_gated = comparison.judges, comparison.not_gated
    base_id, cand_id = comparison.baseline.id, comparison.candidate.id
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        for suffix, render in (("md", render_markdown), ("xml", render_junit), ("json", render_json)):
            (report_dir / f"gate.{suffix}").write_text(
                render(comparison.decision, base_id, cand_id, judges, not_gated), encoding="utf-8"
            )
    except OSError as exc:
        raise CliError(f"cannot write the reports to {report_dir}: {exc.strerror}") from None
    click.echo(f"reports: {report_dir / 'gate.md'}, {report_dir / 'gate.xml'}, {report_dir / 'gate.json'}")
    sys.exit(comparison.verdict.exit_code)

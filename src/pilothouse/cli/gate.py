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

    from pilothouse.evals.gate import GateVerdict, judge_calibration_text

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
    for r in results:
        console.print(f"- {r.metric.name}: {r.explanation}")
        if r.metric.name in judges:
            console.print(f"  judge: {judge_calibration_text(judges[r.metric.name])}")
        if r.unmeasured_baseline or r.unmeasured_candidate:
            console.print(
                f"  unmeasured values (left out): baseline {r.unmeasured_baseline}, "
                f"candidate {r.unmeasured_candidate}"
            )
    overall = comparison.verdict
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
    from pilothouse.evals import ComparisonError
    from pilothouse.evals.gate import render_json, render_junit, render_markdown

    with evaluations(database_url) as service:
        try:
            comparison = service.compare_runs(
                baseline,
                candidate,
                metrics=metrics,
                margin=margin,
                alpha=alpha,
                allow_uncalibrated=allow_uncalibrated,
                min_kappa=min_kappa,
                changed_limit=0,  # the gate's reports list no items
            )
        except ComparisonError as exc:
            raise usage_error(exc) from None
    for warning in comparison.warnings:
        click.echo(f"warning: {warning}", err=True)
    _print(comparison)
    results, judges = comparison.results, comparison.judges
    base_id, cand_id = comparison.baseline.id, comparison.candidate.id
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        for suffix, render in (("md", render_markdown), ("xml", render_junit), ("json", render_json)):
            (report_dir / f"gate.{suffix}").write_text(
                render(results, base_id, cand_id, judges), encoding="utf-8"
            )
    except OSError as exc:
        raise CliError(f"cannot write the reports to {report_dir}: {exc.strerror}") from None
    click.echo(f"reports: {report_dir / 'gate.md'}, {report_dir / 'gate.xml'}, {report_dir / 'gate.json'}")
    sys.exit(comparison.verdict.exit_code)

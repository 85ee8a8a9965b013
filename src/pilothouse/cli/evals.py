"""``pilothouse eval``: run specs, look at runs, compare two (``pilothouse datasets`` is in
:mod:`pilothouse.cli.datasets`). Heavy modules are imported inside the commands, so that the CLI starts
fast."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pilothouse.cli.common import CliError, database_option, open_store, run_async, start_up
from pilothouse.domain.score_details import SpanTally, tally_spans

if TYPE_CHECKING:
    from rich.console import Console

    from pilothouse.domain.datasets import DatasetItem
    from pilothouse.domain.evals import EvalResult, EvalRun, RunSummary
    from pilothouse.domain.money import Money
    from pilothouse.evals import Evaluations
    from pilothouse.store.evals import EvalStore


def eval_store(database_url: str | None, *, create: bool = False) -> EvalStore:
    """The eval store of the configured database (made when ``create``: an eval run or an import may
    be the first use; a command that only reads must not answer from a new empty database)."""
    from pilothouse.store.evals import EvalStore

    return EvalStore(open_store(database_url, create=create))


@contextmanager
def evaluations(database_url: str | None, *, create: bool = False) -> Iterator[Evaluations]:
    """The evaluations service over the configured database (made when ``create``), closed on leaving."""
    from pilothouse.evals import Evaluations

    store = open_store(database_url, create=create)
    try:
        yield Evaluations.over(store)
    finally:
        store.close()


def find_run(store: EvalStore, reference: str) -> EvalRun:
    """A run by id (or a unique prefix of at least 6 characters); usage error when there is none."""
    run = store.find_run(reference.strip().lower())
    if run is None:
        raise CliError(f"no eval run {reference!r} (see 'pilothouse eval list')", exit_code=2)
    return run


def _console(stderr: bool = False) -> Console:
    """A rich console; 160 columns when not a terminal (files, pipes, CI logs)."""
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=160)
    return console


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _money(value: Money, unpriced: int) -> str:
    if unpriced and not value:
        return f"cost unknown ({unpriced} calls without a price)"
    return value.display() + (f" + {unpriced} calls without a price" if unpriced else "")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _cell(text: object) -> str:
    """Text from a run (an item id, a scorer's name, an output) as rich prints it literally: its
    ``[...]`` not read as markup (``[/]`` would end the command) and control characters (a terminal's
    escape sequences) shown as ``?``."""
    from rich.markup import escape

    return escape(_CONTROL.sub("?", str(text)))


def _preview(text: str | None, width: int = 60) -> str:
    if text is None:
        return ""
    flat = " ".join(text.split())
    return _cell(flat if len(flat) <= width else flat[: width - 1] + "…")


def print_summary(console: Console, run: EvalRun, summary: RunSummary) -> None:
    """The metrics table and the totals of a run."""
    from rich.table import Table

    table = Table(title=f"Run {run.id}" + (f" ({_cell(run.name)})" if run.name else ""), title_justify="left")
    for column in ("metric", "mean [95% CI]", "pass rate", "measured", "unmeasured", "weight"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for m in summary.metrics:
        interval = f" [{_number(m.low)}, {_number(m.high)}]" if m.low is not None else ""
        pass_rate = "n/a" if m.pass_rate is None else f"{100 * m.pass_rate:.1f}%"
        table.add_row(
            _cell(m.name),
            _number(m.mean) + interval,
            pass_rate,
            str(m.measured),
            str(m.unmeasured),
            f"{m.weight:g}",
        )
    console.print(table)
    dataset = f"{run.dataset}@{run.dataset_version}" if run.dataset_version else str(run.dataset)
    console.print(
        f"dataset   {_cell(dataset)}: {run.items_total} items x {run.epochs} repeats;"
        f" target {_cell(run.target)}"
    )
    console.print(
        f"results   {summary.results} ({summary.errors} target errors, unmeasured; "
        f"{summary.cached} from cache)"
    )
    if summary.weighted_score is not None and len(summary.metrics) > 1:
        console.print(f"score     {summary.weighted_score:.3f} (weighted mean of the metrics)")
    mean_ms = summary.latency_ms_mean
    latency = "" if mean_ms is None else f"; mean latency {_milliseconds(mean_ms)}"
    cached = f" ({summary.cached} answers from the cache cost nothing)" if summary.cached else ""
    console.print(
        f"target    {summary.input_tokens:,} in / {summary.output_tokens:,} out tokens, "
        f"{_money(summary.cost_usd, summary.unpriced)}{cached}{latency}"
    )
    if summary.judge_input_tokens or summary.judge_output_tokens:
        console.print(
            f"judge     {summary.judge_input_tokens:,} in / {summary.judge_output_tokens:,} out tokens, "
            f"{_money(summary.judge_cost_usd, summary.judge_unpriced)}"
        )
    console.print(f"status    {run.status.value}")


def print_flagged(console: Console, tallies: dict[str, SpanTally], run: EvalRun, which: str = "") -> None:
    """One line per scorer that reports unsupported spans: how many results it flagged (the spans
    themselves are in ``eval show --json``, the API and the UI's item pages)."""
    for name, t in tallies.items():
        judge = f"; its judge was called on {t.judge_called}" if t.judge_called else ""
        results = f"results {which}" if which else "results"
        console.print(
            f"flagged   {_cell(name)}: {t.flagged} of {t.checked} {results} have unsupported spans{judge} "
            f"(see them: pilothouse eval show {run.id[:8]} --json, or the UI)"
        )


@click.group("eval")
def eval_group() -> None:
    """Run evaluations and look at their results."""


@eval_group.command("run")
@click.argument("spec_file", type=click.Path(path_type=Path))
@click.option("--resume", default=None, metavar="RUN", help="Continue an interrupted run.")
@click.option("--name", default=None, help="Name the run (default: the spec's name).")
@click.option("--repeats", type=click.IntRange(min=1), default=None, help="Override the spec's repeats.")
@click.option(
    "--concurrency", type=click.IntRange(min=1), default=None, help="Override the spec's concurrency."
)
@click.option("--no-cache", is_flag=True, help="Call the target even for requests answered before.")
@click.option("--project", default=None, help="Project (default: the spec's, else 'default').")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@database_option
def run_command(
    spec_file: Path,
    resume: str | None,
    name: str | None,
    repeats: int | None,
    concurrency: int | None,
    no_cache: bool,
    project: str | None,
    quiet: bool,
    database_url: str | None,
) -> None:
    """Run SPEC_FILE and store the run; its id is printed alone on the last line.

    Exit status 0, or 1/3 when the spec's 'assert' means are below target / cannot be told
    (see 'pilothouse gate' for comparing two runs), 2 for a spec that cannot run, 130 when
    interrupted (resume with --resume RUN)."""
    with start_up():
        from pilothouse.domain.datasets import DatasetError
        from pilothouse.evals import Evaluations
        from pilothouse.evals.calls import TargetConfigError
        from pilothouse.evals.runner import RunError
        from pilothouse.evals.spec import SpecError, load_spec
        from pilothouse.prompts import PromptRef, PromptRegistry, PromptVersion
        from pilothouse.store.calibrations import CalibrationStore

        opened: list[EvalStore] = []  # the database, opened first by a target's `prompt: name@label`

        def registered_prompt(own_project: str, ref: PromptRef) -> PromptVersion:
            if not opened:
                opened.append(eval_store(database_url, create=True))
            return PromptRegistry(opened[0].store).resolve(project or own_project, ref)

        try:
            spec = load_spec(spec_file, prompts=registered_prompt)
        except (SpecError, DatasetError) as exc:
            for store in opened:
                store.store.close()
            raise CliError(str(exc), exit_code=2) from None
        store = opened[0] if opened else eval_store(database_url, create=True)
        spec = spec.with_overrides(
            name=name,
            repeats=repeats,
            concurrency=concurrency,
            project=project,
            cache=False if no_cache else None,
        )
        out, err = _console(), _console(stderr=True)
    display = _ProgressDisplay(err, quiet)
    started_run: list[EvalRun] = []

    def started(run: EvalRun) -> None:
        started_run.append(run)
        display.start(run)

    try:
        service = Evaluations(store, CalibrationStore(store.store))
        run = run_async(service.run(spec, resume=resume, on_start=started, on_progress=display.update))
    except KeyboardInterrupt:
        display.stop()
        if not started_run:
            raise click.exceptions.Abort() from None
        stored = store.count_results(started_run[0].id)
        err.print(
            f"Interrupted: {stored} results stored. Resume with: "
            f"pilothouse eval run {spec_file} --resume {started_run[0].id}"
        )
        click.echo(started_run[0].id)
        sys.exit(130)
    except (RunError, DatasetError, TargetConfigError) as exc:
        display.stop()
        raise CliError(str(exc), exit_code=2) from None
    finally:
        display.stop()
        store.store.close()
    assert run.summary is not None
    print_summary(out, run, run.summary)
    print_flagged(out, display.tallies, run, "scored now" if resume else "")
    if run.summary.results and run.summary.errors == run.summary.results:
        from rich.markup import escape

        first = f" The first: {escape(display.target_error[:300])}." if display.target_error else ""
        err.print(
            f"[bold yellow]warning[/bold yellow]: every call to the target failed ({run.summary.errors} of "
            f"{run.summary.results}), so nothing was measured.{first} See the errors with "
            f"'pilothouse eval show {run.id[:8]}'",
            highlight=False,
        )
    else:
        _warn_scorers_that_measured_nothing(err, display.scorers, run)
    exit_code = _check_assertions(out, spec.assertions, store, run)
    click.echo(run.id)
    if exit_code:
        sys.exit(exit_code)


def _milliseconds(ms: float) -> str:
    """A latency as people read it: 8.97 ms, 412 ms, 11,300 ms (never 1.13e+04)."""
    rounded = float(f"{ms:.3g}")  # three significant digits
    return f"{rounded:,.0f} ms" if rounded >= 1000 else f"{ms:.3g} ms"


class _ScorerTally:
    """How one scorer fared on the answers the target gave: a scorer that measured none of them (a
    judge whose replies cannot be read, a `contains` with nothing to look for) says why."""

    def __init__(self) -> None:
        self.answered = 0
        self.unmeasured = 0
        self.first_error: str | None = None


def _warn_scorers_that_measured_nothing(
    console: Console, tallies: dict[str, _ScorerTally], run: EvalRun
) -> None:
    from rich.markup import escape

    for name, tally in tallies.items():
        if not tally.answered or tally.unmeasured < tally.answered:
            continue
        why = f": {escape(tally.first_error[:300])}" if tally.first_error else ""
        console.print(
            f"[bold yellow]warning[/bold yellow]: scorer {escape(name)} measured none of the "
            f"{tally.answered} answers{why}; see every score with 'pilothouse eval show {run.id[:8]} --json'",
            highlight=False,
        )


class _ProgressDisplay:
    """A rich progress bar on stderr, refreshed at most ten times a second."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.console = console
        self.quiet = quiet
        self.progress: Any = None
        self.task: Any = None
        self.last = 0.0
        self.tallies: dict[str, SpanTally] = {}  # scorers that report unsupported spans
        self.scorers: dict[str, _ScorerTally] = {}  # every scorer, over the answered items
        self.target_error: str | None = None  # the first failed target call's error

    def start(self, run: EvalRun) -> None:
        if self.quiet:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("[bold]eval[/bold] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>8} rows/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[extra]}"),
            console=self.console,
            transient=False,
        )
        total = (run.items_total or 0) * run.epochs
        self.task = self.progress.add_task(run.id[:8], total=total or None, rate="", extra="")
        self.started = time.monotonic()
        self.progress.start()

    def update(self, progress: Any, result: EvalResult) -> None:
        if result.error is not None:
            self.target_error = self.target_error or result.error
        else:
            for score in result.scores:
                scorer = self.scorers.setdefault(score.scorer, _ScorerTally())
                scorer.answered += 1
                if score.value is None:
                    scorer.unmeasured += 1
                    scorer.first_error = scorer.first_error or score.error or score.reason
        for name, tally in tally_spans((result,)).items():
            total = self.tallies.setdefault(name, SpanTally())
            total.checked += tally.checked
            total.flagged += tally.flagged
            total.judge_called += tally.judge_called
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self.last < 0.1 and progress.done < progress.total:
            return
        self.last = now
        elapsed = max(1e-9, now - self.started)
        extra = []
        if progress.errors:
            extra.append(f"{progress.errors} unmeasured")
        if progress.cached:
            extra.append(f"{progress.cached} cached")
        if progress.rate_limited:
            extra.append(f"{progress.rate_limited} x 429, limit {progress.limit}")
        self.progress.update(
            self.task, completed=progress.done, rate=f"{progress.done / elapsed:,.0f}", extra=", ".join(extra)
        )

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _check_assertions(
    console: Console, assertions: dict[str, float] | Any, store: EvalStore, run: EvalRun
) -> int:
    if not assertions:
        return 0
    from pilothouse.evals.assertions import check_minimum
    from pilothouse.evals.gate import GateVerdict

    worst = 0
    for metric, minimum in assertions.items():
        by_item, unmeasured, _ = store.metric_values(run.id, metric)
        result = check_minimum(metric, by_item, minimum, unmeasured=unmeasured)
        console.print(
            f"assert    {metric} >= {minimum:g}: {result.verdict.value.upper()}: {result.explanation}"
        )
        code = result.verdict.exit_code
        if code == GateVerdict.REGRESSION.exit_code or (code and not worst):
            worst = code
    return worst


@eval_group.command("list")
@click.option("--project", default="default", show_default=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@database_option
def list_command(project: str, limit: int, database_url: str | None) -> None:
    """Newest runs first."""
    from rich.table import Table

    from pilothouse.domain.timeparse import iso

    store = eval_store(database_url)
    runs = store.list_runs(project, limit)
    store.store.close()
    table = Table()
    for column in ("run", "started", "name", "dataset", "target", "status", "results", "metrics"):
        table.add_column(column)
    for run in runs:
        summary = run.summary
        metrics = ", ".join(f"{_cell(m.name)} {_number(m.mean)}" for m in summary.metrics) if summary else ""
        table.add_row(
            run.id,
            iso(run.created_ns)[:19],
            _cell(run.name or ""),
            _cell(f"{run.dataset}@{run.dataset_version}"),
            _preview(run.target, 40),
            run.status.value,
            str(summary.results if summary else 0),
            metrics,
        )
    _console().print(table)


@eval_group.command("show")
@click.argument("run_id")
@click.option("--items", type=click.IntRange(min=0), default=10, show_default=True, help="Results to list.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The run (with its spec, secrets redacted), then every result, as JSON lines: the documents "
    "GET /api/evals/runs/ID and .../results return.",
)
@database_option
def show_command(run_id: str, items: int, as_json: bool, database_url: str | None) -> None:
    """A run's summary and its first results."""
    from pilothouse.evals import result_document, run_document
    from pilothouse.server.serialise import dumps

    store = eval_store(database_url)
    try:
        run = find_run(store, run_id)
        if as_json:
            click.echo(dumps(run_document(run, spec=True)))
            for result in store.iter_results(run.id):
                click.echo(dumps(result_document(result)))
            return
        console = _console()
        if run.summary is not None:
            print_summary(console, run, run.summary)
        if items:
            from rich.table import Table

            table = Table(title=f"first {items} results")
            for column in ("item", "epoch", "output", "scores", "error"):
                table.add_column(column)
            shown = []
            for n, result in enumerate(store.iter_results(run.id, page=min(500, items))):
                if n >= items:
                    break
                shown.append(result)
                scores = ", ".join(
                    f"{_cell(s.scorer)}={'-' if s.value is None else f'{s.value:g}'}{_spans_note(s.details)}"
                    for s in result.scores
                )
                table.add_row(
                    _cell(result.item_id),
                    str(result.epoch),
                    _preview(result.output),
                    scores,
                    _preview(result.error, 40),
                )
            console.print(table)
            print_flagged(console, tally_spans(shown), run, "shown")
    finally:
        store.store.close()


def _spans_note(details: Any) -> str:
    """`` (2 spans, judge)`` for a score whose details hold unsupported spans, else nothing."""
    if not details or not isinstance(details.get("spans"), list):
        return ""
    n = len(details["spans"])
    return f" ({n} span{'s' if n != 1 else ''}{', judge' if details.get('judge_called') is True else ''})"


@eval_group.command("compare")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--metric", "metrics", multiple=True, help="Only these scorers (default: the baseline's).")
@click.option("--margin", "margins", multiple=True, metavar="[METRIC=]VALUE", help="As 'pilothouse gate'.")
@click.option("--lower-is-better", multiple=True, metavar="METRIC", help="As 'pilothouse gate'.")
@click.option("--group-by", default=None, metavar="KEY", help="As 'pilothouse gate'.")
@click.option("--limit", type=click.IntRange(min=1), default=30, show_default=True, help="Rows to show.")
@click.option("--all", "show_all", is_flag=True, help="Show items that did not change too.")
@database_option
def compare_command(
    run_a: str,
    run_b: str,
    metrics: tuple[str, ...],
    margins: tuple[str, ...],
    lower_is_better: tuple[str, ...],
    group_by: str | None,
    limit: int,
    show_all: bool,
    database_url: str | None,
) -> None:
    """Per-item differences between two runs (B minus A), biggest losses first, and the gate's
    verdict on them at the look 'pilothouse gate' would make, without recording one ('pilothouse
    gate' for the full report)."""
    from rich.table import Table

    from pilothouse.cli.gate import usage_error
    from pilothouse.evals import ComparisonError

    with evaluations(database_url) as service:
        try:
            # a look at the items, not a gate: an uncalibrated judge is named in the verdict line
            comparison = service.compare_runs(
                run_a,
                run_b,
                metrics=metrics,
                margin=margins or None,
                lower_is_better=lower_is_better,
                group_by=group_by,
                allow_uncalibrated=True,
                changed_limit=limit,
                include_unchanged=show_all,
            )
        except ComparisonError as exc:
            raise usage_error(exc) from None
    a, b = comparison.baseline, comparison.candidate
    table = Table(title=f"{b.id[:8]} vs {a.id[:8]} (B - A)")
    for column in ("item", "input", "metric", "A", "B", "delta", "A output", "B output"):
        table.add_column(column, justify="right" if column in ("A", "B", "delta") else "left")
    for c in comparison.changed:
        style = "red" if c.delta < 0 else "green" if c.delta > 0 else ""
        table.add_row(
            _cell(c.item_id),
            _preview(_input_text(c.input), 40),
            _cell(c.metric),
            _number(c.baseline),
            _number(c.candidate),
            (f"[{style}]{c.delta:+.3f}[/{style}]" if style else f"{c.delta:+.3f}") if c.paired else "n/a",
            _preview(c.baseline_output, 40),
            _preview(c.candidate_output, 40),
        )
    console = _console()
    console.print(table)
    for name, tally in comparison.tallies.items():
        console.print(
            f"{_cell(name)}: {tally.better} items better, {tally.worse} worse, {tally.same} unchanged"
            + (f", {tally.unpaired} measured in only one run" if tally.unpaired else "")
        )
    if comparison.changed_total > limit:
        console.print(f"({comparison.changed_total - limit} more; --limit to see them)")
    for warning in comparison.warnings:
        console.print(f"note: {warning}")
    verdicts = ", ".join(f"{r.metric.name} {r.verdict.value}" for r in comparison.results)
    uncalibrated = comparison.uncalibrated
    console.print(
        f"gate: {comparison.verdict.value.upper()} ({verdicts})"
        + (f"; uncalibrated judge: {', '.join(uncalibrated)}" if uncalibrated else "")
        + f" at look {comparison.look} (alpha {comparison.look_alpha:.4g}; the report: 'pilothouse gate')"
    )


def _input_text(item: DatasetItem | None) -> str:
    if item is None:
        return ""
    if item.input:
        return ", ".join(f"{k}={v}" for k, v in item.input.items())
    return str(item.messages[-1].get("content", "")) if item.messages else ""

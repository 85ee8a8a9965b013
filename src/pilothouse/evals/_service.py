"""The evaluations service: run a spec, compare two stored runs (the quality gate with its judge
checks), curate a dataset from traces. Each use case is written here once; ``pilothouse gate``,
``pilothouse eval compare``, ``GET /api/evals/compare``, the UI's compare page and the pytest plugin
call :meth:`Evaluations.compare_runs` and only render what it returns, so they cannot disagree.

The comparison's modules (the gate, its statistics, the judges' calibration) are imported by the
functions that compare: ``pilothouse eval run`` imports this module and never compares, and should not
pay for them at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from pilothouse.domain.datasets import DatasetError, DatasetVersion
from pilothouse.domain.evals import EvalResult, EvalRun, RunStatus
from pilothouse.domain.queries import TraceQuery
from pilothouse.store.calibrations import CalibrationStore
from pilothouse.store.evals import EvalStore, ScoreFilter
from pilothouse.store.sql import SqlStore

if TYPE_CHECKING:
    from pilothouse.domain.calibrations import Calibration
    from pilothouse.evals._comparison import ChangedItem, Comparison, ItemTally
    from pilothouse.evals.gate import MetricResult, MetricSpec, MetricValues
    from pilothouse.evals.runner import Progress
    from pilothouse.evals.spec import EvalSpec

__all__ = ["DEFAULT_CHANGED_LIMIT", "Evaluations"]

DEFAULT_CHANGED_LIMIT = 50  # changed items a comparison carries with their outputs and inputs


class Evaluations:
    """The evaluation use cases over the eval and calibration stores. Entry points translate their
    arguments, call these, and render the result; usage problems come back as one
    :class:`ComparisonError` (or the runner's and datasets' own errors for :meth:`run`)."""

    def __init__(self, evals: EvalStore, calibrations: CalibrationStore) -> None:
        self.evals = evals
        self.calibrations = calibrations

    @classmethod
    def over(cls, store: SqlStore) -> Evaluations:
        """The service over one database (its eval and calibration stores)."""
        return cls(EvalStore(store), CalibrationStore(store))

    # -- running ------------------------------------------------------------------------------------

    async def run(
        self,
        spec: EvalSpec,
        *,
        resume: str | None = None,
        on_start: Callable[[EvalRun], None] | None = None,
        on_progress: Callable[[Progress, EvalResult], None] | None = None,
    ) -> EvalRun:
        """Run ``spec`` (or resume the interrupted run ``resume``) and return the stored run with its
        summary (see :func:`pilothouse.evals.runner.run_eval`, whose errors it raises)."""
        from pilothouse.evals.runner import run_eval  # the runner pulls in targets and model clients

        return await run_eval(spec, self.evals, resume=resume, on_start=on_start, on_progress=on_progress)

    def find_run(self, reference: str, project_id: str | None = None) -> EvalRun | None:
        """A run by id or by an unambiguous prefix of its id (at least 6 characters); with
        ``project_id``, another project's run is not found."""
        run = self.evals.find_run(reference.strip().lower(), project_id)
        if run is None or (project_id is not None and run.project_id != project_id):
            return None
        return run

    # -- comparing ----------------------------------------------------------------------------------

    def compare_runs(
        self,
        baseline: str | EvalRun,
        candidate: str | EvalRun,
        *,
        metrics: Sequence[str] = (),
        margin: float | None = None,
        alpha: float | None = None,
        allow_uncalibrated: bool = False,
        min_kappa: float | None = None,
        project_id: str | None = None,
        changed_limit: int | None = DEFAULT_CHANGED_LIMIT,
        include_unchanged: bool = False,
    ) -> Comparison:
        """The quality gate on two runs: a non-inferiority test per metric (``metrics``, default every
        metric both runs have) at ``alpha`` (None: the gate's ``DEFAULT_ALPHA``, 0.05) with ``margin``
        (None: each metric's default), and the items that changed, biggest losses first.

        A metric graded by a judge needs a calibration of the candidate's judge (and of the baseline's
        when the runs graded it with different judges) that could read some of its replies, unless
        ``allow_uncalibrated``; with ``min_kappa``, a calibration whose Cohen's kappa is below it (or
        undefined) is refused whatever ``allow_uncalibrated`` says. Runs are ids or id prefixes
        (scoped to ``project_id`` when given) or stored runs. ``changed_limit`` (None: all) bounds the
        changed items that come with outputs and inputs; ``include_unchanged`` lists unchanged items
        too. Raises :class:`ComparisonError` for every usage problem.
        """
        from pilothouse.evals._comparison import Comparison, ComparisonError
        from pilothouse.evals.gate import DEFAULT_ALPHA, compare_metric, overall_verdict

        alpha = DEFAULT_ALPHA if alpha is None else alpha
        _check_settings(margin, alpha, min_kappa, changed_limit)
        base_run = self._resolve(baseline, "baseline", project_id)
        cand_run = self._resolve(candidate, "candidate", project_id)
        names = _metric_names(base_run, cand_run, metrics)
        warnings: list[str] = []
        judges = self._judge_calibrations(base_run, cand_run, names, allow_uncalibrated, min_kappa, warnings)
        results: list[MetricResult] = []
        changed: list[ChangedItem] = []
        tallies: dict[str, ItemTally] = {}
        for name in names:
            spec, base_values, cand_values = self._load(base_run, cand_run, name)
            try:
                results.append(compare_metric(spec, base_values, cand_values, margin=margin, alpha=alpha))
            except ValueError as exc:
                raise ComparisonError(f"{name}: {exc}", code="invalid_values") from None
            tallies[name] = _changed_items(name, base_values, cand_values, include_unchanged, changed)
        for run in (base_run, cand_run):
            if run.status is not RunStatus.COMPLETED:
                warnings.append(f"run {run.id} is {run.status.value}, not completed")
        if base_run.dataset_version_id != cand_run.dataset_version_id:
            warnings.append(
                f"the runs used different datasets ({base_run.dataset}@{base_run.dataset_version} and "
                f"{cand_run.dataset}@{cand_run.dataset_version}); items are paired by id"
            )
        changed.sort(key=lambda c: (c.delta, c.item_id, c.metric))
        shown = changed if changed_limit is None else changed[:changed_limit]
        return Comparison(
            baseline=base_run,
            candidate=cand_run,
            results=tuple(results),
            verdict=overall_verdict(results),
            judges=judges,
            changed=self._with_outputs(base_run, cand_run, shown),
            changed_total=len(changed),
            tallies=tallies,
            warnings=tuple(warnings),
            alpha=alpha,
            margin=margin,
        )

    def _resolve(self, reference: str | EvalRun, role: str, project_id: str | None) -> EvalRun:
        from pilothouse.evals._comparison import ComparisonError

        if isinstance(reference, EvalRun):
            if project_id is None or reference.project_id == project_id:
                return reference
            reference = reference.id
        run = self.find_run(reference, project_id) if reference.strip() else None
        if run is None:
            scope = "" if project_id is None else f" in project {project_id!r}"
            raise ComparisonError(f"no eval run {reference!r}{scope}", code="eval_run_not_found", param=role)
        return run

    def _load(
        self, baseline: EvalRun, candidate: EvalRun, name: str
    ) -> tuple[MetricSpec, MetricValues, MetricValues]:
        from pilothouse.evals.gate import MetricSpec, MetricValues

        runs = [self.evals.metric_values(run.id, name) for run in (baseline, candidate)]
        binary = all(v in (0.0, 1.0) for by_item, _ in runs for values in by_item.values() for v in values)
        spec = MetricSpec(name, "binary" if binary else "continuous")
        (base_items, base_unmeasured), (cand_items, cand_unmeasured) = runs
        return spec, MetricValues(base_items, base_unmeasured), MetricValues(cand_items, cand_unmeasured)

    def _judge_calibrations(
        self,
        baseline: EvalRun,
        candidate: EvalRun,
        names: list[str],
        allow_uncalibrated: bool,
        min_kappa: float | None,
        warnings: list[str],
    ) -> dict[str, Calibration | None]:
        """The calibration of the judge of every judge-graded metric (the candidate's judge; the
        baseline's too when the runs graded with different judges); an error for a missing, unreadable
        or weak one."""
        from pilothouse.evals._comparison import ComparisonError, option
        from pilothouse.evals.calibration import judged_metrics

        judged = [(candidate, judged_metrics(candidate.spec)), (baseline, judged_metrics(baseline.spec))]
        found: dict[str, Calibration | None] = {}
        for name in names:
            uses = [(run, metrics[name]) for run, metrics in judged if name in metrics]
            if len({m.fingerprint for _, m in uses}) > 1:
                warnings.append(f"the runs graded {name!r} with different judges (or judge specs)")
            for run, metric in uses:
                calibration = self.calibrations.latest(run.project_id, metric.fingerprint)
                if calibration is None and not allow_uncalibrated:
                    raise ComparisonError(
                        f"metric {name!r} is graded by a judge ({metric.scorer_type}, model "
                        f"{metric.judge_model}) with no calibration: run 'pilothouse judge calibrate "
                        f"SPEC.yaml --labels LABELS.jsonl --scorer {name}' (--project {run.project_id}), "
                        f"or pass {option('allow_uncalibrated')}",
                        code="uncalibrated_judge",
                        param="allow_uncalibrated",
                    )
                if calibration is not None and not calibration.metrics.measured and not allow_uncalibrated:
                    raise ComparisonError(
                        f"metric {name!r}: its judge's calibration {calibration.id} (v{calibration.version}) "
                        f"could read none of the judge's {calibration.metrics.n} replies, so it shows "
                        f"nothing; fix the judge and calibrate again, or pass {option('allow_uncalibrated')}",
                        code="uncalibrated_judge",
                        param="allow_uncalibrated",
                    )
                kappa = calibration.metrics.kappa if calibration is not None else None
                if calibration is not None and min_kappa is not None and (kappa is None or kappa < min_kappa):
                    shown = "undefined" if kappa is None else f"{kappa:.3f}"
                    raise ComparisonError(
                        f"metric {name!r}: its judge's calibration {calibration.id} (v{calibration.version}) "
                        f"has kappa {shown}, below {option('min_kappa')} {min_kappa:g}",
                        code="weak_judge",
                        param="min_kappa",
                    )
                found.setdefault(name, calibration)
        return found

    def _with_outputs(
        self, baseline: EvalRun, candidate: EvalRun, shown: list[ChangedItem]
    ) -> tuple[ChangedItem, ...]:
        """The shown items with what each run answered (its first epoch) and the dataset item."""
        if not shown:
            return ()
        ids = list(dict.fromkeys(c.item_id for c in shown))
        outputs = [self._first_outputs(run.id, ids) for run in (baseline, candidate)]
        version = baseline.dataset_version_id
        inputs = self.evals.get_items(version, ids) if version else {}
        return tuple(
            replace(
                c,
                baseline_output=outputs[0].get(c.item_id),
                candidate_output=outputs[1].get(c.item_id),
                input=inputs.get(c.item_id),
            )
            for c in shown
        )

    def _first_outputs(self, run_id: str, ids: list[str]) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for result in self.evals.get_results(run_id, ids):
            out.setdefault(
                result.item_id, result.output if result.error is None else f"error: {result.error}"
            )
        return out

    # -- curating -----------------------------------------------------------------------------------

    def curate_from_traces(
        self,
        project_id: str,
        name: str,
        query: TraceQuery,
        score_filters: Sequence[ScoreFilter] = (),
        *,
        limit: int | None = None,
        source: str = "traces",
    ) -> tuple[DatasetVersion, bool]:
        """The next version of the dataset ``name`` from the stored traces that match ``query`` and
        every score filter (newest first, at most ``limit``): each trace's input is an item, its output
        the expected answer. Returns (version, created); the same items as the newest version store
        nothing and give that version back. No matching trace: DatasetError, and nothing is stored."""
        try:
            items = self.evals.iter_trace_items(project_id, query, score_filters, limit)
            return self.evals.import_items(project_id, name, items, source=source)
        except DatasetError:  # a typo in a filter must not store an empty version
            raise DatasetError(
                f"no stored trace of project {project_id!r} matches these filters: nothing stored"
            ) from None


def _check_settings(
    margin: float | None, alpha: float, min_kappa: float | None, changed_limit: int | None
) -> None:
    from pilothouse.evals._comparison import ComparisonError, option

    if not 0 < alpha < 0.5:
        raise ComparisonError(
            f"{option('alpha')} must be between 0 and 0.5, not {alpha}",
            code="invalid_parameter",
            param="alpha",
        )
    if margin is not None and not (math.isfinite(margin) and margin >= 0):
        raise ComparisonError(
            f"{option('margin')} must be a number >= 0, not {margin}",
            code="invalid_parameter",
            param="margin",
        )
    if min_kappa is not None and not -1 <= min_kappa <= 1:
        raise ComparisonError(
            f"{option('min_kappa')} must be between -1 and 1, not {min_kappa}",
            code="invalid_parameter",
            param="min_kappa",
        )
    if changed_limit is not None and changed_limit < 0:
        raise ComparisonError(
            f"{option('changed_limit')} must be a whole number >= 0, not {changed_limit}",
            code="invalid_parameter",
            param="changed_limit",
        )


def _metric_names(baseline: EvalRun, candidate: EvalRun, wanted: Sequence[str]) -> list[str]:
    from pilothouse.evals._comparison import ComparisonError

    shared = [name for name in baseline.scorers if name in candidate.scorers]
    for name in wanted:
        if name not in shared:
            raise ComparisonError(
                f"metric {name!r} is not in both runs (baseline: {', '.join(baseline.scorers) or 'none'}; "
                f"candidate: {', '.join(candidate.scorers) or 'none'})",
                code="metric_not_shared",
                param="metric",
            )
    if not shared:
        raise ComparisonError(
            "the baseline and the candidate have no metric (scorer) in common", code="no_shared_metric"
        )
    return list(dict.fromkeys(wanted)) or shared


def _changed_items(
    name: str,
    baseline: MetricValues,
    candidate: MetricValues,
    include_unchanged: bool,
    changed: list[ChangedItem],
) -> ItemTally:
    """Append one metric's changed items (per-item means over epochs) and count how items moved."""
    from pilothouse.evals._comparison import ChangedItem, ItemTally
    from pilothouse.evals.stats import item_means

    means_a, means_b = item_means(baseline.by_item), item_means(candidate.by_item)
    better = worse = same = unpaired = 0
    for item in sorted(means_a.keys() | means_b.keys()):
        a, b = means_a.get(item), means_b.get(item)
        if a is None or b is None:
            unpaired += 1
        elif b > a:
            better += 1
        elif b < a:
            worse += 1
        else:
            same += 1
            if not include_unchanged:
                continue
        changed.append(ChangedItem(item, name, a, b))
    return ItemTally(better, worse, same, unpaired)

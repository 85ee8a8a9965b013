"""The evaluations service: run a spec, compare two stored runs (the quality gate with its judge
checks), curate a dataset from traces. Each use case is written here once; ``pilothouse gate``,
``pilothouse eval compare``, ``GET /api/evals/compare``, the UI's compare page and the pytest plugin
call :meth:`Evaluations.compare_runs` and only render what it returns, so they cannot disagree.

The comparison's modules (the gate, its statistics, the judges' calibration) are imported by the
functions that compare: ``pilothouse eval run`` imports this module and never compares, and should not
pay for them at start-up.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pilothouse.domain.curation import CurationPlan
from pilothouse.domain.datasets import DatasetError, DatasetVersion
from pilothouse.domain.evals import EvalResult, EvalRun, RunStatus
from pilothouse.domain.queries import TraceQuery
from pilothouse.store.calibrations import CalibrationStore
from pilothouse.store.evals import EvalStore, ScoreFilter
from pilothouse.store.sql import SqlStore

if TYPE_CHECKING:
    from pilothouse.domain.calibrations import Calibration
    from pilothouse.evals._comparison import ChangedItem, Comparison, ItemTally
    from pilothouse.evals._curation import Curated, Embed, Scrub
    from pilothouse.evals.gate import Margin, MetricInput, MetricSpec, MetricValues
    from pilothouse.evals.runner import Progress
    from pilothouse.evals.spec import EvalSpec

__all__ = ["BUILT_IN_METRICS", "DEFAULT_CHANGED_LIMIT", "Evaluations"]

DEFAULT_CHANGED_LIMIT = 50  # changed items a comparison carries with their outputs and inputs
# Metrics every run has, from its target calls (lower is better; gated only when named).
BUILT_IN_METRICS = ("latency_ms", "cost_usd")
if TYPE_CHECKING:
    from typing import TypeAlias

    # A margin as callers give it (see pilothouse.evals.gate.parse_margins).
    MarginsLike: TypeAlias = float | str | Sequence[float | str] | Mapping[str, float | str | Margin] | None


def option(name: str) -> str:
    """A setting's name inside a ComparisonError message (see pilothouse.evals._comparison.option)."""
    from pilothouse.evals._comparison import option as spelled

    return spelled(name)


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
        margin: MarginsLike = None,
        alpha: float | None = None,
        lower_is_better: Sequence[str] = (),
        group_by: str | None = None,
        allow_uncalibrated: bool = False,
        min_kappa: float | None = None,
        project_id: str | None = None,
        changed_limit: int | None = DEFAULT_CHANGED_LIMIT,
        include_unchanged: bool = False,
        record_look: bool = False,
    ) -> Comparison:
        """The quality gate on two runs: a non-inferiority test per metric (``metrics``, default every
        metric of the baseline, each of which the candidate must have) at ``alpha`` (None: 0.05) spent
        over the looks of this baseline and candidate configuration, with ``margin`` (a number for
        every metric, ``"10%"``, ``"METRIC=0.01"``, several of those, or ``{metric: value}``; None:
        each metric's default), and the items that changed, biggest losses first.

        ``lower_is_better`` names metrics where lower is better (``latency_ms`` and ``cost_usd``, the
        target call's latency and cost, are built in and gated when named in ``metrics``);
        ``group_by`` a dataset metadata key whose items are related (tested at the group level).
        ``record_look`` records this gate as a look of the pair (``pilothouse gate`` and the pytest
        plugin do); without it the verdict is the one the gate would give at its next look.

        A metric graded by a judge needs a calibration of the candidate's judge (and of the baseline's
        when the runs graded it with different judges) that could read some of its replies, unless
        ``allow_uncalibrated``; with ``min_kappa``, a calibration whose Cohen's kappa is below it (or
        undefined) is refused whatever ``allow_uncalibrated`` says. Runs are ids or id prefixes
        (scoped to ``project_id`` when given) or stored runs. ``changed_limit`` (None: all) bounds the
        changed items that come with outputs and inputs; ``include_unchanged`` lists unchanged items
        too. Raises :class:`ComparisonError` for every usage problem.
        """
        from pilothouse.evals._comparison import Comparison, ComparisonError, ItemTally
        from pilothouse.evals.gate import DEFAULT_ALPHA, MetricInput, decide

        alpha = DEFAULT_ALPHA if alpha is None else alpha
        _check_settings(alpha, min_kappa, changed_limit)
        margins = _margins(margin)
        base_run = self._resolve(baseline, "baseline", project_id)
        cand_run = self._resolve(candidate, "candidate", project_id)
        if base_run.id == cand_run.id:
            raise ComparisonError(
                f"the baseline and the candidate are the same run ({base_run.id}): a run compared with "
                "itself shows nothing; compare it with another run",
                code="same_run",
                param="candidate",
            )
        names, not_gated = _metric_names(base_run, cand_run, metrics)
        lower = _lower_is_better(names, lower_is_better)
        for name in margins:
            if name is not None and name not in names:
                raise ComparisonError(
                    f"{option('margin')} names {name!r}, which is not gated (gated: {', '.join(names)})",
                    code="invalid_parameter",
                    param="margin",
                )
        warnings: list[str] = []
        judges = self._judge_calibrations(base_run, cand_run, names, allow_uncalibrated, min_kappa, warnings)
        loaded = [self._load(base_run, cand_run, name, name in lower) for name in names]
        _check_common_items(loaded)
        groups = self._groups(base_run, cand_run, group_by, loaded) if group_by is not None else None
        entries = [
            MetricInput(spec, base_values, cand_values, margins.get(spec.name, margins.get(None)), groups)
            for spec, base_values, cand_values in loaded
        ]
        pair_key = _pair_key(base_run, cand_run)
        settings_key = _settings_key(alpha, entries, group_by)
        look = self.evals.gate_look(base_run.project_id, pair_key, cand_run.id, settings_key)
        try:
            decision = decide(entries, alpha=alpha, look=look)
        except ValueError as exc:
            raise ComparisonError(str(exc), code="invalid_values") from None
        if record_look:
            recorded = self.evals.record_gate_look(
                base_run.project_id, pair_key, base_run.id, cand_run.id, decision.verdict.value, settings_key
            )
            if recorded != look:  # another gate of this pair took the look first
                decision = decide(entries, alpha=alpha, look=recorded)
        changed: list[ChangedItem] = []
        tallies: dict[str, ItemTally] = {}
        collect = changed_limit != 0  # the gate's reports list no items: the decision's counts will do
        for (spec, base_values, cand_values), result in zip(loaded, decision.results, strict=True):
            c = result.comparison
            if collect or c is None:
                tallies[spec.name] = _changed_items(
                    spec.name, base_values, cand_values, include_unchanged, changed if collect else None
                )
            else:  # the same counts: the decision's measured pairs and the items left out
                sign = c.sign
                tallies[spec.name] = ItemTally(sign.n_increase, sign.n_decrease, sign.n_zero, c.n_excluded)
        changed_total = sum(
            t.better + t.worse + t.unpaired + (t.same if include_unchanged else 0) for t in tallies.values()
        )
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
            results=decision.results,
            verdict=decision.verdict,
            judges=judges,
            changed=self._with_outputs(base_run, cand_run, shown),
            changed_total=changed_total,
            tallies=tallies,
            warnings=tuple(warnings),
            alpha=alpha,
            margin=margin if isinstance(margin, float | int) else None,
            decision=decision,
            not_gated=tuple(not_gated),
            group_by=group_by,
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
        self, baseline: EvalRun, candidate: EvalRun, name: str, lower_is_better: bool
    ) -> tuple[MetricSpec, MetricValues, MetricValues]:
        from pilothouse.evals.gate import MetricSpec, MetricValues

        if name in BUILT_IN_METRICS and name not in baseline.scorers:
            runs = [self.evals.result_values(run.id, name) for run in (baseline, candidate)]
        else:
            runs = [self.evals.metric_values(run.id, name) for run in (baseline, candidate)]
        binary = name not in BUILT_IN_METRICS and all(
            v in (0.0, 1.0) for by_item, _, _ in runs for values in by_item.values() for v in values
        )
        spec = MetricSpec(name, "binary" if binary else "continuous", higher_is_better=not lower_is_better)
        (base_items, base_n, base_ids), (cand_items, cand_n, cand_ids) = runs
        return spec, MetricValues(base_items, base_n, base_ids), MetricValues(cand_items, cand_n, cand_ids)

    def _groups(
        self,
        baseline: EvalRun,
        candidate: EvalRun,
        key: str,
        loaded: Sequence[tuple[MetricSpec, MetricValues, MetricValues]],
    ) -> dict[str, str]:
        """Each compared item's group: the value of its dataset metadata ``key``."""
        from pilothouse.evals._comparison import ComparisonError

        if not key.strip():
            raise ComparisonError(
                f"{option('group_by')} needs a metadata key", code="invalid_parameter", param="group_by"
            )
        metadata: dict[str, Mapping[str, Any]] = {}
        for run in (candidate, baseline):  # the baseline's items win
            if run.dataset_version_id is None:
                raise ComparisonError(
                    f"{option('group_by')} reads the items' metadata from the run's stored dataset, and run "
                    f"{run.id} has none",
                    code="invalid_parameter",
                    param="group_by",
                )
            metadata.update(self.evals.item_metadata(run.dataset_version_id))
        groups: dict[str, str] = {}
        missing: list[str] = []
        for _, base_values, cand_values in loaded:
            for item in (
                base_values.by_item.keys() | cand_values.by_item.keys() | cand_values.unmeasured_items
            ):
                if item in groups:
                    continue
                value = metadata.get(item, {}).get(key)
                if value is None:
                    missing.append(item)
                else:
                    groups[item] = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
        if missing:
            shown = ", ".join(repr(i) for i in sorted(missing)[:3])
            raise ComparisonError(
                f"{option('group_by')} {key!r}: {len(missing)} item(s) have no such metadata key ({shown})",
                code="invalid_parameter",
                param="group_by",
            )
        return groups

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
        curated = self.curate(
            project_id, name, query, score_filters, CurationPlan(dedup=False), limit=limit, source=source
        )
        return curated.versions[name]

    def curate(
        self,
        project_id: str,
        name: str,
        query: TraceQuery,
        score_filters: Sequence[ScoreFilter],
        plan: CurationPlan,
        *,
        limit: int | None = None,
        source: str = "traces",
        embed: Embed | None = None,
        scrub: Scrub | None = None,
    ) -> Curated:
        """Dataset versions from the stored traces that match ``query`` and every score filter (newest
        first, at most ``limit`` traces), curated by ``plan``: de-duplicated, near-duplicates dropped
        (with ``embed``), scrubbed (with ``scrub``, e.g. PII redaction) and split. Without splits the
        dataset is ``name``; with them ``name-<split>`` each. Each version is new only when its items
        changed. No matching trace, or too few groups to give every split an item: DatasetError,
        nothing stored."""
        from pilothouse.evals._curation import Curated, curate_items

        items = self.evals.iter_trace_items(project_id, query, score_filters, limit)
        splits, report = curate_items(items, plan, embed=embed, scrub=scrub)
        if report.matched == 0:  # a typo in a filter must not store an empty version
            raise DatasetError(
                f"no stored trace of project {project_id!r} matches these filters: nothing stored"
            )
        versions: dict[str, tuple[DatasetVersion, bool]] = {}
        for split, members in splits.items():
            stored_name = name if not plan.splits else f"{name}-{split}"
            suffix = f" split {split}" if plan.splits else ""
            versions[stored_name] = self.evals.import_items(
                project_id, stored_name, members, source=f"{source}{suffix}"
            )
        return Curated(versions, report)

    def curate_corrections(
        self, project_id: str, name: str, corrected: Mapping[str, str], *, source: str = "review"
    ) -> tuple[DatasetVersion, bool]:
        """The next version of the dataset ``name``: its newest version's items (none when it is new)
        plus, for each trace id of ``corrected``, the trace as :meth:`curate_from_traces` makes it with
        the corrected output as its expected answer (replacing an item of the same trace). Returns
        (version, created); ids that are no stored trace of the project are left out, and none at all
        is a DatasetError."""
        found = self.evals.trace_items(project_id, list(corrected))
        if not found:
            raise DatasetError(f"none of these traces is stored in project {project_id!r}: nothing stored")
        fresh = {tid: replace(item, expected=corrected[tid]) for tid, item in found.items()}
        latest = self.evals.get_version(project_id, name)
        kept = []
        if latest is not None:
            kept = [item for _, item in self.evals.iter_items(latest.id) if item.id not in fresh]
        return self.evals.import_items(project_id, name, [*kept, *fresh.values()], source=source)


def _check_settings(alpha: float, min_kappa: float | None, changed_limit: int | None) -> None:
    from pilothouse.evals._comparison import ComparisonError

    if not 0 < alpha < 0.5:
        raise ComparisonError(
            f"{option('alpha')} must be between 0 and 0.5, not {alpha}",
            code="invalid_parameter",
            param="alpha",
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


def _margins(margin: MarginsLike) -> dict[str | None, Margin]:
    from pilothouse.evals._comparison import ComparisonError
    from pilothouse.evals.gate import parse_margins

    try:
        return parse_margins(margin)
    except ValueError as exc:
        raise ComparisonError(f"{option('margin')} {exc}", code="invalid_parameter", param="margin") from None


def _metric_names(
    baseline: EvalRun, candidate: EvalRun, wanted: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The gated metrics and the candidate's metrics that are not gated (the baseline lacks them)."""
    from pilothouse.evals._comparison import ComparisonError

    not_gated = [name for name in candidate.scorers if name not in baseline.scorers]
    for name in wanted:
        if name in BUILT_IN_METRICS:
            continue
        if name not in baseline.scorers or name not in candidate.scorers:
            raise ComparisonError(
                f"metric {name!r} is not in both runs (baseline: {', '.join(baseline.scorers) or 'none'}; "
                f"candidate: {', '.join(candidate.scorers) or 'none'})",
                code="metric_not_shared",
                param="metric",
            )
    if wanted:
        names = list(dict.fromkeys(wanted))
        return names, [n for n in not_gated if n not in names]
    if not baseline.scorers:
        raise ComparisonError("the baseline has no metric (scorer) to gate on", code="no_shared_metric")
    missing = [name for name in baseline.scorers if name not in candidate.scorers]
    if len(missing) == len(baseline.scorers):
        raise ComparisonError(
            "the baseline and the candidate have no metric (scorer) in common "
            f"(baseline: {', '.join(baseline.scorers)}; candidate: {', '.join(candidate.scorers) or 'none'})",
            code="no_shared_metric",
        )
    if missing:
        raise ComparisonError(
            f"the candidate lacks the baseline's metric{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)}: a check the candidate dropped cannot pass the gate; "
            f"choose the metrics to gate with {option('metric')} to leave it out",
            code="metric_missing",
            param="metric",
        )
    return list(baseline.scorers), not_gated


def _lower_is_better(names: Sequence[str], named: Sequence[str]) -> set[str]:
    from pilothouse.evals._comparison import ComparisonError

    for name in named:
        if name not in names:
            raise ComparisonError(
                f"{option('lower_is_better')} names {name!r}, which is not gated (gated: {', '.join(names)})",
                code="invalid_parameter",
                param="lower_is_better",
            )
    return {n for n in names if n in BUILT_IN_METRICS} | set(named)


def _check_common_items(loaded: Sequence[tuple[MetricSpec, MetricValues, MetricValues]]) -> None:
    from pilothouse.evals._comparison import ComparisonError

    base: set[str] = set()
    cand: set[str] = set()
    for _, b, c in loaded:
        base |= b.by_item.keys() | b.unmeasured_items
        cand |= c.by_item.keys() | c.unmeasured_items
    if base and cand and not base & cand:
        raise ComparisonError(
            "the runs cannot be compared: no item in common (the gate pairs items by id; were they run "
            "on different datasets?)",
            code="no_common_items",
        )


def _pair_key(baseline: EvalRun, candidate: EvalRun) -> str:
    """What the gate counts looks of: the baseline run and the candidate's configuration (its stored
    spec without its name, and its target), so a re-run of the same candidate, or the same candidate
    on more items, is another look at the same pair."""
    spec = {k: v for k, v in candidate.spec.items() if k not in ("name", "description")}
    identity = json.dumps(
        {"baseline": baseline.id, "spec": spec, "target": candidate.target}, sort_keys=True, default=str
    )
    return hashlib.sha256(identity.encode()).hexdigest()


def _settings_key(alpha: float, entries: Sequence[MetricInput], group_by: str | None) -> str:
    """The gate's settings as a key: the same runs gated with another alpha, margin, direction, metric
    set or grouping are another look (trying settings until one passes spends alpha too)."""
    settings = {
        "alpha": alpha,
        "group_by": group_by,
        "metrics": [
            [e.metric.name, e.metric.kind, e.metric.higher_is_better, repr(e.margin)] for e in entries
        ],
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


def _changed_items(
    name: str,
    baseline: MetricValues,
    candidate: MetricValues,
    include_unchanged: bool,
    changed: list[ChangedItem] | None,
) -> ItemTally:
    """Count how one metric's items moved (per-item means over epochs) and, unless ``changed`` is
    None, append the changed ones to it."""
    from pilothouse.evals._comparison import ChangedItem, ItemTally
    from pilothouse.evals.stats import item_means

    means_a, means_b = item_means(baseline.by_item), item_means(candidate.by_item)
    better = worse = same = 0
    both = means_a.keys() & means_b.keys()
    unpaired = len(means_a) + len(means_b) - 2 * len(both)
    for item in both:
        if means_b[item] > means_a[item]:
            better += 1
        elif means_b[item] < means_a[item]:
            worse += 1
        else:
            same += 1
    if changed is not None:
        for item in sorted(means_a.keys() | means_b.keys()):
            before, after = means_a.get(item), means_b.get(item)
            if before is not None and before == after and not include_unchanged:
                continue
            changed.append(ChangedItem(item, name, before, after))
    return ItemTally(better, worse, same, unpaired)

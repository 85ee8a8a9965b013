"""What comparing two runs produces (:class:`Comparison`), the one error it raises
(:class:`ComparisonError`), and the comparison as a JSON document (:func:`comparison_document`).

The values are plain and frozen, so every entry point (CLI, API, UI, pytest plugin) renders the same
finding its own way and none of them decides anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pilothouse.domain.calibrations import Calibration
from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import EvalResult, EvalRun
from pilothouse.evals.gate import GateDecision, GateVerdict, MetricResult, gate_document

__all__ = [
    "ChangedItem",
    "Comparison",
    "ComparisonError",
    "ItemTally",
    "comparison_document",
    "result_document",
    "run_document",
]

_OPTION = re.compile("\x00([a-z_]+)\x00")


def option(name: str) -> str:
    """A setting's name inside a :class:`ComparisonError` message, spelled by whoever shows it."""
    return f"\x00{name}\x00"


class ComparisonError(ValueError):
    """Two runs that cannot be compared as asked: an unknown run, a metric not in both runs, an
    uncalibrated or weak judge, an invalid setting, values the statistics refuse.

    Every entry point maps it to its usage error (CLI exit 2, API 400 or 404, a UI notice, a pytest
    error that is neither pass nor fail). ``code`` says which problem it is (the API's error code),
    ``param`` the setting or run reference at fault. The message names settings by their keyword
    (``alpha``, ``allow_uncalibrated``); :meth:`message` spells them as an entry point does
    (``--allow-uncalibrated`` on the command line).
    """

    def __init__(self, template: str, *, code: str, param: str | None = None) -> None:
        self.template = template
        self.code = code
        self.param = param
        super().__init__(self.message())

    def message(self, spelling: Mapping[str, str] | None = None) -> str:
        """The message, each setting named as ``spelling`` says (default: its keyword)."""
        names = spelling or {}
        return _OPTION.sub(lambda m: names.get(m[1], m[1]), self.template)


@dataclass(frozen=True, slots=True)
class ItemTally:
    """How the items of one metric moved, on their means over epochs (candidate against baseline)."""

    better: int = 0
    worse: int = 0
    same: int = 0
    unpaired: int = 0  # measured in one run only


@dataclass(frozen=True, slots=True)
class ChangedItem:
    """An item whose mean score moved between the runs (or that one run did not measure), with what
    the two runs answered and the dataset item it asked."""

    item_id: str
    metric: str
    baseline: float | None  # the item's mean over epochs; None: not measured in that run
    candidate: float | None
    baseline_output: str | None = None  # the first epoch's output, or "error: ..."
    candidate_output: str | None = None
    input: DatasetItem | None = None  # the baseline's dataset item

    @property
    def delta(self) -> float:
        """Candidate minus baseline (0 when one side is missing)."""
        if self.baseline is None or self.candidate is None:
            return 0.0
        return self.candidate - self.baseline

    @property
    def paired(self) -> bool:
        """Measured in both runs."""
        return self.baseline is not None and self.candidate is not None


@dataclass(frozen=True, slots=True)
class Comparison:
    """The gate's finding on two runs: the verdict per metric and overall, the judges' calibrations,
    the items that changed (biggest losses first) and what to be wary of."""

    baseline: EvalRun
    candidate: EvalRun
    results: tuple[MetricResult, ...]
    verdict: GateVerdict
    # metric -> its judge's calibration (None: uncalibrated, allowed); metrics no judge grades are absent
    judges: Mapping[str, Calibration | None]
    changed: tuple[ChangedItem, ...]  # the first ``changed_limit``, biggest losses first
    changed_total: int  # changed items over every metric, shown or not
    tallies: Mapping[str, ItemTally]
    warnings: tuple[str, ...]
    alpha: float
    margin: float | None  # one number for every metric as asked, else None (see MetricResult.margin)
    decision: GateDecision  # the verdicts with the look and the alpha it spent
    not_gated: tuple[str, ...] = ()  # the candidate's metrics that the baseline lacks
    group_by: str | None = None  # the dataset metadata key whose groups were tested

    @property
    def look(self) -> int:
        """Which look of the baseline and candidate configuration this is (1, 2, ...)."""
        return self.decision.look

    @property
    def look_alpha(self) -> float:
        """The alpha this look spends."""
        return self.decision.look_alpha

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics compared, in order."""
        return tuple(r.metric.name for r in self.results)

    @property
    def uncalibrated(self) -> tuple[str, ...]:
        """Judge-graded metrics compared without a calibration of their judge (allowed by the caller)."""
        return tuple(name for name, calibration in self.judges.items() if calibration is None)


def run_document(run: EvalRun, *, spec: bool = False) -> dict[str, Any]:
    """A stored run as JSON-ready data, with its summary (``spec``: and the spec it ran, secrets
    redacted)."""
    data: dict[str, Any] = {
        "id": run.id,
        "name": run.name,
        "status": run.status.value,
        "dataset": run.dataset,
        "dataset_version": run.dataset_version,
        "target": run.target,
        "epochs": run.epochs,
        "items_total": run.items_total,
        "scorers": list(run.scorers),
        "created_ns": run.created_ns,
        "finished_ns": run.finished_ns,
        "summary": None if run.summary is None else run.summary.as_dict(),
    }
    if spec:
        data["spec"] = dict(run.spec)
    return data


def result_document(result: EvalResult) -> dict[str, Any]:
    """One result of a run (an item in one epoch) as JSON-ready data: the target's answer, usage and
    cost (amounts stay Money: the JSON writers keep their exact text), and each scorer's score with
    its ``details`` (null in runs stored before details were kept)."""
    r = result
    return {
        "item_id": r.item_id,
        "epoch": r.epoch,
        "position": r.position,
        "output": r.output,
        "error": r.error,
        "latency_ms": r.latency_ms,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "cost_usd": r.cost_usd,
        "judge_input_tokens": r.judge_input_tokens,
        "judge_output_tokens": r.judge_output_tokens,
        "judge_cost_usd": r.judge_cost_usd,
        "trace_id": r.trace_id,
        "cached": r.cached,
        "created_ns": r.created_ns,
        "scores": [
            {
                "scorer": s.scorer,
                "value": s.value,
                "passed": s.passed,
                "error": s.error,
                "reason": s.reason,
                "details": None if s.details is None else dict(s.details),
            }
            for s in r.scores
        ],
    }


def _changed_dict(c: ChangedItem) -> dict[str, Any]:
    return {
        "item_id": c.item_id,
        "metric": c.metric,
        "baseline": c.baseline,
        "candidate": c.candidate,
        "delta": c.delta if c.paired else None,
        "baseline_output": c.baseline_output,
        "candidate_output": c.candidate_output,
        "input": None if c.input is None else dict(c.input.input),
        "messages": None if c.input is None or not c.input.messages else list(c.input.messages),
    }


def comparison_document(comparison: Comparison) -> dict[str, Any]:
    """The comparison as JSON-ready data: the gate's JSON report (``render_json``: verdict, exit code,
    metrics with their judges) plus the runs, the warnings and the changed items with their tallies."""
    c = comparison
    document = gate_document(c.decision, c.baseline.id, c.candidate.id, c.judges, c.not_gated)
    return document | {
        "group_by": c.group_by,
        "runs": {"baseline": run_document(c.baseline), "candidate": run_document(c.candidate)},
        "warnings": list(c.warnings),
        "tallies": {
            name: {"better": t.better, "worse": t.worse, "same": t.same, "unpaired": t.unpaired}
            for name, t in c.tallies.items()
        },
        "changed_total": c.changed_total,
        "changed": [_changed_dict(item) for item in c.changed],
    }

"""Stored runs and judge calibrations written straight to the store, for tests of comparisons: the
values are exactly what a test says, with no model in the way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pilothouse.domain.calibrations import Calibration, CalibrationMetrics, Confusion
from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import EvalResult, EvalRun, RunStatus, ScoreRecord, SummaryBuilder
from pilothouse.evals.calibration import judged_metrics
from pilothouse.store.calibrations import CalibrationStore
from pilothouse.store.evals import EvalStore

# A spec whose metric "quality" is graded by a judge (so the gate asks for the judge's calibration).
JUDGED_SPEC: dict[str, Any] = {
    "judge": {"model": "judge"},
    "scorers": [
        {"type": "contains", "value": "{{topic}}"},
        {"type": "rubric", "name": "quality", "criteria": "Is the explanation right?"},
    ],
}

Value = float | None | Sequence[float | None]  # one value, or one per epoch


def judged_spec(judge_model: str) -> dict[str, Any]:
    """:data:`JUDGED_SPEC` with another judge model (another judge, another calibration)."""
    return {**JUDGED_SPEC, "judge": {"model": judge_model}}


def store_run(
    evals: EvalStore,
    scores: Mapping[str, Sequence[Value]],
    *,
    project: str = "default",
    spec: Mapping[str, Any] | None = None,
    status: RunStatus = RunStatus.COMPLETED,
    dataset: str = "fixed",
    epochs: int = 1,
    output: str = "out",
    name: str | None = None,
    prefix: str = "i",
    metadata: Sequence[Mapping[str, Any]] | None = None,
    latency_ms: Sequence[float] | None = None,
) -> EvalRun:
    """A run with the given scores per metric, item by item (items ``i000``, ``i001``, ...: ``prefix``
    and the position; a value of None is unmeasured, and an item unmeasured on every metric is a
    target error), with each item's ``metadata`` and each target call's ``latency_ms`` if given."""
    n = len(next(iter(scores.values())))
    items = [
        DatasetItem(f"{prefix}{k:03d}", {"k": k}, metadata=dict(metadata[k]) if metadata else {})
        for k in range(n)
    ]
    version, _ = evals.import_items(project, dataset, items)
    run = evals.create_run(
        project,
        name=name,
        spec=dict(spec or {}),
        dataset=dataset,
        dataset_version_id=version.id,
        dataset_version=version.version,
        target="test",
        epochs=epochs,
        items_total=n,
        scorers=list(scores),
    )
    results = []
    for k in range(n):
        for epoch in range(epochs):
            values = {name: _epoch_value(column[k], epoch) for name, column in scores.items()}
            failed = all(v is None for v in values.values())
            results.append(
                EvalResult(
                    run.id,
                    f"{prefix}{k:03d}",
                    epoch,
                    k + 1,
                    None if failed else f"{output} {k}",
                    error="boom" if failed else None,
                    latency_ms=None if failed or latency_ms is None else latency_ms[k],
                    scores=tuple(
                        ScoreRecord(name, v, None if v is None else v >= 1) for name, v in values.items()
                    ),
                )
            )
    evals.write_results(results)
    summary = SummaryBuilder(dict.fromkeys(scores, 1.0))
    summary.add_all(results)
    evals.set_run_status(run.id, status, summary.summary())
    found = evals.get_run(run.id)
    assert found is not None
    return found


def _epoch_value(value: Value, epoch: int) -> float | None:
    if isinstance(value, Sequence):
        return value[epoch]
    return value


def calibrate(
    evals: EvalStore,
    spec: Mapping[str, Any],
    metric: str,
    *,
    project: str = "default",
    kappa: float | None = 0.8,
    readable: bool = True,
) -> Calibration:
    """Store a calibration of the judge that grades ``metric`` in ``spec`` (``readable`` False: one
    that could read none of the judge's replies)."""
    judged = judged_metrics(spec)[metric]
    confusion = Confusion(tp=5, fn=1, fp=1, tn=5) if readable else Confusion()
    metrics = CalibrationMetrics(
        n=12,
        unmeasured=0 if readable else 12,
        confusion=confusion,
        agreement=10 / 12 if readable else None,
        kappa=kappa if readable else None,
        kappa_low=None,
        kappa_high=None,
        tpr=5 / 6 if readable else None,
        tnr=5 / 6 if readable else None,
        threshold=0.5,
        position_swap=None,
        flip_rate=None,
        flips=0,
        swap_checked=0,
        swap_note="not applicable",
    )
    return CalibrationStore(evals.store).add(
        project,
        fingerprint=judged.fingerprint,
        scorer_name=metric,
        scorer_type=judged.scorer_type,
        judge_model=judged.judge_model,
        identity={},
        metrics=metrics,
        judgements=[],
        labels_sha256="0" * 64,
        labels_source=None,
        judge_endpoint=None,
    )

"""Gated promotion of a prompt version: run the same eval on the version a label points at now and on
the candidate, through the evaluations service (:meth:`Evaluations.run` then
:meth:`Evaluations.compare_runs`, the quality gate, never statistics of its own), and move the label
only when the gate says ``pass``. The decision, passed or refused, goes in the prompt's audit list
with the two runs and the verdict per metric."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilothouse.domain.prompts import PromptRef, check_label
from pilothouse.evals import BUILT_IN_METRICS, Comparison, Evaluations
from pilothouse.evals.gate import GateVerdict
from pilothouse.evals.spec import parse_spec
from pilothouse.prompts import PromptNotFound, PromptRegistry

__all__ = ["PromotionError", "PromotionResult", "promote_prompt"]


class PromotionError(ValueError):
    """A promotion that cannot be attempted (an unknown version, a spec that cannot run, ...)."""


@dataclass(frozen=True, slots=True)
class PromotionResult:
    """What a promotion decided: ``moved`` is true when the label now points at the candidate."""

    name: str
    label: str
    candidate_version: int
    baseline_version: int | None  # where the label pointed (None: nowhere, so nothing to compare)
    verdict: GateVerdict
    moved: bool
    reason: str
    comparison: Comparison | None = None

    @property
    def exit_code(self) -> int:
        """As ``pilothouse gate``: 0 pass (moved), 1 regression, 3 inconclusive."""
        return self.verdict.exit_code

    def document(self) -> dict[str, Any]:
        """As JSON (what the audit list keeps as the decision's detail)."""
        detail: dict[str, Any] = {
            "verdict": self.verdict.value,
            "baseline_version": self.baseline_version,
            "candidate_version": self.candidate_version,
            "reason": self.reason,
        }
        if self.comparison is not None:
            detail["baseline_run"] = self.comparison.baseline.id
            detail["candidate_run"] = self.comparison.candidate.id
            detail["metrics"] = {
                r.metric.name: {"verdict": r.verdict.value, "delta": r.delta, "margin": r.margin}
                for r in self.comparison.results
            }
        return detail


async def promote_prompt(
    evaluations: Evaluations,
    registry: PromptRegistry,
    *,
    project_id: str,
    name: str,
    version: int,
    label: str,
    spec: Mapping[str, Any],
    base_dir: Path,
    actor: str | None,
    metrics: Sequence[str] = (),
    margin: Any = None,
    alpha: float | None = None,
    allow_uncalibrated: bool = False,
) -> PromotionResult:
    """Gate ``name@version`` against the version ``label`` points at, on the eval ``spec`` (a spec
    mapping whose ``target.prompt`` is set here, once for each version), and move ``label`` on pass.
    Raises :class:`PromotionError` for what cannot be attempted, and the evaluations service's own
    errors (``ComparisonError``, ``SpecError``, run errors) as they are."""
    check_label(label)
    try:
        candidate = registry.get(project_id, name, version=version)
    except PromptNotFound as exc:
        raise PromotionError(str(exc)) from None
    current = registry.prompts.get(project_id, name, label=label)
    if current is not None and current.version == version:
        raise PromotionError(f"{label!r} already points at {name}@{version}")
    if current is None:  # nothing to compare against: a typo ('prodution') must not pass silently
        raise PromotionError(
            f"prompt {name!r} has no label {label!r}: a promotion moves a label that exists; use "
            f"'pilothouse prompts label {name} {label} {version}' to give a label its first version"
        )
    specs = []
    for which in (current.version, candidate.version):
        target = dict(spec.get("target") or {})
        target.pop("messages", None)
        target["prompt"] = {"name": name, "version": which}
        data = {**spec, "target": target, "project": project_id}
        data.setdefault("name", f"promote {name}@{which}")
        specs.append(
            parse_spec(
                data,
                base_dir=base_dir,
                source="promotion spec",
                prompts=lambda _p, ref: _exact(registry, project_id, ref),
            )
        )
    scored = [scorer.name for scorer in specs[0].scorers]
    for metric in metrics:  # before any call: a typo must not cost two eval runs
        if metric not in scored and metric not in BUILT_IN_METRICS:
            known = ", ".join([*scored, *BUILT_IN_METRICS])
            raise PromotionError(f"--metric {metric!r} is not a metric of this eval (metrics: {known})")
    runs = [await evaluations.run(parsed) for parsed in specs]
    comparison = evaluations.compare_runs(
        runs[0],
        runs[1],
        metrics=metrics,
        margin=margin,
        alpha=alpha,
        allow_uncalibrated=allow_uncalibrated,
        project_id=project_id,
        changed_limit=0,
        record_look=True,
    )
    verdict = comparison.verdict
    now = registry.prompts.get(project_id, name, label=label)
    if verdict is GateVerdict.PASS and (now is None or now.version != current.version):
        moved_to = "nowhere" if now is None else f"version {now.version}"
        reason = f"{label!r} moved to {moved_to} while the evals ran; not promoted"
        result = PromotionResult(
            name, label, version, current.version, GateVerdict.INCONCLUSIVE, False, reason, comparison
        )
    elif verdict is GateVerdict.PASS:
        reason = "the gate passed: no metric is worse than its margin"
        result = PromotionResult(name, label, version, current.version, verdict, True, reason, comparison)
    else:
        reason = f"the gate's verdict is {verdict.value}; {label!r} stays at version {current.version}"
        result = PromotionResult(name, label, version, current.version, verdict, False, reason, comparison)
    if result.moved:
        registry.set_label(
            project_id, name, label, version, actor=actor, action="promote", detail=result.document()
        )
    else:
        registry.record_refusal(project_id, name, label, version, actor=actor, detail=result.document())
    return result


def _exact(registry: PromptRegistry, project_id: str, ref: PromptRef) -> Any:
    return registry.resolve(project_id, ref)

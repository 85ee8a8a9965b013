"""Assertions on one run: "this metric's mean is at least X", decided with the gate's statistics.

The evidence is per item (epochs averaged first), the interval a clustered bootstrap at confidence
``1 - 2 * alpha`` (so each side is a one-sided ``1 - alpha`` bound, as in the gate). Pass: the lower
bound reaches the minimum. Regression: the upper bound is below it. Otherwise inconclusive, with the
number of items that would likely decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pilothouse.evals.gate import GateVerdict
from pilothouse.evals.stats import Estimate, ValuesByItem, _normal_quantile, clustered_bootstrap, item_means

__all__ = ["AssertionResult", "check_minimum"]

DECISION_POWER = 0.8  # items_needed: the sample that decides with this probability at the observed mean


@dataclass(frozen=True, slots=True)
class AssertionResult:
    """The verdict on "``metric`` has a mean of at least ``minimum``"."""

    metric: str
    minimum: float
    verdict: GateVerdict
    estimate: Estimate | None
    unmeasured: int
    items_needed: int | None
    explanation: str


def check_minimum(
    metric: str,
    by_item: ValuesByItem,
    minimum: float,
    *,
    unmeasured: int = 0,
    alpha: float = 0.05,
) -> AssertionResult:
    """Decide whether a metric's mean over items reaches ``minimum`` (see the module)."""
    means = item_means(by_item)
    if not means:
        return AssertionResult(
            metric, minimum, GateVerdict.INCONCLUSIVE, None, unmeasured, None, "no item was measured"
        )
    estimate = clustered_bootstrap(by_item, confidence=1 - 2 * alpha)
    values = list(means.values())
    spread = _sd(values)
    level = f"{100 * (1 - alpha):g}%"
    shown = f"mean {estimate.mean:.4g} [{estimate.low:.4g}, {estimate.high:.4g}] over {len(values)} items"
    if spread == 0 or not math.isfinite(estimate.low):
        # every item scored the same (or one item): the interval says nothing the mean does not
        verdict = GateVerdict.PASS if estimate.mean >= minimum else GateVerdict.REGRESSION
        if len(values) < 2 and verdict is GateVerdict.PASS:
            verdict = GateVerdict.INCONCLUSIVE
    elif estimate.low >= minimum:
        verdict = GateVerdict.PASS
    elif estimate.high < minimum:
        verdict = GateVerdict.REGRESSION
    else:
        verdict = GateVerdict.INCONCLUSIVE
    needed = None
    if verdict is GateVerdict.INCONCLUSIVE and spread > 0 and estimate.mean != minimum:
        z = _normal_quantile(1 - alpha) + _normal_quantile(DECISION_POWER)
        needed = max(len(values) + 1, math.ceil((z * spread / abs(estimate.mean - minimum)) ** 2))
    if verdict is GateVerdict.PASS:
        text = f"{shown}: at least {minimum:g} with {level} confidence"
    elif verdict is GateVerdict.REGRESSION:
        text = f"{shown}: below {minimum:g} with {level} confidence"
    else:
        decide = f"; about {needed:,} items would likely decide" if needed else ""
        text = f"{shown}: cannot tell whether it reaches {minimum:g}{decide}"
    if unmeasured:
        text += f" ({unmeasured} unmeasured values left out)"
    return AssertionResult(metric, minimum, verdict, estimate, unmeasured, needed, text)


def _sd(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))

"""The targets of issue 20, checked by benchmarks/gate_simulations.py --quick (the gate's own decision
function, a tenth of the replications of the tables in docs/gate.md), with Monte-Carlo slack: a share
from R replications is allowed 3 standard errors above its target (4 for the worst of many cells)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.slow  # tens of thousands of gate decisions: minutes of CPU

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "gate_simulations.py"


def simulations() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gate_simulations", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gate_simulations"] = module
    spec.loader.exec_module(module)
    return module


def slack(p: float, reps: int, sds: float = 3.0) -> float:
    return sds * math.sqrt(p * (1 - p) / reps)


def test_the_targets_hold_in_the_quick_simulations() -> None:
    printed: list[str] = []
    f = simulations().run(quick=True, out=printed.append)
    assert any("P(regression) with no true change" in table for table in printed)
    cells = min(f.reps["false regressions, one metric"], f.reps["family-wise"])
    alarms, comparisons = f.false_regressions
    assert alarms / comparisons <= 0.05 + slack(0.05, comparisons)  # pooled over every cell
    assert f.worst_false_regression <= 0.05 + slack(0.05, cells, 4.0)
    passes, tries = f.false_passes
    assert passes / tries <= 0.05 + slack(0.05, tries)
    assert f.worst_false_pass <= 0.05 + slack(0.05, f.reps["false passes at the margin"], 4.0)
    assert f.erring_runs and f.erring_passes == 0
    assert f.power >= 0.85 - slack(0.85, f.reps["power"])
    assert f.worst_advice_decisive >= 0.75 - slack(0.75, f.reps["advice"] // 2)
    assert f.grouped_false_alarms <= 0.05 + slack(0.05, f.reps["grouped"], 4.0)
    assert f.ungrouped_false_alarms > f.grouped_false_alarms

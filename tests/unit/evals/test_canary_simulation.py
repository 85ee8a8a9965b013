"""The canary targets of issue 25, checked by benchmarks/canary_simulations.py's own simulation with few
replications (the sequential test the controller runs): A/A false rollback <= 5% and a 90% -> 85%
regression caught with a median of at most 2x the traces per arm of the fixed-horizon test at the same
alpha and 80% power. A share from R replications is allowed 3 standard errors above its target."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # thousands of looks: seconds of CPU

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "canary_simulations.py"


def simulations() -> ModuleType:
    spec = importlib.util.spec_from_file_location("canary_simulations", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["canary_simulations"] = module
    spec.loader.exec_module(module)
    return module


def test_aa_false_rollbacks_and_regression_sample_sizes() -> None:
    sims = simulations()
    reps = 150
    aa = sims.simulate(control=0.9, canary=0.9, reps=reps, every=25, most=20_000, seed=1)
    assert aa.rollbacks / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)
    assert aa.undecided == 0  # an A/A canary runs until it has the evidence to promote
    worse = sims.simulate(control=0.9, canary=0.85, reps=reps, every=25, most=20_000, seed=3)
    assert worse.rollbacks == reps
    fixed = sims.fixed_horizon_n(0.9, 0.85, alpha=0.05, power=0.8)
    assert float(np.median(worse.rollback_ns)) <= 2 * fixed
    # the baseline the table prints is what it claims: the fixed-horizon test's power at its n
    assert abs(sims.fixed_horizon_power(0.9, 0.85, fixed, 4000, seed=99) - 0.8) < 0.03

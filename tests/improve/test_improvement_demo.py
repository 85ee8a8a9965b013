"""The improvement demonstration (benchmarks/improvement_demo.py) end to end at its tiny size: 40
requests to the simulated teacher through a served gateway, curation, one optimiser trial, one
training step, the evals and gates on the test split and a canary. It asserts what the run produced
(datasets, runs, verdicts, the table), never how fast or how good the tiny model is."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _demo_module() -> object:
    spec = importlib.util.spec_from_file_location(
        "improvement_demo", ROOT / "benchmarks" / "improvement_demo.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["improvement_demo"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # starts servers and CLI processes, loads SmolLM2 and trains one step
def test_the_demonstration_runs_end_to_end_at_tiny_size(tmp_path: Path) -> None:
    demo = _demo_module()
    workdir = tmp_path / "demo"
    assert demo.main(["--size", "tiny", "--workdir", str(workdir), "--threads", "1"]) == 0  # type: ignore[attr-defined]
    facts = json.loads((workdir / "facts.json").read_text())
    # production traffic: every request answered by the teacher, with the gold label
    assert facts["items"] == 40 and facts["traffic_right"] == 40
    assert "spam-train" in facts["curation"] and "spam-test" in facts["curation"]
    # the optimiser either stored a version (then promote gave a gate verdict) or found nothing better
    assert facts["optimise_exit"] in (0, 1)
    if facts["optimise_exit"] == 0:
        assert facts["promote_exit"] in (0, 1, 3)
    # a trained adapter version, with its model card
    assert facts["model_card"]["steps"] == 1
    assert (workdir / "adapters" / "spam-distilled").is_dir()
    # every arm evaluated on the same test items, priced, with latencies; the teacher agrees with itself
    runs = facts["runs"]
    assert {"teacher", "smollm2-start", "smollm2-distilled"} <= set(runs)
    sizes = {run["items"] for run in runs.values()}
    assert len(sizes) == 1 and sizes.pop() > 0
    assert runs["teacher"]["agreement"] == 1.0
    assert all(run["priced"] == run["items"] for run in runs.values())
    # the serving precision was chosen on the validation split (both precisions evaluated there)
    assert set(facts["validation_runs"]) == {"float32", "int8"}
    assert facts["precision"] in ("float32", "int8")
    assert all(run["items"] > 0 for run in facts["validation_runs"].values())
    # the gate's verdict on distilled vs teacher, and the canary's state
    assert facts["gate_exit"] in (0, 1, 3)
    assert facts["canary_decision"] in ("canary-promote", "canary-rollback", "running")
    assert facts["canary_requests"] > 0
    table = (workdir / "table.md").read_text()
    assert "SmolLM2-135M + LoRA (distilled" in table and "distilled vs teacher" in table
    assert facts["size"] == "tiny"
    # --table-only takes the run's size from the workdir, and refuses another
    assert demo.main(["--table-only", "--workdir", str(workdir)]) == 0  # type: ignore[attr-defined]
    assert "Size `tiny`" in (workdir / "table.md").read_text()
    with pytest.raises(SystemExit) as refused:
        demo.main(["--table-only", "--size", "full", "--workdir", str(workdir)])  # type: ignore[attr-defined]
    assert refused.value.code == 2

"""Gate speed: the decision on 10,000 items x 10 metrics, and ``pilothouse gate`` on two stored runs.

    .venv/bin/python benchmarks/gate_speed.py [--items 10000] [--metrics 10] [--no-cli]

1. ``decide`` (pilothouse.evals.gate, with the report's per-run intervals, as the CLI calls it) on
   five pass/fail and five 1-5 judge metrics; baseline in the same run: the previous code's
   ``compare_metric`` per metric (src/pilothouse/evals/gate.py of commit d019b49, the last before
   issue 20, loaded into a temporary module over the same statistics module). Median of three rounds.
2. ``pilothouse gate`` end to end (a new process: start-up, loading the runs from SQLite, the
   decision, the reports) on two runs stored with those values; median of three. Target: under 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pilothouse.evals.gate import MetricInput, MetricSpec, MetricValues, decide

ROOT = Path(__file__).resolve().parents[1]


def median_s(call: Callable[[], object], rounds: int = 3) -> float:
    """Median over rounds of one call's wall time, in seconds."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def previous_gate() -> types.ModuleType | None:
    """The gate module of d019b49 (the last commit before issue 20), or None where git cannot show it."""
    try:
        source = subprocess.run(
            ["git", "show", "d019b49:src/pilothouse/evals/gate.py"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        return None
    module = types.ModuleType("previous_gate")
    sys.modules["previous_gate"] = module  # dataclasses look their module up
    exec(compile(source, "d019b49:src/pilothouse/evals/gate.py", "exec"), module.__dict__)
    return module


def runs(items: int, metrics: int) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(name, kind, baseline values, candidate values) per metric: half pass/fail, half 1-5 scores."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(metrics):
        if k % 2 == 0:
            base = (rng.random(items) < 0.8).astype(np.float64)
            flip = rng.random(items) < 0.1
            cand = np.where(flip, 1 - base, base)
            out.append((f"check_{k}", "binary", base, cand))
        else:
            quality = rng.standard_normal(items)
            base = np.clip(np.round(3 + quality + rng.normal(0, 0.5, items)), 1, 5)
            cand = np.clip(np.round(3 + quality + rng.normal(0, 0.5, items)), 1, 5)
            out.append((f"judge_{k}", "continuous", base, cand))
    return out


def store(url: str, data: list[tuple[str, str, np.ndarray, np.ndarray]]) -> tuple[str, str]:
    """Two completed runs with these values, stored straight into the database at ``url``."""
    from pilothouse.domain.datasets import DatasetItem
    from pilothouse.domain.evals import EvalResult, RunStatus, ScoreRecord
    from pilothouse.store.evals import EvalStore
    from pilothouse.store.sql import SqlStore

    evals = EvalStore(SqlStore.from_url(url))
    items = len(data[0][2])
    version, _ = evals.import_items("default", "speed", [DatasetItem(f"i{k}") for k in range(items)])
    ids = []
    for run_index, spec in enumerate(({"variant": "base"}, {"variant": "candidate"})):
        run = evals.create_run(
            "default",
            name=None,
            spec=spec,
            dataset="speed",
            dataset_version_id=version.id,
            dataset_version=version.version,
            target="bench",
            epochs=1,
            items_total=items,
            scorers=[name for name, _, _, _ in data],
        )
        results = [
            EvalResult(
                run.id,
                f"i{k}",
                0,
                k + 1,
                "out",
                scores=tuple(
                    ScoreRecord(name, float(values[run_index][k]), None) for name, _, *values in data
                ),
            )
            for k in range(items)
        ]
        for start in range(0, items, 2000):
            evals.write_results(results[start : start + 2000])
        evals.set_run_status(run.id, RunStatus.COMPLETED)
        ids.append(run.id)
    evals.store.close()
    return ids[0], ids[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--no-cli", action="store_true", help="time the decision only")
    args = parser.parse_args()
    data = runs(args.items, args.metrics)
    by_run = [
        [({f"i{k}": [v] for k, v in enumerate(values.tolist())}) for values in (base, cand)]
        for _, _, base, cand in data
    ]
    entries = [
        MetricInput(MetricSpec(name, kind), MetricValues(b), MetricValues(c))  # type: ignore[arg-type]
        for (name, kind, _, _), (b, c) in zip(data, by_run, strict=True)
    ]
    decide(entries)  # warm caches (the exact tests' tables, the sign-flip draws)
    new = median_s(lambda: decide(entries))
    print(f"decide, {args.items:,} items x {args.metrics} metrics (with the report's intervals): {new:.3f} s")
    old = previous_gate()
    if old is None:
        print("previous code: not available (no git, or no commit d019b49)")
    else:
        specs = [old.MetricSpec(name, kind) for name, kind, _, _ in data]

        def previous() -> None:
            results = [
                old.compare_metric(spec, old.MetricValues(b), old.MetricValues(c))
                for spec, (b, c) in zip(specs, by_run, strict=True)
            ]
            old.overall_verdict(results)

        print(f"previous code (d019b49's compare_metric per metric, same data): {median_s(previous):.3f} s")
    if args.no_cli:
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/speed.db"
        base, cand = store(url, data)
        binary = Path(sys.executable).parent / "pilothouse"
        command = [str(binary), "gate", "--baseline", base, "--candidate", cand, "--report-dir", f"{tmp}/r"]
        env = {**os.environ, "PILOTHOUSE_DATABASE_URL": url}

        def cli() -> None:
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            assert done.returncode in (0, 1, 3), done.stderr

        version = [str(binary), "--version"]
        start = median_s(lambda: subprocess.run(version, env=env, capture_output=True, check=True))
        size = f"{args.items:,} items x {args.metrics} metrics"
        print(f"pilothouse gate on two stored runs ({size}): {median_s(cli):.3f} s")
        print(f"  of which starting the CLI ('pilothouse --version'): {start:.3f} s")


if __name__ == "__main__":
    main()

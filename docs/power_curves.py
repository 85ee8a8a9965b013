"""Regenerate the simulation tables in docs/gate.md.

    .venv/bin/python docs/power_curves.py > /tmp/tables.md      # about two minutes on a laptop core

Every number is the share of simulated comparisons in which the gate (pilothouse.evals, the same code the
CLI runs) gives a verdict, at alpha 0.05 and the default margin of 2 points. Seeds are fixed, so the
output is reproducible; with 1,000 comparisons per cell a share p is within about 2 * sqrt(p(1-p)/1000)
of its long-run value (+-1.4 points at 5%, +-2.5 at 80%).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt

from pilothouse.evals.gate import GateVerdict, non_inferiority_verdict
from pilothouse.evals.stats import _bootstrap_means, paired_difference

Array = npt.NDArray[np.float64]
Pair = tuple[Array, Array]
ALPHA = 0.05
MARGIN = 0.02
PASS_MARGINS = (MARGIN, 0.05)  # the default first
MEAN_PASS = 2 / 3  # items' pass probabilities come from Beta(2, 1)


def by_item(values: Array) -> dict[str, list[float]]:
    return {f"i{i}": row.tolist() for i, row in enumerate(values)}


def verdict(base: Array, cand: Array, margin: float = MARGIN) -> GateVerdict:
    return verdicts(base, cand, (margin,))[0]


def verdicts(base: Array, cand: Array, margins: tuple[float, ...]) -> list[GateVerdict]:
    """The gate's verdict at each margin (one comparison, as compare_metric makes it)."""
    comparison = paired_difference(by_item(base), by_item(cand), confidence=1 - 2 * ALPHA)
    return [non_inferiority_verdict(comparison, margin=m, alpha=ALPHA) for m in margins]


def prompt_change(rng: np.random.Generator, n: int, agreement: float, drop: float) -> Pair:
    """Baseline drawn per item; the candidate copies it except on 1 - agreement of items, losing ``drop``."""
    base = (rng.random(n) < rng.beta(2.0, 1.0, n)).astype(np.float64)
    discordant = 1 - agreement
    flip_pass = (discordant + drop) / 2 / MEAN_PASS
    flip_fail = (discordant - drop) / 2 / (1 - MEAN_PASS)
    u = rng.random(n)
    cand = np.where(base == 1.0, np.where(u < flip_pass, 0.0, 1.0), np.where(u < flip_fail, 1.0, 0.0))
    return base[:, None], cand[:, None]


def correlated_repeats(rng: np.random.Generator, n: int, epochs: int) -> Pair:
    """Same distribution; each run draws its own per-item pass probability, shared by its epochs."""
    difficulty = rng.beta(2.0, 1.0, n)
    runs = []
    for _ in range(2):
        p = rng.beta(difficulty + 1e-3, 1 - difficulty + 1e-3)
        runs.append((rng.random((n, epochs)) < p[:, None]).astype(np.float64))
    return runs[0], runs[1]


def judge_scores(rng: np.random.Generator, n: int) -> Pair:
    """1-5 judge scores, 3 epochs: item quality + a per-run item effect + epoch noise, rounded."""
    quality = rng.normal(0.0, 1.0, n)

    def run() -> Array:
        latent = (quality + rng.normal(0, 0.7, n))[:, None] + rng.normal(0, 0.7, (n, 3))
        return np.clip(np.round(3 + latent), 1, 5)

    return run(), run()


def rare_failures(rng: np.random.Generator, n: int) -> Pair:
    """A score near 0.95 that drops to 0 on 5% of outputs: differences with heavy tails."""

    def run() -> Array:
        return np.where(rng.random((n, 1)) < 0.05, 0.0, rng.uniform(0.9, 1.0, (n, 1)))

    return run(), run()


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def power_tables(comparisons: int) -> str:
    sizes, drops, agreements = (50, 100, 200, 300, 500, 1000), (0.0, 0.02, 0.05, 0.10), (0.80, 0.90, 0.95)
    out: list[str] = []
    pass_rows: dict[float, dict[int, list[str]]] = {m: {n: [] for n in sizes} for m in PASS_MARGINS}
    for agreement in agreements:
        rows = []
        for n in sizes:
            row = [str(n)]
            for drop in drops:
                if drop > 1 - agreement + 1e-9:
                    row.append("n/a")  # a drop can't exceed the share of items that changed
                    continue
                rng = np.random.default_rng([n, int(1000 * agreement), int(1000 * drop)])
                found = [
                    verdicts(*prompt_change(rng, n, agreement, drop), PASS_MARGINS)
                    for _ in range(comparisons)
                ]
                at_default = [v[0] for v in found]
                row.append(percent(at_default.count(GateVerdict.REGRESSION) / comparisons))
                if drop == 0.0:
                    for i, margin in enumerate(PASS_MARGINS):
                        passes = sum(v[i] is GateVerdict.PASS for v in found)
                        pass_rows[margin][n].append(percent(passes / comparisons))
            rows.append(row)
        out.append(
            f"**Agreement {100 * agreement:.0f}%** (share of items where both versions give the same result)"
        )
        out.append("")
        out.append(table(["items", *(f"drop {100 * d:.0f} pts" for d in drops)], rows))
        out.append("")
    for margin in PASS_MARGINS:
        out.append(f"**P(pass) when nothing changed** (drop 0, margin {100 * margin:.0f} points)")
        out.append("")
        out.append(
            table(
                ["items", *(f"agreement {100 * a:.0f}%" for a in agreements)],
                ([str(n), *pass_rows[margin][n]] for n in sizes),
            )
        )
        out.append("")
    return "\n".join(out).rstrip()


def repeats_table(comparisons: int) -> str:
    rows = []
    for epochs in (1, 5, 10):
        rng = np.random.default_rng([300, epochs])
        gate = naive = 0
        for _ in range(comparisons):
            base, cand = correlated_repeats(rng, 300, epochs)
            gate += verdict(base, cand) is GateVerdict.REGRESSION
            flat = paired_difference(
                by_item(base.reshape(-1, 1)), by_item(cand.reshape(-1, 1)), confidence=0.9
            )
            naive += flat.p_decrease < ALPHA
        rows.append([str(epochs), percent(gate / comparisons), percent(naive / comparisons)])
    return table(["epochs", "gate (item means)", "naive (each epoch an item)"], rows)


def small_sample_table(comparisons: int) -> str:
    models: dict[str, Callable[[np.random.Generator, int], Pair]] = {
        "judge 1-5, 3 epochs": judge_scores,
        "rare failures": rare_failures,
    }
    rows = []
    for name, model in models.items():
        for n in (10, 20, 50):
            rng = np.random.default_rng([n, len(name)])
            gate = expanded = plain = 0
            method = ""
            for k in range(comparisons):
                base, cand = model(rng, n)
                c = paired_difference(by_item(base), by_item(cand), confidence=0.9)
                method = c.method
                gate += c.p_decrease < ALPHA
                b = paired_difference(
                    by_item(base), by_item(cand), confidence=0.9, method="bootstrap", resamples=1000, seed=k
                )
                expanded += b.high < 0
                diffs = cand.mean(axis=1) - base.mean(axis=1)
                if np.any(diffs != diffs[0]):
                    plain += float(np.quantile(_bootstrap_means(diffs, 1000, k), 1 - ALPHA)) < 0
            rows.append(
                [
                    name,
                    str(n),
                    f"{percent(gate / comparisons)} ({method})",
                    percent(expanded / comparisons),
                    percent(plain / comparisons),
                ]
            )
    return table(["model", "items", "gate", "expanded bootstrap", "percentile bootstrap"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--comparisons", type=int, default=1000, help="simulated comparisons per cell")
    args = parser.parse_args()
    start = time.perf_counter()
    print("### P(regression): pass/fail metric, one epoch, alpha 0.05, margin 2 points\n")
    print(power_tables(args.comparisons))
    print("\n### False alarms with correlated repeats (no true change, 300 items)\n")
    print(repeats_table(args.comparisons))
    print("\n### False alarms on small samples (no true change), by method\n")
    print(small_sample_table(args.comparisons))
    print(f"\n<!-- {args.comparisons} comparisons per cell; {time.perf_counter() - start:.0f} s -->")


if __name__ == "__main__":
    main()

"""Simulations of the quality gate, through its own decision function (pilothouse.evals.gate.decide,
what every entry point calls), printed as the Markdown tables of docs/gate.md.

    .venv/bin/python benchmarks/gate_simulations.py            # the tables of docs/gate.md (~8 min, one core)
    .venv/bin/python benchmarks/gate_simulations.py --quick    # a tenth of the replications (~1 min)

Seeds are fixed, so the output is reproducible. A share p estimated from R replications is within
about 2 sqrt(p (1 - p) / R) of its long-run value (the Monte-Carlo error, printed under each table).
tests/unit/evals/test_gate_simulation.py runs --quick and checks the targets of issue 20.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pilothouse.evals.gate import (
    GateDecision,
    GateVerdict,
    MetricInput,
    MetricSpec,
    MetricValues,
    decide,
    look_alpha,
)

Array = npt.NDArray[np.float64]
ALPHA = 0.05
MARGIN = 0.02
MEAN_PASS = 2 / 3  # items' pass probabilities come from Beta(2, 1)
BINARY = MetricSpec("pass_fail", "binary")
JUDGE = MetricSpec("judge_1_to_5", "continuous")
FAMILY_NS = (10, 30, 100, 300, 1000)
AGREEMENTS = (0.70, 0.80, 0.90, 0.95, 0.99)


def reps_note(reps: int, what: str = "comparisons per cell") -> str:
    """How many replications, and the Monte-Carlo error at 5% that comes with them."""
    return f"{reps} {what}; Monte-Carlo error about +-{100 * mc_error(0.05, reps):.1f} points at 5%."


def mc_error(p: float, reps: int) -> float:
    """Two standard errors of a share estimated from ``reps`` replications."""
    return 2 * math.sqrt(max(p * (1 - p), 0.05 * 0.95 if p == 0 else 0.0) / reps)


def values(array: Array, ids: Sequence[str], unmeasured: Sequence[str] = ()) -> MetricValues:
    """An (items, epochs) array as one run's values; ``unmeasured`` items errored."""
    skip = set(unmeasured)
    rows = array.tolist()
    by_item = dict(zip(ids, rows, strict=True))
    for k in skip:
        del by_item[k]
    return MetricValues(by_item, len(skip) * array.shape[1], frozenset(skip))


def ids_for(n: int) -> list[str]:
    return [f"i{k:05d}" for k in range(n)]


def gate(
    pairs: Sequence[tuple[MetricSpec, Array, Array]],
    *,
    look: int = 1,
    margin: float | None = MARGIN,
    groups: dict[str, str] | None = None,
    unmeasured: Sequence[str] = (),
    alpha: float = ALPHA,
) -> GateDecision:
    """The gate's decision on simulated runs (one (items, epochs) array per run and metric)."""
    n = pairs[0][1].shape[0]
    ids = ids_for(n)
    entries = [
        MetricInput(spec, values(base, ids), values(cand, ids, unmeasured), margin, groups)
        for spec, base, cand in pairs
    ]
    return decide(entries, alpha=alpha, look=look, estimates=False)


# --- models ----------------------------------------------------------------------------------------------


def correlated_uniforms(rng: np.random.Generator, n: int, metrics: int, rho: float) -> Array:
    """(n, metrics) uniforms correlating ``rho`` across metrics: each metric takes a shared uniform
    with probability sqrt(rho), its own otherwise."""
    shared = rng.random((n, 1))
    own = rng.random((n, metrics))
    take = rng.random((n, metrics)) < math.sqrt(rho)
    return np.where(take, shared, own)


def correlated_normals(rng: np.random.Generator, shape: tuple[int, ...], metrics: int, rho: float) -> Array:
    """Standard normals of shape (*shape, metrics) correlating ``rho`` across metrics."""
    shared = rng.standard_normal((*shape, 1))
    own = rng.standard_normal((*shape, metrics))
    return math.sqrt(rho) * shared + math.sqrt(1 - rho) * own


def binary_change(
    rng: np.random.Generator, n: int, agreement: float, drop: float, metrics: int = 1, rho: float = 0.0
) -> list[tuple[Array, Array]]:
    """Single-epoch pass/fail runs: the baseline drawn per item (difficulty from Beta(2, 1)); the
    candidate copies it except on 1 - agreement of the items, split between losses and gains so
    that its pass rate is ``drop`` lower. Metrics share the items' difficulty; their outcomes and
    flips correlate ``rho``."""
    difficulty = rng.beta(2.0, 1.0, n)
    u_base = correlated_uniforms(rng, n, metrics, rho)
    u_flip = correlated_uniforms(rng, n, metrics, rho)
    discordant = 1 - agreement
    flip_pass = (discordant + drop) / 2 / MEAN_PASS
    flip_fail = (discordant - drop) / 2 / (1 - MEAN_PASS)
    out = []
    for m in range(metrics):
        base = (u_base[:, m] < difficulty).astype(np.float64)
        u = u_flip[:, m]
        cand = np.where(base == 1.0, np.where(u < flip_pass, 0.0, 1.0), np.where(u < flip_fail, 1.0, 0.0))
        out.append((base[:, None], cand[:, None]))
    return out


def binary_repeats(
    rng: np.random.Generator, n: int, epochs: int, metrics: int = 1, rho: float = 0.0
) -> list[tuple[Array, Array]]:
    """Pass/fail runs with repeats and no true change: each run draws its own pass probability per
    item and metric around the item's difficulty (Beta, concentration 4), shared by its epochs;
    outcomes correlate ``rho`` across metrics."""
    difficulty = rng.beta(2.0, 1.0, n)
    runs = []
    for _ in range(2):
        p = rng.beta(4 * difficulty[:, None] + 1e-3, 4 * (1 - difficulty[:, None]) + 1e-3, (n, metrics))
        u = correlated_uniforms(rng, n * epochs, metrics, rho).reshape(n, epochs, metrics)
        runs.append((u < p[:, None, :]).astype(np.float64))
    return [(runs[0][:, :, m], runs[1][:, :, m]) for m in range(metrics)]


def judge_scores(
    rng: np.random.Generator,
    n: int,
    epochs: int = 1,
    metrics: int = 1,
    rho: float = 0.0,
    shift: float = 0.0,
    noise: float = 0.5,
) -> list[tuple[Array, Array]]:
    """1-5 judge scores: the item's quality (standard normal) plus noise per run, epoch and metric
    (correlated ``rho`` across metrics), rounded and clipped; the candidate's latent is ``shift``
    lower (0: no true change)."""
    quality = rng.standard_normal(n)
    runs = []
    for run in range(2):
        e = correlated_normals(rng, (n, epochs), metrics, rho) * noise
        latent = 3 + quality[:, None, None] + e - (shift if run == 1 else 0.0)
        runs.append(np.clip(np.round(latent), 1, 5))
    return [(runs[0][:, :, m], runs[1][:, :, m]) for m in range(metrics)]


def score_drop(rng: np.random.Generator, n: int, agreement: float, drop: float) -> tuple[Array, Array]:
    """1-5 judge scores, one epoch: the candidate's score equals the baseline's except on
    1 - agreement of the items, where it moves one point down or up so that its mean is ``drop``
    lower (exactly: the expected difference is -drop)."""
    base = np.clip(np.round(3 + rng.standard_normal(n)), 1, 5)
    discordant = 1 - agreement
    down, up = (discordant + drop) / 2, (discordant - drop) / 2
    u = rng.random(n)
    step = np.where(u < down, -1.0, np.where(u < down + up, 1.0, 0.0))
    return base[:, None], (base + step)[:, None]  # scores may leave 1-5 by a point: the mean is what counts


# --- the studies ---------------------------------------------------------------------------------------


@dataclass
class Table:
    """A Markdown table of shares, with the replications behind each cell."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def share(verdicts: Iterator[GateVerdict] | list[GateVerdict], verdict: GateVerdict) -> float:
    found = list(verdicts)
    return sum(v is verdict for v in found) / len(found)


@dataclass
class Findings:
    """The figures the targets of issue 20 are checked on (tests/unit/evals/test_gate_simulation.py)."""

    worst_false_regression: float = 0.0
    worst_false_pass: float = 0.0
    worst_exact_size: float = 0.0
    false_regressions: list[int] = field(default_factory=lambda: [0, 0])  # pooled: (alarms, comparisons)
    false_passes: list[int] = field(default_factory=lambda: [0, 0])
    erring_passes: int = 0  # the first four rows of the table (the last two show chance passes)
    erring_runs: int = 0
    power: float = 0.0
    worst_advice_decisive: float = 1.0
    grouped_false_alarms: float = 0.0
    ungrouped_false_alarms: float = 0.0
    reps: dict[str, int] = field(default_factory=dict)


def false_regressions_one_metric(reps: int, f: Findings) -> Table:
    table = Table(
        "P(regression) with no true change: pass/fail, one epoch, one metric (look 1)",
        ["items", *[f"agreement {int(100 * a)}%" for a in AGREEMENTS]],
    )
    rng = np.random.default_rng(1)
    for n in FAMILY_NS:
        row = [str(n)]
        for agreement in AGREEMENTS:
            rate = share(
                (
                    gate([(BINARY, *p) for p in binary_change(rng, n, agreement, 0.0)]).verdict
                    for _ in range(reps)
                ),
                GateVerdict.REGRESSION,
            )
            f.worst_false_regression = max(f.worst_false_regression, rate)
            f.false_regressions[0] += round(rate * reps)
            f.false_regressions[1] += reps
            row.append(pct(rate))
        table.rows.append(row)
    table.note = reps_note(reps)
    return table


def family_wise(reps: int, f: Findings) -> Table:
    table = Table(
        "Family-wise P(any metric a regression) with no true change (look 1, Holm over the metrics)",
        ["data", "metrics", "correlation", *[f"n {n}" for n in FAMILY_NS]],
    )
    rng = np.random.default_rng(2)
    models: list[tuple[str, MetricSpec, Callable[[int, int, float], list[tuple[Array, Array]]]]] = [
        ("pass/fail, 1 epoch, agreement 90%", BINARY, lambda n, k, r: binary_change(rng, n, 0.9, 0.0, k, r)),
        ("pass/fail, 3 epochs", BINARY, lambda n, k, r: binary_repeats(rng, n, 3, k, r)),
        ("judge 1-5, 1 epoch", JUDGE, lambda n, k, r: judge_scores(rng, n, 1, k, r)),
        ("judge 1-5, 3 epochs", JUDGE, lambda n, k, r: judge_scores(rng, n, 3, k, r)),
    ]
    for label, spec, draw in models:
        for metrics, rho in ((1, 0.0), (5, 0.0), (5, 0.8), (10, 0.0), (10, 0.8)):
            row = [label, str(metrics), "-" if metrics == 1 else f"{rho:g}"]
            for n in FAMILY_NS:
                specs = [MetricSpec(f"{spec.name}{k}", spec.kind) for k in range(metrics)]
                rate = share(
                    (
                        gate(
                            [(s, b, c) for s, (b, c) in zip(specs, draw(n, metrics, rho), strict=True)]
                        ).verdict
                        for _ in range(reps)
                    ),
                    GateVerdict.REGRESSION,
                )
                f.worst_false_regression = max(f.worst_false_regression, rate)
                f.false_regressions[0] += round(rate * reps)
                f.false_regressions[1] += reps
                row.append(pct(rate))
            table.rows.append(row)
    table.note = reps_note(reps) + " Judge margins are 2% of the baseline mean."
    return table


def false_passes_at_the_margin(reps: int, f: Findings) -> list[Table]:
    ns = (5, 10, 20, 30, 50, 100, 300, 1000)
    binary = Table(
        "P(pass) when the candidate is exactly the margin worse: pass/fail, one epoch (look 1)",
        ["items", "agr. 70%", "agr. 80%", "agr. 90%", "agr. 95%", "agr. 98%", "agr. 99% (margin 1 pt)"],
    )
    rng = np.random.default_rng(3)
    for n in ns:
        row = [str(n)]
        for agreement, margin in (
            (0.7, MARGIN),
            (0.8, MARGIN),
            (0.9, MARGIN),
            (0.95, MARGIN),
            (0.98, MARGIN),
            (0.99, 0.01),
        ):
            rate = share(
                (
                    gate(
                        [(BINARY, *p) for p in binary_change(rng, n, agreement, margin)], margin=margin
                    ).verdict
                    for _ in range(reps)
                ),
                GateVerdict.PASS,
            )
            f.worst_false_pass = max(f.worst_false_pass, rate)
            f.false_passes[0] += round(rate * reps)
            f.false_passes[1] += reps
            row.append(pct(rate))
        binary.rows.append(row)
    binary.note = (
        f"{reps} comparisons per cell (margin 2 points unless said); Monte-Carlo error about "
        f"+-{100 * mc_error(0.05, reps):.1f} points at 5%. At 98% agreement every changed item is a loss."
    )
    scores = Table(
        "P(pass) when the candidate is exactly the margin worse: judge 1-5, one epoch, margin 0.1 (look 1)",
        ["items", "agr. 70%", "agr. 80%", "agr. 90%"],
    )
    for n in ns:
        row = [str(n)]
        for agreement in (0.7, 0.8, 0.9):
            rate = share(
                (
                    gate([(JUDGE, *score_drop(rng, n, agreement, 0.1))], margin=0.1).verdict
                    for _ in range(reps)
                ),
                GateVerdict.PASS,
            )
            f.worst_false_pass = max(f.worst_false_pass, rate)
            f.false_passes[0] += round(rate * reps)
            f.false_passes[1] += reps
            row.append(pct(rate))
        scores.rows.append(row)
    scores.note = "Agreement: share of items whose score did not move; a moved score moves one point."
    return [binary, scores]


def exact_pass_sizes(reps: int, f: Findings) -> Table:
    """The pass test of single-epoch pass/fail data, exactly: every table of n items weighed by its
    probability when the candidate is exactly the margin (2 points) worse (no simulation error)."""
    from math import lgamma

    from pilothouse.evals.gate._inference import EXACT_UNCONDITIONAL_MAX, _tango_scores, _unconditional_table
    from pilothouse.evals.stats import _normal_quantile

    level = look_alpha(ALPHA, 1)
    table = Table(
        "Exact P(pass) at the margin (2 points), pass/fail, one epoch, look 1 (alpha 0.045): the gate's test "
        "and Tango's score test alone",
        ["items", "test", *[f"agr. {int(100 * a)}%" for a in (0.7, 0.8, 0.9, 0.95, 0.98)]],
    )
    for n in (5, 10, 20, 30, 50, 100, 200, 300, 400, 600, 1000):
        b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
        ok = b + c <= n
        bs, cs = b[ok], c[ok]
        log_fact = np.array([lgamma(i + 1) for i in range(n + 1)])
        log_coef = log_fact[n] - log_fact[bs] - log_fact[cs] - log_fact[n - bs - cs]
        tango = _tango_scores(bs, cs, n, -MARGIN) > _normal_quantile(1 - level)
        exact = (
            _unconditional_table(n, MARGIN)[bs, cs] < level if n <= EXACT_UNCONDITIONAL_MAX else tango.copy()
        )
        exact[(bs == 0) & (cs == 0)] = (1 - MARGIN) ** n < level  # identical results: Clopper-Pearson
        rows = {"the gate's": exact, "Tango alone": tango}
        for label, passes in rows.items():
            if label == "Tango alone" and n > EXACT_UNCONDITIONAL_MAX:
                continue
            row = [str(n), label if n <= EXACT_UNCONDITIONAL_MAX else "the gate's (Tango)"]
            for agreement in (0.7, 0.8, 0.9, 0.95, 0.98):
                p_dec, p_inc = (1 - agreement + MARGIN) / 2, (1 - agreement - MARGIN) / 2
                with np.errstate(divide="ignore", invalid="ignore"):
                    log_p = (
                        log_coef
                        + np.where(bs > 0, bs * math.log(p_dec), 0.0)
                        + np.where(cs > 0, cs * (math.log(p_inc) if p_inc > 0 else -np.inf), 0.0)
                        + (n - bs - cs) * math.log(agreement)
                    )
                size = float(np.exp(log_p)[passes].sum())
                if label == "the gate's":
                    f.worst_exact_size = max(f.worst_exact_size, size)
                row.append(f"{100 * size:.2f}%")
            table.rows.append(row)
    table.note = (
        "Computed over every 2x2 table (no simulation error); the gate decides identical results by the "
        "Clopper-Pearson rule. Up to 300 items it uses the exact unconditional test, above it Tango's."
    )
    return table


def exact_regression_sizes(reps: int, f: Findings) -> Table:
    """The mid-p McNemar test's size exactly: over the number of discordant items (binomial in n) and
    their split (binomial, 1/2) when nothing changed (no simulation error)."""
    from pilothouse.evals.gate._inference import _binomial_half_tail, mid_p_mcnemar

    level = look_alpha(ALPHA, 1)
    table = Table(
        "Exact P(regression) with no true change: mid-p McNemar, one metric, look 1 (alpha 0.045)",
        ["items", *[f"agr. {int(100 * a)}%" for a in AGREEMENTS]],
    )

    def size_given(d: int) -> float:
        # mid-p falls as the losses b rise: find the fewest losses that reject, then their tail
        lo, hi = 0, d + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if mid_p_mcnemar(mid, d - mid)[0] < level:
                hi = mid
            else:
                lo = mid + 1
        return _binomial_half_tail(lo, d) if lo <= d else 0.0

    by_discordant = [size_given(d) for d in range(1001)]
    for n in (10, 30, 100, 300, 1000):
        row = [str(n)]
        for agreement in AGREEMENTS:
            r = 1 - agreement
            log_terms = [
                math.lgamma(n + 1)
                - math.lgamma(d + 1)
                - math.lgamma(n - d + 1)
                + d * math.log(r)
                + (n - d) * math.log(agreement)
                for d in range(n + 1)
            ]
            size = sum(math.exp(t) * by_discordant[d] for d, t in enumerate(log_terms))
            f.worst_exact_size = max(f.worst_exact_size, size)
            row.append(f"{100 * size:.2f}%")
        table.rows.append(row)
    worst = max(by_discordant[1:])
    table.note = (
        f"Given the number of discordant items alone the size can reach {100 * worst:.2f}% (at "
        f"{by_discordant.index(worst)} discordant items); over the items' chance of being discordant it "
        "stays below the look's alpha."
    )
    return table


def erring_candidates(reps: int, f: Findings) -> Table:
    table = Table(
        "A candidate that errors exactly where it fails: P(pass) (look 1), and the same candidate "
        "failing there",
        ["items", "drop", "margin", "errors on", "passes when erring", "passes when failing", "of"],
    )
    rng = np.random.default_rng(4)
    for n, drop, margin, where in (
        (300, 0.10, MARGIN, "every failure"),
        (1000, 0.05, MARGIN, "every failure"),
        (300, 0.10, 0.05, "every failure"),
        (300, 0.10, MARGIN, "its new failures"),
        (50, 0.05, MARGIN, "every failure"),
        (300, 0.05, MARGIN, "every failure"),
    ):
        passes = failing_passes = 0
        for _ in range(reps):
            ((base, cand),) = binary_change(rng, n, 0.9, drop)
            fails = cand[:, 0] == 0.0
            if where == "its new failures":
                fails &= base[:, 0] == 1.0
            lost = [k for k, failed in zip(ids_for(n), fails, strict=True) if failed]
            if len(lost) == n:
                lost = lost[1:]
            passes += gate([(BINARY, base, cand)], margin=margin, unmeasured=lost).verdict is GateVerdict.PASS
            failing_passes += gate([(BINARY, base, cand)], margin=margin).verdict is GateVerdict.PASS
        if (n, drop, margin) != (50, 0.05, MARGIN) and (n, drop, margin) != (300, 0.05, MARGIN):
            f.erring_passes += passes
            f.erring_runs += reps
        table.rows.append(
            [
                str(n),
                f"{100 * drop:g} pts",
                f"{100 * margin:g} pts",
                where,
                str(passes),
                str(failing_passes),
                str(reps),
            ]
        )
    table.note = (
        "Scored at their worst, the items a candidate could not score count as the failures they hide, so "
        "erring is never better than failing. A candidate a little worse than the margin on few items can "
        "still pass by chance, erring or failing alike (the last two rows); the code before issue 20 dropped "
        "those items and passed every such candidate whose measured items agreed."
    )
    return table


def power(reps: int, f: Findings) -> Table:
    table = Table(
        "Power: P(regression) for a 5-point drop, 300 items, agreement 90%, one metric",
        ["look (alpha)", "P(regression)"],
    )
    rng = np.random.default_rng(5)
    draws = [binary_change(rng, 300, 0.9, 0.05)[0] for _ in range(reps)]
    for label, alpha in (
        ("look 1 (0.045)", ALPHA),
        ("alpha 0.05 (no look spending, for comparison)", ALPHA / 0.9),
    ):
        rate = share((gate([(BINARY, b, c)], alpha=alpha).verdict for b, c in draws), GateVerdict.REGRESSION)
        if alpha == ALPHA:
            f.power = rate
        table.rows.append([label, pct(rate)])
    table.note = (
        f"{reps} comparisons; Monte-Carlo error about +-{100 * mc_error(0.87, reps):.1f} points at 87%."
    )
    return table


def advice(reps: int, f: Findings) -> Table:
    table = Table(
        "Following the advice: an unchanged candidate, inconclusive at look 1, gated again on the advised "
        "items",
        [
            "data",
            "items at look 1",
            "inconclusive at look 1",
            "median advised",
            "decisive at look 2",
            "regression at look 2",
        ],
    )
    rng = np.random.default_rng(6)
    cases: list[tuple[str, MetricSpec, int, Callable[[int], tuple[Array, Array]]]] = [
        ("pass/fail, agreement 90%", BINARY, 100, lambda n: binary_change(rng, n, 0.9, 0.0)[0]),
        ("pass/fail, agreement 90%", BINARY, 300, lambda n: binary_change(rng, n, 0.9, 0.0)[0]),
        ("pass/fail, agreement 97%", BINARY, 100, lambda n: binary_change(rng, n, 0.97, 0.0)[0]),
        ("judge 1-5, 1 epoch", JUDGE, 50, lambda n: judge_scores(rng, n)[0]),
        ("judge 1-5, 3 epochs", JUDGE, 100, lambda n: judge_scores(rng, n, 3)[0]),
    ]
    for label, spec, n1, draw in cases:
        inconclusive, advised, decisive, regressions = 0, [], 0, 0
        for _ in range(reps):
            base, cand = draw(n1)
            first = gate([(spec, base, cand)], margin=None if spec is JUDGE else MARGIN)
            if first.verdict is not GateVerdict.INCONCLUSIVE:
                continue
            inconclusive += 1
            n2 = first.results[0].items_needed
            assert n2 is not None and n2 > n1
            advised.append(n2)
            more_base, more_cand = draw(n2 - n1)  # the same items plus new ones
            second = gate(
                [(spec, np.concatenate([base, more_base]), np.concatenate([cand, more_cand]))],
                look=2,
                margin=None if spec is JUDGE else MARGIN,
            )
            decisive += second.verdict is not GateVerdict.INCONCLUSIVE
            regressions += second.verdict is GateVerdict.REGRESSION
        share_decisive = decisive / inconclusive if inconclusive else math.nan
        if inconclusive:
            f.worst_advice_decisive = min(f.worst_advice_decisive, share_decisive)
        table.rows.append(
            [
                label,
                str(n1),
                pct(inconclusive / reps),
                f"{int(np.median(advised)):,}" if advised else "-",
                pct(share_decisive) if inconclusive else "-",
                pct(regressions / inconclusive) if inconclusive else "-",
            ]
        )
    table.note = (
        "The advice plans the next look's alpha (0.0025) with power 0.85 for a true difference of 0, from "
        "the margin and the observed discordance (pass/fail) or spread (judge scores); judge margins are 2% "
        "of the "
        f"baseline mean. {reps} first looks per row."
    )
    return table


def sequential_use(reps: int, f: Findings) -> Table:
    table = Table(
        "Looking again: error rates over up to 3 looks (more items each time, as advised) and over 5 re-runs",
        ["use", "truth", "alpha spent over looks (the gate)", "alpha 0.05 at every look (no spending)"],
    )
    rng = np.random.default_rng(7)
    for truth, drop in (("no change", 0.0), ("exactly the margin worse", MARGIN)):
        wrong = GateVerdict.REGRESSION if drop == 0 else GateVerdict.PASS
        rates = []
        for spend in (True, False):
            errors = 0
            for _ in range(reps):
                ((base, cand),) = binary_change(rng, 200, 0.9, drop)
                for look in (1, 2, 3):
                    decision = gate(
                        [(BINARY, base, cand)],
                        look=look if spend else 1,
                        alpha=ALPHA if spend else ALPHA / 0.9,
                    )
                    if decision.verdict is not GateVerdict.INCONCLUSIVE or look == 3:
                        break
                    n2 = decision.results[0].items_needed or len(base) * 2
                    ((mb, mc),) = binary_change(rng, n2 - len(base), 0.9, drop)
                    base, cand = np.concatenate([base, mb]), np.concatenate([cand, mc])
                errors += decision.verdict is wrong
            rates.append(errors / reps)
        table.rows.append(["add items until decided", truth, pct(rates[0]), pct(rates[1])])
    rates = []
    for spend in (True, False):
        passes = 0
        for _ in range(reps):
            for look in range(1, 6):  # re-run the candidate (fresh outputs on the same 300 items)
                ((base, cand),) = binary_change(rng, 300, 0.9, MARGIN)
                decision = gate(
                    [(BINARY, base, cand)], look=look if spend else 1, alpha=ALPHA if spend else ALPHA / 0.9
                )
                if decision.verdict is GateVerdict.PASS:
                    passes += 1
                    break
        rates.append(passes / reps)
    table.rows.append(
        [
            "re-run the candidate until it passes (5 tries)",
            "exactly the margin worse",
            pct(rates[0]),
            pct(rates[1]),
        ]
    )
    table.note = f"Pass/fail, one epoch, agreement 90%, 200 items at look 1; {reps} sequences per cell."
    return table


def grouped(reps: int, f: Findings) -> Table:
    table = Table(
        "Grouped items (30 documents of 10 items) with a document effect and no overall change: "
        "P(regression)",
        ["data", "group effect", "items as independent", "--group-by document"],
    )
    n, size = 300, 10
    docs = {k: f"doc{i // size}" for i, k in enumerate(ids_for(n))}
    for label, spread in (
        ("pass/fail, agreement 80%", 0.10),
        ("pass/fail, agreement 80%", 0.15),
        ("judge 1-5", 0.4),
    ):
        rates = []
        for groups in (None, docs):
            alarms = 0
            draw_rng = np.random.default_rng(int(1000 * spread))
            for _ in range(reps):
                if label.startswith("judge"):
                    quality = draw_rng.standard_normal(n)
                    effect = np.repeat(draw_rng.normal(0, spread, n // size), size)  # per document, mean 0
                    base = np.clip(np.round(3 + quality + draw_rng.normal(0, 0.5, n)), 1, 5)
                    cand = np.clip(np.round(3 + quality + effect + draw_rng.normal(0, 0.5, n)), 1, 5)
                    pair = (JUDGE, base[:, None], cand[:, None])
                else:
                    # the change helps some documents and hurts others: the loss share per document
                    tilt = np.repeat(draw_rng.uniform(-spread, spread, n // size), size)
                    difficulty = draw_rng.beta(2.0, 1.0, n)
                    base = (draw_rng.random(n) < difficulty).astype(np.float64)
                    u = draw_rng.random(n)
                    flip_pass = np.clip((0.2 + 2 * tilt) / 2 / MEAN_PASS, 0, 1)
                    flip_fail = np.clip((0.2 - 2 * tilt) / 2 / (1 - MEAN_PASS), 0, 1)
                    cand = np.where(
                        base == 1.0, np.where(u < flip_pass, 0.0, 1.0), np.where(u < flip_fail, 1.0, 0.0)
                    )
                    pair = (BINARY, base[:, None], cand[:, None])
                alarms += gate([pair], groups=groups).verdict is GateVerdict.REGRESSION
            rates.append(alarms / reps)
        f.ungrouped_false_alarms = max(f.ungrouped_false_alarms, rates[0])
        f.grouped_false_alarms = max(f.grouped_false_alarms, rates[1])
        table.rows.append([label, f"{spread:g}", pct(rates[0]), pct(rates[1])])
    table.note = (
        "Pass/fail: each document's items lose (or gain) with a document-specific tilt, uniform in +-the "
        "group effect, mean 0. Judge: a per-document shift, normal with that SD. " + reps_note(reps)
    )
    return table


def run(
    quick: bool,
    out: Callable[[str], None] = print,
    only: str | None = None,
    reps_override: int | None = None,
) -> Findings:
    """Every study (or ``only`` the one of that name), printed as Markdown; returns the figures the
    targets are checked on. ``reps_override`` replaces the study's replications."""
    scale = 10 if quick else 1
    f = Findings()
    studies: list[tuple[str, int, Callable[[int, Findings], Table | list[Table]]]] = [
        ("false regressions, one metric", 1000, false_regressions_one_metric),
        ("family-wise", 200, family_wise),
        ("false passes at the margin", 1000, false_passes_at_the_margin),
        ("exact sizes", 1, exact_pass_sizes),
        ("exact regression sizes", 1, exact_regression_sizes),
        ("erring candidates", 1000, erring_candidates),
        ("power", 2000, power),
        ("advice", 300, advice),
        ("looks", 600, sequential_use),
        ("grouped", 1000, grouped),
    ]
    if only is not None and only not in {name for name, _, _ in studies}:
        raise SystemExit(f"no study {only!r}; the studies: {', '.join(name for name, _, _ in studies)}")
    for name, reps, study in studies:
        if only is not None and name != only:
            continue
        reps = reps_override or max(reps // scale, 20)
        f.reps[name] = reps
        started = time.perf_counter()
        tables = study(reps, f)
        for table in tables if isinstance(tables, list) else [tables]:
            out(table.markdown())
        print(f"<!-- {name}: {time.perf_counter() - started:.0f} s -->\n", file=sys.stderr)
    return f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the replications (~1 minute)")
    parser.add_argument("--only", metavar="STUDY", help="run one study, e.g. 'family-wise'")
    parser.add_argument("--reps", type=int, metavar="N", help="replications per cell instead of the study's")
    args = parser.parse_args()
    command = "benchmarks/gate_simulations.py" + (" --quick" if args.quick else "")
    print(f"<!-- {command}; look-1 alpha {look_alpha(ALPHA, 1):g} -->\n")
    f = run(args.quick, only=args.only, reps_override=args.reps)
    if args.only:
        return
    print(
        f"Worst false regression rate {pct(f.worst_false_regression)}, worst false pass rate at the margin "
        f"{pct(f.worst_false_pass)} (pooled {pct(f.false_regressions[0] / f.false_regressions[1])} and "
        f"{pct(f.false_passes[0] / f.false_passes[1])}), erring candidates passed {f.erring_passes} of "
        f"{f.erring_runs} (the first four rows), power "
        f"{pct(f.power)}, advice decisive at worst {pct(f.worst_advice_decisive)}, grouped false alarms "
        f"{pct(f.grouped_false_alarms)} (items as independent: up to {pct(f.ungrouped_false_alarms)})."
    )


if __name__ == "__main__":
    main()

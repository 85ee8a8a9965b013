"""A label from the detector's word spans: is "the response has unsupported words" a better verdict than
the shipped threshold on the mean log-likelihood (degenerate: nearly every response "unsupported")?

    python benchmarks/hallucination_labels.py [--dev-documents 12] [--test-documents 8]
        [--bump-documents 15,40] [--faithbench-sources 15] [--threads 1]

Rules: unsupported when at least K words are flagged (``spans.WordRule``, as shipped), or when at
least a share S of the content words are. K or S is chosen on SummEdits' ``evaluation`` split only
(every row of ``--dev-documents`` seeded documents), by balanced accuracy; SummEdits ``test``, BUMP
(references and edited summaries of seeded articles: detection) and FaithBench (every sample of
seeded sources; hallucinated = Unwanted) are then measured once, next to the shipped threshold's
label. Per-token evidence is cached with the same ids as ``benchmarks/hallucination.py``."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from hallucination import _id, load_faithbench  # noqa: E402
from hallucination_spans import (  # noqa: E402
    common_arguments,
    edit_id,
    lazy_evidence,
    print_cost,
    seeded_bump_pairs,
)

from pilothouse.quality.hallucination.detector import features_for, shipped_coefficients  # noqa: E402
from pilothouse.quality.hallucination.features import TokenEvidence  # noqa: E402
from pilothouse.quality.hallucination.spans import WordRule, word_evidence  # noqa: E402
from pilothouse.quality.hallucination.train import compute_evidence, load_summedits  # noqa: E402

Row = dict[str, Any]  # id, doc, summary, ok (1 = supported)


def seeded_docs(rows: Sequence[Row], count: int, seed: int) -> set[str]:
    docs = sorted({r["doc"] for r in rows})
    return set(random.Random(seed).sample(docs, min(count, len(docs))))


def summedits(args: argparse.Namespace, split: str, count: int) -> list[Row]:
    rows = load_summedits(args.data, split)
    if split == "evaluation":  # the documents benchmarks/hallucination_spans.py chose (shared cache)
        chosen = seeded_docs(
            [r for r in rows if r["label"] in ("0", 0) and r.get("original_summary")], count, args.seed
        )
    else:
        chosen = seeded_docs(rows, count, args.seed)
    return [
        {"id": r["id"], "doc": r["doc"], "summary": r["summary"], "ok": int(r["label"])}
        for r in rows
        if r["doc"] in chosen
    ]


def bump(args: argparse.Namespace) -> list[Row]:
    rows: dict[str, Row] = {}
    for p in seeded_bump_pairs(args):
        ref = _id("ref", p["article_id"], p["reference_summary"])
        rows[ref] = {"id": ref, "doc": p["article"], "summary": p["reference_summary"], "ok": 1}
        rows[edit_id(p)] = {"id": edit_id(p), "doc": p["article"], "summary": p["edited_summary"], "ok": 0}
    return list(rows.values())


def faithbench(args: argparse.Namespace) -> list[Row]:
    samples = load_faithbench(args.data)
    chosen = seeded_docs(samples, args.faithbench_sources, args.seed)
    return [
        {"id": s["id"], "doc": s["doc"], "summary": s["summary"], "ok": 1 - s["hallucinated"]}
        for s in samples
        if s["doc"] in chosen
    ]


def balanced_accuracy(flagged: np.ndarray, ok: np.ndarray) -> float:
    """Mean of the two recalls: supported rows not flagged, unsupported rows flagged."""
    good, bad = ok == 1, ok == 0
    if not good.any() or not bad.any():
        return float("nan")
    return float(((~flagged[good]).mean() + flagged[bad].mean()) / 2)


def interval(
    flagged: np.ndarray, ok: np.ndarray, seed: int, resamples: int = 2000
) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ok), (resamples, len(ok)))
    values = [balanced_accuracy(flagged[p], ok[p]) for p in picks]
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return balanced_accuracy(flagged, ok), float(low), float(high)


def counts(rows: Sequence[Row], tokens: dict[str, Sequence[TokenEvidence]], rule: WordRule) -> np.ndarray:
    """(flagged words, content words) per row."""
    out = []
    for r in rows:
        found = word_evidence(r["summary"], r["doc"], tokens[r["id"]])
        out.append((sum(rule.flags(w) for w in found), max(1, sum(w.content for w in found))))
    return np.array(out, dtype=float)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common_arguments(parser)
    parser.add_argument("--test-documents", type=int, default=8)
    args = parser.parse_args()
    evidence = lazy_evidence(args.threads)

    started, cpu = time.perf_counter(), time.process_time()
    rule, shipped = WordRule(), shipped_coefficients()
    sets: list[tuple[str, list[Row], str]] = [
        (
            "SummEdits evaluation (chosen on)",
            summedits(args, "evaluation", args.dev_documents),
            "summedits-evaluation",
        ),
        ("SummEdits test", summedits(args, "test", args.test_documents), "summedits-test"),
        ("BUMP detection", bump(args), "bump"),
        ("FaithBench", faithbench(args), "faithbench"),
    ]
    tokens: dict[str, Sequence[TokenEvidence]] = {}
    (dev_name, dev, dev_cache), *held_out = sets
    tokens.update(compute_evidence(dev, args.cache / f"{dev_cache}.tokens.jsonl", evidence))
    dev_counts, dev_ok = counts(dev, tokens, rule), np.array([r["ok"] for r in dev])
    candidates: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
        (f">= {k} flagged words", lambda c, k=k: c[:, 0] >= k) for k in (1, 2, 3, 4, 5, 6, 8)
    ] + [
        (f">= {s:.0%} of content words flagged", lambda c, s=s: c[:, 0] / c[:, 1] >= s)
        for s in (0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3)
    ]
    scored = [(balanced_accuracy(pick(dev_counts), dev_ok), name, pick) for name, pick in candidates]
    for value, name, _ in scored:
        print(f"  dev {name:36} balanced accuracy {100 * value:.1f}")
    best_value, best_name, best = max(scored, key=lambda s: s[0])
    print(f"chosen on SummEdits' evaluation split: unsupported when {best_name} ({100 * best_value:.1f})")
    print("\n| set | items (unsupported) | shipped threshold's label | spans' label | share the spans flag |")
    print("|---|---|---|---|---|")
    for name, rows, cache in [(dev_name, dev, dev_cache), *held_out]:
        if name != dev_name:
            tokens.update(compute_evidence(rows, args.cache / f"{cache}.tokens.jsonl", evidence))
        ok = np.array([r["ok"] for r in rows])
        threshold_flags = np.array(
            [
                shipped.score(features_for(r["summary"], r["doc"], tokens[r["id"]])) < shipped.threshold
                for r in rows
            ]
        )
        span_flags = best(counts(rows, tokens, rule))
        a, b = interval(threshold_flags, ok, args.seed), interval(span_flags, ok, args.seed)
        print(
            f"| {name} | {len(rows)} ({int((ok == 0).sum())}) | {100 * a[0]:.1f} [{100 * a[1]:.1f}, "
            f"{100 * a[2]:.1f}] (flags {100 * threshold_flags.mean():.0f}%) | {100 * b[0]:.1f} "
            f"[{100 * b[1]:.1f}, {100 * b[2]:.1f}] | {100 * span_flags.mean():.0f}% |"
        )
    print_cost(started, cpu)


if __name__ == "__main__":
    main()

"""Choose the detector's context selection (budget) on SummEdits' ``evaluation`` split only.

    python benchmarks/hallucination_selection.py [--budgets none,128,256,384,512] [--documents 10]

For each budget (``none``: the context read whole, cut to 1,000 tokens, as before) SmolLM2's per-token
evidence is computed for every row of ``--documents`` seeded random documents of the evaluation split
(or all of them), cached per budget under ``.pilothouse/hallucination/``, and the shipped score (mean
log p(response | context)) is measured: AUROC (consistent above inconsistent), the within-document
pairwise ranking (a consistent summary above an inconsistent edit of the same seed summary, ties half),
and balanced accuracy at a threshold chosen on the other documents (5-fold, grouped by document).
SummEdits ``test``, BUMP and FaithBench are never read here. Prints the CPU seconds per row too.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pilothouse.quality.hallucination.lm import LanguageModelEvidence  # noqa: E402
from pilothouse.quality.hallucination.train import (  # noqa: E402
    balanced_accuracy,
    compute_features,
    load_summedits,
)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(a consistent row outscores an inconsistent one), ties half."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def pairwise(rows: list[dict], scores: dict[str, float]) -> tuple[float, int]:
    """Share of (consistent, inconsistent) pairs of one seed summary ranked right, and the pair count."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["doc"], r["original_summary"]), []).append(r)
    right, n = 0.0, 0
    for group in groups.values():
        for good in (r for r in group if int(r["label"]) == 1):
            for bad in (r for r in group if int(r["label"]) == 0):
                a, b = scores[good["id"]], scores[bad["id"]]
                right += 1.0 if a > b else 0.5 if a == b else 0.0
                n += 1
    return (right / n if n else float("nan")), n


def grouped_ba(rows: list[dict], scores: dict[str, float], folds: int = 5) -> float:
    """Balanced accuracy with the threshold chosen on the other folds' documents (mean over folds)."""
    docs = sorted({r["doc"] for r in rows})
    fold_of = {d: i % folds for i, d in enumerate(random.Random(0).sample(docs, len(docs)))}
    results = []
    for k in range(folds):
        train = [r for r in rows if fold_of[r["doc"]] != k]
        held = [r for r in rows if fold_of[r["doc"]] == k]
        if not train or not held:
            continue
        s, y = [scores[r["id"]] for r in train], [int(r["label"]) for r in train]
        best = max(sorted(set(s)), key=lambda t: balanced_accuracy(s, y, t))
        value = balanced_accuracy([scores[r["id"]] for r in held], [int(r["label"]) for r in held], best)
        if value == value:
            results.append(value)
    return float(np.mean(results)) if results else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hallucination")
    parser.add_argument("--budgets", default="none,128,256,384,512")
    parser.add_argument("--documents", type=int, default=None, help="seeded random documents (default all)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=REPO / ".pilothouse" / "hallucination")
    args = parser.parse_args()
    rows = load_summedits(args.data, "evaluation")
    if args.documents:
        docs = sorted({r["doc"] for r in rows})
        chosen = set(random.Random(args.seed).sample(docs, min(args.documents, len(docs))))
        rows = [r for r in rows if r["doc"] in chosen]
    labels = np.array([int(r["label"]) for r in rows])
    print(
        f"SummEdits evaluation: {len(rows)} rows of {len({r['doc'] for r in rows})} documents"
        f" (seed {args.seed}), {int(labels.sum())} consistent; load average {os.getloadavg()[0]:.2f}"
    )
    evidence = LanguageModelEvidence(threads=args.threads, context_budget=None)
    print(
        f"  {'budget':>7} {'AUROC %':>8} {'pairwise %':>11} {'pairs':>6} {'grouped BA %':>13}"
        f" {'CPU s/row':>10}"
    )
    for budget in [b.strip() for b in args.budgets.split(",") if b.strip()]:
        evidence.context_budget = None if budget == "none" else int(budget)
        evidence.forget_context()
        cpu = time.process_time()
        before = 0
        cache = args.cache / f"summedits-evaluation.ctx-{budget}.tokens.jsonl"
        if cache.is_file():
            before = len(cache.read_text(encoding="utf-8").splitlines())
        feats = compute_features(rows, cache, lambda s, d: evidence.evidence(s, d).tokens, progress=False)
        computed = max(1, len(rows) - before)
        scores = {r["id"]: feats[r["id"]]["mean_logprob"] for r in rows}
        values = np.array([scores[r["id"]] for r in rows])
        pair, n = pairwise(rows, scores)
        print(
            f"  {budget:>7} {100 * auroc(values, labels):8.1f} {100 * pair:11.1f} {n:6}"
            f" {100 * grouped_ba(rows, scores):13.1f} {(time.process_time() - cpu) / computed:10.2f}"
            f"   load {os.getloadavg()[0]:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()

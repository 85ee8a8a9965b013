"""Fit the detector's logistic regression on SummEdits' ``evaluation`` split (Apache-2.0) and write the
coefficients the package ships::

    python -m pilothouse.quality.hallucination.train --data ../shared/data/hallucination

Only the ``evaluation`` split is read: ``test`` (and BUMP, FaithBench) stay held out for
``benchmarks/hallucination.py``. Features are computed with the bundled SmolLM2 (rows grouped by
document so one context pass serves all its summaries) and
cached as JSON lines, so a second run only refits. The fit is deterministic (``--limit`` samples with a
seed): by default pairwise, a conditional logistic regression over (consistent, inconsistent) edits of
the same seed summary, then one scale and bias over all rows; ``--method pointwise`` fits a plain
L2-regularised logistic regression over the rows. The threshold maximises balanced accuracy on the
same rows."""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pilothouse.quality.hallucination.features import FEATURES, LogisticModel

DEFAULT_DATA = Path("../shared/data/hallucination")
COEFFICIENTS = Path(__file__).with_name("coefficients.json")


def load_summedits(data: Path, split: str) -> list[dict[str, Any]]:
    """SummEdits rows of one split (``evaluation`` or ``test``), in file order, label 1 = consistent."""
    folder = data / "summedits"
    files = sorted(folder.glob("summedits_*.json"))
    if not files:
        raise FileNotFoundError(f"no SummEdits files (summedits_*.json) in {folder}")
    rows: list[dict[str, Any]] = []
    for file in files:
        rows += [r for r in json.loads(file.read_text(encoding="utf-8")) if r["split"] == split]
    return rows


def stratified(
    rows: Sequence[dict[str, Any]], key: str, limit: int | None, seed: int
) -> list[dict[str, Any]]:
    """A seeded sample of ``limit`` rows with each ``key`` value in proportion (all rows when None)."""
    if limit is None or limit >= len(rows):
        return list(rows)
    rng = random.Random(seed)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row[key]), []).append(row)
    chosen: list[dict[str, Any]] = []
    for _, group in sorted(groups.items()):
        take = max(1, round(limit * len(group) / len(rows)))
        chosen += rng.sample(group, min(take, len(group)))
    return chosen[:limit]


def compute_features(
    rows: Sequence[dict[str, Any]],
    cache: Path,
    featurise: Callable[[str, str], dict[str, float]],
    *,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Features per row id, read from ``cache`` (JSON lines) where present, computed and appended
    otherwise; rows are visited grouped by document so the context cache is reused."""
    known: dict[str, dict[str, float]] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                known[record["id"]] = record["features"]
    todo = sorted((r for r in rows if r["id"] not in known), key=lambda r: r["doc"])
    cache.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with cache.open("a", encoding="utf-8") as out:
        for done, row in enumerate(todo, 1):
            known[row["id"]] = featurise(row["summary"], row["doc"])
            out.write(json.dumps({"id": row["id"], "features": known[row["id"]]}) + "\n")
            out.flush()
            if progress and done % 25 == 0:
                rate = (time.perf_counter() - started) / done
                print(f"  {done}/{len(todo)} rows, {rate:.2f} s/row", file=sys.stderr, flush=True)
    return known


def fit_logistic(
    x: Sequence[Sequence[float]], y: Sequence[int], names: Sequence[str], *, l2: float = 1.0
) -> LogisticModel:
    """L2-regularised logistic regression on standardised features (Newton's method), with the
    threshold that maximises balanced accuracy on the training rows."""
    import numpy as np

    data = np.asarray(x, dtype=float)
    target = np.asarray(y, dtype=float)
    means = data.mean(axis=0)
    scales = data.std(axis=0)
    scales[scales == 0] = 1.0
    z = np.hstack([(data - means) / scales, np.ones((len(data), 1))])
    weights = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ weights, -40, 40)))
        gradient = z.T @ (p - target) + penalty * weights
        hessian = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    model = LogisticModel(
        tuple(names),
        tuple(map(float, means)),
        tuple(map(float, scales)),
        tuple(map(float, weights[:-1])),
        float(weights[-1]),
    )
    scores = [model.score(dict(zip(names, row, strict=True))) for row in data.tolist()]
    best = max(sorted(set(scores)), key=lambda t: balanced_accuracy(scores, list(map(int, y)), t))
    return LogisticModel(model.features, model.means, model.scales, model.weights, model.bias, round(best, 6))


def fit_pairwise(
    rows: Sequence[dict[str, Any]],
    features: dict[str, dict[str, float]],
    names: Sequence[str],
    *,
    l2: float = 1.0,
) -> LogisticModel:
    """Conditional logistic regression: the weights are learnt from pairs of a consistent and an
    inconsistent summary of the same seed summary and document (SummEdits' ``original_summary``), so
    what differs between documents and seeds (length, style, the document's own predictability) cannot
    stand in for support; then one scale and bias map the weighted sum to P(supported) over all rows.
    Returns raw-unit weights (means 0, scales 1) and the threshold that maximises balanced accuracy."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["doc"], row.get("original_summary", row["doc"])), []).append(row)
    x: list[list[float]] = []
    y: list[int] = []
    for group in groups.values():
        for good in (r for r in group if int(r["label"]) == 1):
            for bad in (r for r in group if int(r["label"]) == 0):
                diff = [features[good["id"]][n] - features[bad["id"]][n] for n in names]
                x += [diff, [-d for d in diff]]
                y += [1, 0]
    if not x:
        raise ValueError("no (consistent, inconsistent) pair shares a seed summary: cannot fit pairwise")
    paired = fit_logistic(x, y, names, l2=l2)
    raw = [w / s for w, s in zip(paired.weights, paired.scales, strict=True)]
    sums = [[sum(w * features[r["id"]][n] for w, n in zip(raw, names, strict=True))] for r in rows]
    scale = fit_logistic(sums, [int(r["label"]) for r in rows], ["sum"], l2=0.0)
    a = scale.weights[0] / scale.scales[0]
    b = scale.bias - a * scale.means[0]
    model = LogisticModel(
        tuple(names), (0.0,) * len(names), (1.0,) * len(names), tuple(a * w for w in raw), b
    )
    scores = [model.score(features[r["id"]]) for r in rows]
    labels = [int(r["label"]) for r in rows]
    best = max(sorted(set(scores)), key=lambda t: balanced_accuracy(scores, labels, t))
    return LogisticModel(model.features, model.means, model.scales, model.weights, model.bias, round(best, 6))


def balanced_accuracy(scores: Sequence[float], labels: Sequence[int], threshold: float) -> float:
    """Mean of the recall of supported (label 1, score >= threshold) and of unsupported rows."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    if not pos or not neg:
        return math.nan
    return (sum(s >= threshold for s in pos) / len(pos) + sum(s < threshold for s in neg) / len(neg)) / 2


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: compute (or read cached) features, fit, write the coefficients."""
    parser = argparse.ArgumentParser(
        prog="python -m pilothouse.quality.hallucination.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with summedits/ (default: %(default)s)"
    )
    parser.add_argument(
        "--features-cache",
        type=Path,
        default=Path(".pilothouse/hallucination/summedits-evaluation.jsonl"),
        help="JSON-lines cache of computed features (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=COEFFICIENTS, help="where to write (default: the package's file)"
    )
    parser.add_argument(
        "--method",
        choices=("pairwise", "pointwise"),
        default="pairwise",
        help="pairwise: weights from (consistent, inconsistent) edits of one seed summary (default);"
        " pointwise: plain logistic regression over rows",
    )
    parser.add_argument("--l2", type=float, default=1.0, help="L2 penalty (default: %(default)s)")
    parser.add_argument("--features", default=",".join(FEATURES), help="comma-separated features to use")
    parser.add_argument(
        "--limit", type=int, default=None, help="fit on a seeded sample of N rows, stratified by label"
    )
    parser.add_argument("--seed", type=int, default=7, help="the sample's seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    args = parser.parse_args(argv)
    try:
        rows = stratified(load_summedits(args.data, "evaluation"), "label", args.limit, args.seed)
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        print(f"error: cannot read SummEdits: {exc}", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.features.split(",") if n.strip()]
    unknown = sorted(set(names) - set(FEATURES))
    if unknown:
        print(f"error: unknown feature {unknown[0]!r} (known: {', '.join(FEATURES)})", file=sys.stderr)
        return 2

    evidence: list[Any] = []  # the model, loaded on the first row that is not cached

    def featurise(response: str, context: str) -> dict[str, float]:
        from pilothouse.quality.hallucination.detector import features_for
        from pilothouse.quality.hallucination.lm import LanguageModelEvidence

        if not evidence:
            evidence.append(LanguageModelEvidence(threads=args.threads))
        return features_for(response, context, evidence[0].evidence(response, context))

    features = compute_features(rows, args.features_cache, featurise)
    x = [[features[r["id"]][n] for n in names] for r in rows]
    y = [int(r["label"]) for r in rows]
    if args.method == "pairwise":
        model = fit_pairwise(rows, features, names, l2=args.l2)
    else:
        model = fit_logistic(x, y, names, l2=args.l2)
    scores = [model.score(features[r["id"]]) for r in rows]
    document = {
        **model.to_dict(),
        "trained_on": f"SummEdits evaluation split, {len(rows)} rows, {args.method} fit"
        + (f" (seeded stratified sample, seed {args.seed})" if args.limit else ""),
        "training_balanced_accuracy": round(balanced_accuracy(scores, y, model.threshold), 4),
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(
        f"wrote {args.out}: {len(rows)} rows, training balanced accuracy "
        f"{document['training_balanced_accuracy']:.3f} at threshold {model.threshold:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Choose and fit the detector's logistic regression on SummEdits' ``evaluation`` split (Apache-2.0)
and write the coefficients the package ships::

    python -m pilothouse.quality.hallucination.train --data ../shared/data/hallucination

Only the ``evaluation`` split is read: ``test`` (and BUMP, FaithBench) stay held out for
``benchmarks/hallucination.py``. SmolLM2's per-token evidence is computed once (rows grouped by
document so one context pass serves all its summaries) and cached as JSON lines, so a rerun only
refits. With ``--select`` (the default) every candidate (feature set x fit: ``pointwise``, a plain
L2-regularised logistic regression over rows, or ``pairwise``, a conditional logistic regression over
(consistent, inconsistent) edits of one seed summary) is scored by 5-fold cross-validation grouped by
document, on the evaluation split alone; the best mean balanced accuracy wins (ties: fewer features)
and is refitted on every row. The threshold maximises balanced accuracy on the rows it was fitted on.
Deterministic."""

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

from pilothouse.quality.hallucination.features import FEATURES, LogisticModel, TokenEvidence

DEFAULT_DATA = Path("../shared/data/hallucination")
COEFFICIENTS = Path(__file__).with_name("coefficients.json")


def adapter_id(path: Path) -> str:
    """A short content hash of an adapter file (names its evidence caches)."""
    import hashlib

    return hashlib.sha1(path.read_bytes()).hexdigest()[:10]


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


def compute_evidence(
    rows: Sequence[dict[str, Any]],
    cache: Path,
    evidence: Callable[[str, str], Sequence[TokenEvidence]],
    *,
    progress: bool = True,
) -> dict[str, tuple[TokenEvidence, ...]]:
    """Per-token evidence per row id, read from ``cache`` (JSON lines) where present, computed and
    appended otherwise; rows are visited grouped by document so the context cache is reused."""
    known: dict[str, tuple[TokenEvidence, ...]] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                known[record["id"]] = tuple(TokenEvidence(*t) for t in record["tokens"])
    todo = sorted((r for r in rows if r["id"] not in known), key=lambda r: r["doc"])
    cache.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with cache.open("a", encoding="utf-8") as out:
        for done, row in enumerate(todo, 1):
            tokens = tuple(evidence(row["summary"], row["doc"]))
            known[row["id"]] = tokens
            record = [[t.start, t.end, round(t.logprob, 5), round(t.prior, 5)] for t in tokens]
            out.write(json.dumps({"id": row["id"], "tokens": record}) + "\n")
            out.flush()
            if progress and done % 25 == 0:
                rate = (time.perf_counter() - started) / done
                print(f"  {done}/{len(todo)} rows, {rate:.2f} s/row", file=sys.stderr, flush=True)
    return known


def compute_features(
    rows: Sequence[dict[str, Any]],
    cache: Path,
    evidence: Callable[[str, str], Sequence[TokenEvidence]],
    *,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Every feature per row id (from the cached or computed evidence)."""
    from pilothouse.quality.hallucination.detector import features_for

    tokens = compute_evidence(rows, cache, evidence, progress=progress)
    return {r["id"]: features_for(r["summary"], r["doc"], tokens[r["id"]]) for r in rows}


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


CANDIDATES: dict[str, tuple[str, ...]] = {
    "loglik": ("mean_logprob",),
    "pmi": ("mean_pmi",),
    "pmi+low": ("mean_pmi", "p10_pmi", "min_sentence_pmi"),
    "lm": (
        "mean_logprob",
        "mean_pmi",
        "p10_logprob",
        "p10_pmi",
        "min_sentence_logprob",
        "min_sentence_pmi",
        "low_token_share",
        "log_tokens",
    ),
    "lexical": ("novel_numbers", "novel_names", "novel_words"),
    "pmi+low+lexical": (
        "mean_pmi",
        "p10_pmi",
        "min_sentence_pmi",
        "novel_numbers",
        "novel_names",
        "novel_words",
    ),
    "all": FEATURES,
}
METHODS = ("pointwise", "pairwise")


SIGNS: dict[str, int] = {
    # the direction each feature may push P(supported), fixed before any fit: more likely given the
    # context, or more raised by it, never means less supported; novelty never means more supported
    "mean_logprob": 1,
    "mean_pmi": 1,
    "p10_logprob": 1,
    "p10_pmi": 1,
    "min_sentence_logprob": 1,
    "min_sentence_pmi": 1,
    "low_token_share": -1,
    "novel_numbers": -1,
    "novel_names": -1,
    "novel_words": -1,
    "log_tokens": 0,  # free
}


def fit(
    method: str,
    rows: Sequence[dict[str, Any]],
    features: dict[str, dict[str, float]],
    names: Sequence[str],
    *,
    l2: float = 1.0,
    constrained: bool = True,
) -> LogisticModel:
    """Fit one candidate (``pointwise`` or ``pairwise``) on ``rows``. ``constrained``: a feature whose
    weight comes out against its direction in :data:`SIGNS` is dropped (the worst first) and the rest
    refitted, until every weight agrees; none left is a ``ValueError``."""
    names = list(names)
    while True:
        model = _fit_once(method, rows, features, names, l2=l2)
        if not constrained:
            return model
        against = [
            (w * SIGNS.get(n, 0), n)
            for n, w in zip(names, model.weights, strict=True)
            if w * SIGNS.get(n, 0) < 0
        ]
        if not against:
            return model
        names.remove(min(against)[1])
        if not names:
            raise ValueError("no feature keeps the direction it must have")


def _fit_once(
    method: str,
    rows: Sequence[dict[str, Any]],
    features: dict[str, dict[str, float]],
    names: Sequence[str],
    *,
    l2: float = 1.0,
) -> LogisticModel:
    if method == "pairwise":
        return fit_pairwise(rows, features, names, l2=l2)
    if method != "pointwise":
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)})")
    x = [[features[r["id"]][n] for n in names] for r in rows]
    return fit_logistic(x, [int(r["label"]) for r in rows], names, l2=l2)


def fixed_direction(
    rows: Sequence[dict[str, Any]], features: dict[str, dict[str, float]], name: str
) -> LogisticModel:
    """No fitted weight: the standardised feature itself, pushed through the logistic in its
    :data:`SIGNS` direction (the BARTScore-style design: more likely given the context = more
    supported); only the mean, the scale and the threshold (best balanced accuracy) come from ``rows``."""
    import numpy as np

    values = np.array([features[r["id"]][name] for r in rows], dtype=float)
    mean, scale = float(values.mean()), float(values.std() or 1.0)
    model = LogisticModel((name,), (mean,), (scale,), (float(SIGNS.get(name, 1) or 1),), 0.0)
    scores = [model.score(features[r["id"]]) for r in rows]
    labels = [int(r["label"]) for r in rows]
    best = max(sorted(set(scores)), key=lambda t: balanced_accuracy(scores, labels, t))
    return LogisticModel(model.features, model.means, model.scales, model.weights, 0.0, round(best, 6))


def cross_validate(
    method: str,
    rows: Sequence[dict[str, Any]],
    features: dict[str, dict[str, float]],
    names: Sequence[str],
    *,
    folds: int = 5,
    l2: float = 1.0,
    constrained: bool = True,
) -> float:
    """Mean held-fold balanced accuracy over ``folds`` folds grouped by document (a document's rows
    never sit on both sides), each fold scored at the threshold fitted on the other folds."""
    docs = sorted({r["doc"] for r in rows})
    fold_of = {d: i % folds for i, d in enumerate(random.Random(0).sample(docs, len(docs)))}
    results: list[float] = []
    for k in range(folds):
        train = [r for r in rows if fold_of[r["doc"]] != k]
        held = [r for r in rows if fold_of[r["doc"]] == k]
        try:
            model = fit(method, train, features, names, l2=l2, constrained=constrained)
        except ValueError:
            continue
        value = balanced_accuracy(
            [model.score(features[r["id"]]) for r in held], [int(r["label"]) for r in held], model.threshold
        )
        if value == value:
            results.append(value)
    return sum(results) / len(results) if results else math.nan


LEXICAL = frozenset({"novel_numbers", "novel_names", "novel_words"})


def select(
    rows: Sequence[dict[str, Any]],
    features: dict[str, dict[str, float]],
    *,
    l2: float = 1.0,
    require_model: bool = True,
    constrained: bool = True,
) -> tuple[str, str, list[tuple[str, str, float]]]:
    """The (candidate, method) with the best grouped cross-validated balanced accuracy (ties: fewer
    features, then the order above), and the whole table. ``require_model``: only candidates that use
    the language model's evidence may win (the detector is built on it; lexical novelty alone is a
    word-overlap heuristic that any paraphrase defeats)."""
    table = [
        (name, method, cross_validate(method, rows, features, names, l2=l2, constrained=constrained))
        for name, names in CANDIDATES.items()
        for method in METHODS
    ]
    order = {name: i for i, name in enumerate(CANDIDATES)}
    best = max(
        (t for t in table if t[2] == t[2] and not (require_model and set(CANDIDATES[t[0]]) <= LEXICAL)),
        key=lambda t: (round(t[2], 4), -len(CANDIDATES[t[0]]), -order[t[0]]),
    )
    return best[0], best[1], table


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: compute (or read cached) evidence, select, fit, write the coefficients."""
    parser = argparse.ArgumentParser(
        prog="python -m pilothouse.quality.hallucination.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with summedits/ (default: %(default)s)"
    )
    parser.add_argument(
        "--evidence-cache",
        type=Path,
        default=None,
        help="JSON-lines cache of SmolLM2's per-token evidence (default: .pilothouse/hallucination/"
        "summedits-evaluation[.ctx-BUDGET].tokens.jsonl)",
    )
    parser.add_argument(
        "--out", type=Path, default=COEFFICIENTS, help="where to write (default: the package's file)"
    )
    parser.add_argument(
        "--candidate",
        choices=("select", *CANDIDATES),
        default="select",
        help="a feature set, or 'select' (default): the best by grouped cross-validation",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="pointwise",
        help="the fit for a named --candidate (default: %(default)s; 'select' tries both)",
    )
    parser.add_argument(
        "--allow-lexical-only",
        action="store_true",
        help="let 'select' pick a candidate without the language model's evidence",
    )
    parser.add_argument(
        "--fixed",
        metavar="FEATURE",
        choices=FEATURES,
        default=None,
        help="ship one feature in its fixed direction (no weight fitted; threshold from the split)",
    )
    parser.add_argument(
        "--unconstrained",
        action="store_true",
        help="let weights take either sign (default: each feature keeps its direction, see SIGNS)",
    )
    parser.add_argument("--l2", type=float, default=1.0, help="L2 penalty (default: %(default)s)")
    parser.add_argument(
        "--limit", type=int, default=None, help="fit on a seeded sample of N rows, stratified by label"
    )
    parser.add_argument("--seed", type=int, default=7, help="the sample's seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: %(default)s)")
    parser.add_argument(
        "--context-budget",
        default=None,
        help="context selection budget in tokens, or 'none' (the context read whole); default: the"
        " detector's default",
    )
    parser.add_argument(
        "--adapter",
        type=Path,
        default=None,
        help="a LoRA adapter file for the model (default: the detector's default; 'none': no adapter)",
    )
    args = parser.parse_args(argv)
    from pilothouse.quality.hallucination.lm import DEFAULT_CONTEXT_BUDGET, default_adapter

    adapter = (
        default_adapter() if args.adapter is None else None if str(args.adapter) == "none" else args.adapter
    )
    if adapter is not None and not adapter.is_file():
        parser.error(f"--adapter: no file at {adapter}")

    if args.context_budget is None:
        budget = DEFAULT_CONTEXT_BUDGET
    elif args.context_budget == "none":
        budget = None
    elif args.context_budget.isdigit() and int(args.context_budget) > 0:
        budget = int(args.context_budget)
    else:
        parser.error(f"--context-budget: {args.context_budget!r} is neither 'none' nor a positive integer")
    if args.evidence_cache is None:
        suffix = f".ctx-{budget}" if budget is not None else ""
        suffix += f".adapter-{adapter_id(adapter)}" if adapter is not None else ""
        args.evidence_cache = Path(f".pilothouse/hallucination/summedits-evaluation{suffix}.tokens.jsonl")
    try:
        rows = stratified(load_summedits(args.data, "evaluation"), "label", args.limit, args.seed)
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        print(f"error: cannot read SummEdits: {exc}", file=sys.stderr)
        return 2

    evidence: list[Any] = []  # the model, loaded on the first row that is not cached

    def tokens_of(response: str, context: str) -> Sequence[TokenEvidence]:
        from pilothouse.quality.hallucination.lm import LanguageModelEvidence

        if not evidence:
            evidence.append(
                LanguageModelEvidence(threads=args.threads, context_budget=budget, adapter=adapter)
            )
        model: LanguageModelEvidence = evidence[0]
        return model.evidence(response, context).tokens

    features = compute_features(rows, args.evidence_cache, tokens_of)
    if args.fixed:
        model = fixed_direction(rows, features, args.fixed)
        candidate, method = args.fixed, "fixed-direction"
    elif args.candidate == "select":
        candidate, method, table = select(
            rows,
            features,
            l2=args.l2,
            require_model=not args.allow_lexical_only,
            constrained=not args.unconstrained,
        )
        print("grouped 5-fold cross-validation on the evaluation split (balanced accuracy):")
        for name, how, value in table:
            print(f"  {name:18} {how:10} {100 * value:5.1f}")
    else:
        candidate, method = args.candidate, args.method
    if not args.fixed:
        model = fit(
            method, rows, features, CANDIDATES[candidate], l2=args.l2, constrained=not args.unconstrained
        )
    scores = [model.score(features[r["id"]]) for r in rows]
    y = [int(r["label"]) for r in rows]
    document = {
        **model.to_dict(),
        "trained_on": f"SummEdits evaluation split, {len(rows)} rows; context "
        + (f"selected to {budget} tokens" if budget is not None else "read whole (cut to 1,000 tokens)")
        + (f"; adapter {adapter.name} ({adapter_id(adapter)})" if adapter is not None else "")
        + f"; candidate {candidate!r},"
        f" {method} fit{'' if args.unconstrained else ', sign-constrained'}"
        + (f" (seeded stratified sample, seed {args.seed})" if args.limit else ""),
        "selected_by": "grouped 5-fold cross-validation on the same split"
        if args.candidate == "select" and not args.fixed
        else "named on the command line",
        "training_balanced_accuracy": round(balanced_accuracy(scores, y, model.threshold), 4),
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(
        f"wrote {args.out}: {candidate} ({method}), {len(rows)} rows, training balanced accuracy "
        f"{document['training_balanced_accuracy']:.3f} at threshold {model.threshold:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Hallucination detector benchmark: the local detector against labelled sets it was never tuned on.

    python benchmarks/hallucination.py [--data ../shared/data/hallucination] [--limit N] [--seed 7]
                                       [--sets summedits,bump,faithbench] [--latency 20]

Data: ``--data`` (default ``../shared/data/hallucination`` relative to the repository; see its
SOURCES.md). The coefficients were fitted on SummEdits' ``evaluation`` split only; this reports:
- SummEdits ``test``: balanced accuracy at the shipped threshold and AUROC;
- BUMP (889 pairs): the share of pairs whose edited summary scores below its reference (ties count
  half), and detection (balanced accuracy over references = supported, edited = unsupported); the
  12 metrics BUMP ships are scored the same way on the same pairs;
- FaithBench: balanced accuracy (hallucinated = worst label Unwanted), next to the 8 detectors whose
  scores FaithBench ships (probabilities at 0.5, LLM verdicts as given), on the same samples.
Every figure has a bootstrap 95% interval (1,000 resamples of items, or of pairs). The raw SmolLM2 mean
log-likelihood (the BARTScore-style baseline, no training) is scored in the same run.
``--limit N`` takes a seeded sample of N items per set, stratified by label (BUMP: by task), and says so.
Latency: ``--latency`` checks with a cold context cache, contexts cut to <= 1,000 tokens, against one
plain forward pass of the same text (the baseline); CPU seconds, peak RSS and the load average too.
Features are cached per item under ``.pilothouse/hallucination/`` so a rerun only rescores.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pilothouse.quality.hallucination.cascade import JUDGE_PROMPT, bands_around, decide  # noqa: E402
from pilothouse.quality.hallucination.detector import Detector, shipped_coefficients  # noqa: E402
from pilothouse.quality.hallucination.train import compute_features, load_summedits, stratified  # noqa: E402

Row = dict[str, Any]


def _id(*parts: object) -> str:
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]


def load_bump(data: Path) -> list[Row]:
    """BUMP pairs: article, reference and edited summaries, the task, the shipped metric scores."""
    pairs: list[Row] = []
    for task in (1, 2):
        for index, row in enumerate(json.loads((data / "bump" / f"task{task}_dataset.json").read_text())):
            pairs.append({"task": task, "index": index, **row})
    return pairs


def load_faithbench(data: Path) -> list[Row]:
    """FaithBench samples with the CSV's worst label and the shipped detectors' scores (JSON batches)."""
    folder = data / "faithbench"
    worst: dict[tuple[str, str], str] = {}
    with (folder / "FaithBench.csv").open(encoding="utf-8", newline="") as handle:
        for line in csv.DictReader(handle):
            worst[(line["source"].strip(), line["summary"].strip())] = line["worst-label"]
    samples: list[Row] = []
    for batch in sorted((folder / "data_for_release").glob("batch_*.json")):
        for sample in json.loads(batch.read_text(encoding="utf-8"))["samples"]:
            key = (sample["source"].strip(), sample["summary"].strip())
            labels = [lab for a in sample.get("annotations") or [] for lab in a.get("label") or []]
            label = worst.get(key) or (
                "Unwanted" if any(lab.startswith("Unwanted") for lab in labels) else "Other"
            )
            samples.append(
                {
                    "id": f"{batch.stem}-{sample['sample_id']}",
                    "doc": sample["source"],
                    "summary": sample["summary"],
                    "hallucinated": int(label == "Unwanted"),
                    "baselines": {
                        k: v
                        for k, v in sample["metadata"].items()
                        if k not in ("summarizer", "raw_sample_id")
                    },
                }
            )
    return samples


def balanced_accuracy(predicted_ok: np.ndarray, truly_ok: np.ndarray) -> float:
    """Mean recall of both classes (1 = supported)."""
    pos, neg = truly_ok == 1, truly_ok == 0
    if not pos.any() or not neg.any():
        return float("nan")
    return float(((predicted_ok[pos] == 1).mean() + (predicted_ok[neg] == 0).mean()) / 2)


def auroc(scores: np.ndarray, truly_ok: np.ndarray) -> float:
    """P(a supported item outscores an unsupported one), ties half (Mann-Whitney)."""
    pos, neg = scores[truly_ok == 1], scores[truly_ok == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + ties / 2)


def bootstrap(
    metric: Any, arrays: Sequence[np.ndarray], seed: int, rounds: int = 1000
) -> tuple[float, float, float]:
    """The metric on all items and its bootstrap 95% interval (items resampled with replacement)."""
    rng = np.random.default_rng(seed)
    n = len(arrays[0])
    values = [metric(*(a[idx] for a in arrays)) for idx in (rng.integers(0, n, n) for _ in range(rounds))]
    values = [v for v in values if v == v]
    return metric(*arrays), float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def ba_at(threshold: float) -> Any:
    """The balanced accuracy of ``score >= threshold`` as a bootstrap metric of (scores, labels)."""
    return lambda s, y: balanced_accuracy((s >= threshold).astype(int), y)


CASCADE: list[tuple[str, float, int]] = []  # (set, local score, judge prompt tokens) for the cascade table


def judge_tokens(context: str, response: str) -> int:
    """The judge prompt's size in tokens, estimated at 4 characters a token."""
    return (len(JUDGE_PROMPT) + len(context) + len(response)) // 4


def fmt(result: tuple[float, float, float]) -> str:
    """``62.1 [58.3, 65.9]`` in percent."""
    return f"{100 * result[0]:5.1f} [{100 * result[1]:5.1f}, {100 * result[2]:5.1f}]"


def featurise(detector: Detector, rows: Sequence[Row], cache: Path) -> dict[str, dict[str, float]]:
    """Features of every row (cached by id)."""
    return compute_features(rows, cache, lambda s, d: detector.features(s, d)[0])


def run_summedits(detector: Detector, args: argparse.Namespace, cache: Path) -> None:
    rows = stratified(load_summedits(args.data, "test"), "label", args.limit, args.seed)
    feats = featurise(detector, rows, cache / "summedits-test.jsonl")
    ok = np.array([int(r["label"]) for r in rows])
    ours = np.array([detector.model.score(feats[r["id"]]) for r in rows])
    CASCADE.extend(
        ("SummEdits", float(v), judge_tokens(r["doc"], r["summary"])) for v, r in zip(ours, rows, strict=True)
    )
    raw = np.array([feats[r["id"]]["mean_logprob"] for r in rows])
    thr = detector.threshold
    print(
        f"\nSummEdits test: {len(rows)} of 3,695 rows{' (seeded stratified sample)' if args.limit else ''};"
        f" {int(ok.sum())} consistent"
    )
    print(f"  {'detector':40} {'balanced acc % [95% CI]':>26} {'AUROC % [95% CI]':>26}")
    print(
        f"  {'local detector (shipped coefficients)':40} "
        f"{fmt(bootstrap(ba_at(thr), [ours, ok], args.seed)):>26} "
        f"{fmt(bootstrap(auroc, [ours, ok], args.seed)):>26}"
    )
    raw_thr = float(np.median(raw))
    print(
        f"  {'SmolLM2 mean log-lik (median split)':40} "
        f"{fmt(bootstrap(ba_at(raw_thr), [raw, ok], args.seed)):>26} "
        f"{fmt(bootstrap(auroc, [raw, ok], args.seed)):>26}"
    )
    print("  published anchor: GPT-4 82.4 balanced accuracy (SummEdits paper); target here >= 62")


def run_bump(detector: Detector, args: argparse.Namespace, cache: Path) -> None:
    pairs = stratified(load_bump(args.data), "task", args.limit, args.seed)
    rows: dict[str, Row] = {}
    for p in pairs:
        p["ref_id"] = _id("ref", p["article_id"], p["reference_summary"])
        p["edit_id"] = _id("edit", str(p["task"]), str(p["index"]), p["edited_summary"])
        rows[p["ref_id"]] = {"id": p["ref_id"], "doc": p["article"], "summary": p["reference_summary"]}
        rows[p["edit_id"]] = {"id": p["edit_id"], "doc": p["article"], "summary": p["edited_summary"]}
    feats = featurise(detector, list(rows.values()), cache / "bump.jsonl")
    CASCADE.extend(
        ("BUMP", detector.model.score(feats[k]), judge_tokens(r["doc"], r["summary"]))
        for k, r in rows.items()
    )
    thr = detector.threshold

    def pairwise(ref: np.ndarray, edit: np.ndarray) -> float:
        return float(((edit < ref) + 0.5 * (edit == ref)).mean())

    def detection(ref: np.ndarray, edit: np.ndarray, cut: float) -> float:
        return balanced_accuracy(
            np.concatenate([ref >= cut, edit >= cut]).astype(int),
            np.concatenate([np.ones(len(ref)), np.zeros(len(edit))]).astype(int),
        )

    print(
        f"\nBUMP: {len(pairs)} of 889 pairs{' (seeded sample, stratified by task)' if args.limit else ''};"
        f" {len({p['ref_id'] for p in pairs})} distinct references"
    )
    print(f"  {'metric':40} {'edited < reference % [95% CI]':>30} {'detection BA % [95% CI]':>26}")
    table: list[tuple[str, np.ndarray, np.ndarray, float | None]] = []
    for name, get in (
        ("local detector (shipped coefficients)", lambda f: detector.model.score(f)),
        ("SmolLM2 mean log-lik (this run)", lambda f: f["mean_logprob"]),
    ):
        ref = np.array([get(feats[p["ref_id"]]) for p in pairs])
        edit = np.array([get(feats[p["edit_id"]]) for p in pairs])
        table.append((name, ref, edit, thr if name.startswith("local") else None))
    metrics = sorted({k.rsplit("_", 1)[0] for p in pairs for k in p["scores"]})
    for metric in metrics:
        ref = np.array([float(p["scores"].get(f"{metric}_reference", np.nan)) for p in pairs])
        edit = np.array([float(p["scores"].get(f"{metric}_edited", np.nan)) for p in pairs])
        keep = ~(np.isnan(ref) | np.isnan(edit))
        table.append((f"{metric} (shipped)", ref[keep], edit[keep], None))
    for name, ref, edit, cut in table:
        level = cut if cut is not None else float(np.median(np.concatenate([ref, edit])))
        det = bootstrap(partial(detection, cut=level), [ref, edit], args.seed)
        print(f"  {name:40} {fmt(bootstrap(pairwise, [ref, edit], args.seed)):>30} {fmt(det):>26}")
    print(
        "  detection: threshold = the shipped one for ours, the median score for the others;"
        " target >= 92.3 pairwise"
    )


def run_faithbench(detector: Detector, args: argparse.Namespace, cache: Path) -> None:
    samples = stratified(load_faithbench(args.data), "hallucinated", args.limit, args.seed)
    feats = featurise(detector, samples, cache / "faithbench.jsonl")
    ok = np.array([1 - s["hallucinated"] for s in samples])
    ours = np.array([detector.model.score(feats[s["id"]]) for s in samples])
    CASCADE.extend(
        ("FaithBench", float(v), judge_tokens(s["doc"], s["summary"]))
        for v, s in zip(ours, samples, strict=True)
    )
    print(
        f"\nFaithBench: {len(samples)} of 750 samples{' (seeded stratified sample)' if args.limit else ''};"
        f" {int((1 - ok).sum())} hallucinated (worst label Unwanted)"
    )
    print(f"  {'detector':40} {'balanced acc % [95% CI]':>26}")
    thr = detector.threshold
    print(
        f"  {'local detector (shipped coefficients)':40} "
        f"{fmt(bootstrap(ba_at(thr), [ours, ok], args.seed)):>26}"
    )
    for name in sorted({k for s in samples for k in s["baselines"]}):
        values = [s["baselines"].get(name) for s in samples]
        keep = np.array([v is not None for v in values])
        pred = np.array([int(float(v) >= 0.5) for v in values if v is not None])
        result = bootstrap(lambda p, y: balanced_accuracy(p, y), [pred, ok[keep]], args.seed)
        print(f"  {name + ' (shipped)':40} {fmt(result):>26}")
    print("  target: >= 56.2 (the best shipped detector, GPT-4o)")


def run_cascade(detector: Detector, args: argparse.Namespace) -> None:
    from pilothouse.costs.catalogue import PriceCatalogue

    row = PriceCatalogue.packaged().lookup(None, args.judge_model)
    if row is None or not CASCADE:
        print(f"\nCascade: no price for {args.judge_model!r} or no items scored; skipped")
        return
    low, high = bands_around(detector.threshold, args.band)

    def usd(tokens: int) -> float:
        return (tokens * row.input + 30 * row.output) / 1e6  # ~30 output tokens per JSON verdict

    print(
        f"\nCascade: escalate when the local confidence < {args.band} (scores in ({low:.3f}, {high:.3f}));"
        f" judge {args.judge_model} at its catalogue price, prompt tokens estimated at 4 characters a token"
    )
    print(
        f"  {'set':12} {'items':>6} {'escalated %':>12} {'judge alone $/1k':>17}"
        f" {'cascade $/1k':>13} {'ratio':>6}"
    )
    for name in dict.fromkeys(n for n, _, _ in CASCADE):
        items = [(v, t) for n, v, t in CASCADE if n == name]
        up = [t for v, t in items if decide(v, low, high) == "escalate"]
        alone = 1000 * sum(usd(t) for _, t in items) / len(items)
        cascade = 1000 * sum(usd(t) for t in up) / len(items)
        print(
            f"  {name:12} {len(items):6} {100 * len(up) / len(items):12.1f} {alone:17.4f} {cascade:13.4f}"
            f" {cascade / alone if alone else 0:6.2f}"
        )
    print("  (the cascade's accuracy needs a judge's verdicts on the same items: not measured here)")


def run_latency(detector: Detector, args: argparse.Namespace) -> None:
    import torch

    pairs = load_bump(args.data)
    random.Random(args.seed).shuffle(pairs)
    model, tokenizer = detector.evidence.model_and_tokenizer()
    times, base = [], []
    for p in pairs[: args.latency]:
        context = tokenizer.decode(tokenizer.encode(p["article"], add_special_tokens=False)[:1000])
        detector.evidence.forget_context()
        started = time.perf_counter()
        detector.detect(p["edited_summary"], context)
        times.append(time.perf_counter() - started)
        ids = tokenizer.encode(context + "\n" + p["edited_summary"], add_special_tokens=False)
        started = time.perf_counter()
        with torch.inference_mode():
            model(torch.tensor([ids]))
        base.append(time.perf_counter() - started)
    q = statistics.quantiles
    print(
        f"\nLatency: {len(times)} checks, cold context cache, contexts <= 1,000 tokens,"
        f" {torch.get_num_threads()} threads"
    )
    print(
        f"  detect():                    p50 {statistics.median(times):.2f} s  p95 {q(times, n=20)[-1]:.2f} s"
    )
    print(
        f"  baseline, one forward pass:  p50 {statistics.median(base):.2f} s  p95 {q(base, n=20)[-1]:.2f} s"
    )
    print("  target: p95 <= 1.5 s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hallucination")
    parser.add_argument(
        "--limit", type=int, default=None, help="a seeded stratified sample of N items per set"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sets", default="summedits,bump,faithbench")
    parser.add_argument("--latency", type=int, default=20, help="cold-cache latency checks (0: none)")
    parser.add_argument("--cache", type=Path, default=REPO / ".pilothouse" / "hallucination")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--band", type=float, default=0.5, help="cascade: escalate below this confidence")
    parser.add_argument(
        "--judge-model", default="gpt-4o-mini", help="cascade: the judge priced from the catalogue"
    )
    args = parser.parse_args()
    if not (args.data / "summedits").is_dir():
        print(
            f"hallucination data not found at {args.data} (need summedits/, bump/, faithbench/; see --data): "
            "nothing measured",
            file=sys.stderr,
        )
        raise SystemExit(2)
    from pilothouse.quality.hallucination.lm import LanguageModelEvidence

    detector = Detector(LanguageModelEvidence(threads=args.threads))
    print(f"coefficients: {shipped_coefficients().features} threshold {detector.threshold:.3f}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; cpus {os.cpu_count()}")
    wall, cpu = time.perf_counter(), time.process_time()
    runners = {"summedits": run_summedits, "bump": run_bump, "faithbench": run_faithbench}
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        if name not in runners:
            raise SystemExit(f"unknown set {name!r} (known: {', '.join(runners)})")
        runners[name](detector, args, args.cache)
    run_cascade(detector, args)
    if args.latency:
        run_latency(detector, args)
    print(
        f"\nwall {time.perf_counter() - wall:.0f} s, CPU {time.process_time() - cpu:.0f} s, "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
        f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )


if __name__ == "__main__":
    main()

"""Hallucination detector benchmark: the local detector against labelled sets it was never tuned on.

    python benchmarks/hallucination.py [--data ../shared/data/hallucination] [--limit N] [--seed 7]
                                       [--sets summedits,bump,faithbench] [--latency 30]
                                       [--context-budgets none,128] [--no-cascade]

Data: ``--data`` (default ``../shared/data/hallucination`` relative to the repository; see its
SOURCES.md). The feature set, fit and threshold were chosen on SummEdits' ``evaluation`` split only
(``python -m pilothouse.quality.hallucination.train``); this reports:
- SummEdits ``test``: balanced accuracy at the shipped threshold and AUROC;
- BUMP (889 pairs): the share of pairs whose edited summary scores below its reference (ties count
  half), and detection (balanced accuracy over references = supported, edited = unsupported); the
  metrics BUMP ships are scored the same way on the same pairs;
- FaithBench: balanced accuracy (hallucinated = worst label Unwanted), next to the 8 detectors whose
  scores FaithBench ships (probabilities at 0.5, LLM verdicts as given), on the same samples;
- the cascade: what is escalated is chosen by an escalation budget (``--escalate-shares``, default
  0.25: the share of recent local scores ranked nearest the threshold, as the ``hallucination``
  scorer's ``escalate`` does) and, when the training command's evidence cache is there, by a fixed band
  set on SummEdits' evaluation split (``--escalate``); FaithBench's shipped GPT verdicts serve as the
  judge on the escalated items: accuracy of the cascade against the judge alone, and the judge's cost
  at catalogue prices.
Every figure has a bootstrap 95% interval (1,000 resamples of items, or of pairs). The raw SmolLM2 mean
log-likelihood (the BARTScore-style baseline, no training) and mean PMI are scored in the same run.
``--limit N`` takes a seeded sample of N items per set, stratified by label (BUMP: by task), and says so.
Latency: ``--latency`` checks in a fresh process (cold context cache, contexts cut to 1,000 tokens),
with the int8 detector per context budget (and the float32 one with ``--latency-float32``), each with
its CPU seconds and peak RSS.
``--context-budgets none,128`` scores every set (and times the latency) once per context budget,
side by side: ``none`` reads the context whole (cut to 1,000 tokens), a number selects the passages
that bear on the response to that many tokens (docs/hallucination.md).
``--adapters none,PATH`` scores SmolLM2 as shipped and with a LoRA adapter (trained by
``python -m pilothouse.quality.hallucination.contrastive``) side by side on the same items;
``--coefficients none=PATH`` / ``--adapter-coefficients PATH`` give each its own coefficients.
Per-token evidence is cached per item (and budget, and adapter) under ``.pilothouse/hallucination/``
so a rerun only rescores.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from pilothouse.quality.hallucination.cascade import (  # noqa: E402
    ESCALATE,
    JUDGE_PROMPT,
    EscalationBudget,
    decide,
)
from pilothouse.quality.hallucination.detector import Detector, shipped_coefficients  # noqa: E402
from pilothouse.quality.hallucination.features import LogisticModel  # noqa: E402
from pilothouse.quality.hallucination.lm import DEFAULT_CONTEXT_BUDGET, default_adapter  # noqa: E402
from pilothouse.quality.hallucination.train import (  # noqa: E402
    adapter_id,
    compute_features,
    load_summedits,
    stratified,
)

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
FAITHBENCH: list[tuple[float, int, dict[str, Any]]] = []  # (local score, supported, shipped verdicts)


def judge_tokens(context: str, response: str) -> int:
    """The judge prompt's size in tokens, estimated at 4 characters a token."""
    return (len(JUDGE_PROMPT) + len(context) + len(response)) // 4


def fmt(result: tuple[float, float, float]) -> str:
    """``62.1 [58.3, 65.9]`` in percent."""
    return f"{100 * result[0]:5.1f} [{100 * result[1]:5.1f}, {100 * result[2]:5.1f}]"


def sample(rows: Sequence[Row], key: str, args: argparse.Namespace, doc: str = "doc") -> list[Row]:
    """The items to score: all; ``--limit`` items stratified by ``key``; or ``--documents`` seeded
    documents with every item on them (a cluster sample: one context pass serves many items)."""
    if args.documents:
        docs = sorted({str(r[doc]) for r in rows})
        chosen = set(random.Random(args.seed).sample(docs, min(args.documents, len(docs))))
        return [r for r in rows if str(r[doc]) in chosen]
    return stratified(rows, key, args.limit, args.seed)


def sampled(args: argparse.Namespace) -> str:
    """How the items were chosen, for the table's heading."""
    if args.documents:
        return f" (all items of {args.documents} seeded random documents, seed {args.seed})"
    return f" (seeded stratified sample, seed {args.seed})" if args.limit else ""


def featurise(detector: Detector, rows: Sequence[Row], cache: Path) -> dict[str, dict[str, float]]:
    """Features of every row (per-token evidence cached by id, in a file per context budget)."""
    budget = detector.evidence.context_budget
    if budget is not None:
        cache = cache.with_name(cache.name.replace(".tokens.", f".ctx-{budget}.tokens."))
    if detector.evidence.adapter is not None:
        tag = f".adapter-{adapter_id(detector.evidence.adapter)}"
        cache = cache.with_name(cache.name.replace(".tokens.", f"{tag}.tokens."))
    return compute_features(rows, cache, lambda s, d: detector.evidence.evidence(s, d).tokens)


def run_summedits(detector: Detector, args: argparse.Namespace, cache: Path) -> None:
    rows = sample(load_summedits(args.data, "test"), "label", args)
    feats = featurise(detector, rows, cache / "summedits-test.tokens.jsonl")
    if args.evidence_only:
        return
    ok = np.array([int(r["label"]) for r in rows])
    ours = np.array([detector.model.score(feats[r["id"]]) for r in rows])
    CASCADE.extend(
        ("SummEdits", float(v), judge_tokens(r["doc"], r["summary"])) for v, r in zip(ours, rows, strict=True)
    )
    raw = np.array([feats[r["id"]]["mean_logprob"] for r in rows])
    thr = detector.threshold
    print(f"\nSummEdits test: {len(rows)} of 3,695 rows{sampled(args)}; {int(ok.sum())} consistent")
    print(f"  {'detector':40} {'balanced acc % [95% CI]':>26} {'AUROC % [95% CI]':>26}")
    print(
        f"  {'local detector (shipped coefficients)':40} "
        f"{fmt(bootstrap(ba_at(thr), [ours, ok], args.seed)):>26} "
        f"{fmt(bootstrap(auroc, [ours, ok], args.seed)):>26}"
    )
    pmi = np.array([feats[r["id"]]["mean_pmi"] for r in rows])
    for name, values in (
        ("SmolLM2 mean log-lik (median split)", raw),
        ("SmolLM2 mean PMI (median split)", pmi),
    ):
        cut = float(np.median(values))
        print(
            f"  {name:40} "
            f"{fmt(bootstrap(ba_at(cut), [values, ok], args.seed)):>26} "
            f"{fmt(bootstrap(auroc, [values, ok], args.seed)):>26}"
        )
    print("  published anchor: GPT-4 82.4 balanced accuracy (SummEdits paper); target here >= 62")


def run_bump(detector: Detector, args: argparse.Namespace, cache: Path) -> None:
    pairs = sample(load_bump(args.data), "task", args, doc="article")
    rows: dict[str, Row] = {}
    for p in pairs:
        p["ref_id"] = _id("ref", p["article_id"], p["reference_summary"])
        p["edit_id"] = _id("edit", str(p["task"]), str(p["index"]), p["edited_summary"])
        rows[p["ref_id"]] = {"id": p["ref_id"], "doc": p["article"], "summary": p["reference_summary"]}
        rows[p["edit_id"]] = {"id": p["edit_id"], "doc": p["article"], "summary": p["edited_summary"]}
    feats = featurise(detector, list(rows.values()), cache / "bump.tokens.jsonl")
    if args.evidence_only:
        return
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
        f"\nBUMP: {len(pairs)} of 889 pairs{sampled(args)};"
        f" {len({p['ref_id'] for p in pairs})} distinct references"
    )
    print(f"  {'metric':40} {'edited < reference % [95% CI]':>30} {'detection BA % [95% CI]':>26}")
    table: list[tuple[str, np.ndarray, np.ndarray, float | None]] = []
    for name, get in (
        ("local detector (shipped coefficients)", lambda f: detector.model.score(f)),
        ("SmolLM2 mean log-lik (this run)", lambda f: f["mean_logprob"]),
        ("SmolLM2 mean PMI (this run)", lambda f: f["mean_pmi"]),
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
    samples = sample(load_faithbench(args.data), "hallucinated", args)
    feats = featurise(detector, samples, cache / "faithbench.tokens.jsonl")
    if args.evidence_only:
        return
    ok = np.array([1 - s["hallucinated"] for s in samples])
    ours = np.array([detector.model.score(feats[s["id"]]) for s in samples])
    CASCADE.extend(
        ("FaithBench", float(v), judge_tokens(s["doc"], s["summary"]))
        for v, s in zip(ours, samples, strict=True)
    )
    FAITHBENCH.extend((float(v), int(o), s["baselines"]) for v, o, s in zip(ours, ok, samples, strict=True))
    print(
        f"\nFaithBench: {len(samples)} of 750 samples{sampled(args)};"
        f" {int((1 - ok).sum())} hallucinated (worst label Unwanted)"
    )
    print(f"  {'detector':40} {'balanced acc % [95% CI]':>26} {'AUROC % [95% CI]':>26}")
    thr = detector.threshold
    print(
        f"  {'local detector (shipped coefficients)':40} "
        f"{fmt(bootstrap(ba_at(thr), [ours, ok], args.seed)):>26}"
        f" {fmt(bootstrap(auroc, [ours, ok], args.seed)):>26}"
    )
    for name in sorted({k for s in samples for k in s["baselines"]}):
        values = [s["baselines"].get(name) for s in samples]
        keep = np.array([v is not None for v in values])
        pred = np.array([int(float(v) >= 0.5) for v in values if v is not None])
        result = bootstrap(lambda p, y: balanced_accuracy(p, y), [pred, ok[keep]], args.seed)
        print(f"  {name + ' (shipped)':40} {fmt(result):>26}")
    print("  target: >= 56.2 (the best shipped detector, GPT-4o)")


def escalation_band(detector: Detector, args: argparse.Namespace) -> tuple[float, float] | None:
    """(low, high) around the threshold holding ``--escalate`` of SummEdits' evaluation rows (the
    split the detector was fitted on: the rows in the training command's evidence cache); None
    without that cache."""
    cache = args.evidence_cache
    budget = detector.evidence.context_budget
    if budget is not None:  # the training command's cache for this budget (featurise names it so)
        cache = cache.with_name(cache.name.replace(".tokens.", f".ctx-{budget}.tokens."))
    if detector.evidence.adapter is not None:
        tag = f".adapter-{adapter_id(detector.evidence.adapter)}"
        cache = cache.with_name(cache.name.replace(".tokens.", f"{tag}.tokens."))
    if not cache.is_file():
        return None
    done = {json.loads(line)["id"] for line in cache.read_text(encoding="utf-8").splitlines() if line}
    rows = [r for r in load_summedits(args.data, "evaluation") if r["id"] in done]
    feats = featurise(detector, rows, args.evidence_cache)
    scores = np.array([detector.model.score(feats[r["id"]]) for r in rows])
    thr = detector.threshold
    # the escalated items are the ones nearest the threshold in confidence (distance scaled per side)
    conf = np.where(scores >= thr, (scores - thr) / (1 - thr), (thr - scores) / thr)
    c = float(np.quantile(conf, args.escalate))
    return thr * (1 - c), thr + (1 - thr) * c


def budget_decisions(scores: np.ndarray, share: float, threshold: float, seed: int) -> np.ndarray:
    """Which items an :class:`EscalationBudget` escalates when they arrive in a seeded random order."""
    budget = EscalationBudget(share, threshold)
    escalated = np.zeros(len(scores), dtype=bool)
    for index in np.random.default_rng(seed).permutation(len(scores)):
        escalated[index] = budget.decide(float(scores[index])) == ESCALATE
    return escalated


def cascade_strategies(
    detector: Detector, args: argparse.Namespace
) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """The ways of choosing what to escalate, each a function of a set's local scores."""
    strategies: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
    thr = detector.threshold
    for share in args.escalate_shares:
        strategies.append(
            (
                f"budget {100 * share:.0f}% (EscalationBudget: the {100 * share:.0f}% of recent scores"
                " ranked nearest the threshold, items in a seeded random order)",
                lambda v, share=share: budget_decisions(v, share, thr, args.seed),
            )
        )
    band = escalation_band(detector, args)
    if band is None:
        print(f"\n(no band from SummEdits' evaluation split: {args.evidence_cache} is missing)")
    else:
        low, high = band
        strategies.append(
            (
                f"band ({low:.3f}, {high:.3f}): {100 * args.escalate:.0f}% of SummEdits' evaluation rows,"
                " set there before any held-out item",
                lambda v: np.array([decide(float(x), low, high) == ESCALATE for x in v]),
            )
        )
    return strategies


def run_cascade(detector: Detector, args: argparse.Namespace) -> None:
    from pilothouse.costs.catalogue import PriceCatalogue

    if not CASCADE:
        return
    catalogue = PriceCatalogue.packaged()
    judges = {"gpt_4o": "gpt-4o", "gpt-4-turbo": "gpt-4-turbo", "gpt-3.5-turbo": "gpt-3.5-turbo"}
    print(
        "\nCascade: prompt tokens estimated at 4 characters a token, ~30 output tokens per verdict,"
        " catalogue prices; the judge = the verdicts FaithBench ships for each GPT model on the same"
        " samples (1 = consistent)"
    )
    for label, choose in cascade_strategies(detector, args):
        print(f"\n  escalation: {label}")
        print(f"  {'set':12} {'items':>6} {'escalated %':>12}   judge cost: cascade / alone")
        for name in dict.fromkeys(n for n, _, _ in CASCADE):
            values = np.array([v for n, v, _ in CASCADE if n == name])
            tokens = np.array([t for n, _, t in CASCADE if n == name])
            up = choose(values)
            print(
                f"  {name:12} {len(values):6} {100 * up.mean():12.1f}   {tokens[up].sum() / tokens.sum():.2f}"
            )
        if not FAITHBENCH:
            continue
        ok = np.array([o for _, o, _ in FAITHBENCH])
        local = np.array([v for v, _, _ in FAITHBENCH])
        escalated = choose(local)
        tokens = np.array([t for n, _, t in CASCADE if n == "FaithBench"])
        print(
            f"  {'FaithBench judge':16} {'judge alone BA % [95% CI]':>27} {'cascade BA % [95% CI]':>27}"
            f" {'difference [95% CI]':>25} {'alone $/1k':>11} {'cascade $/1k':>13}"
        )
        for key, model in judges.items():
            verdicts = [b.get(key) for _, _, b in FAITHBENCH]
            keep = np.array([v is not None for v in verdicts])
            judge = np.array([int(float(v) >= 0.5) if v is not None else 0 for v in verdicts])
            mine = np.where(escalated, judge, (local >= detector.threshold).astype(int))
            row = catalogue.lookup(None, model)
            rates = (row.input, row.output) if row is not None else (math.nan, math.nan)

            def price(t: int, rates: tuple[float, float] = rates) -> float:
                return (t * rates[0] + 30 * rates[1]) / 1e6

            alone = 1000 * float(np.mean([price(t) for t in tokens[keep]]))
            cascade = 1000 * float(
                np.mean([price(t) if e else 0.0 for t, e in zip(tokens[keep], escalated[keep], strict=True)])
            )
            both = [judge[keep], mine[keep], ok[keep]]
            a = bootstrap(lambda j, m, y: balanced_accuracy(j, y), both, args.seed)
            c = bootstrap(lambda j, m, y: balanced_accuracy(m, y), both, args.seed)
            # paired: the same resampled items for both, so the interval is of the difference itself
            d = bootstrap(lambda j, m, y: balanced_accuracy(m, y) - balanced_accuracy(j, y), both, args.seed)
            print(f"  {model:16} {fmt(a):>27} {fmt(c):>27} {fmt(d):>25} {alone:11.4f} {cascade:13.4f}")


def latency_child(args: argparse.Namespace) -> None:
    """In a fresh process: ``--latency`` cold-cache checks; prints one JSON line."""
    from pilothouse.quality.hallucination.lm import LanguageModelEvidence

    budget = None if args.child_budget == "none" else int(args.child_budget)
    detector = Detector(
        LanguageModelEvidence(
            threads=args.threads or 2,
            quantize=not args.float32,
            context_budget=budget,
            adapter=None if args.child_adapter == "none" else Path(args.child_adapter),
        )
    )
    pairs = load_bump(args.data)
    random.Random(args.seed).shuffle(pairs)
    started_cpu = time.process_time()
    detector.evidence.load()
    load_cpu = time.process_time() - started_cpu
    _, tokenizer = detector.evidence.model_and_tokenizer()
    times, cpus, sizes = [], [], []
    for p in pairs[: args.latency]:
        ids = tokenizer.encode(p["article"], add_special_tokens=False)[:1000]
        context = tokenizer.decode(ids)
        detector.evidence.forget_context()
        wall, cpu = time.perf_counter(), time.process_time()
        detector.detect(p["edited_summary"], context)
        times.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        sizes.append(len(ids))
    print(
        json.dumps(
            {
                "times": times,
                "cpu": cpus,
                "context_tokens": sizes,
                "load_cpu": load_cpu,
                "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "rss_now_mib": _rss_now_mib(),
                "threads": __import__("torch").get_num_threads(),
            }
        )
    )


def _rss_now_mib() -> float:
    """The process's resident set now (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def run_latency(args: argparse.Namespace) -> None:
    import subprocess

    print(
        f"\nLatency: {args.latency} checks per fresh process, cold context cache, BUMP articles cut to"
        f" <= 1,000 tokens, OMP_WAIT_POLICY={args.wait_policy},"
        f" load average now {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        f"  {'detector':42} {'p50 s':>6} {'p95 s':>6} {'CPU s/check':>12} {'peak RSS MiB':>13}"
        f" {'RSS after MiB':>14} {'threads':>8}"
    )
    adapter = args.adapter_list[0]
    configs = [
        (f"int8, {describe(b)}{model_name(adapter)}", ["--child-budget", b, "--child-adapter", adapter])
        for b in args.budgets
    ]
    if args.latency_float32:
        configs.append(("float32, whole context", ["--float32", "--child-budget", "none"]))
    for label, extra in configs:
        command = [
            sys.executable,
            __file__,
            "--latency-child",
            "--latency",
            str(args.latency),
            "--data",
            str(args.data),
            "--seed",
            str(args.seed),
            "--threads",
            str(args.threads or 2),
            *extra,
        ]
        env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        if args.wait_policy != "default":
            env["OMP_WAIT_POLICY"] = args.wait_policy
        out = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            print(f"  {label:42} failed: {out.stderr.strip()[-300:]}")
            continue
        result = json.loads(lines[-1])
        times = result["times"]
        p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
        print(
            f"  {label:42} {statistics.median(times):6.2f} {p95:6.2f} {statistics.mean(result['cpu']):12.2f}"
            f" {result['rss_mib']:13.0f} {result['rss_now_mib']:14.0f} {result['threads']:8}"
        )
    print(
        f"  load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())};"
        " target p95 <= 1.5 s, RSS <= 1 GB"
    )


def model_name(adapter: str) -> str:
    """A model in words (empty for SmolLM2 as shipped)."""
    return "" if adapter == "none" else f", adapter {Path(adapter).name}"


def describe(budget: str) -> str:
    """A context budget in words."""
    if budget == "none":
        return "whole context (cut to 1,000 tokens)"
    return f"selected passages, {budget}-token budget"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hallucination")
    parser.add_argument(
        "--limit", type=int, default=None, help="a seeded stratified sample of N items per set"
    )
    parser.add_argument(
        "--documents",
        type=int,
        default=None,
        help="score every item of N seeded random documents per set (instead of --limit)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sets", default="summedits,bump,faithbench")
    parser.add_argument("--latency", type=int, default=30, help="cold-cache latency checks (0: none)")
    parser.add_argument("--cache", type=Path, default=REPO / ".pilothouse" / "hallucination")
    parser.add_argument(
        "--evidence-cache",
        type=Path,
        default=REPO / ".pilothouse" / "hallucination" / "summedits-evaluation.tokens.jsonl",
        help="the training command's evidence cache (the cascade's band is set on it)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--escalate", type=float, default=0.25, help="cascade: share of the evaluation split escalated"
    )
    parser.add_argument(
        "--escalate-shares",
        type=lambda v: [float(x) for x in v.split(",") if x.strip()],
        default=[0.25],
        help="cascade: escalation budgets (shares of checks), comma-separated (default 0.25)",
    )
    parser.add_argument(
        "--evidence-only",
        action="store_true",
        help="compute and cache the per-token evidence of the chosen sets; score and print nothing",
    )
    parser.add_argument("--latency-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--wait-policy",
        default=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        help="OpenMP's OMP_WAIT_POLICY in the latency processes: PASSIVE (as `pilothouse` sets it"
        " unless the environment sets one; the default here too), ACTIVE, or 'default' (unset: OpenMP's"
        " own, spinning a while before it sleeps)",
    )
    parser.add_argument(
        "--no-cascade",
        dest="cascade",
        action="store_false",
        help="skip the cascade table (it needs the training command's evidence cache)",
    )
    parser.add_argument("--float32", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-budget", default="none", help=argparse.SUPPRESS)
    parser.add_argument("--child-adapter", default="none", help=argparse.SUPPRESS)
    parser.add_argument(
        "--adapters",
        default=str(default_adapter() or "none"),
        help="models to score side by side: 'none' (SmolLM2 as shipped) or a LoRA adapter file"
        " (python -m pilothouse.quality.hallucination.contrastive), comma-separated; the latency is"
        " timed with the first (default: the detector's default, %(default)s)",
    )
    parser.add_argument(
        "--adapter-coefficients",
        default="",
        help="PATH: score the models with an adapter with these coefficients (their scale and threshold)",
    )
    parser.add_argument(
        "--context-budgets",
        default=f"none,{DEFAULT_CONTEXT_BUDGET}" if DEFAULT_CONTEXT_BUDGET else "none",
        help="context selection budgets to measure side by side, 'none' = the context read whole"
        " (cut to 1,000 tokens): the baseline (default: %(default)s)",
    )
    parser.add_argument(
        "--coefficients",
        default="",
        help="BUDGET=PATH,...: score a budget with other coefficients than the shipped ones",
    )
    parser.add_argument(
        "--latency-float32", action="store_true", help="also time the float32 detector (whole context)"
    )
    args = parser.parse_args()
    if not (args.data / "summedits").is_dir():
        print(
            f"hallucination data not found at {args.data} (need summedits/, bump/, faithbench/; see --data): "
            "nothing measured",
            file=sys.stderr,
        )
        raise SystemExit(2)
    if args.latency_child:
        latency_child(args)
        return
    from pilothouse.quality.hallucination.lm import LanguageModelEvidence

    args.budgets = [b.strip() for b in args.context_budgets.split(",") if b.strip()]
    for budget in args.budgets:
        if budget != "none" and not (budget.isdigit() and int(budget) > 0):
            raise SystemExit(f"--context-budgets: {budget!r} is neither 'none' nor a positive integer")
    args.adapter_list = [a.strip() for a in args.adapters.split(",") if a.strip()] or ["none"]
    for adapter in args.adapter_list:
        if adapter != "none" and not Path(adapter).is_file():
            raise SystemExit(f"--adapters: no adapter file at {adapter}")
    coefficients = shipped_coefficients()
    print(f"coefficients: {coefficients.features} threshold {coefficients.threshold:.3f}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; cpus {os.cpu_count()}")
    wall, cpu = time.perf_counter(), time.process_time()
    runners = {"summedits": run_summedits, "bump": run_bump, "faithbench": run_faithbench}
    chosen = dict(part.split("=", 1) for part in args.coefficients.split(",") if "=" in part)
    for adapter in args.adapter_list:
        detector = Detector(
            LanguageModelEvidence(threads=args.threads, adapter=None if adapter == "none" else Path(adapter))
        )
        shipped = detector.model
        if adapter != "none" and args.adapter_coefficients:
            shipped = LogisticModel.from_dict(json.loads(Path(args.adapter_coefficients).read_text()))
        for budget in args.budgets:
            detector.model = shipped
            if budget in chosen and adapter == "none":  # coefficients fitted for this budget
                detector.model = LogisticModel.from_dict(json.loads(Path(chosen[budget]).read_text()))
                print(f"coefficients for {budget}: {chosen[budget]} threshold {detector.model.threshold:.3f}")
            detector.threshold = detector.model.threshold
            detector.evidence.context_budget = None if budget == "none" else int(budget)
            detector.evidence.forget_context()
            CASCADE.clear()
            FAITHBENCH.clear()
            print(
                f"\n=== context: {describe(budget)}; model: SmolLM2"
                + (f" + adapter {adapter}" if adapter != "none" else " as shipped (no adapter)")
                + f"; threshold {detector.threshold:.3f}"
            )
            for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
                if name not in runners:
                    raise SystemExit(f"unknown set {name!r} (known: {', '.join(runners)})")
                runners[name](detector, args, args.cache)
            if not args.evidence_only and args.cascade:
                run_cascade(detector, args)
    if args.evidence_only:
        return
    print(
        f"\nscoring: wall {time.perf_counter() - wall:.0f} s, CPU {time.process_time() - cpu:.0f} s, "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
        f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    if args.latency:
        run_latency(args)


if __name__ == "__main__":
    main()

"""Where the detector's unsupported spans land, against where the error is.

    python benchmarks/hallucination_spans.py [--dev-documents 12] [--bump-documents 15,40]
        [--faithbench-sources 15] [--threads 1]

Gold spans: the words an edit changed (SummEdits: a row's summary against its ``original_summary``;
BUMP: the edited summary against its reference; a word-level diff, insertions and replacements) and
FaithBench's annotated ``Unwanted`` spans. The detector's per-token evidence (SmolLM2, cached under
``.pilothouse/hallucination/`` with the ids ``benchmarks/hallucination.py`` and the training command
use, so the three share their caches) is computed once per summary.

Span rules compared, word by word (a word's log p is its least likely token's, with that token's PMI):

- ``sentences``: what the detector flagged before: every word of the sentences whose support is under
  the shipped threshold (or of the least supported one);
- ``every word``: the floor (precision = the share of gold words, recall 1);
- ``novel``: content words absent from the context (numbers compared without separators);
- ``unlikely``: content words with log p < A and PMI < B (the context did not raise them);
- ``words`` (the detector's rule): ``novel`` or ``unlikely``.

A and B are chosen on SummEdits' ``evaluation`` split only (inconsistent rows of ``--dev-documents``
seeded documents), by word-level F1; BUMP and FaithBench are then measured once with them. Metrics:
word precision, recall and F1 (over all words of the set), the share of items with at least one
flagged gold word (``found``), and the share of all words flagged."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from hallucination import _id, load_bump, load_faithbench  # noqa: E402

from pilothouse.quality.hallucination.detector import sentence_scores, shipped_coefficients  # noqa: E402
from pilothouse.quality.hallucination.features import TokenEvidence  # noqa: E402
from pilothouse.quality.hallucination.spans import WordRule, word_evidence, words  # noqa: E402
from pilothouse.quality.hallucination.train import compute_evidence, load_summedits  # noqa: E402

Row = dict[str, Any]
Gold = set[int]  # indexes of the summary's words that the error covers


def lazy_evidence(threads: int) -> Callable[[str, str], Sequence[TokenEvidence]]:
    """SmolLM2's per-token evidence of (summary, document), the model loaded on the first row that is
    not cached, on ``threads`` threads (OpenMP passive while waiting, as ``pilothouse`` sets it)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(threads)
    model: list[Any] = []

    def evidence(summary: str, doc: str) -> Sequence[TokenEvidence]:
        if not model:
            from pilothouse.quality.hallucination.lm import LanguageModelEvidence

            model.append(LanguageModelEvidence())
        return list(model[0].evidence(summary, doc).tokens)

    return evidence


def print_cost(started: float, cpu: float) -> None:
    """The run's wall and CPU seconds since ``started`` / ``cpu``, and the load average."""
    load = os.getloadavg()
    print(
        f"\n{time.perf_counter() - started:.0f} s wall, {time.process_time() - cpu:.0f} s CPU, "
        f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )


def diff_gold(original: str, edited: str) -> Gold:
    """The words of ``edited`` that a word-level diff against ``original`` marks as replaced or inserted."""
    a = [w.text.lower() for w in words(original)]
    b = [w.text.lower() for w in words(edited)]
    gold: Gold = set()
    for op, _i1, _i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op in ("replace", "insert"):
            gold.update(range(j1, j2))
    return gold


def span_gold(summary: str, spans: Sequence[tuple[int, int]]) -> Gold:
    """The words of ``summary`` that overlap any of ``spans`` (character offsets)."""
    return {i for i, w in enumerate(words(summary)) if any(w.start < b and a < w.end for a, b in spans)}


def summedits_dev(args: argparse.Namespace) -> list[Row]:
    rows = [
        r
        for r in load_summedits(args.data, "evaluation")
        if r["label"] in ("0", 0) and r.get("original_summary")
    ]
    docs = sorted({r["doc"] for r in rows})
    chosen = set(random.Random(args.seed).sample(docs, min(args.dev_documents, len(docs))))
    out = []
    for r in rows:
        if r["doc"] in chosen and (gold := diff_gold(r["original_summary"], r["summary"])):
            out.append({"id": r["id"], "doc": r["doc"], "summary": r["summary"], "gold": gold})
    return out


def seeded_bump_pairs(args: argparse.Namespace) -> list[Row]:
    """Every BUMP pair on ``--bump-documents`` seeded articles of task 1 and of task 2."""
    pairs = load_bump(args.data)
    rng = random.Random(args.seed)
    out = []
    for task, take in zip((1, 2), args.bump_documents, strict=True):
        articles = sorted({p["article"] for p in pairs if p["task"] == task})
        chosen = set(rng.sample(articles, min(take, len(articles))))
        out += [p for p in pairs if p["task"] == task and p["article"] in chosen]
    return out


def edit_id(pair: Row) -> str:
    """The cache id of a BUMP pair's edited summary (as ``benchmarks/hallucination.py`` names it)."""
    return _id("edit", str(pair["task"]), str(pair["index"]), pair["edited_summary"])


def bump_rows(args: argparse.Namespace) -> list[Row]:
    out = []
    for p in seeded_bump_pairs(args):
        if gold := diff_gold(p["reference_summary"], p["edited_summary"]):
            out.append({"id": edit_id(p), "doc": p["article"], "summary": p["edited_summary"], "gold": gold})
    return out


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both span benchmarks take: data, cache, seed, the samples and threads."""
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "hallucination")
    parser.add_argument("--cache", type=Path, default=REPO / ".pilothouse" / "hallucination")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dev-documents", type=int, default=12)
    parser.add_argument(
        "--bump-documents",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[15, 40],
        help="seeded articles of BUMP's task 1 and task 2 (every pair on them)",
    )
    parser.add_argument("--faithbench-sources", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)


def faithbench_rows(args: argparse.Namespace) -> list[Row]:
    annotated: dict[str, list[tuple[int, int]]] = {}
    for batch in sorted((args.data / "faithbench" / "data_for_release").glob("batch_*.json")):
        for sample in json.loads(batch.read_text(encoding="utf-8"))["samples"]:
            spans = [
                (a["summary_start"], a["summary_end"])
                for a in sample.get("annotations") or []
                if any(str(lab).startswith("Unwanted") for lab in a.get("label") or [])
                and isinstance(a.get("summary_start"), int)
                and isinstance(a.get("summary_end"), int)
            ]
            annotated[f"{batch.stem}-{sample['sample_id']}"] = spans
    samples = load_faithbench(args.data)
    sources = sorted({s["doc"] for s in samples})
    chosen = set(random.Random(args.seed).sample(sources, min(args.faithbench_sources, len(sources))))
    out = []
    for s in samples:
        if s["doc"] in chosen and s["hallucinated"] and (gold := span_gold(s["summary"], annotated[s["id"]])):
            out.append({"id": s["id"], "doc": s["doc"], "summary": s["summary"], "gold": gold})
    return out


def sentence_rule(row: Row, tokens: Sequence[TokenEvidence]) -> Gold:
    """The words the detector flagged before this rule: every word of the flagged sentences."""
    model = shipped_coefficients()
    scored = sentence_scores(model, row["summary"], row["doc"], tokens)
    if not scored:
        return set()
    below = [s for s in scored if s[2] < model.threshold] or [min(scored, key=lambda s: s[2])]
    return span_gold(row["summary"], [(a, b) for a, b, _ in below])


def measure(rows: Sequence[Row], flag: Callable[[Row], Gold]) -> dict[str, float]:
    hit = flagged = gold = total = found = 0
    for row in rows:
        marked = flag(row)
        hit += len(marked & row["gold"])
        flagged += len(marked)
        gold += len(row["gold"])
        total += len(words(row["summary"]))
        found += bool(marked & row["gold"])
    precision = hit / flagged if flagged else 0.0
    recall = hit / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "found": found / len(rows) if rows else 0.0,
        "flagged": flagged / total if total else 0.0,
    }


def rules(tokens: dict[str, Sequence[TokenEvidence]], rule: WordRule) -> dict[str, Callable[[Row], Gold]]:
    def by_words(pick: Callable[[Any], bool]) -> Callable[[Row], Gold]:
        def flag(row: Row) -> Gold:
            found = word_evidence(row["summary"], row["doc"], tokens[row["id"]])
            return {i for i, w in enumerate(found) if pick(w)}

        return flag

    return {
        "sentences (before)": lambda row: sentence_rule(row, tokens[row["id"]]),
        "every word": lambda row: set(range(len(words(row["summary"])))),
        "novel": by_words(lambda w: w.content and w.novel),
        "novel names and numbers": by_words(lambda w: w.content and w.novel and w.named),
        f"unlikely (log p < {rule.max_logprob:g}, PMI < {rule.max_pmi:g})": by_words(
            lambda w: w.content and rule.unlikely(w)
        ),
        f"words (novel: {rule.novel}, or unlikely)": by_words(rule.flags),
    }


def table(title: str, rows: Sequence[Row], flags: dict[str, Callable[[Row], Gold]]) -> None:
    gold = sum(len(r["gold"]) for r in rows)
    total = sum(len(words(r["summary"])) for r in rows)
    print(f"\n{title}: {len(rows)} items, {gold} gold words of {total} ({100 * gold / max(1, total):.1f}%)")
    print("| rule | precision | recall | F1 | found | words flagged |\n|---|---|---|---|---|---|")
    for name, flag in flags.items():
        m = measure(rows, flag)
        print(
            f"| {name} | {100 * m['precision']:.1f} | {100 * m['recall']:.1f} | {100 * m['f1']:.1f} "
            f"| {100 * m['found']:.1f} | {100 * m['flagged']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common_arguments(parser)
    parser.add_argument("--sets", default="bump,faithbench", help="held-out sets to measure")
    parser.add_argument("--fixed", action="store_true", help="measure with the shipped rule; choose nothing")
    args = parser.parse_args()
    missing = [
        name for name in ("summedits", *args.sets.split(",")) if name and not (args.data / name).is_dir()
    ]
    if missing:
        raise SystemExit(
            f"hallucination data not found at {args.data} (no {', '.join(missing)}/; see --data)"
        )
    evidence = lazy_evidence(args.threads)

    started, cpu = time.perf_counter(), time.process_time()
    dev = summedits_dev(args)
    tokens = dict(compute_evidence(dev, args.cache / "summedits-evaluation.tokens.jsonl", evidence))
    rule = WordRule()
    if not args.fixed:
        best: tuple[float, WordRule] | None = None
        for novel in ("any", "named", "none"):
            for a in (-3.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0, -10.0, -12.0, -99.0):
                for b in (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 100.0):
                    candidate = WordRule(max_logprob=a, max_pmi=b, novel=novel)
                    by_rule = rules(tokens, candidate)[f"words (novel: {novel}, or unlikely)"]
                    f1 = measure(dev, by_rule)["f1"]
                    if best is None or f1 > best[0] + 1e-12:
                        best = (f1, candidate)
        assert best is not None
        print(
            f"chosen on SummEdits' evaluation split: novel {best[1].novel}, log p < "
            f"{best[1].max_logprob:g}, PMI < {best[1].max_pmi:g} (word F1 {100 * best[0]:.1f}); shipped: "
            f"novel {rule.novel}, log p < {rule.max_logprob:g}, PMI < {rule.max_pmi:g}"
        )
        rule = best[1]
    table("SummEdits evaluation (the split the thresholds are chosen on)", dev, rules(tokens, rule))
    sets = {
        "bump": (bump_rows, "bump.tokens.jsonl", "BUMP edited summaries (held out)"),
        "faithbench": (faithbench_rows, "faithbench.tokens.jsonl", "FaithBench hallucinated (held out)"),
    }
    for name in [s for s in args.sets.split(",") if s]:
        load, cache_name, title = sets[name]
        rows = load(args)
        tokens.update(compute_evidence(rows, args.cache / cache_name, evidence))
        table(title, rows, rules(tokens, rule))
    print_cost(started, cpu)


if __name__ == "__main__":
    main()

"""Train the detector's language model to rank faithful summaries above unfaithful ones: a LoRA adapter
on SmolLM2 (:mod:`~pilothouse.quality.hallucination.adapter`) fitted so that the mean log p(faithful
summary | document) exceeds the mean log p(unfaithful one | the same document)::

    python -m pilothouse.quality.hallucination.contrastive --data ../shared/data/hallucination \\
        --out src/pilothouse/quality/hallucination/adapter.safetensors

Data: SummEdits' ``evaluation`` split only (Apache-2.0; ``test``, BUMP and FaithBench stay held out):
its labelled pairs (a consistent and an inconsistent edit of the same seed summary) and synthetic pairs
(:mod:`~pilothouse.quality.hallucination.perturb`: a number, name, negation, antonym, pronoun or added
clause changed in a consistent summary or in a sentence of the document). The document is cut to the
passages that bear on the faithful text (``--context-tokens``, default 256, by
:func:`~pilothouse.quality.hallucination.selection.select_context`) so a step is cheap on a CPU.

Loss per pair: ``softplus(-beta * (mean log p(good) - mean log p(bad)))`` plus ``--lm-weight`` times
the faithful text's mean negative log-likelihood (keeps the model a language model). ``--validate K``
holds out every row of K seeded documents (grouped: a document is never on both sides), trains on the
rest and reports, on the held-out documents' labelled rows, the AUROC and the within-seed pairwise
accuracy of the mean log p with the adapter and without it (the detector's int8 evidence, contexts
read whole). Deterministic for a given seed and thread count."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilothouse.quality.hallucination import adapter as lora
from pilothouse.quality.hallucination.features import sentences
from pilothouse.quality.hallucination.perturb import KINDS, edits
from pilothouse.quality.hallucination.selection import select_context

DEFAULT_DATA = Path("../shared/data/hallucination")


@dataclass(frozen=True)
class Pair:
    """A training pair: the (cut) document, a faithful text and an unfaithful one, and its origin."""

    document: str  # which document (grouping key)
    context: str
    good: str
    bad: str
    source: str  # "labelled" or "synthetic:<kind>" or "sentence:<kind>"


@dataclass(frozen=True)
class Settings:
    """How to train (the defaults are what the shipped adapter used)."""

    steps: int = 150  # optimiser steps
    batch: int = 4  # pairs per step
    lr: float = 3e-4
    r: int = 8
    alpha: float = 16.0
    beta: float = 5.0  # the pairwise loss's scale on the difference of mean log p
    lm_weight: float = 0.1
    context_tokens: int = 256
    sentences_per_document: int = 24
    edits_per_summary: int = 2
    seed: int = 7
    max_minutes: float | None = None  # stop (and save) after this long
    checkpoint_every: int = 0  # also save the adapter every N steps (<out stem>.stepN.safetensors)


def build_pairs(
    rows: Sequence[dict[str, Any]],
    count_tokens: Any,
    settings: Settings,
) -> list[Pair]:
    """Labelled and synthetic pairs from SummEdits rows (``doc``, ``summary``, ``label``,
    ``original_summary``), contexts cut to ``settings.context_tokens``; shuffled with the seed."""
    rng = random.Random(settings.seed)
    by_doc: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_doc.setdefault(row["doc"], []).append(row)
    pairs: list[Pair] = []
    cut: dict[tuple[str, str], str] = {}

    def context(doc: str, text: str) -> str:
        key = (doc, text)
        if key not in cut:
            cut[key] = select_context(doc, text, settings.context_tokens, count_tokens).text
        return cut[key]

    for doc, group in sorted(by_doc.items()):
        key = doc[:80]
        seeds: dict[str, tuple[list[str], list[str]]] = {}
        for row in group:
            good, bad = seeds.setdefault(row.get("original_summary") or row["summary"], ([], []))
            (good if int(row["label"]) == 1 else bad).append(row["summary"])
        faithful: list[str] = []
        for _original, (good, bad) in sorted(seeds.items()):
            good = sorted(set(good))
            faithful += good
            for wrong in sorted(set(bad)):
                if good:
                    right = rng.choice(good)
                    pairs.append(Pair(key, context(doc, right), right, wrong, "labelled"))
        for right in sorted(set(faithful)):
            made = edits(right, doc, rng)
            for edit in rng.sample(made, min(settings.edits_per_summary, len(made))):
                pairs.append(Pair(key, context(doc, right), right, edit.text, f"synthetic:{edit.kind}"))
        candidates = [s.text for s in sentences(doc) if 8 <= len(s.text.split()) <= 60]
        for sentence in rng.sample(candidates, min(settings.sentences_per_document, len(candidates))):
            made = edits(sentence, doc, rng)
            if made:
                edit = rng.choice(made)
                pairs.append(Pair(key, context(doc, sentence), sentence, edit.text, f"sentence:{edit.kind}"))
    rng.shuffle(pairs)
    return pairs


def _load_model(threads: int | None) -> tuple[Any, Any, Any]:
    from pilothouse.quality.hallucination.lm import LanguageModelEvidence

    evidence = LanguageModelEvidence(threads=threads, quantize=False)
    model, tokenizer = evidence.model_and_tokenizer()
    torch = importlib.import_module("torch")
    return torch, model, tokenizer


def mean_logprobs(torch: Any, model: Any, prompt: list[int], responses: Sequence[list[int]]) -> Any:
    """Mean log p of each response's tokens after ``prompt``, differentiable through the responses'
    own tokens: the prompt (the context) is read once, without gradients, and its key/value cache
    serves every response (right-padded into one batch; causal attention never sees the padding).
    Three to four times cheaper than back-propagating through the context too; the adapter still
    shapes how the response reads the context (its queries) and itself (its values)."""
    body = model.model
    keyword = "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"
    with torch.no_grad():
        out = body(input_ids=torch.tensor([prompt]), use_cache=True)
        cache = out.cache if keyword == "cache" else out.past_key_values
        first = model.lm_head(out.last_hidden_state[0, -1]).float()  # predicts each response's first token
    if len(responses) > 1:
        cache.batch_repeat_interleave(len(responses))
    width = max(map(len, responses))
    ids = torch.zeros((len(responses), width), dtype=torch.long)
    for i, response in enumerate(responses):
        ids[i, : len(response)] = torch.tensor(response)
    hidden = body(input_ids=ids, use_cache=True, **{keyword: cache}).last_hidden_state
    means = []
    for i, response in enumerate(responses):
        logits = torch.cat([first[None], model.lm_head(hidden[i, : len(response) - 1]).float()])
        logp = torch.log_softmax(logits, -1).gather(1, torch.tensor(response)[:, None])
        means.append(logp.mean())
    return torch.stack(means)


def train(
    pairs: Sequence[Pair],
    settings: Settings,
    out: Path,
    *,
    threads: int | None = None,
    log: Any = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit a LoRA adapter on ``pairs`` and write it to ``out``; what happened (steps, losses, time)."""
    from pilothouse.quality.hallucination.lm import CONTEXT_PROMPT

    if not pairs:
        raise ValueError("no training pairs")
    torch, model, tokenizer = _load_model(threads)
    torch.manual_seed(settings.seed)
    wrapped = lora.wrap(torch, model, settings.r, settings.alpha, seed=settings.seed)
    params = [p for m in wrapped.values() for p in (m.lora_a, m.lora_b)]
    optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    model.train()
    started = time.perf_counter()
    cursor, tokens, history = 0, 0, []
    step = 0
    for step in range(1, settings.steps + 1):
        optimiser.zero_grad()
        losses, margins = [], []
        for _ in range(settings.batch):
            pair = pairs[cursor % len(pairs)]
            cursor += 1
            prompt = tokenizer.encode(CONTEXT_PROMPT.format(context=pair.context), add_special_tokens=False)
            good = tokenizer.encode(pair.good, add_special_tokens=False)[:256]
            bad = tokenizer.encode(pair.bad, add_special_tokens=False)[:256]
            if not good or not bad:
                continue
            means = mean_logprobs(torch, model, prompt, [good, bad])
            margin = means[0] - means[1]
            loss = torch.nn.functional.softplus(-settings.beta * margin) - settings.lm_weight * means[0]
            (loss / settings.batch).backward()
            losses.append(float(loss.detach()))
            margins.append(float(margin.detach()))
            tokens += len(prompt) + len(good) + len(bad)
        optimiser.step()
        elapsed = time.perf_counter() - started
        history.append((step, sum(losses) / max(1, len(losses)), sum(margins) / max(1, len(margins))))
        if log and (step % 10 == 0 or step == 1):
            recent = history[-10:]
            print(
                f"  step {step}/{settings.steps}: loss {sum(h[1] for h in recent) / len(recent):.3f},"
                f" margin {sum(h[2] for h in recent) / len(recent):+.3f} nats,"
                f" {tokens / elapsed:.0f} tokens/s, {elapsed:.0f} s",
                file=log,
                flush=True,
            )
        if settings.checkpoint_every and step % settings.checkpoint_every == 0:
            checkpoint = describe(settings, step, cursor, elapsed, metadata)
            lora.save(out.with_name(f"{out.stem}.step{step}{out.suffix}"), wrapped, checkpoint)
        if settings.max_minutes is not None and elapsed > 60 * settings.max_minutes:
            break
    model.eval()
    info = describe(settings, step, cursor, time.perf_counter() - started, metadata)
    lora.save(out, wrapped, info)
    return info


def describe(
    settings: Settings, step: int, pairs_seen: int, seconds: float, metadata: dict[str, Any] | None
) -> dict[str, Any]:
    """What the adapter file says about how it was trained."""
    return {
        "base": "smollm2",
        "targets": list(lora.DEFAULT_TARGETS),
        "steps": step,
        "pairs_seen": pairs_seen,
        "settings": dict(settings.__dict__),
        "trained_on": "SummEdits evaluation split (labelled pairs + synthetic edits)",
        "seconds": round(seconds, 1),
        **(metadata or {}),
    }


def auroc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """P(a label-1 row outscores a label-0 row), ties half."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    if not pos or not neg:
        return math.nan
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def pairwise(rows: Sequence[dict[str, Any]], scores: Sequence[float]) -> float:
    """Within each seed summary, the share of (consistent, inconsistent) pairs ranked right, ties half."""
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for row, score in zip(rows, scores, strict=True):
        good, bad = groups.setdefault((row["doc"], row.get("original_summary") or ""), ([], []))
        (good if int(row["label"]) == 1 else bad).append(score)
    right = total = 0.0
    for good, bad in groups.values():
        for g in good:
            for b in bad:
                right += (g > b) + 0.5 * (g == b)
                total += 1
    return right / total if total else math.nan


def score_rows(rows: Sequence[dict[str, Any]], adapter: Path | None, threads: int | None) -> list[float]:
    """The detector's evidence (int8, context read whole up to 1,000 tokens): mean log p of each row."""
    from pilothouse.quality.hallucination.lm import LanguageModelEvidence

    evidence = LanguageModelEvidence(threads=threads, adapter=adapter)
    scores: dict[str, float] = {}
    for row in sorted(rows, key=lambda r: r["doc"]):
        tokens = evidence.evidence(row["summary"], row["doc"]).tokens
        scores[row["id"]] = sum(t.logprob for t in tokens) / len(tokens) if tokens else 0.0
    return [scores[r["id"]] for r in rows]


def split_documents(rows: Sequence[dict[str, Any]], hold: int, seed: int) -> tuple[list[Any], list[Any]]:
    """(training rows, held-out rows): every row of ``hold`` seeded documents held out."""
    docs = sorted({r["doc"] for r in rows})
    held = set(random.Random(seed).sample(docs, min(hold, len(docs) - 1)))
    return [r for r in rows if r["doc"] not in held], [r for r in rows if r["doc"] in held]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pilothouse.quality.hallucination.contrastive",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder holding summedits/")
    parser.add_argument("--out", type=Path, default=lora.SHIPPED_ADAPTER, help="adapter file to write")
    parser.add_argument("--validate", type=int, default=0, metavar="K", help="hold out K documents")
    parser.add_argument("--limit", type=int, default=None, help="use the first N rows only (tests)")
    parser.add_argument("--threads", type=int, default=None)
    defaults = Settings()
    for name, value in defaults.__dict__.items():
        kind = float if isinstance(value, float) or value is None else int
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=value)
    args = parser.parse_args(argv)
    from pilothouse.quality.hallucination.train import load_summedits

    try:
        rows = load_summedits(args.data, "evaluation")
    except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
        print(f"cannot read SummEdits' evaluation split under {args.data}: {exc}", file=sys.stderr)
        return 2
    if args.limit is not None:
        rows = rows[: args.limit]
    try:
        settings = Settings(**{k: getattr(args, k) for k in defaults.__dict__})
        if settings.steps < 1 or settings.batch < 1 or settings.context_tokens < 16:
            raise ValueError("steps and batch must be at least 1, context-tokens at least 16")
    except (TypeError, ValueError) as exc:
        print(f"bad setting: {exc}", file=sys.stderr)
        return 2
    train_rows, held = split_documents(rows, args.validate, settings.seed) if args.validate else (rows, [])
    transformers = importlib.import_module("transformers")
    from pilothouse.providers.base import Deployment
    from pilothouse.providers.local import SMOLLM2, LocalProvider

    base = LocalProvider(Deployment(name="t", provider="local", model=SMOLLM2, options={"warmup": False}))
    tokenizer = transformers.AutoTokenizer.from_pretrained(base.base_directory(), local_files_only=True)
    pairs = build_pairs(train_rows, lambda t: len(tokenizer.encode(t, add_special_tokens=False)), settings)
    if not pairs:
        print(f"no training pairs from the {len(train_rows)} rows under {args.data}", file=sys.stderr)
        return 2
    kinds: dict[str, int] = {}
    for pair in pairs:
        kinds[pair.source] = kinds.get(pair.source, 0) + 1
    print(
        f"{len(train_rows)} rows of {len({r['doc'] for r in train_rows})} documents -> {len(pairs)} pairs:"
        f" {json.dumps(dict(sorted(kinds.items())))}",
        flush=True,
    )
    out = args.out
    try:
        info = train(
            pairs,
            settings,
            out,
            threads=args.threads,
            log=sys.stdout,
            metadata={
                "documents": len({r["doc"] for r in train_rows}),
                "rows": len(train_rows),
                "held_out_documents": len({r["doc"] for r in held}),
            },
        )
    except (OSError, lora.AdapterError) as exc:
        print(f"cannot train or write the adapter: {exc}", file=sys.stderr)
        return 2
    print(
        f"trained: {info['steps']} steps, {info['pairs_seen']} pairs, {info['seconds']} s -> {out}",
        flush=True,
    )
    if held:
        labels = [int(r["label"]) for r in held]
        print(f"held out: {len(held)} rows of {len({r['doc'] for r in held})} documents", flush=True)
        checkpoints = sorted(
            out.parent.glob(f"{out.stem}.step*{out.suffix}"), key=lambda p: int(p.stem.rsplit("step", 1)[1])
        )
        for name, path in [("untrained", None), *((p.stem, p) for p in checkpoints), ("final", out)]:
            scores = score_rows(held, path, args.threads)
            print(
                f"  {name:24} AUROC {100 * auroc(scores, labels):5.1f}"
                f"  within-seed pairwise {100 * pairwise(held, scores):5.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

# kinds of synthetic edit, for --help readers of this module
__all__ = ["KINDS", "Pair", "Settings", "build_pairs", "main", "train"]

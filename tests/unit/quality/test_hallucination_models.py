"""The detectors with real models (slow): the bundled SmolLM2 detector on hand-written examples, and the
bring-your-own-weights loader on tiny sequence-classification models this test builds, trains and
saves (tiny configs: nothing downloaded)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from pilothouse.evals.scoring import Sample, build_scorer
from pilothouse.quality.hallucination.hf import HuggingFaceDetector, hallucinated_index, supported_index

pytestmark = pytest.mark.slow

CONTEXT = (
    "The museum opened in 1921 in Lyon. It holds 4,000 paintings, most of them donated by the Berthier "
    "family. Entry is free on Sundays."
)
FAITHFUL = "The museum opened in 1921 in Lyon and holds 4,000 paintings."
EDITED = "The museum opened in 1987 in Lyon and holds 4,000 paintings."


def tiny_tokenizer(extra: str) -> Any:
    """A WordPiece tokenizer of the test's words (and ``extra``), with BERT's special tokens."""
    from transformers import BertTokenizerFast

    words = sorted(set(re.findall(r"\w+|[^\w\s]", f"{CONTEXT} {FAITHFUL} {EDITED} {extra}".lower())))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})


def tiny_config(tokenizer: Any, labels: dict[int, str], hidden: int = 16, max_positions: int = 128) -> Any:
    """A 2-layer BERT's config for ``tokenizer``'s words and ``labels`` (seeds torch: the same weights)."""
    import torch
    from transformers import BertConfig

    torch.manual_seed(0)
    return BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=max_positions,
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )


def tiny_model(folder: Path, labels: dict[int, str]) -> Path:
    """A random 2-layer BERT classifier and a WordPiece tokenizer of the test's words, in ``folder``."""
    from transformers import BertForSequenceClassification

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer("mondays")
    assert "[UNK]" not in tokenizer.tokenize(CONTEXT)
    BertForSequenceClassification(tiny_config(tokenizer, labels)).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_trained_and_saved_classifier_decides_through_the_loader(tmp_path: Path) -> None:
    """Train a tiny NLI-style classifier on (context, sentence) -> consistent / inconsistent, save it,
    and load it back through HuggingFaceDetector: the saved weights, not a random init, decide."""
    import torch
    from transformers import BertForSequenceClassification, BertTokenizerFast

    folder = tiny_model(tmp_path / "trained", {0: "inconsistent", 1: "consistent"})
    tokenizer = BertTokenizerFast.from_pretrained(folder)
    model = BertForSequenceClassification.from_pretrained(folder)
    pairs = [(FAITHFUL, 1), (EDITED, 0), ("Entry is free on Sundays.", 1), ("Entry is free on Mondays.", 0)]
    batch = tokenizer([CONTEXT] * len(pairs), [t for t, _ in pairs], padding=True, return_tensors="pt")
    labels = torch.tensor([y for _, y in pairs])
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(80):
        optimiser.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimiser.step()
    model.eval().save_pretrained(folder)

    detector = HuggingFaceDetector(folder)
    good = detector.detect(f"{FAITHFUL} Entry is free on Sundays.", CONTEXT)
    bad = detector.detect(f"{FAITHFUL} Entry is free on Mondays.", CONTEXT)
    assert good.label == "supported" and good.spans == ()
    assert bad.label == "unsupported"
    assert [s.text for s in bad.spans] == ["Entry is free on Mondays."]


def test_supported_index_reads_label_names() -> None:
    assert supported_index({0: "entailment", 1: "neutral", 2: "contradiction"}) == 0
    assert supported_index({0: "inconsistent", 1: "consistent"}) == 1
    assert supported_index({0: "LABEL_0", 1: "LABEL_1"}) == 1
    assert supported_index({0: "score"}) is None
    assert supported_index({0: "a", 1: "b", 2: "c"}, "b") == 1
    with pytest.raises(ValueError, match="supported_label"):
        supported_index({0: "a", 1: "b", 2: "c"})
    assert hallucinated_index({0: "LABEL_0", 1: "LABEL_1"}) == 1  # LettuceDetect's
    assert hallucinated_index({0: "hallucinated", 1: "supported"}) == 0
    assert hallucinated_index({0: "a", 1: "b"}, supported_label="b") == 0
    with pytest.raises(ValueError, match="two labels"):
        hallucinated_index({0: "a", 1: "b", 2: "c"})


def test_a_saved_nli_folder_scores_each_sentence(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "nli", {0: "entailment", 1: "neutral", 2: "contradiction"})
    detector = HuggingFaceDetector(folder, threshold=0.4)
    response = f"{FAITHFUL} Entry is free on Sundays."
    scored = detector.sentence_scores(response, CONTEXT)
    assert [response[a:b] for a, b, _ in scored] == [FAITHFUL, "Entry is free on Sundays."]
    assert all(0.0 <= s <= 1.0 for _, _, s in scored)
    verdict = detector.detect(response, CONTEXT)
    assert verdict.source == "hf:nli" and verdict.score == min(s for _, _, s in scored)
    assert [(s.start, s.end) for s in verdict.spans] == [(a, b) for a, b, s in scored if s < 0.4]
    assert verdict.label == ("supported" if verdict.score >= 0.4 else "unsupported")


def test_a_single_output_model_through_the_scorer(tmp_path: Path) -> None:
    folder = tiny_model(tmp_path / "hhem-like", {0: "consistency"})
    scorer = build_scorer({"type": "hallucination", "model": str(folder), "context": "{{ doc }}"})
    result = asyncio.run(scorer.score(Sample(item_id="1", input={"doc": CONTEXT}, output=EDITED)))
    assert result.value is not None and 0.0 <= result.value <= 1.0
    assert result.details["source"] == "hf:hhem-like"


def test_the_bundled_detector_scores_labels_and_flags_the_changed_sentence() -> None:
    from pilothouse.quality.hallucination import detect

    faithful, edited = detect(FAITHFUL, CONTEXT), detect(EDITED, CONTEXT)
    assert edited.score < faithful.score
    assert faithful.source == "local" and set(faithful.features) == set(edited.features)
    assert "min_sentence_score" in faithful.features
    response = f"Entry is free on Sundays. {EDITED}"
    verdict = detect(response, CONTEXT)
    assert verdict.label == "unsupported"
    assert verdict.spans and all(response[s.start : s.end] == s.text for s in verdict.spans)
    flagged = {s.text: s for s in verdict.spans}
    assert "1987" in flagged and flagged["1987"].reason == "not in the context"  # the changed year
    assert not any(s.end <= len("Entry is free on Sundays.") for s in verdict.spans)  # the true sentence
    unrelated = detect("The stadium was sold to a bank in Madrid for 90 million euros.", CONTEXT)
    assert unrelated.label == "unsupported" and unrelated.score < faithful.score
    empty = detect("   ", CONTEXT)
    assert empty.label == "supported" and empty.spans == ()


def test_the_bundled_model_reads_only_the_relevant_passages_of_a_long_context() -> None:
    """Context selection through the real tokenizer: a long context is reduced to its lead and the
    sentences the response draws on (to the budget); a short one is read whole."""
    from pilothouse.quality.hallucination.lm import LanguageModelEvidence
    from pilothouse.quality.hallucination.selection import select_context

    evidence = LanguageModelEvidence(context_budget=60)
    _, tokenizer = evidence.model_and_tokenizer()
    filler = " ".join(
        f"In {year}, the town's choir gave a concert in the old market hall." for year in range(1950, 1975)
    )
    context = f"{CONTEXT} {filler} The Berthier family lived in Grenoble until 1960."
    response = "The museum's paintings were donated by the Berthier family, who lived in Grenoble."
    chosen = select_context(
        context, response, 60, lambda t: len(tokenizer.encode(t, add_special_tokens=False))
    )
    kept = [context[p.start : p.end] for p in (chosen.pieces[i] for i in chosen.kept)]
    assert kept[0] == "The museum opened in 1921 in Lyon."  # the lead
    assert "The Berthier family lived in Grenoble until 1960." in kept
    assert any(k.startswith("It holds 4,000 paintings, most of them donated by the Berthier") for k in kept)
    assert sum("choir" in k for k in kept) <= 1  # the filler stays out (at most one fills the budget)
    assert len(tokenizer.encode(chosen.text, add_special_tokens=False)) <= 60
    long = evidence.evidence(response, context)
    assert long.selected and not long.truncated
    short = evidence.evidence(FAITHFUL, CONTEXT)  # under the budget: read whole, nothing selected
    assert not short.selected and short.context_tokens == len(
        tokenizer.encode(
            "Document:\n" + CONTEXT + "\n\nA summary that states only facts from the document above:\n",
            add_special_tokens=False,
        )
    )


def test_the_int8_detector_keeps_the_float_models_log_probabilities() -> None:
    """int8 quantisation must not turn the evidence into noise: each response's mean log-probability
    stays near the float32 model's, and so does the gap between the faithful answer and its edited twin
    (quantising the down projections and the output head too: mean shift 0.27 nats, gap 0.30 for
    float32's 0.48; as shipped: 0.12, 0.45). The layers left in float32 are the ones named."""
    import statistics

    import torch

    from pilothouse.providers.local_int8 import INT8_FLOAT_LAYERS
    from pilothouse.quality.hallucination.lm import LanguageModelEvidence

    int8, float32 = LanguageModelEvidence(), LanguageModelEvidence(quantize=False)
    model, _ = int8.model_and_tokenizer()
    linear = [(n, type(m)) for n, m in model.named_modules() if type(m).__name__ == "Linear"]
    assert any("quantized" in t.__module__ for _, t in linear)
    assert all(n.endswith(INT8_FLOAT_LAYERS) for n, t in linear if t is torch.nn.Linear)
    responses = (FAITHFUL, EDITED, "The stadium was sold to a bank in Madrid for 90 million euros.")

    def means(evidence: LanguageModelEvidence) -> list[float]:
        return [statistics.fmean(t.logprob for t in evidence.evidence(r, CONTEXT).tokens) for r in responses]

    q, f = means(int8), means(float32)
    assert statistics.fmean(abs(a - b) for a, b in zip(q, f, strict=True)) < 0.2
    assert q[0] - q[1] > 0.8 * (f[0] - f[1]) > 0


def test_the_scorer_escalates_its_share_to_a_judge_and_reports_the_judges_cost(tmp_path: Path) -> None:
    from pilothouse.evals.judges import Judge
    from pilothouse.evals.scoring import ScorerConfigError
    from tests.unit.quality.test_hallucination_cascade import PRICE, ScriptedJudge

    folder = tiny_model(tmp_path / "nli", {0: "entailment", 1: "neutral", 2: "contradiction"})
    base = {"type": "hallucination", "model": str(folder), "context": "{{ doc }}"}
    sample = Sample(item_id="1", input={"doc": CONTEXT}, output=EDITED)
    judge = ScriptedJudge(['{"supported": false, "unsupported": ["in 1987"]}'])
    everything = build_scorer({**base, "escalate": 1.0}, Judge(judge, logprobs=False))
    result = asyncio.run(everything.score(sample))
    assert result.value == 0.0 and result.details["source"] == "judge:scripted-judge"
    assert result.judge_cost_usd == PRICE and len(judge.requests) == 1
    assert [EDITED[s["start"] : s["end"]] for s in result.details["spans"]] == ["in 1987"]
    local = asyncio.run(everything.without_judge().score(sample))  # e.g. once the judge's cap is spent
    assert local.details["source"] == "hf:nli" and local.judge_cost_usd is None and len(judge.requests) == 1
    never = build_scorer({**base, "escalate": 0.0}, Judge(ScriptedJudge([]), logprobs=False))
    assert asyncio.run(never.score(sample)).details["source"] == "hf:nli"
    # an eval spec's top-level judge reaches every scorer: without 'judge' or 'escalate' of its own,
    # this one stays local (it does not start paying, nor change what its values mean)
    given = build_scorer(dict(base), Judge(ScriptedJudge([]), logprobs=False))
    assert asyncio.run(given.score(sample)).details["source"] == "hf:nli"
    with pytest.raises(ScorerConfigError, match="needs a 'judge'"):
        build_scorer({**base, "escalate": 0.3})
    with pytest.raises(ScorerConfigError, match="no judge model"):
        build_scorer({**base, "judge": "gpt-4o"})
    with pytest.raises(ScorerConfigError, match="at most 1"):
        build_scorer({**base, "escalate": 2}, Judge(judge, logprobs=False))


def test_a_sliding_window_model_reuses_its_context_and_reads_after_its_bos(tmp_path: Path) -> None:
    """A causal LM of another family (a tiny random Gemma 3: sliding-window layers, a tokenizer that
    starts texts with a BOS) as the evidence model: a second response to the same context reuses the
    context's cache (which a sliding-window layer can only roll back when told to keep its past) and
    gets exactly what a fresh read gives."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from pilothouse.quality.hallucination.lm import LanguageModelEvidence, _bos

    torch.manual_seed(0)
    folder = tmp_path / "gemma-like"
    folder.mkdir()
    tokenizer = tiny_tokenizer("document summary")
    config = Gemma3TextConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,
    )
    Gemma3ForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert _bos(tokenizer) == [tokenizer.cls_token_id]  # what it puts before a text, not its [SEP]

    reused = LanguageModelEvidence(str(folder), quantize=False, context_budget=None)
    first = reused.evidence(FAITHFUL, CONTEXT)
    second = reused.evidence(EDITED, CONTEXT)  # the context's cache, rolled back after the first
    fresh = LanguageModelEvidence(str(folder), quantize=False, context_budget=None).evidence(EDITED, CONTEXT)
    assert len(second.tokens) == len(fresh.tokens) > 0
    for a, b in zip(second.tokens, fresh.tokens, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4) and a.prior == pytest.approx(b.prior, abs=1e-4)
    assert first.tokens != second.tokens


def trained_span_detector(folder: Path, labels: dict[int, str], max_positions: int = 128) -> Path:
    """A tiny BERT token classifier trained here to mark the response's tokens the context does not
    hold (a LettuceDetect-style span detector), saved with its fast tokenizer in ``folder``."""
    import torch
    from transformers import BertForTokenClassification

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer("mondays tuesdays 1950 filler")
    model = BertForTokenClassification(tiny_config(tokenizer, labels, hidden=32, max_positions=max_positions))
    hallucinated = next(i for i, name in labels.items() if name in ("hallucinated", "LABEL_1"))
    answers = [
        FAITHFUL,
        EDITED,
        "Entry is free on Sundays.",
        "Entry is free on Mondays.",
        "Entry is free on Tuesdays.",
    ]
    wrong = {"1987", "mondays", "tuesdays"}
    batch = tokenizer([CONTEXT] * len(answers), answers, padding=True, return_tensors="pt")
    targets = torch.full(batch["input_ids"].shape, -100)
    for row in range(len(answers)):
        for j, (part, token) in enumerate(zip(batch.sequence_ids(row), batch.tokens(row), strict=True)):
            if part == 1:
                targets[row, j] = hallucinated if token in wrong else 1 - hallucinated
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(120):
        optimiser.zero_grad()
        model(**batch, labels=targets).loss.backward()
        optimiser.step()
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_a_token_classifier_folder_flags_the_unsupported_tokens_as_spans(tmp_path: Path) -> None:
    """A LettuceDetect-style folder (token classification, 0 = supported, 1 = hallucinated) trained here
    and loaded through HuggingFaceDetector: its spans are the response's unsupported words."""
    folder = trained_span_detector(tmp_path / "spans", {0: "LABEL_0", 1: "LABEL_1"})
    detector = HuggingFaceDetector(folder)
    good = detector.detect(f"{FAITHFUL} Entry is free on Sundays.", CONTEXT)
    assert detector.token_level and good.label == "supported" and good.spans == ()
    response = "The museum opened in 1987 in Lyon. Entry is free on Mondays."
    bad = detector.detect(response, CONTEXT)
    assert bad.label == "unsupported" and bad.source == "hf:spans"
    assert [s.text for s in bad.spans] == ["1987", "Mondays"]  # offsets into the response as written
    assert bad.score == pytest.approx(1.0 - bad.features["max_token_hallucination"])
    assert all(s.score > 0.5 for s in bad.spans)
    # offsets count the response's characters (code points): past astral emoji, and a span ends after
    # the combining accent its last letter carries (the tokenizer strips it from its offsets)
    for response, flagged in (
        ("Entry is free on Mondays. \U0001f44d\U0001f3fd", "Mondays"),
        ("Entry is free on Mondays\u0301.", "Mondays\u0301"),
    ):
        spans = detector.detect(response, CONTEXT).spans
        assert [(s.text, response[s.start : s.end]) for s in spans] == [(flagged, flagged)], response


def test_a_token_classifier_reads_a_long_context_in_windows(tmp_path: Path) -> None:
    """A context past the model's positions is read in overlapping windows, each with the whole response:
    the facts at the end of a long context still support the response, and the edit is still found."""
    folder = trained_span_detector(
        tmp_path / "windows", {0: "supported", 1: "hallucinated"}, max_positions=64
    )
    detector = HuggingFaceDetector(folder)
    long_context = "filler " * 400 + CONTEXT
    verdict = detector.detect("The museum opened in 1987 in Lyon.", long_context)
    assert 8 < verdict.features["windows"] < 64 and detector.max_length == 64  # more than one pass's batch
    assert [s.text for s in verdict.spans] == ["1987"]
    huge = detector.detect("The museum opened in 1987 in Lyon.", "filler " * 100_000)
    assert huge.features["windows"] == 64 and "not read" in huge.reason
    # a context past 64 windows of characters is cut before the tokenizer makes windows it will not read
    assert detector.context_chars == 64 * 64 * 32 < len("filler " * 100_000)
    assert "past 131,072 characters was not read" in huge.reason
    spaced = detector.detect("The museum opened in 1987 in Lyon.", " " * 200_000 + CONTEXT)
    assert spaced.features["windows"] == 1 and "past 131,072 characters" in spaced.reason
    with pytest.raises(ValueError, match="too long"):
        detector.detect("Entry is free on Sundays. " * 40, CONTEXT)


def test_a_token_classifier_through_the_scorer_with_a_template(tmp_path: Path) -> None:
    from pilothouse.evals.scoring import ScorerConfigError

    folder = trained_span_detector(tmp_path / "scored", {0: "supported", 1: "hallucinated"})
    scorer = build_scorer(
        {"type": "hallucination", "model": str(folder), "context": "{{ doc }}", "template": "{context}"}
    )
    result = asyncio.run(scorer.score(Sample(item_id="1", input={"doc": CONTEXT}, output=EDITED)))
    assert result.passed is False and [s["text"] for s in result.details["spans"]] == ["1987"]
    for template in ("Document:", ""):  # an empty template is not the default: it has no {context}
        with pytest.raises(ScorerConfigError, match="must hold"):
            build_scorer({"type": "hallucination", "model": str(folder), "template": template})
    with pytest.raises(ScorerConfigError, match="for a 'model' folder"):
        build_scorer({"type": "hallucination", "template": "{context}"})
    broken = tmp_path / "broken"  # a folder whose config.json is not JSON: the spec fails, not each sample
    broken.mkdir()
    for text, error in (("{not json", "cannot be read as JSON"), ("[1, 2]", "not a model's config")):
        (broken / "config.json").write_text(text)
        with pytest.raises(ScorerConfigError, match=error):
            build_scorer({"type": "hallucination", "model": str(broken)})

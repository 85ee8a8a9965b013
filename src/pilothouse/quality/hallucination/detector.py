"""The local detector: SmolLM2 evidence (log p(response | context) and its PMI against the response
alone) + lexical novelty -> features -> a logistic regression (feature set, fit and threshold chosen
on SummEdits' evaluation split only by ``python -m pilothouse.quality.hallucination.train`` and
shipped as ``coefficients.json``) -> a :class:`~pilothouse.domain.faithfulness.Verdict`. The
unsupported spans of an unsupported response are its words that the context lacks or that the model
found unlikely without the context raising them (:mod:`.spans`); the same model also scores each
sentence from its own tokens (``min_sentence_score``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from pilothouse.domain.faithfulness import SUPPORTED, UNSUPPORTED, UnsupportedSpan, Verdict
from pilothouse.quality.hallucination.features import (
    LogisticModel,
    TokenEvidence,
    confidence,
    novelty,
    sentences,
    token_features,
    tokens_in,
)
from pilothouse.quality.hallucination.lm import Evidence, LanguageModelEvidence
from pilothouse.quality.hallucination.spans import WordRule, word_spans

MAX_RESPONSE_CHARS = 20_000
MAX_CONTEXT_CHARS = 200_000


def shipped_coefficients() -> LogisticModel:
    """The coefficients shipped in the package (``coefficients.json``)."""
    text = resources.files(__package__).joinpath("coefficients.json").read_text(encoding="utf-8")
    return LogisticModel.from_dict(json.loads(text))


def features_for(response: str, context: str, tokens: Sequence[TokenEvidence]) -> dict[str, float]:
    """Every feature of one (response, context) pair, from the model's per-token evidence and the texts."""
    values = token_features(tokens, response)
    lexical = novelty(response, context)
    values.update(novel_numbers=lexical.numbers, novel_names=lexical.names, novel_words=lexical.words)
    return values


def sentence_scores(
    model: LogisticModel, response: str, context: str, tokens: Sequence[TokenEvidence]
) -> list[tuple[int, int, float]]:
    """(start, end, P(supported)) of each sentence, from the sentence's own tokens (offsets shifted
    to the sentence) and its own lexical novelty: no extra model pass."""
    scored: list[tuple[int, int, float]] = []
    for sentence in sentences(response):
        inside = [
            TokenEvidence(max(0, t.start - sentence.start), t.end - sentence.start, t.logprob, t.prior)
            for t in tokens_in(tokens, sentence.start, sentence.end)
        ]
        if inside:
            values = features_for(sentence.text, context, inside)
            scored.append((sentence.start, sentence.end, model.score(values)))
    return scored


class Detector:
    """Judges whether responses are supported by their contexts, on the CPU, with local weights only.

    ``coefficients`` defaults to the shipped ones; ``threshold`` overrides their decision threshold;
    ``rule`` which words of an unsupported response are its spans (:mod:`.spans`)."""

    def __init__(
        self,
        evidence: LanguageModelEvidence | None = None,
        *,
        coefficients: LogisticModel | Path | None = None,
        threshold: float | None = None,
        rule: WordRule | None = None,
    ) -> None:
        self.evidence = evidence or LanguageModelEvidence()
        if isinstance(coefficients, Path):
            coefficients = LogisticModel.from_dict(json.loads(coefficients.read_text(encoding="utf-8")))
        self.model = coefficients or shipped_coefficients()
        self.threshold = self.model.threshold if threshold is None else threshold
        self.rule = rule or WordRule()  # which words of an unsupported response are its spans
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must lie strictly between 0 and 1, not {self.threshold}")

    def features(self, response: str, context: str) -> tuple[dict[str, float], Evidence]:
        """The features (and the raw evidence) of one pair."""
        _check_sizes(response, context)
        evidence = self.evidence.evidence(response, context)
        return features_for(response, context, evidence.tokens), evidence

    def detect(self, response: str, context: str) -> Verdict:
        """The verdict on ``response`` against ``context``."""
        if not response.strip():
            return Verdict(1.0, SUPPORTED, (), "local", 1.0, {}, "empty response: nothing to support")
        values, evidence = self.features(response, context)
        score = self.model.score(values)
        label = SUPPORTED if score >= self.threshold else UNSUPPORTED
        scored = sentence_scores(self.model, response, context, evidence.tokens)
        spans: tuple[UnsupportedSpan, ...] = ()
        if label == UNSUPPORTED:
            # the words the context lacks or the model found unlikely without the context raising
            # them; when there are none, the least supported sentence
            spans = word_spans(response, context, evidence.tokens, self.rule)
            if not spans and scored:
                a, b, v = min(scored, key=lambda s: s[2])
                why = f"the least supported sentence ({v:.2f})"
                spans = (UnsupportedSpan(a, b, response[a:b], why, 1 - v),)
        if scored:
            values["min_sentence_score"] = min(v for _, _, v in scored)
        reason = f"{len(spans)} unsupported span(s)" if spans else "every sentence supported"
        if evidence.selected:
            reason += "; the model read the passages of the context that bear on the response"
        if evidence.truncated:
            reason += "; the context or response was truncated to the model's window"
        return Verdict(score, label, spans, "local", confidence(score, self.threshold), values, reason)


def _check_sizes(response: str, context: str) -> None:
    if len(response) > MAX_RESPONSE_CHARS:
        raise ValueError(f"response too long: {len(response)} characters (at most {MAX_RESPONSE_CHARS})")
    if len(context) > MAX_CONTEXT_CHARS:
        raise ValueError(f"context too long: {len(context)} characters (at most {MAX_CONTEXT_CHARS})")


_default: Detector | None = None
_default_lock = threading.Lock()


def default_detector() -> Detector:
    """The process-wide detector (bundled SmolLM2, shipped coefficients), created on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Detector()
        return _default


def detect(response: str, context: str) -> Verdict:
    """Judge whether ``response`` is supported by ``context`` with the local detector (blocking: call it
    from a worker thread in async code, e.g. ``await asyncio.to_thread(detect, response, context)``)."""
    return default_detector().detect(response, context)

"""The pure parts of the detector: sentences and their offsets, lexical novelty (numbers and names the
context never mentions), per-token evidence turned into features and into unsupported spans, and the
logistic combination of features into a score. No model, no I/O: unit-tested directly."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pilothouse.domain.faithfulness import UnsupportedSpan

_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+|\n+")
_ABBREVIATION = re.compile(
    r"(?:\b[A-Za-z]|\b(?:Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|Inc|Ltd|No|Co|Corp|Gen|Gov|Sen|Rep))\.$"
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z'\-]+\b")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'\-]*")
_STOP = frozenset(
    "a an the and or but if of to in on at by for with from as is are was were be been being it its this "
    "that these those he she they them his her their we our you your i me my not no so than then there "
    "which who whom whose what when where why how all any each also has have had do does did will would "
    "can could should may might must about after before over under into out up down more most less very "
    "just only said says".split()
)


@dataclass(frozen=True)
class Sentence:
    """A sentence of the response and where it lies: ``text == response[start:end]``."""

    start: int
    end: int
    text: str


def sentences(text: str) -> list[Sentence]:
    """Split ``text`` into sentences (after . ! ? followed by a space, and at newlines; not after an
    initial or a common abbreviation such as "U.S." or "Dr."), offsets kept, spaces trimmed."""
    cuts = [0]
    for match in _BOUNDARY.finditer(text):
        if match.group(0)[0] != "\n" and _ABBREVIATION.search(text[: match.start() + 1]):
            continue
        cuts.append(match.end())
    cuts.append(len(text))
    found: list[Sentence] = []
    for left, right in itertools.pairwise(cuts):
        raw = text[left:right]
        lead = len(raw) - len(raw.lstrip())
        size = len(raw.rstrip())
        if size > lead:
            found.append(Sentence(left + lead, left + size, raw[lead:size]))
    return found


def _normalise_number(value: str) -> str:
    return value.replace(",", "").rstrip(".")


@dataclass(frozen=True)
class Novelty:
    """What the response says that the context's words do not contain."""

    numbers: float  # share of the response's numbers absent from the context (0 when it has none)
    names: float  # share of capitalised words (not sentence-initial) absent from the context
    words: float  # share of content words absent from the context
    spans: tuple[UnsupportedSpan, ...]  # the absent numbers and names


def novelty(response: str, context: str) -> Novelty:
    """Lexical novelty of ``response`` against ``context``: numbers, names and content words."""
    context_numbers = {_normalise_number(m.group(0)) for m in _NUMBER.finditer(context)}
    context_words = {w.lower() for w in _WORD.findall(context)}
    spans: list[UnsupportedSpan] = []
    numbers = list(_NUMBER.finditer(response))
    absent_numbers = [m for m in numbers if _normalise_number(m.group(0)) not in context_numbers]
    spans += [
        UnsupportedSpan(m.start(), m.end(), m.group(0), "number absent from the context", 1.0)
        for m in absent_numbers
    ]
    starts = {s.start for s in sentences(response)}
    names = [m for m in _CAPITALISED.finditer(response) if m.start() not in starts]
    absent_names = [m for m in names if m.group(0).lower() not in context_words]
    spans += [
        UnsupportedSpan(m.start(), m.end(), m.group(0), "name absent from the context", 1.0)
        for m in absent_names
    ]
    content = [w.lower() for w in _WORD.findall(response) if w.lower() not in _STOP]
    absent_words = [w for w in content if w not in context_words]
    return Novelty(
        numbers=len(absent_numbers) / len(numbers) if numbers else 0.0,
        names=len(absent_names) / len(names) if names else 0.0,
        words=len(absent_words) / len(content) if content else 0.0,
        spans=tuple(sorted(spans, key=lambda s: s.start)),
    )


@dataclass(frozen=True)
class TokenEvidence:
    """The language model's view of one response token: where it lies in the response, its
    log-probability given the context, and without it (their difference is the pointwise mutual
    information: how much the context raised the token)."""

    start: int
    end: int
    logprob: float  # log p(token | context, prompt)
    prior: float  # log p(token | prompt alone)

    @property
    def pmi(self) -> float:
        """log p(token | context) - log p(token | no context)."""
        return self.logprob - self.prior


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _low(values: Sequence[float], share: float = 0.1) -> float:
    """The ``share`` percentile (lower end) of ``values``: the worst tokens, not the single worst."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


FEATURES = (
    "mean_logprob",
    "mean_pmi",
    "p10_logprob",
    "p10_pmi",
    "min_sentence_logprob",
    "min_sentence_pmi",
    "low_token_share",
    "novel_numbers",
    "novel_names",
    "novel_words",
    "log_tokens",
)


def token_features(
    tokens: Sequence[TokenEvidence], response: str, *, low_logprob: float = -6.0
) -> dict[str, float]:
    """Aggregate per-token evidence: means (the BARTScore-style likelihood and its context-normalised
    PMI), the 10th percentile of both (a few bad tokens are enough), per-sentence minima (one bad
    sentence is enough), and the share of tokens that are both unlikely and not raised by the context."""
    logprobs = [t.logprob for t in tokens]
    pmis = [t.pmi for t in tokens]
    per_sentence_lp: list[float] = []
    per_sentence_pmi: list[float] = []
    for sentence in sentences(response):
        inside = tokens_in(tokens, sentence.start, sentence.end)
        if inside:
            per_sentence_lp.append(_mean([t.logprob for t in inside]))
            per_sentence_pmi.append(_mean([t.pmi for t in inside]))
    low = [t for t in tokens if t.logprob < low_logprob and t.pmi < 1.0]
    return {
        "mean_logprob": _mean(logprobs),
        "mean_pmi": _mean(pmis),
        "p10_logprob": _low(logprobs),
        "p10_pmi": _low(pmis),
        "min_sentence_logprob": min(per_sentence_lp, default=0.0),
        "min_sentence_pmi": min(per_sentence_pmi, default=0.0),
        "low_token_share": len(low) / len(tokens) if tokens else 0.0,
        "log_tokens": math.log1p(len(tokens)),
    }


def tokens_in(tokens: Sequence[TokenEvidence], start: int, end: int) -> list[TokenEvidence]:
    """The tokens that overlap ``[start, end)``."""
    return [t for t in tokens if t.start < end and t.end > start]


def merge_spans(spans: Sequence[UnsupportedSpan], response: str) -> tuple[UnsupportedSpan, ...]:
    """Overlapping or touching spans merged into one (the first reason and the highest score kept)."""
    merged: list[UnsupportedSpan] = []
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if merged and span.start <= merged[-1].end:
            last = merged[-1]
            end = max(last.end, span.end)
            merged[-1] = UnsupportedSpan(
                last.start, end, response[last.start : end], last.reason, max(last.score, span.score)
            )
        else:
            merged.append(span)
    return tuple(merged)


@dataclass(frozen=True)
class LogisticModel:
    """Standardised features -> logistic regression -> P(supported), with the decision threshold.

    Stored as JSON in the package (``coefficients.json``), written by ``train``."""

    features: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float = 0.5

    def score(self, values: Mapping[str, float]) -> float:
        """P(supported) for one feature mapping (a feature it lacks counts as its training mean)."""
        z = self.bias
        for name, mean, scale, weight in zip(
            self.features, self.means, self.scales, self.weights, strict=True
        ):
            value = values.get(name, mean)
            z += weight * (value - mean) / (scale or 1.0)
        z = max(-40.0, min(40.0, z))
        return 1.0 / (1.0 + math.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        """The model as JSON-ready data."""
        return {
            "features": list(self.features),
            "means": list(self.means),
            "scales": list(self.scales),
            "weights": list(self.weights),
            "bias": self.bias,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogisticModel:
        """Read a model written by :meth:`to_dict`; a malformed one is a clear ``ValueError``."""
        try:
            features = tuple(str(f) for f in data["features"])
            means, scales, weights = (
                tuple(float(v) for v in data[k]) for k in ("means", "scales", "weights")
            )
            model = cls(
                features, means, scales, weights, float(data["bias"]), float(data.get("threshold", 0.5))
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed detector coefficients: {exc}") from exc
        if not len(features) == len(means) == len(scales) == len(weights):
            raise ValueError("malformed detector coefficients: lists of different lengths")
        return model


def confidence(score: float, threshold: float) -> float:
    """How far ``score`` lies from ``threshold``, scaled to [0, 1] on the side it falls."""
    if score >= threshold:
        return (score - threshold) / (1.0 - threshold) if threshold < 1.0 else 1.0
    return (threshold - score) / threshold if threshold > 0.0 else 1.0

"""Which words of a response are unsupported: the detector's spans, word by word, from the evidence it
already has (no extra model pass). A content word is flagged when it is a number or a name (a
capitalised word not starting a sentence) that the context does not contain (numbers compared without
their separators: "181,674,817" is "181674817"), or when the model found it unlikely given the
context and the context did not raise it (its least likely token's log p under ``max_logprob`` and
that token's PMI under ``max_pmi``); flagged words next to each other make one span. The rule (which
lacking words count, and the two thresholds) is chosen on SummEdits' evaluation split only, by
word-level F1 against the words its edits changed (``python benchmarks/hallucination_spans.py``, which
also measures BUMP and FaithBench with it). Pure: unit-tested directly."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pilothouse.domain.faithfulness import UnsupportedSpan
from pilothouse.quality.hallucination.features import _STOP, TokenEvidence, sentences

__all__ = ["Word", "WordEvidence", "WordRule", "word_evidence", "word_spans", "words"]

# a word: letters and digits, with inner apostrophes, hyphens and number separators ("U.S." is two)
_WORD = re.compile(r"\w+(?:['’\-]\w+)*(?:[.,]\d+)*")
# what may lie between two flagged words of one span: spaces and light punctuation
_JOIN = re.compile(r"[\s,'’\"\-]*")


@dataclass(frozen=True)
class Word:
    """A word of a text and where it lies: ``text == whole[start:end]``."""

    start: int
    end: int
    text: str


def words(text: str) -> list[Word]:
    """The words of ``text`` with their offsets."""
    return [Word(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]


def _key(word: str) -> str:
    """How a word is compared with the context's: lower case, a number without its separators."""
    lowered = word.lower()
    return lowered.replace(",", "") if lowered[:1].isdigit() else lowered


@dataclass(frozen=True)
class WordEvidence:
    """One word of the response: its least likely token's log p given the context and that token's
    PMI (how much the context raised it), whether the context lacks the word, and whether it is a
    content word (not a function word, not a single letter)."""

    start: int
    end: int
    text: str
    logprob: float
    pmi: float
    novel: bool
    content: bool
    named: bool  # a number, or a capitalised word that does not start a sentence


def word_evidence(response: str, context: str, tokens: Sequence[TokenEvidence]) -> list[WordEvidence]:
    """Each word of ``response`` with the model's evidence on it (``tokens``: the detector's per-token
    evidence, in order) and whether ``context`` holds it. A word no token covers (cut by the model's
    window) has log p and PMI 0: only its novelty can flag it."""
    known = {_key(m.group()) for m in _WORD.finditer(context)}
    found: list[WordEvidence] = []
    at = 0
    starts = {s.start for s in sentences(response)}
    for word in words(response):
        while at < len(tokens) and tokens[at].end <= word.start:
            at += 1
        inside = []
        i = at
        while i < len(tokens) and tokens[i].start < word.end:
            inside.append(tokens[i])
            i += 1
        worst = min(inside, key=lambda t: t.logprob, default=None)
        key = _key(word.text)
        found.append(
            WordEvidence(
                word.start,
                word.end,
                word.text,
                0.0 if worst is None else worst.logprob,
                0.0 if worst is None else worst.pmi,
                key not in known,
                len(key) > 1 and key not in _STOP,
                word.text[0].isdigit() or (word.text[0].isupper() and word.start not in starts),
            )
        )
    return found


@dataclass(frozen=True)
class WordRule:
    """When a word is unsupported: a content word that the context lacks, or that the model found
    unlikely (log p < ``max_logprob``) without the context raising it (PMI < ``max_pmi``)."""

    # chosen on SummEdits' evaluation split (benchmarks/hallucination_spans.py: word F1 37.7 there,
    # against 34.5 for every content word the context lacks and 17.4 for the flagged sentences)
    max_logprob: float = -6.0
    max_pmi: float = 2.0
    novel: str = "named"  # which words the context's lacking flags: "any" content word, "named" ones, "none"

    def unlikely(self, word: WordEvidence) -> bool:
        return word.logprob < self.max_logprob and word.pmi < self.max_pmi

    def lacking(self, word: WordEvidence) -> bool:
        return word.novel and (self.novel == "any" or (self.novel == "named" and word.named))

    def flags(self, word: WordEvidence) -> bool:
        return word.content and (self.lacking(word) or self.unlikely(word))


def word_spans(
    response: str, context: str, tokens: Sequence[TokenEvidence], rule: WordRule | None = None
) -> tuple[UnsupportedSpan, ...]:
    """The unsupported spans of ``response``: runs of flagged words (joined across spaces and light
    punctuation), each with why and how clearly (1 for a word the context lacks; else how far its log
    p lies under the rule's limit, up to 1)."""
    rule = rule or WordRule()
    spans: list[UnsupportedSpan] = []
    for word in word_evidence(response, context, tokens):
        if not rule.flags(word):
            continue
        lacking = rule.lacking(word)
        why = "not in the context" if lacking else f"unlikely given the context (log p {word.logprob:.1f})"
        score = 1.0 if lacking else min(1.0, 0.5 + (rule.max_logprob - word.logprob) / 8)
        last = spans[-1] if spans else None
        if last is not None and _JOIN.fullmatch(response, last.end, word.start):
            reason = last.reason if last.reason == why or why.startswith("unlikely") else why
            spans[-1] = UnsupportedSpan(
                last.start, word.end, response[last.start : word.end], reason, max(last.score, score)
            )
        else:
            spans.append(UnsupportedSpan(word.start, word.end, word.text, why, score))
    return tuple(spans)

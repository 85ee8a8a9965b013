"""Synthetic unfaithful edits of a faithful sentence, for contrastive training of the detector's model
(:mod:`~pilothouse.quality.hallucination.contrastive`): the kinds of error a summary makes, written
by rule from the sentence and its own document, so no labelled data is needed.

- ``number``: a number replaced by another number of the same document (else shifted);
- ``entity``: a capitalised name replaced by another name of the same document;
- ``negation``: ``not`` added after an auxiliary verb (or removed);
- ``antonym``: a word replaced by its opposite (increase/decrease, higher/lower, ...);
- ``pronoun``: he/she, his/her swapped;
- ``clause``: an unsupported clause added at the end (a reason, a time, a source).

Pure and deterministic for a given ``random.Random``: unit-tested directly."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from pilothouse.quality.hallucination.features import _STOP

KINDS = ("number", "entity", "negation", "antonym", "pronoun", "clause")

_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
_NAME = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*\b")
_AUXILIARY = re.compile(
    r"\b(is|are|was|were|will|would|can|could|should|has|have|had|does|do|did|must)\b(?!\s+not\b|n't)"
)
_NEGATED = re.compile(
    r"\b(is|are|was|were|will|would|can|could|should|has|have|had|does|do|did|must)\s+not\s+"
)
_PAIRS = (
    ("increase", "decrease"),
    ("increased", "decreased"),
    ("increasing", "decreasing"),
    ("higher", "lower"),
    ("more", "fewer"),
    ("rise", "fall"),
    ("rose", "fell"),
    ("gain", "loss"),
    ("positive", "negative"),
    ("strong", "weak"),
    ("stronger", "weaker"),
    ("before", "after"),
    ("first", "last"),
    ("large", "small"),
    ("larger", "smaller"),
    ("agreed", "refused"),
    ("accepted", "rejected"),
    ("won", "lost"),
    ("open", "closed"),
    ("early", "late"),
    ("up", "down"),
    ("above", "below"),
    ("best", "worst"),
    ("improve", "worsen"),
    ("improved", "worsened"),
    ("support", "oppose"),
    ("supported", "opposed"),
    ("always", "never"),
    ("new", "old"),
    ("high", "low"),
    ("buy", "sell"),
    ("bought", "sold"),
    ("start", "end"),
    ("started", "ended"),
    ("success", "failure"),
    ("successful", "unsuccessful"),
    ("likely", "unlikely"),
    ("profit", "loss"),
    ("easy", "difficult"),
    ("include", "exclude"),
    ("included", "excluded"),
)
_ANTONYM = {a: b for a, b in _PAIRS} | {b: a for a, b in _PAIRS}
_ANTONYM_WORD = re.compile(r"\b(" + "|".join(sorted(_ANTONYM, key=len, reverse=True)) + r")\b", re.IGNORECASE)
_PRONOUN = {
    "he": "she",
    "she": "he",
    "him": "her",
    "his": "her",
    "her": "his",
    "himself": "herself",
    "herself": "himself",
}
_PRONOUN_WORD = re.compile(r"\b(" + "|".join(_PRONOUN) + r")\b", re.IGNORECASE)
CLAUSES = (
    " after a dispute with the board",
    " last year",
    " because of rising costs",
    " according to a government report",
    " for the third time",
    " despite strong opposition",
    " in Germany",
    " with the help of a consultant",
    " at the request of investors",
    " two weeks earlier than planned",
)


@dataclass(frozen=True)
class Edit:
    """An unfaithful version of a sentence: the text and the kind of edit."""

    text: str
    kind: str


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _replace(text: str, match: re.Match[str], new: str) -> str:
    return text[: match.start()] + new + text[match.end() :]


def _number(text: str, document: str, rng: random.Random) -> str | None:
    found = list(_NUMBER.finditer(text))
    if not found:
        return None
    target = rng.choice(found)
    others = sorted({m.group(0) for m in _NUMBER.finditer(document)} - {target.group(0)})
    if others:
        return _replace(text, target, rng.choice(others))
    digits = target.group(0).replace(",", "")
    try:
        value = float(digits)
    except ValueError:
        return None
    shifted = value * rng.choice((2, 3, 0.5)) if value else value + rng.choice((1, 2, 5))
    new = f"{shifted:g}" if "." in digits else str(round(shifted))
    return None if new == target.group(0) else _replace(text, target, new)


def _names(text: str) -> list[str]:
    return [m.group(0) for m in _NAME.finditer(text) if m.group(0).split()[0].lower() not in _STOP]


def _entity(text: str, document: str, rng: random.Random) -> str | None:
    found = [m for m in _NAME.finditer(text) if m.start() > 0 and m.group(0).split()[0].lower() not in _STOP]
    if not found:
        return None
    target = rng.choice(found)
    others = sorted(set(_names(document)) - set(_names(text)))
    if not others:
        return None
    return _replace(text, target, rng.choice(others))


def _negation(text: str, _document: str, rng: random.Random) -> str | None:
    negated = list(_NEGATED.finditer(text))
    if negated:
        target = rng.choice(negated)
        return _replace(text, target, target.group(1) + " ")
    found = list(_AUXILIARY.finditer(text))
    if not found:
        return None
    target = rng.choice(found)
    return _replace(text, target, target.group(0) + " not")


Editor = Callable[[str, str, random.Random], str | None]


def _swap(pattern: re.Pattern[str], table: dict[str, str]) -> Editor:
    """An editor that replaces one word ``pattern`` finds (chosen with ``rng``) by its ``table`` entry."""

    def edit(text: str, _document: str, rng: random.Random) -> str | None:
        found = list(pattern.finditer(text))
        if not found:
            return None
        target = rng.choice(found)
        word = target.group(0)
        return _replace(text, target, _match_case(table[word.lower()], word))

    return edit


def _clause(text: str, _document: str, rng: random.Random) -> str | None:
    stripped = text.rstrip()
    if not stripped:
        return None
    end = len(stripped)
    while end and stripped[end - 1] in ".!?\"')":
        end -= 1
    clause = rng.choice(CLAUSES)
    if clause.strip().lower() in text.lower():
        return None
    return stripped[:end] + clause + stripped[end:] + text[len(stripped) :]


_EDITORS = {
    "number": _number,
    "entity": _entity,
    "negation": _negation,
    "antonym": _swap(_ANTONYM_WORD, _ANTONYM),
    "pronoun": _swap(_PRONOUN_WORD, _PRONOUN),
    "clause": _clause,
}


def edits(text: str, document: str, rng: random.Random, kinds: tuple[str, ...] = KINDS) -> list[Edit]:
    """Every kind of edit that applies to ``text`` (one each, chosen with ``rng``), differing from it."""
    unknown = set(kinds) - set(_EDITORS)
    if unknown:
        raise ValueError(f"unknown edit kinds: {', '.join(sorted(unknown))} (known: {', '.join(KINDS)})")
    made: list[Edit] = []
    for kind in kinds:
        new = _EDITORS[kind](text, document, rng)
        if new is not None and new.strip() != text.strip():
            made.append(Edit(new, kind))
    return made

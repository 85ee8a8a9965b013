"""Context selection: before the language model reads a long context, keep only the passages that bear
on the response, so a check reads a few hundred tokens instead of a thousand.

The context is cut into sentences (and an over-long sentence, e.g. a transcript turn without
punctuation, into pieces of at most :data:`MAX_PIECE_WORDS` words). Each response sentence ranks the
pieces by BM25 over content words and numbers (lower-cased, a plural ``s`` dropped; stop words
ignored). The first ``lead`` pieces are always kept (where a document states its subject); then each
response sentence's best piece, then each one's second best, and so on (round robin, so one long
response sentence cannot take the whole budget), while they fit ``budget`` tokens. The kept pieces
are joined in their original order, with `` ... `` where something was left out. A context that fits
the budget is returned whole, unchanged. Pure: the token counter is passed in."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pilothouse.quality.hallucination.features import _STOP, sentences

MAX_PIECE_WORDS = 48
GAP = " ... "
_TERM = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z][A-Za-z'\-]*")


@dataclass(frozen=True)
class Piece:
    """A piece of the context: ``context[start:end]``."""

    start: int
    end: int


@dataclass(frozen=True)
class Selection:
    """The text the language model reads, and which pieces of the context it holds."""

    text: str
    kept: tuple[int, ...]  # indices into ``pieces``, in order
    pieces: tuple[Piece, ...]
    whole: bool  # the context fitted the budget and is ``text`` unchanged


def terms(text: str) -> list[str]:
    """Content words (lower-cased, a final plural ``s`` dropped) and numbers (``1,000`` = ``1000``)."""
    found = [w.lower().replace(",", "").rstrip(".") for w in _TERM.findall(text)]
    return [
        w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
        for w in found
        if w not in _STOP
    ]


def pieces(context: str, max_words: int = MAX_PIECE_WORDS) -> list[Piece]:
    """The context's sentences, an over-long one cut at word boundaries every ``max_words`` words."""
    found: list[Piece] = []
    for sentence in sentences(context):
        words = list(re.finditer(r"\S+", sentence.text))
        for first in range(0, len(words), max_words):
            chunk = words[first : first + max_words]
            found.append(Piece(sentence.start + chunk[0].start(), sentence.start + chunk[-1].end()))
    return found


def bm25(
    query: Sequence[str], documents: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75
) -> list[float]:
    """BM25 score of each document (a list of terms) for ``query``."""
    n = len(documents)
    if not n:
        return []
    average = sum(len(d) for d in documents) / n or 1.0
    frequency = Counter(t for d in documents for t in set(d))
    counts = [Counter(d) for d in documents]
    scores = []
    for doc, count in zip(documents, counts, strict=True):
        score = 0.0
        for term in set(query):
            tf = count.get(term, 0)
            if tf:
                idf = math.log(1 + (n - frequency[term] + 0.5) / (frequency[term] + 0.5))
                score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / average))
        scores.append(score)
    return scores


def select_context(
    context: str,
    response: str,
    budget: int,
    count_tokens: Callable[[str], int],
    *,
    lead: int = 1,
) -> Selection:
    """The pieces of ``context`` that bear on ``response``, in their original order, within ``budget``
    tokens (as ``count_tokens`` counts them); the whole context when it fits."""
    if budget < 1:
        raise ValueError(f"the context budget must be at least 1 token, not {budget}")
    parts = pieces(context)
    if count_tokens(context) <= budget or not parts:
        return Selection(context, tuple(range(len(parts))), tuple(parts), True)
    texts = [context[p.start : p.end] for p in parts]
    documents = [terms(t) for t in texts]
    rankings: list[list[int]] = []
    for sentence in sentences(response):
        scores = bm25(terms(sentence.text), documents)
        rankings.append(
            [i for i in sorted(range(len(parts)), key=lambda i: (-scores[i], i)) if scores[i] > 0]
        )
    order = list(range(min(lead, len(parts))))
    for depth in range(max((len(r) for r in rankings), default=0)):
        order += [r[depth] for r in rankings if depth < len(r)]
    order += range(len(parts))  # then the rest, from the top, while they fit
    kept: set[int] = set()
    used = 0
    for index in dict.fromkeys(order):
        size = count_tokens(texts[index]) + 1
        if used + size <= budget:
            kept.add(index)
            used += size
    if not kept:  # not even one piece fits: the start of the first one
        return Selection(_cut(texts[0], budget, count_tokens), (0,), tuple(parts), False)
    chosen = sorted(kept)
    text = texts[chosen[0]]
    for before, after in itertools.pairwise(chosen):
        text += (context[parts[before].end : parts[after].start] if after == before + 1 else GAP) + texts[
            after
        ]
    return Selection(text, tuple(chosen), tuple(parts), False)


def _cut(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    words = text.split()
    while words and count_tokens(" ".join(words)) > budget:
        words = (
            words[: max(1, len(words) * budget // max(1, count_tokens(" ".join(words))))]
            if len(words) > 1
            else []
        )
    return " ".join(words)

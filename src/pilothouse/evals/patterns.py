"""Regular expressions that come from users (an online evaluator's ``regex`` scorer, which any project's
admin may save; a guard's ``patterns`` and ``words``), run with a time limit.

Python's ``re`` cannot be stopped once a match starts, and it holds the interpreter's lock throughout:
one pattern that backtracks catastrophically (``(a|aa)+$`` on forty ``a`` and a ``!``) froze every
thread of the server, the event loop that serves requests included, for as long as it ran (hours).
These patterns are run by the ``regex`` package instead: the same syntax, a ``timeout`` that raises
:class:`PatternTimeout`, and the lock released while it matches (``concurrent=True``), so the rest
of the server goes on meanwhile.

A pattern is checked when it is compiled: ``re``'s syntax (the ``regex`` package's own extensions,
fuzzy matching ``{e<=1}`` and POSIX classes ``[[:alpha:]]``, read differently by ``re``, are refused),
and counted repeats that expand to at most :data:`MAX_EXPANSION` steps (``regex`` unrolls
``(?:a{1000}){1000}`` into a million steps at compile time, minutes and gigabytes)."""

from __future__ import annotations

import functools
import re
import time
from re import _parser as sre_parse  # type: ignore[attr-defined]  # re's own parser: the syntax checked
from typing import Any

import regex  # type: ignore[import-untyped]  # ships without type information

__all__ = ["MAX_EXPANSION", "PatternError", "PatternTimeout", "compile_pattern", "find_spans", "search"]

MAX_EXPANSION = 100_000  # steps a pattern's counted repeats unroll to (a{100000}: 0.05 s to compile)
_FUZZY = re.compile(r"(?<!\\)\{[^{}]*(?<![A-Za-z])[eids](?![A-Za-z])[^{}]*\}")
_POSIX = re.compile(r"\[:\^?[a-z]+:\]")
_REPEATS = {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)}


class PatternError(ValueError):
    """A pattern that is not accepted; the message says why."""


class PatternTimeout(TimeoutError):
    """A match that ran past its time limit."""


def _expansion(parsed: Any) -> int:
    """How many steps the ``regex`` package unrolls a parsed pattern to (counted repeats multiply)."""
    total = 0
    for op, av in parsed:
        if op in _REPEATS:
            low, _high, inner = av
            total += max(low, 1) * _expansion(inner)
        elif op is sre_parse.SUBPATTERN:
            total += _expansion(av[-1])
        elif op is sre_parse.BRANCH:
            total += sum(_expansion(branch) for branch in av[1])
        elif op in (sre_parse.ASSERT, sre_parse.ASSERT_NOT):
            total += _expansion(av[1])
        elif op is getattr(sre_parse, "ATOMIC_GROUP", None):
            total += _expansion(av)
        elif op is sre_parse.GROUPREF_EXISTS:
            total += _expansion(av[1]) + (_expansion(av[2]) if av[2] is not None else 0)
        else:
            total += 1
        if total > MAX_EXPANSION:
            break
    return total


@functools.lru_cache(maxsize=512)
def compile_pattern(source: str, flags: int = 0) -> Any:
    """``source`` compiled for :func:`search` and :func:`find_spans`; :class:`PatternError` for a
    pattern ``re`` cannot read, one the ``regex`` package would read differently, or one too large."""
    flags &= re.IGNORECASE | re.MULTILINE | re.DOTALL | re.VERBOSE | re.ASCII
    if _FUZZY.search(source) or _POSIX.search(source):
        raise PatternError(r"write a literal '{' as '\{' and a literal '[:' as '\[:'")
    try:
        parsed = sre_parse.parse(source, flags)
    except (re.error, RecursionError, OverflowError) as exc:
        raise PatternError(f"not a regular expression ({exc})") from None
    if _expansion(parsed) > MAX_EXPANSION:
        raise PatternError(f"its counted repeats expand to more than {MAX_EXPANSION:,} steps")
    try:
        return regex.compile(source, flags | regex.VERSION0)
    except (regex.error, RecursionError, OverflowError) as exc:
        raise PatternError(f"not a regular expression ({exc})") from None


def search(pattern: Any, text: str, timeout_s: float, *, whole: bool = False) -> Any:
    """``pattern.search(text)`` (``fullmatch`` when ``whole``), for at most ``timeout_s`` seconds,
    with the interpreter's lock released; raises :class:`PatternTimeout` past it."""
    try:
        if whole:
            return pattern.fullmatch(text, timeout=timeout_s, concurrent=True)
        return pattern.search(text, timeout=timeout_s, concurrent=True)
    except TimeoutError:
        raise PatternTimeout(f"the regular expression ran past {timeout_s:g} s") from None


def find_spans(patterns: list[Any], text: str, timeout_s: float) -> list[tuple[int, int]]:
    """The (start, end) of every non-empty match of each pattern, all of them within ``timeout_s``
    seconds together; raises :class:`PatternTimeout` past it."""
    deadline = time.monotonic() + timeout_s
    spans: list[tuple[int, int]] = []
    for pattern in patterns:
        left = deadline - time.monotonic()
        if left <= 0:
            raise PatternTimeout(f"the regular expressions ran past {timeout_s:g} s")
        try:
            spans.extend(
                m.span() for m in pattern.finditer(text, timeout=left, concurrent=True) if m.end() > m.start()
            )
        except TimeoutError:
            raise PatternTimeout(f"the regular expressions ran past {timeout_s:g} s") from None
    return spans

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
``(?:a{1000}){1000}`` into a million steps at compile time, minutes and gigabytes).

JSON schemas from users (the ``json-schema`` scorer, the ``json_schema`` guard) hold regular
expressions too (``pattern``, ``patternProperties``): :func:`schema_validator` runs them here, all of
one validation within :func:`validation_deadline`, and gives ``uniqueItems`` a linear check."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import time
from collections.abc import Iterator
from re import _parser as sre_parse  # type: ignore[attr-defined]  # re's own parser: the syntax checked
from typing import Any

import regex  # type: ignore[import-untyped]  # ships without type information

__all__ = [
    "MAX_EXPANSION",
    "PatternError",
    "PatternTimeout",
    "compile_pattern",
    "find_spans",
    "schema_validator",
    "search",
    "validation_deadline",
]

SCHEMA_TIMEOUT_S = 1.0  # the patterns of one JSON schema validation, together
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


# -- JSON schemas: their `pattern` and `patternProperties` are user-supplied regular expressions too --

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("pattern_deadline", default=None)


def _search_before_deadline(source: str, text: str) -> bool:
    deadline = _deadline.get()
    left = SCHEMA_TIMEOUT_S if deadline is None else deadline - time.monotonic()
    if left <= 0:
        raise PatternTimeout(f"the schema's patterns ran past {SCHEMA_TIMEOUT_S:g} s")
    return search(compile_pattern(source), text, left) is not None


def _pattern(validator: Any, source: str, instance: Any, _schema: Any) -> Any:
    from jsonschema import ValidationError  # type: ignore[import-untyped]  # no type information

    if validator.is_type(instance, "string") and not _search_before_deadline(source, instance):
        yield ValidationError(f"{instance[:200]!r} does not match {source!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, _schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for source, subschema in patterns.items():
        for key, value in instance.items():
            if _search_before_deadline(source, key):
                yield from validator.descend(value, subschema, path=key, schema_path=source)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Any:
    from jsonschema import ValidationError

    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key
        for key in instance
        if key not in properties and not any(_search_before_deadline(p, key) for p in patterns)
    ]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        shown = ", ".join(repr(key[:100]) for key in sorted(extras)[:10])
        yield ValidationError(f"Additional properties are not allowed ({shown} unexpected)")


def _schema_patterns(node: Any, found: list[str], depth: int = 0) -> bool:
    """Collect the schema's patterns; True when it also has ``unevaluatedProperties`` (whose
    look-up of ``patternProperties`` cannot be given a time limit)."""
    if depth > 200:
        raise PatternError("the schema is nested more than 200 levels deep")
    unevaluated = False
    if isinstance(node, dict):
        unevaluated = "unevaluatedProperties" in node
        if isinstance(node.get("pattern"), str):
            found.append(node["pattern"])
        if isinstance(node.get("patternProperties"), dict):
            found.extend(str(key) for key in node["patternProperties"])
        children: Any = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return False
    for child in children:
        unevaluated = _schema_patterns(child, found, depth + 1) or unevaluated
    return unevaluated


def schema_validator(schema: Any) -> Any:
    """A ``jsonschema`` validator for a user's ``schema`` (already checked against its meta-schema)
    whose ``uniqueItems`` takes linear time and whose ``pattern``, ``patternProperties`` and
    ``additionalProperties`` keywords use patterns compiled here, with a time limit for one
    validation (:func:`validation_deadline`);
    :class:`PatternError` for a pattern refused, or ``unevaluatedProperties`` beside patterns."""
    import jsonschema

    found: list[str] = []
    unevaluated = _schema_patterns(schema, found)
    for source in found:
        compile_pattern(source)
    if found and unevaluated:
        raise PatternError("a schema with patterns may not use 'unevaluatedProperties'")
    base = jsonschema.validators.validator_for(schema)
    keywords: dict[str, Any] = {"uniqueItems": _unique_items}
    if found:
        keywords.update(
            pattern=_pattern,
            patternProperties=_pattern_properties,
            additionalProperties=_additional_properties,
        )
    return jsonschema.validators.extend(base, keywords)(schema)


def _canonical(value: Any) -> Any:
    """A hashable form of a JSON value that is equal exactly when jsonschema calls two values equal
    (1 and 1.0 alike, true and 1 not, objects whatever their key order)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)  # 1 == 1.0, and so do their hashes
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, dict):
        return ("o", frozenset((key, _canonical(item)) for key, item in value.items()))
    if isinstance(value, list):
        return ("a", tuple(_canonical(item) for item in value))
    return ("z", None)


def _unique_items(validator: Any, unique: Any, instance: Any, _schema: Any) -> Any:
    """``uniqueItems`` in one pass over hashable forms: jsonschema's own compares objects pairwise
    (2,000 of them took 8 s; a 1 MB answer of them, hours), and a schema may come from any user."""
    from jsonschema import ValidationError

    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"the array of {len(instance)} items has non-unique elements")
            return
        seen.add(key)


@contextlib.contextmanager
def validation_deadline(timeout_s: float = SCHEMA_TIMEOUT_S) -> Iterator[None]:
    """Within the block, a :func:`schema_validator`'s patterns share ``timeout_s`` seconds in all."""
    token = _deadline.set(time.monotonic() + timeout_s)
    try:
        yield
    finally:
        _deadline.reset(token)

"""The built-in guard types, registered as a plugin's would be: ``pii``, ``regex``, ``blocklist``,
``json_schema``, ``prompt_injection``, ``scorer`` (any eval scorer) and ``groundedness``
(:mod:`._groundedness`). docs/guardrails.md documents each one's settings."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # ships without type information
import orjson

from pilothouse.domain.guards import Finding, GuardContext, GuardResult
from pilothouse.evals.patterns import (
    PatternError,
    PatternTimeout,
    compile_pattern,
    schema_validator,
    validation_deadline,
)
from pilothouse.quality.guardrails import _groundedness  # noqa: F401  (registers "groundedness")
from pilothouse.quality.guardrails._patterns import REQUEST_BUDGET_S, THREAD_CHARS, locate_spans, search_spans
from pilothouse.quality.guardrails._pii import ENTITIES, find_entities
from pilothouse.quality.guardrails._registry import BuiltGuard, GuardConfigError, GuardOptions, register_guard

MAX_PATTERN_CHARS = 1_000


async def search(locate: Any, text: str) -> Any:
    """``locate(text)``, in a worker thread when the text is long (the interpreter switches threads
    every few milliseconds, so other requests are served meanwhile)."""
    return await asyncio.to_thread(locate, text) if len(text) > THREAD_CHARS else locate(text)


def _span_guard(locate: Any, what: str, window: int = 64, *, name_labels: bool = True) -> BuiltGuard:
    """A guard that fails when ``locate`` finds anything; the reason names the labels found (never
    the text) when ``name_labels`` (a default redaction label such as ``BLOCKED`` says nothing)."""

    async def check(text: str, _context: GuardContext) -> GuardResult:
        found = await search(locate, text)
        if not found:
            return GuardResult(True, 1.0)
        labels = f": {', '.join(sorted({f.label for f in found}))}" if name_labels else ""
        return GuardResult(False, 0.0, f"{what}{labels} ({len(found)} found)", tuple(found))

    return BuiltGuard(check, locate, window)


@register_guard("pii")
def pii(options: GuardOptions) -> BuiltGuard:
    """Emails, phone numbers, card numbers (Luhn), IBANs (mod 97) and secrets; ``entities`` picks."""
    entities = options.strings("entities", list(ENTITIES))
    for name in entities:
        if name not in ENTITIES:
            raise GuardConfigError("entities", f"{name!r} is not one of {', '.join(ENTITIES)}")
    return _span_guard(lambda text: find_entities(text, entities), "personal data or secrets found", 64)


def _compile(options: GuardOptions, key: str, source: str, ignore_case: bool) -> Any:
    if len(source) > MAX_PATTERN_CHARS:
        raise GuardConfigError(key, f"a pattern may have at most {MAX_PATTERN_CHARS} characters")
    try:
        return compile_pattern(source, re.IGNORECASE if ignore_case else 0)
    except PatternError as exc:
        raise GuardConfigError(key, str(exc)) from None


def _pattern_guard(patterns: list[Any], label: str, what: str, window: int, *, named: bool) -> BuiltGuard:
    """A span guard over configured patterns, searched under a time budget (``_patterns.py``); past
    it a check fails, saying so, and a redaction covers the whole text."""

    def found_in(text: str, spans: list[tuple[int, int]] | None) -> list[Finding]:
        if spans is None:
            return [Finding(0, len(text), label)] if text else []
        return sorted((Finding(start, end, label) for start, end in spans), key=lambda f: (f.start, -f.end))

    def locate(text: str) -> list[Finding]:
        return found_in(text, locate_spans(patterns, text))

    async def check(text: str, _context: GuardContext) -> GuardResult:
        spans = await search_spans(patterns, text)
        found = found_in(text, spans)
        if spans is None:
            reason = f"the patterns ran past their time limit ({REQUEST_BUDGET_S:g} s a request)"
            return GuardResult(False, 0.0, reason, tuple(found))
        if not found:
            return GuardResult(True, 1.0)
        labels = f": {label}" if named else ""
        return GuardResult(False, 0.0, f"{what}{labels} ({len(found)} found)", tuple(found))

    return BuiltGuard(check, locate, window)


@register_guard("regex")
def regex(options: GuardOptions) -> BuiltGuard:
    """Fails when any of ``patterns`` matches (``label`` names what a redaction leaves)."""
    patterns = options.strings("patterns", limit=100)
    ignore_case = bool(options.get("ignore_case", False))
    label = str(options.get("label", "REDACTED"))
    window = int(options.number("window", 64, 1, 4096))
    compiled = [_compile(options, f"patterns[{i}]", source, ignore_case) for i, source in enumerate(patterns)]
    named = options.get("label") is not None
    return _pattern_guard(compiled, label, "matched a forbidden pattern", window, named=named)


@register_guard("blocklist")
def blocklist(options: GuardOptions) -> BuiltGuard:
    """Fails when one of ``words`` (whole words or phrases, any case) appears."""
    words = options.strings("words")
    label = str(options.get("label", "BLOCKED"))
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    try:
        pattern = compile_pattern(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    except PatternError as exc:
        raise GuardConfigError("words", str(exc)) from None
    window = max(len(w) for w in words) + 1
    named = options.get("label") is not None
    return _pattern_guard([pattern], label, "a blocked word or phrase", window, named=named)


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*)\n\s*```\s*$", re.DOTALL)


@register_guard("json_schema")
def json_schema(options: GuardOptions) -> BuiltGuard:
    """Fails unless the text is JSON (a fenced ```json block is read too) valid against ``schema``."""
    schema = options.get("schema", {})
    if not isinstance(schema, dict):
        raise GuardConfigError("schema", "must be a JSON Schema (a mapping)")
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise GuardConfigError("schema", f"not a valid JSON Schema ({exc.message} at /{where})") from None
    try:
        validator = schema_validator(schema)
    except PatternError as exc:
        raise GuardConfigError("schema", f"not a usable JSON Schema ({exc})") from None

    patterned = "pattern" in orjson.dumps(schema).decode()

    def first_error(value: Any) -> Any:
        with validation_deadline():
            return jsonschema.exceptions.best_match(validator.iter_errors(value))

    async def check(text: str, _context: GuardContext) -> GuardResult:
        fenced = _FENCE.match(text)
        try:
            value = orjson.loads(fenced.group(1) if fenced else text)
        except orjson.JSONDecodeError:
            return GuardResult(False, 0.0, "the answer is not JSON")
        try:  # a schema's patterns hold the thread that runs them until their limit: not the loop's
            error = await asyncio.to_thread(first_error, value) if patterned else first_error(value)
        except PatternTimeout as exc:
            return GuardResult(False, 0.0, str(exc))
        if error is None:
            return GuardResult(True, 1.0)
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        return GuardResult(False, 0.0, f"the answer does not fit the schema: at ${path}, '{error.validator}'")

    return BuiltGuard(check)


# Phrases of known prompt-injection and jailbreak attempts: (weight, words one of which the text must
# hold for the pattern to be tried, pattern); the weights of those found are summed, capped at 1.
_INJECTION: Sequence[tuple[float, tuple[str, ...], str]] = (
    (
        0.9,
        ("ignore", "disregard", "forget", "override", "bypass"),
        r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}\b(?:previous|prior|above|earlier|all|any|"
        r"your|the|system)\b.{0,30}\b(?:instructions?|prompts?|rules|directions|guidelines|context)\b",
    ),
    (
        0.8,
        ("reveal", "show", "print", "repeat", "leak", "output", "tell me"),
        r"\b(?:reveal|show|print|repeat|leak|output|tell me)\b.{0,30}\b(?:system prompt|hidden prompt|"
        r"(?:your|the) (?:initial |original )?instructions)\b",
    ),
    (0.7, ("you are",), r"\byou are (?:now )?(?:DAN|in (?:developer|god|jailbreak) mode|no longer bound)\b"),
    (
        0.7,
        ("anything now", "jailbreak", "jail-break", "developer mode"),
        r"\b(?:do anything now|jailbreak|jail-break|developer mode enabled)\b",
    ),
    (
        0.6,
        ("pretend", "act", "behave", "roleplay"),
        r"\b(?:pretend|act|behave|roleplay)\b.{0,30}\b(?:no|without)\b.{0,20}\b(?:restrictions|filters|"
        r"limits|rules|guidelines|censorship)\b",
    ),
    (
        0.6,
        ("<|", "[inst", "[/inst", "<<sys", "##"),
        r"(?:<\|im_start\|>|<\|system\|>|\[/?INST\]|<<SYS>>|^\s*#{2,}\s*(?:system|instruction)s?\s*:?\s*$)",
    ),
    (0.5, ("instruction",), r"\bnew (?:system )?instructions?\s*:"),
    (0.4, ("from now on", "starting now"), r"\b(?:from now on|starting now),? you (?:will|must|are)\b"),
)


@register_guard("prompt_injection")
def prompt_injection(options: GuardOptions) -> BuiltGuard:
    """Heuristics for prompt injection and jailbreaks: known phrasings, each with a weight; fails when
    the risk (their sum, at most 1) reaches ``threshold``. The score is 1 - risk."""
    threshold = options.number("threshold", 0.5)
    extra = options.strings("patterns", [], limit=100)
    rules = [(w, words, re.compile(p, re.IGNORECASE | re.MULTILINE)) for w, words, p in _INJECTION]
    configured = [_compile(options, f"patterns[{i}]", source, True) for i, source in enumerate(extra)]

    def applicable(text: str) -> list[tuple[float, re.Pattern[str]]]:
        lowered = text.lower()
        return [(weight, p) for weight, words, p in rules if any(word in lowered for word in words)]

    def configured_spans(text: str) -> list[Finding]:
        """The configured patterns' matches (each weighs 1), searched under a time budget; past it
        the whole text counts as one (a check fails closed)."""
        spans = locate_spans(configured, text)
        if spans is None:
            return [Finding(0, len(text), "INJECTION")]
        return [Finding(start, end, "INJECTION") for start, end in spans]

    def locate(text: str) -> list[Finding]:
        built_in = [
            Finding(m.start(), m.end(), "INJECTION") for _, p in applicable(text) for m in p.finditer(text)
        ]
        return built_in + (configured_spans(text) if configured else [])

    def assess(text: str) -> tuple[float, list[Finding]]:
        risk = 0.0
        found: list[Finding] = []
        for weight, pattern in applicable(text):
            if match := pattern.search(text):
                risk += weight
                found.append(Finding(match.start(), match.end(), "INJECTION"))
        if configured and (hits := configured_spans(text)):
            risk += 1.0
            found.extend(hits)
        return risk, found

    async def check(text: str, _context: GuardContext) -> GuardResult:
        risk, found = await search(assess, text)
        risk = min(1.0, risk)
        if risk < threshold:
            return GuardResult(True, 1.0 - risk)
        return GuardResult(
            False, 1.0 - risk, f"looks like a prompt injection (risk {risk:.2f})", tuple(found)
        )

    return BuiltGuard(check, locate, 200)


@register_guard("scorer")
def scorer(options: GuardOptions) -> BuiltGuard:
    """Any eval scorer (``scorer: {type: ..., ...}``; model-graded ones are refused: a guard has no
    judge) passes or fails the text, as the scorer passes or fails an eval output."""
    import pilothouse.evals.deterministic_scorers
    import pilothouse.evals.judges  # noqa: F401  (the built-in scorers register on import)
    from pilothouse.evals.scoring import Sample, ScorerConfigError, build_scorer, is_model_graded

    spec = options.get("scorer")
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        raise GuardConfigError("scorer", "must be an eval scorer spec with a type")
    if is_model_graded(spec["type"]):
        raise GuardConfigError("scorer", f"{spec['type']!r} needs a judge model; guards take local scorers")
    try:
        built = build_scorer(dict(spec), None)
    except (ScorerConfigError, ValueError) as exc:
        raise GuardConfigError("scorer", str(exc)) from None

    async def check(text: str, context: GuardContext) -> GuardResult:
        messages = [m for m in context.request.get("messages") or [] if isinstance(m, dict)]
        sample = Sample(item_id="guard", messages=messages, output=text, context=context.context)
        result = await built.score(sample)
        passed = bool(result.passed)
        return GuardResult(passed, result.value, None if passed else f"scorer {spec['type']} failed")

    return BuiltGuard(check)

"""The ``groundedness`` guard: is the answer supported by the context the request carried (its
system, developer and tool messages by default: RAG passages, tool results)? It asks a detector, a
callable ``(response, context) -> verdict`` with a ``score`` (1 = supported), a ``label`` and the
unsupported ``spans``; two are built in:

- ``lexical`` (:func:`lexical_detector`): every number and every name (a capitalised word or run of
  them) in the answer must appear in the context. Cheap (microseconds), strict, and blind to claims
  made of ordinary words; a fair first line for answers that quote figures and names.
- ``hallucination``: ``pilothouse.quality.hallucination.detect``, the local faithfulness detector
  (a small language model; run in a worker thread), once that package is installed.

A plugin can register its own detector with :func:`register_detector`."""

from __future__ import annotations

import asyncio
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pilothouse.domain.guards import Finding, GuardContext, GuardResult
from pilothouse.quality.guardrails._registry import BuiltGuard, GuardConfigError, GuardOptions, register_guard

__all__ = ["Grounding", "lexical_detector", "register_detector"]

SUPPORTED, UNSUPPORTED = "supported", "unsupported"


@dataclass(frozen=True, slots=True)
class Grounding:
    """A detector's verdict: ``score`` (the share supported, 1 = all), ``label`` (``supported`` or
    ``unsupported``) and the unsupported spans of the response, as (start, end) offsets."""

    score: float
    label: str
    spans: tuple[tuple[int, int], ...] = ()


_NUMBER = re.compile(r"(?<![\w.])[-+]?\d[\d,]*(?:\.\d+)?%?")
_NAME = re.compile(r"\b[A-Z][\w'-]*(?:\s+(?:of|de|la|von|van|the|and|&)?\s*[A-Z][\w'-]*)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n\s*)$")
# capitalised only because a sentence starts with them: not names
_COMMON = frozenset(
    """a an and as at but by for from he her his how i if in it its my no not of on or our she so that the
    their then there these they this those to we what when where which who why with yes you your also
    however therefore thus here according based each every some many most all both one two three first
    second finally overall note please sure certainly in based yes no ok okay""".split()
)


def _normal_number(text: str) -> str:
    return text.replace(",", "").rstrip("%").lstrip("+").rstrip(".")


def lexical_detector(response: str, context: str) -> Grounding:
    """Numbers and names of ``response`` that ``context`` does not contain are unsupported; the score
    is the share of those found (1.0 when the response has none)."""
    context_numbers = {_normal_number(m.group()) for m in _NUMBER.finditer(context)}
    lowered = context.lower()
    checked = 0
    missing: list[tuple[int, int]] = []
    for match in _NUMBER.finditer(response):
        checked += 1
        if _normal_number(match.group()) not in context_numbers:
            missing.append((match.start(), match.end()))
    for match in _NAME.finditer(response):
        name = match.group()
        words = name.split()
        if _SENTENCE_START.search(response[: match.start()]) and words[0].lower() in _COMMON:
            words = words[1:]  # "The Moon": the name is "Moon"
            if not words:
                continue
            name = " ".join(words)
        if len(words) == 1 and words[0].lower() in _COMMON:
            continue
        checked += 1
        if name.lower() not in lowered:
            missing.append((match.end() - len(name), match.end()))
    score = 1.0 if checked == 0 else (checked - len(missing)) / checked
    return Grounding(score, UNSUPPORTED if missing else SUPPORTED, tuple(sorted(missing)))


Detector = Callable[[str, str], Any]
_DETECTORS: dict[str, Callable[[], Detector]] = {"lexical": lambda: lexical_detector}


def register_detector(name: str, load: Callable[[], Detector]) -> None:
    """Make a detector available as ``groundedness``'s ``detector: NAME`` (``load`` is called when a
    guard uses it: import heavy modules there)."""
    _DETECTORS[name] = load


def _hallucination_detector() -> Detector:
    try:
        module = importlib.import_module("pilothouse.quality.hallucination")
    except ImportError as exc:
        raise GuardConfigError("detector", f"the hallucination detector is not available ({exc})") from None
    detect: Detector = module.detect
    return detect


_DETECTORS["hallucination"] = _hallucination_detector


def _grounding(verdict: Any) -> Grounding:
    """Any detector's verdict read as a :class:`Grounding` (``score``, ``label``, ``spans`` with
    ``start`` and ``end``, as the hallucination detector's ``Verdict``)."""
    if isinstance(verdict, Grounding):
        return verdict
    spans = tuple(
        (int(s.start), int(s.end)) if hasattr(s, "start") else (int(s[0]), int(s[1]))
        for s in (getattr(verdict, "spans", None) or getattr(verdict, "unsupported", None) or ())
    )
    return Grounding(float(verdict.score), str(getattr(verdict, "label", "")), spans)


@register_guard("groundedness")
def groundedness(options: GuardOptions) -> BuiltGuard:
    """Fails when the detector scores the answer below ``threshold`` against the request's context
    (without a threshold, a detector other than ``lexical`` decides by its own label); an answer with
    no context to check against passes unless ``require_context``."""
    if options.stage != "output":
        raise GuardConfigError(None, "groundedness checks an answer: put it under output")
    name = options.get("detector", "lexical")
    if name not in _DETECTORS:
        raise GuardConfigError("detector", f"must be one of {', '.join(sorted(_DETECTORS))} (got {name!r})")
    detector = _DETECTORS[name]()
    # lexical: every number and name supported. Another detector: its own label (its threshold,
    # calibrated by its makers) unless a threshold is given
    given = options.get("threshold") is not None or name == "lexical"
    threshold = options.number("threshold", 1.0) if given else None
    require_context = bool(options.get("require_context", False))
    roles = options.strings("context_roles", ["system", "developer", "tool"])
    in_thread = name != "lexical"  # a model-based detector takes a second: off the event loop

    async def check(text: str, context: GuardContext) -> GuardResult:
        if not context.context:
            if require_context:
                return GuardResult(False, None, "no context to check the answer against")
            return GuardResult(True, None, "no context in the request")
        if in_thread:
            raw = await asyncio.to_thread(detector, text, context.context)
        else:
            raw = detector(text, context.context)
        verdict = _grounding(raw)
        if threshold is not None:
            supported = verdict.score >= threshold
        elif verdict.label in (SUPPORTED, UNSUPPORTED):
            supported = verdict.label == SUPPORTED
        else:
            supported = verdict.score >= 0.5
        if supported:
            return GuardResult(True, verdict.score)
        findings = tuple(Finding(start, end, "UNSUPPORTED") for start, end in verdict.spans)
        reason = f"the answer is not supported by its context (score {verdict.score:.2f}"
        return GuardResult(False, verdict.score, f"{reason}, {len(findings)} unsupported spans)", findings)

    return BuiltGuard(check, context_roles=frozenset(roles))

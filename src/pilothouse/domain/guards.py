"""Guardrails as the gateway sees them: a guard checks a text (an input message, or the answer) and
says whether it passes, with a score, a reason and the spans it objects to; a :class:`GuardUse` is a
guard configured on a route, at a stage (input or output), with an action (block, redact, flag or
fallback). The guards themselves are built by ``pilothouse.quality.guardrails`` from the config; the
gateway only runs what it is handed (:class:`Guardrails`), so it knows no guard by name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class GuardStage(StrEnum):
    """Where a guard runs: on the request's messages before any upstream sees them, or on the answer
    before the client does."""

    INPUT = "input"
    OUTPUT = "output"


class GuardAction(StrEnum):
    """What a failed check does: ``block`` (a 400 in the surface's shape), ``redact`` (the spans the
    guard found replaced by ``[LABEL]``), ``flag`` (a score on the call's span; the call goes on),
    ``fallback`` (the request is sent to another model instead: before the call for an input guard,
    again for an output guard)."""

    BLOCK = "block"
    REDACT = "redact"
    FLAG = "flag"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class Finding:
    """A span of the checked text that a guard objects to: ``text[start:end]``, of kind ``label``
    (``EMAIL``, ``CARD``, ``BLOCKED_WORD``, ...)."""

    start: int
    end: int
    label: str


@dataclass(frozen=True, slots=True)
class GuardResult:
    """One check: ``passed``; ``score`` (the guard's measure, 0..1, higher is better, when it has one);
    ``reason`` (why it failed, safe to show: it never quotes what was found); ``findings`` (the spans,
    for guards that locate what they object to)."""

    passed: bool
    score: float | None = None
    reason: str | None = None
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class GuardContext:
    """What a check may look at besides the text: the whole (OpenAI-shaped) request and the context
    passages the answer should be grounded in (``None``: the request has none)."""

    request: Mapping[str, Any]
    context: str | None = None


Check = Callable[[str, GuardContext], Awaitable[GuardResult]]
Locate = Callable[[str], Sequence[Finding]]


@dataclass(frozen=True, slots=True)
class GuardUse:
    """A guard as configured on a route. ``locate`` is set for guards that find spans (so they can
    redact, and redact a stream chunk by chunk holding back ``window`` characters); ``fallback`` is
    the model of the fallback action; ``context_roles`` the message roles whose text is the context;
    ``roles`` the roles of the messages an input guard checks (None: every message)."""

    name: str
    kind: str
    stage: GuardStage
    action: GuardAction
    check: Check
    locate: Locate | None = None
    window: int = 64
    fallback: str | None = None
    context_roles: frozenset[str] = frozenset({"system", "developer", "tool"})
    roles: frozenset[str] | None = None  # an input guard checks the messages of these roles (None: all)

    @property
    def per_chunk(self) -> bool:
        """A stream's answer is redacted chunk by chunk (not held whole) by this guard."""
        return self.action is GuardAction.REDACT and self.locate is not None

    @property
    def holds_stream(self) -> bool:
        """A stream must be answered whole (then replayed) for this output guard to act: it blocks,
        falls back, or redacts what it cannot locate chunk by chunk."""
        return self.action in (GuardAction.BLOCK, GuardAction.FALLBACK) or (
            self.action is GuardAction.REDACT and self.locate is None
        )


@dataclass(frozen=True, slots=True)
class RouteGuards:
    """The guards of one route (a model name clients ask for), in the order they run."""

    input: tuple[GuardUse, ...] = ()
    output: tuple[GuardUse, ...] = ()
    max_input_chars: int = 1_000_000  # more text in a request's messages is refused (guarding costs CPU)

    @property
    def holds_stream(self) -> bool:
        """A stream on this route is answered whole, then replayed (see :attr:`GuardUse.holds_stream`)."""
        return any(use.holds_stream for use in self.output)


@dataclass(frozen=True)
class Guardrails:
    """Guards per route: ``routes[name]`` for a model name, ``routes["*"]`` for every other one."""

    routes: Mapping[str, RouteGuards] = field(default_factory=dict)

    def for_model(self, model: str) -> RouteGuards | None:
        """The guards of ``model`` (its own, else the ``*`` route's), or None."""
        return self.routes.get(model) or self.routes.get("*")


def redact_findings(text: str, findings: Sequence[Finding]) -> str:
    """``text`` with each finding replaced by ``[LABEL]``; overlapping findings merge (the first
    label wins), so nothing of either is left."""
    if not findings:
        return text
    parts: list[str] = []
    position = 0
    for finding in sorted(findings, key=lambda f: (f.start, -f.end)):
        start = max(finding.start, position)
        if finding.end <= start:
            continue
        if start == finding.start:
            parts.append(text[position:start])
            parts.append(f"[{finding.label}]")
        position = finding.end
    parts.append(text[position:])
    return "".join(parts)

"""The guardrail hook of the gateway: it runs the guards a route was given
(:class:`~pilothouse.domain.guards.RouteGuards`, built by ``pilothouse.quality.guardrails``) and
applies their actions to OpenAI-shaped requests and answers. Input guards check each message's text
before any cache or upstream; output guards check each choice's text. ``block`` is a 400
``guardrail_blocked``; ``redact`` replaces what a guard found by ``[LABEL]``; ``flag`` only records;
``fallback`` sends the request to another model. Every guard's outcome (passed, score, reason) goes
on the call's span as ``gateway.guardrails``; what a span-finding guard found is never stored in the
trace, whatever its action (the trace keeps the redacted text)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pilothouse.domain.guards import (
    Finding,
    GuardAction,
    GuardContext,
    GuardResult,
    GuardUse,
    RouteGuards,
    redact_findings,
)

log = logging.getLogger("pilothouse.gateway")

GUARDRAILS_ATTRIBUTE = "gateway.guardrails"
BLOCKED_CODE = "guardrail_blocked"
MAX_RUN_HELD = 8192  # a stream's text without whitespace is held back at most this long
RELEASE_CHARS = 128  # a stream's text goes out in pieces of at least this much (one search per piece)


class GuardBlocked(Exception):
    """A guard blocked the call: the surface answers ``status`` (400 ``guardrail_blocked``; 413
    ``guardrail_input_too_large`` for more text than the route's guards take) with this message."""

    def __init__(
        self, message: str, param: str | None = None, status: int = 400, code: str = BLOCKED_CODE
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


def text_of(content: Any) -> list[str]:
    """The text pieces of a message's content (a string, or the ``text`` of its text parts)."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def request_context(request: dict[str, Any], roles: frozenset[str]) -> str | None:
    """The text of the request's messages of ``roles`` (its RAG passages, tool results), or None."""
    pieces = [
        piece
        for message in request.get("messages") or ()
        if isinstance(message, dict) and message.get("role") in roles
        for piece in text_of(message.get("content"))
    ]
    return "\n".join(pieces) if pieces else None


async def run_check(use: GuardUse, text: str, context: GuardContext) -> GuardResult:
    """One check; a guard that fails to run (a plugin's bug, a detector that broke) counts as failed,
    so its action still applies (a blocking guard fails closed), and the error is logged."""
    try:
        return await use.check(text, context)
    except Exception as exc:
        log.exception("the guardrail %r failed to check a text", use.name)
        return GuardResult(False, None, f"the guard could not check the text ({type(exc).__name__})")


def _outcome(use: GuardUse, results: list[GuardResult], **more: Any) -> dict[str, Any]:
    """A guard's outcome as a span attribute (plain JSON): the worst of its checks."""
    failed = [r for r in results if not r.passed]
    scores = [r.score for r in results if r.score is not None]
    return {
        "guard": use.name,
        "type": use.kind,
        "stage": use.stage.value,
        "action": use.action.value,
        "passed": not failed,
        "score": min(scores) if scores else None,
        "reason": failed[0].reason if failed else None,
        "found": sum(len(r.findings) for r in failed),
        **more,
    }


def _with_content(message: dict[str, Any], texts: list[str]) -> dict[str, Any]:
    """``message`` with its text pieces replaced by ``texts`` (in order)."""
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": texts[0]}
    pieces = iter(texts)
    parts = [
        {**p, "text": next(pieces)} if isinstance(p, dict) and isinstance(p.get("text"), str) else p
        for p in content or []
    ]
    return {**message, "content": parts}


@dataclass(slots=True)
class InputOutcome:
    """What the input guards decided: the request to send (redacted, or for another model), the
    request as the trace keeps it, the outcomes, and the refusal when a guard blocked."""

    request: dict[str, Any]
    traced: dict[str, Any]
    outcomes: list[dict[str, Any]]
    blocked: GuardBlocked | None = None


async def check_input(route: RouteGuards, request: dict[str, Any]) -> InputOutcome:
    """Run the route's input guards over every message's text, in order (a redaction is what the
    next guard sees)."""
    messages: list[Any] = list(request.get("messages") or [])
    traced: list[Any] = list(messages)
    sent = dict(request)
    outcomes: list[dict[str, Any]] = []
    size = sum(len(t) for m in messages if isinstance(m, dict) for t in text_of(m.get("content")))
    if size > route.max_input_chars:
        refusal = GuardBlocked(
            f"The messages hold {size:,} characters of text; this route's guardrails check at most "
            f"{route.max_input_chars:,}.",
            "messages",
            413,
            "guardrail_input_too_large",
        )
        return InputOutcome(sent, {**request, "messages": []}, outcomes, refusal)
    for use in route.input:
        context = GuardContext(sent, request_context(sent, use.context_roles))
        results: list[GuardResult] = []
        blocked_at: int | None = None
        for index, message in enumerate(messages):
            if not isinstance(message, dict) or (
                use.roles is not None and message.get("role") not in use.roles
            ):
                continue
            texts = text_of(message.get("content"))
            if not texts:
                continue
            checked = [await run_check(use, text, context) for text in texts]
            results.extend(checked)
            if all(r.passed for r in checked):
                continue
            redacted = [redact_findings(t, r.findings) for t, r in zip(texts, checked, strict=True)]
            same = traced[index] is message  # the trace keeps the text sent (so far)
            if use.locate is not None:  # what it found never reaches the trace
                if same:
                    traced[index] = _with_content(message, redacted)
                else:
                    shown = text_of(traced[index].get("content"))
                    traced[index] = _with_content(traced[index], _redacted(use, shown))
            if use.action is GuardAction.REDACT:
                messages[index] = _with_content(message, redacted)
                sent["messages"] = messages
                if same:  # still the same text: the next guard's search serves both
                    traced[index] = messages[index]
            elif use.action is GuardAction.BLOCK and blocked_at is None:
                blocked_at = index
        outcome = _outcome(use, results)
        if not outcome["passed"] and use.action is GuardAction.FALLBACK and use.fallback:
            outcome["fallback"] = use.fallback
            sent["model"] = use.fallback
        outcomes.append(outcome)
        if blocked_at is not None:
            refusal = GuardBlocked(
                f"The request was blocked by the guardrail '{use.name}': {outcome['reason']}.",
                f"messages[{blocked_at}]",
            )
            return InputOutcome(sent, {**request, "messages": traced}, outcomes, refusal)
    return InputOutcome(sent, {**request, "messages": traced}, outcomes)


def _redacted(use: GuardUse, texts: list[str]) -> list[str]:
    assert use.locate is not None
    return [redact_findings(text, use.locate(text)) for text in texts]


@dataclass(slots=True)
class OutputOutcome:
    """What the output guards decided about an answer: its text to send, the text the trace keeps,
    the outcomes, and a refusal or a fallback model when a guard asked for one."""

    text: str
    traced: str
    outcomes: list[dict[str, Any]]
    blocked: GuardBlocked | None = None
    fallback: str | None = None


async def check_output(uses: Iterable[GuardUse], request: dict[str, Any], text: str) -> OutputOutcome:
    """Run output guards over one answer's text, in order (a redaction is what the next one sees)."""
    traced = text
    outcomes: list[dict[str, Any]] = []
    for use in uses:
        result = await run_check(
            use, text, GuardContext(request, request_context(request, use.context_roles))
        )
        outcomes.append(_outcome(use, [result]))
        if result.passed:
            continue
        if use.locate is not None:
            traced = redact_findings(traced, use.locate(traced))
        if use.action is GuardAction.REDACT:
            text = redact_findings(text, result.findings)
        elif use.action is GuardAction.BLOCK:
            message = f"The answer was blocked by the guardrail '{use.name}': {result.reason}."
            return OutputOutcome(text, traced, outcomes, GuardBlocked(message))
        elif use.action is GuardAction.FALLBACK:
            outcomes[-1]["fallback"] = use.fallback
            return OutputOutcome(text, traced, outcomes, fallback=use.fallback)
    return OutputOutcome(text, traced, outcomes)


async def check_answer(
    uses: tuple[GuardUse, ...], request: dict[str, Any], response: dict[str, Any]
) -> tuple[dict[str, Any], OutputOutcome | None]:
    """Run output guards over each text answer of a chat completion; the response to send (its
    texts redacted) and the outcome of the first choice that a guard refused (or the last one)."""
    last: OutputOutcome | None = None
    choices = list(response.get("choices") or [])
    for position, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            continue
        outcome = await check_output(uses, request, message["content"])
        if last is not None:
            outcome.outcomes = last.outcomes + outcome.outcomes
        last = outcome
        if outcome.blocked is not None or outcome.fallback is not None:
            return response, outcome
        if outcome.text != message["content"]:
            choices[position] = {**choice, "message": {**message, "content": outcome.text}}
            response = {**response, "choices": choices}
    return response, last


class StreamRedactor:
    """Redacts a stream's text chunk by chunk: each choice's text is held back ``window`` characters
    (and never cut inside a run without whitespace, nor inside a match), so a match split across
    chunks is still found; what is released is redacted, in pieces of at least
    :data:`RELEASE_CHARS` (the search runs once per piece, not once per chunk). A chunk whose text is
    all held back is not sent (nor is a choice of it left with nothing to say): the client never gets
    an empty text delta that the upstream did not send. The text still held goes out in a chunk of
    its own just before the choice's finish chunk or tool-call delta (or from :meth:`flush`), so the
    stream keeps an unguarded one's shape: role, text, tool calls, finish, usage."""

    def __init__(self, uses: tuple[GuardUse, ...]) -> None:
        self.uses = uses
        self.window = max(use.window for use in uses)
        self.pending: dict[int, str] = {}
        self.found: dict[str, int] = {use.name: 0 for use in uses}
        self.labels: dict[str, set[str]] = {use.name: set() for use in uses}
        self.template: dict[str, Any] = {}

    def _locate(self, text: str) -> list[tuple[GuardUse, Finding]]:
        return [(use, f) for use in self.uses if use.locate is not None for f in use.locate(text)]

    def _release(self, text: str, final: bool) -> tuple[str, str]:
        """(the redacted text that can go out now, the text held back)."""
        if not final and len(text) < self.window + RELEASE_CHARS:
            return "", text  # not enough to release yet: no search
        found = self._locate(text)
        cut = len(text) if final else max(0, len(text) - self.window)
        if not final and 0 < cut < len(text) and not text[cut - 1].isspace() and not text[cut].isspace():
            start = cut
            while start > 0 and cut - start < MAX_RUN_HELD and not text[start - 1].isspace():
                start -= 1
            if cut - start < MAX_RUN_HELD:
                cut = start
        moved = True
        while moved:  # a match that the cut would split is held whole
            moved = False
            for _use, finding in found:
                if finding.start < cut < finding.end:
                    cut, moved = finding.start, True
        released = [(use, f) for use, f in found if f.end <= cut]
        for use, finding in released:
            self.found[use.name] += 1
            self.labels[use.name].add(finding.label)
        return redact_findings(text[:cut], [f for _, f in released]), text[cut:]

    def _text_chunk(self, texts: list[tuple[int, str]]) -> dict[str, Any]:
        """A chunk of its own that carries only text (what was held, released)."""
        choices = [{"index": i, "delta": {"content": t}, "finish_reason": None} for i, t in texts]
        return {"object": "chat.completion.chunk", **self.template, "choices": choices}

    def chunk(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """What goes out for ``chunk`` (none, it, or the held text's own chunk then it): its text
        deltas replaced by what can be released now."""
        self.template = {k: chunk[k] for k in ("id", "object", "created", "model") if k in chunk}
        choices = chunk.get("choices")
        if not choices:
            return [chunk]
        before: list[tuple[int, str]] = []  # held text that goes out ahead of this chunk
        kept = []
        for choice in choices:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            index = choice.get("index", 0)
            pending = self.pending.get(index, "")
            final = choice.get("finish_reason") is not None
            if content is None or (content == "" and not pending):  # nothing of the text changes
                if pending and (final or delta.get("tool_calls")):  # the rest goes out first
                    before.append((index, self._release(pending, True)[0]))
                    self.pending[index] = ""
                kept.append(choice)
                continue
            released, self.pending[index] = self._release(pending + content, final)
            if released:
                choice["delta"] = {**delta, "content": released}
            else:  # all held: the choice says nothing more unless it has more than text
                rest = {k: v for k, v in delta.items() if k != "content"}
                if not rest and not final:
                    continue
                choice["delta"] = rest
            kept.append(choice)
        out = [self._text_chunk(before)] if before else []
        if kept or chunk.get("usage") is not None:
            chunk["choices"] = kept
            out.append(chunk)
        return out

    def flush(self) -> dict[str, Any] | None:
        """A last chunk with the text still held (a stream that ended without finish chunks)."""
        texts = [(i, self._release(t, True)[0]) for i, t in sorted(self.pending.items()) if t]
        self.pending.clear()
        return self._text_chunk(texts) if texts else None

    def outcomes(self) -> list[dict[str, Any]]:
        """Each redacting guard's outcome over the whole stream."""
        return [
            {
                "guard": use.name,
                "type": use.kind,
                "stage": "output",
                "action": "redact",
                "passed": self.found[use.name] == 0,
                "score": 0.0 if self.found[use.name] else 1.0,  # as the whole answer's check scores
                "reason": f"{', '.join(sorted(self.labels[use.name]))} "
                f"({self.found[use.name]} found), redacted in the stream"
                if self.found[use.name]
                else None,
                "found": self.found[use.name],
            }
            for use in self.uses
        ]

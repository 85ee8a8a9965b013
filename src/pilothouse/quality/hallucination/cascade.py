"""The cascade: the local detector decides where it is confident; the uncertain middle goes to an LLM
judge (any :class:`~pilothouse.domain.chat.ChatModel`), so the judge is paid for on a minority of
checks. :class:`CascadeStats` keeps the share escalated and the judge's cost per 1,000 checks."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from pilothouse.domain.chat import CallContext, ChatModel, ModelCallError, current_call
from pilothouse.domain.faithfulness import SUPPORTED, UNSUPPORTED, UnsupportedSpan, Verdict
from pilothouse.domain.money import Money

ESCALATE = "escalate"
JUDGE_PROMPT = """You check whether a RESPONSE is fully supported by a CONTEXT.
A response is supported when every claim in it is stated in, or follows directly from, the context.
Answer with JSON only:
{{"supported": true or false, "unsupported": ["exact quotes of the unsupported parts of the response"]}}

CONTEXT:
{context}

RESPONSE:
{response}"""


def decide(score: float, low: float, high: float) -> str:
    """The cascade's rule: ``supported`` at or above ``high``, ``unsupported`` at or below ``low``,
    ``escalate`` in between (``low < high``; ``low == high`` never escalates)."""
    if score >= high:
        return SUPPORTED
    if score <= low:
        return UNSUPPORTED
    return ESCALATE


def bands_around(threshold: float, confidence: float) -> tuple[float, float]:
    """(low, high) that escalate exactly the verdicts whose confidence (distance from ``threshold``,
    scaled to its side) is below ``confidence``: 0 escalates nothing, 1 everything strictly inside."""
    if not 0.0 <= confidence <= 1.0 or not 0.0 < threshold < 1.0:
        raise ValueError("need 0 < threshold < 1 and 0 <= confidence <= 1")
    return threshold * (1.0 - confidence), threshold + (1.0 - threshold) * confidence


def parse_judge_answer(text: str, response: str) -> tuple[bool, tuple[UnsupportedSpan, ...]]:
    """The judge's JSON answer -> (supported, spans located in ``response``). Tolerates a code fence
    or prose around the JSON; an answer without a JSON object falls back to a leading yes/no word,
    and anything else raises ``ValueError``."""
    match = re.search(r"\{.*\}", text, re.DOTALL)
    if match is None:
        word = text.strip().lower()
        if word.startswith(("yes", "supported")):
            return True, ()
        if word.startswith(("no", "unsupported")):
            return False, ()
        raise ValueError(f"the judge's answer is not JSON: {text[:200]!r}")
    try:
        data = json.loads(match.group(0))
    except json.JSONDecodeError as exc:
        raise ValueError(f"the judge's answer is not valid JSON: {exc}") from exc
    supported = data.get("supported") if isinstance(data, dict) else None
    if not isinstance(supported, bool):
        raise ValueError("the judge's answer lacks a true/false 'supported'")
    spans: list[UnsupportedSpan] = []
    for quote in data.get("unsupported") or []:
        if isinstance(quote, str) and quote.strip():
            start = response.find(quote.strip())
            if start >= 0:
                end = start + len(quote.strip())
                spans.append(UnsupportedSpan(start, end, response[start:end], "the judge: unsupported", 1.0))
    return supported, tuple(sorted(spans, key=lambda s: s.start))


@dataclass
class CascadeStats:
    """Running totals: checks, escalations, judge failures and the judge's cost."""

    checked: int = 0
    escalated: int = 0
    judge_errors: int = 0
    judge_cost: Money = field(default_factory=lambda: Money(0))
    unpriced_calls: int = 0  # judge calls whose cost was unknown (not counted in judge_cost)

    @property
    def escalated_share(self) -> float:
        """Escalations / checks (0 before the first check)."""
        return self.escalated / self.checked if self.checked else 0.0

    def cost_per_1000(self) -> Money:
        """The judge's cost per 1,000 checked responses."""
        return self.judge_cost * (1000 / self.checked) if self.checked else Money(0)


class Cascade:
    """Local detector first; the judge for scores strictly between ``low`` and ``high``.

    ``local`` is any ``(response, context) -> Verdict`` (the detector's ``detect``; run in a worker
    thread); ``judge`` a started :class:`ChatModel`. When the judge fails, the local verdict stands
    (its reason says so) and ``stats.judge_errors`` counts it."""

    def __init__(
        self,
        local: Callable[[str, str], Verdict],
        judge: ChatModel,
        *,
        low: float = 0.25,
        high: float = 0.75,
        max_tokens: int = 300,
    ) -> None:
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"need 0 <= low <= high <= 1, not low={low}, high={high}")
        self.local, self.judge, self.low, self.high, self.max_tokens = local, judge, low, high, max_tokens
        self.stats = CascadeStats()

    async def check(self, response: str, context: str) -> Verdict:
        """The cascade's verdict on one response."""
        verdict = await asyncio.to_thread(self.local, response, context)
        self.stats.checked += 1
        if decide(verdict.score, self.low, self.high) != ESCALATE:
            return verdict
        self.stats.escalated += 1
        return await self._ask_judge(response, context, verdict)

    async def _ask_judge(self, response: str, context: str, local: Verdict) -> Verdict:
        request = {
            "model": self.judge.model,
            "messages": [
                {"role": "user", "content": JUDGE_PROMPT.format(context=context, response=response)}
            ],
            "temperature": 0,
            "max_tokens": self.max_tokens,
        }
        outer = current_call.get()
        context_ = CallContext(
            outer.trace_id if outer else uuid.uuid4().hex,
            outer.project_id if outer else "default",
            outer.parent_id if outer else None,
            "hallucination judge",
        )
        try:
            reply = await self.judge.chat(request, context_)
            supported, spans = parse_judge_answer(reply.text, response)
        except (ModelCallError, ValueError) as exc:
            self.stats.judge_errors += 1
            return Verdict(
                local.score,
                local.label,
                local.spans,
                local.source,
                local.confidence,
                local.features,
                f"{local.reason}; the judge failed: {exc}",
            )
        if reply.cost_usd is None:
            self.stats.unpriced_calls += 1
        else:
            self.stats.judge_cost = self.stats.judge_cost + reply.cost_usd
        return Verdict(
            1.0 if supported else 0.0,
            SUPPORTED if supported else UNSUPPORTED,
            spans or (() if supported else local.spans),
            f"judge:{self.judge.model}",
            1.0,
            {**local.features, "local_score": local.score},
            f"escalated (local score {local.score:.2f}); the judge says "
            + ("supported" if supported else "unsupported"),
        )

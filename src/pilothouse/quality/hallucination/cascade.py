"""The cascade: the local detector decides where it is confident; the uncertain middle goes to an LLM
judge, so the judge is paid for on a minority of checks. Which checks are uncertain is either a fixed
band of scores (``low``, ``high``) or an :class:`EscalationBudget`: about a set share of the checks, those
whose score ranks nearest the threshold among the recent ones (a fixed band escalates a share that
depends on where a domain's scores fall; a budget keeps the share, and so the judge's cost, wherever they
fall). :class:`CascadeStats` keeps the share escalated and the judge's cost per 1,000 checks."""

from __future__ import annotations

import asyncio
import bisect
import json
import re
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import cast

from pilothouse.domain.chat import ChatModel
from pilothouse.domain.faithfulness import SUPPORTED, UNSUPPORTED, UnsupportedSpan, Verdict
from pilothouse.domain.money import Money
from pilothouse.evals.judges import Judge, JudgeModel, JudgeReply

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


class EscalationBudget:
    """Escalates about ``share`` of the checks: those whose local score ranks nearest ``threshold``
    among the last ``window`` scores (the band of ranks is centred on the threshold's rank, moved
    inward at either end; a score tied with others escalates when any rank it takes is in the band).
    Until ``warmup`` scores are seen the band is :func:`bands_around` the threshold at confidence
    ``share`` (a share of 1 escalates every check). A check's own score joins the window after its
    decision. On a stream whose scores drift (a sorted stream is the worst case) ranks among recent
    scores mislead, so the escalations among the last ``window`` checks are also held to ``share`` of
    them (plus one).
    Not thread-safe by itself: :class:`Cascade` calls it under a lock."""

    def __init__(self, share: float, threshold: float, *, window: int = 500, warmup: int = 20) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"the escalated share must be within [0, 1], not {share}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"the threshold must be within (0, 1), not {threshold}")
        if not 1 <= warmup <= window:
            raise ValueError("need 1 <= warmup <= window")
        self.share, self.threshold, self.window, self.warmup = share, threshold, window, warmup
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []
        self._escalated: deque[bool] = deque()
        self._escalations = 0

    def decide(self, score: float) -> str:
        """``supported``, ``unsupported`` or :data:`ESCALATE` for one local score (then remembered)."""
        ranked = self._sorted
        local = SUPPORTED if score >= self.threshold else UNSUPPORTED
        if self.share >= 1.0:
            decision = ESCALATE
        elif len(ranked) < self.warmup:
            decision = decide(score, *bands_around(self.threshold, self.share))
        else:
            n = len(ranked)
            centre = bisect.bisect_left(ranked, self.threshold) / n
            start = min(max(centre - self.share / 2, 0.0), 1.0 - self.share)
            # the ranks the score takes among the recent ones (a range where it ties with some)
            first, last = bisect.bisect_left(ranked, score) / n, bisect.bisect_right(ranked, score) / n
            inside = self.share > 0 and first <= start + self.share and last >= start
            decision = ESCALATE if inside else local
        if decision == ESCALATE and self._escalations + 1 > self.share * (len(self._recent) + 1) + 1:
            decision = local  # over the share
        self._recent.append(score)
        self._escalated.append(decision == ESCALATE)
        self._escalations += decision == ESCALATE
        bisect.insort(ranked, score)
        if len(self._recent) > self.window:
            del ranked[bisect.bisect_left(ranked, self._recent.popleft())]
            self._escalations -= self._escalated.popleft()
        return decision


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


@dataclass(frozen=True)
class CascadeResult:
    """One check: the verdict, and the judge's reply when the check was escalated and the judge answered
    (also when its answer could not be read: it was paid for)."""

    verdict: Verdict
    reply: JudgeReply | None = None


class Cascade:
    """Local detector first; the judge for the uncertain middle: scores strictly between ``low`` and
    ``high``, or, with ``budget``, what the :class:`EscalationBudget` escalates.

    ``local`` is any ``(response, context) -> Verdict`` (the detector's ``detect``; run in a worker
    thread); ``judge`` a started :class:`ChatModel` (asked through :class:`~pilothouse.evals.judges.Judge`)
    or a :class:`~pilothouse.evals.judges.JudgeModel` (what eval scorers are given). When the judge
    fails, the local verdict stands (its reason says so) and ``stats.judge_errors`` counts it."""

    def __init__(
        self,
        local: Callable[[str, str], Verdict],
        judge: ChatModel | JudgeModel,
        *,
        low: float = 0.25,
        high: float = 0.75,
        budget: EscalationBudget | None = None,
        max_tokens: int = 300,
        executor: Executor | None = None,
    ) -> None:
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"need 0 <= low <= high <= 1, not low={low}, high={high}")
        self.local, self.low, self.high, self.budget, self.max_tokens = local, low, high, budget, max_tokens
        self.executor = executor  # where ``local`` runs (None: the event loop's default thread pool)
        self.judge: JudgeModel = (
            cast(JudgeModel, judge) if hasattr(judge, "complete") else Judge(judge, logprobs=False)
        )
        named = getattr(self.judge, "model", None)
        self.judge_name = str(getattr(named, "model", None) or "judge")
        self.stats = CascadeStats()
        self._order = threading.Lock()  # the budget's window sees the scores one at a time (any thread)

    async def check(self, response: str, context: str) -> Verdict:
        """The cascade's verdict on one response."""
        return (await self.run(response, context)).verdict

    async def run(self, response: str, context: str) -> CascadeResult:
        """The verdict on one response, with the judge's reply (its tokens and cost) when asked."""
        loop = asyncio.get_running_loop()
        verdict = await loop.run_in_executor(self.executor, self.local, response, context)
        with self._order:
            self.stats.checked += 1
            if self.budget is not None:
                decision = self.budget.decide(verdict.score)
            else:
                decision = decide(verdict.score, self.low, self.high)
            self.stats.escalated += decision == ESCALATE
        if decision != ESCALATE:
            return CascadeResult(verdict)
        return await self._ask_judge(response, context, verdict)

    async def _ask_judge(self, response: str, context: str, local: Verdict) -> CascadeResult:
        prompt = JUDGE_PROMPT.format(context=context, response=response)
        reply: JudgeReply | None = None
        try:
            reply = await self.judge.complete(
                [{"role": "user", "content": prompt}], max_tokens=self.max_tokens
            )
            with self._order:  # paid for, whether or not its answer can be read
                if reply.cost_usd is None:
                    self.stats.unpriced_calls += 1
                else:
                    self.stats.judge_cost = self.stats.judge_cost + reply.cost_usd
            if reply.refusal and not reply.text:
                raise ValueError(f"the judge refused: {reply.refusal[:200]}")
            supported, spans = parse_judge_answer(reply.text, response)
        except (RuntimeError, ValueError) as exc:
            with self._order:
                self.stats.judge_errors += 1
            failed = Verdict(
                local.score,
                local.label,
                local.spans,
                local.source,
                local.confidence,
                local.features,
                f"{local.reason}; the judge failed: {str(exc).removeprefix('judge call failed: ')}",
            )
            return CascadeResult(failed, reply)
        verdict = Verdict(
            1.0 if supported else 0.0,
            SUPPORTED if supported else UNSUPPORTED,
            spans or (() if supported else local.spans),
            f"judge:{self.judge_name}",
            1.0,
            {**local.features, "local_score": local.score},
            f"escalated (local score {local.score:.2f}); the judge says "
            + ("supported" if supported else "unsupported"),
        )
        return CascadeResult(verdict, reply)

"""The cascade's decisions and accounting with a scripted judge (a ChatModel that answers from a list),
and the ``hallucination`` scorer's registration through the entry point."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pilothouse.domain.chat import CallContext, ChatReply, ChatStream, ModelCallError
from pilothouse.domain.faithfulness import UnsupportedSpan, Verdict
from pilothouse.domain.money import Money
from pilothouse.evals.scoring import Sample, available_scorers, build_scorer
from pilothouse.quality.hallucination.cascade import (
    ESCALATE,
    Cascade,
    EscalationBudget,
    bands_around,
    decide,
    parse_judge_answer,
)

PRICE = Money.from_usd("0.002")


class ScriptedJudge:
    """A ChatModel answering each call with the next scripted text (or raising it), at a fixed price."""

    model = "scripted-judge"

    def __init__(self, answers: list[str | Exception], price: Money | None = PRICE) -> None:
        self.answers, self.price, self.requests = list(answers), price, []

    def describe(self) -> str:
        return "scripted"

    def endpoint(self) -> str:
        return "scripted"

    async def start(self, spans: Any = None) -> None:
        return None

    async def chat(self, request: dict[str, Any], context: CallContext) -> ChatReply:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        response = {"choices": [{"message": {"role": "assistant", "content": answer}}]}
        return ChatReply(response, None, self.price, 1.0, context.trace_id)

    async def stream(self, request: dict[str, Any], context: CallContext) -> ChatStream:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def local(score: float) -> Any:
    def judge_locally(response: str, context: str) -> Verdict:
        label = "supported" if score >= 0.5 else "unsupported"
        return Verdict(score, label, (UnsupportedSpan(0, 3, response[:3], "low"),) if score < 0.5 else ())

    return judge_locally


def test_decide_bands() -> None:
    assert [decide(s, 0.2, 0.8) for s in (0.1, 0.2, 0.5, 0.8, 0.9)] == [
        "unsupported",
        "unsupported",
        ESCALATE,
        "supported",
        "supported",
    ]
    assert decide(0.5, 0.5, 0.5) == "supported"  # low == high: never escalates
    assert bands_around(0.4, 0.5) == pytest.approx((0.2, 0.7))
    assert bands_around(0.4, 0.0) == (0.4, 0.4)


def test_confident_local_verdicts_skip_the_judge_and_the_middle_escalates() -> None:
    judge = ScriptedJudge(['{"supported": false, "unsupported": ["in 1946"]}'])
    response, context = "It ran in 1946.", "It ran in 1943."

    async def run() -> list[Verdict]:
        verdicts = []
        for score in (0.95, 0.05, 0.5):
            cascade.local = local(score)
            verdicts.append(await cascade.check(response, context))
        return verdicts

    cascade = Cascade(local(0.0), judge, low=0.25, high=0.75)
    high, low, middle = asyncio.run(run())
    assert (high.source, high.label, low.source, low.label) == ("local", "supported", "local", "unsupported")
    assert middle.source == "judge:scripted-judge" and middle.label == "unsupported"
    assert [(s.start, s.end, s.text) for s in middle.spans] == [(7, 14, "in 1946")]
    assert len(judge.requests) == 1 and context in judge.requests[0]["messages"][0]["content"]
    assert cascade.stats.checked == 3 and cascade.stats.escalated == 1
    assert cascade.stats.escalated_share == pytest.approx(1 / 3)
    assert cascade.stats.cost_per_1000() == Money.from_usd("0.002") * (1000 / 3)


def test_a_failing_or_rambling_judge_leaves_the_local_verdict() -> None:
    answers: list[str | Exception] = [
        ModelCallError("upstream down", retryable=True),
        "I think so, maybe",
        "No.",
    ]
    judge = ScriptedJudge(answers, price=None)
    cascade = Cascade(local(0.4), judge)

    async def run() -> list[Verdict]:
        return [await cascade.check("abc def", "ctx") for _ in range(3)]

    down, rambling, plain_no = asyncio.run(run())
    assert down.source == "local" and "the judge failed: upstream down" in down.reason
    assert rambling.source == "local" and "not JSON" in rambling.reason
    assert plain_no.source == "judge:scripted-judge" and plain_no.label == "unsupported"
    assert plain_no.spans == (UnsupportedSpan(0, 3, "abc", "low"),)  # no quote from the judge: local spans
    # the rambling answer was an answer: paid for (here unpriced) even though it could not be read
    assert cascade.stats.judge_errors == 2 and cascade.stats.unpriced_calls == 2

    priced = Cascade(local(0.4), ScriptedJudge(["I think so, maybe"]))
    result = asyncio.run(priced.run("abc def", "ctx"))
    assert result.verdict.source == "local" and result.reply is not None
    assert result.reply.cost_usd == PRICE and priced.stats.judge_cost == PRICE  # counted all the same


def test_parse_judge_answer_reads_fenced_json_and_rejects_bad_shapes() -> None:
    supported, spans = parse_judge_answer('```json\n{"supported": true, "unsupported": []}\n```', "x")
    assert supported and spans == ()
    with pytest.raises(ValueError, match="supported"):
        parse_judge_answer('{"verdict": "yes"}', "x")
    with pytest.raises(ValueError):
        Cascade(local(0.5), ScriptedJudge([]), low=0.8, high=0.2)


def test_the_hallucination_scorer_registers_through_the_entry_point() -> None:
    assert "hallucination" in available_scorers()
    scorer = build_scorer({"type": "hallucination", "context": "{{ passages }}"})
    result = asyncio.run(scorer.score(Sample(item_id="1", input={"passages": "  "}, output="It rained.")))
    assert result.value is None and "needs a context" in (result.error or "")
    with pytest.raises(ValueError, match="model folder"):
        build_scorer({"type": "hallucination", "model": "/nonexistent/folder"})


def test_a_budget_escalates_its_share_wherever_the_scores_fall() -> None:
    import random

    rng = random.Random(5)
    for spread in ((0.90, 0.99), (0.0, 1.0), (0.2, 0.6)):  # high, wide, and low against a 0.88 threshold
        budget = EscalationBudget(0.25, 0.88, window=400, warmup=20)
        decisions = [budget.decide(rng.uniform(*spread)) for _ in range(2000)]
        share = decisions[200:].count(ESCALATE) / 1800  # once the window is full
        assert share == pytest.approx(0.25, abs=0.04), spread
    # a fixed band around the same threshold escalates all or none of such scores
    low, high = bands_around(0.88, 0.25)
    assert all(decide(s, low, high) != ESCALATE for s in (0.2, 0.6)) and decide(0.90, low, high) == ESCALATE


def test_a_budget_escalates_the_scores_that_rank_nearest_the_threshold() -> None:
    budget = EscalationBudget(0.2, 0.5, window=100, warmup=10)
    for i in range(100):  # 0.00, 0.01, ... 0.99: the threshold ranks at the middle
        budget.decide(i / 100)
    assert [budget.decide(s) for s in (0.05, 0.35, 0.45, 0.5, 0.55, 0.65, 0.95)] == [
        "unsupported",
        "unsupported",
        ESCALATE,
        ESCALATE,
        ESCALATE,
        "supported",
        "supported",
    ]
    ties = EscalationBudget(0.25, 0.5, window=100, warmup=10)  # the most uncertain checks, all tied
    assert [ties.decide(0.5) for _ in range(300)].count(ESCALATE) >= 70  # the share's cap, not 2%
    assert EscalationBudget(1.0, 0.5).decide(1.0) == ESCALATE  # a share of 1: every check
    edge = EscalationBudget(0.2, 0.01, window=100, warmup=10)  # threshold below every score: band moves in
    for i in range(100):
        edge.decide(0.5 + i / 200)
    assert edge.decide(0.55) == ESCALATE and edge.decide(0.95) == "supported"
    assert EscalationBudget(0.0, 0.5, warmup=1).decide(0.5) != ESCALATE
    for bad in ((1.5, 0.5), (0.2, 1.0), (-0.1, 0.5)):
        with pytest.raises(ValueError):
            EscalationBudget(*bad)


def test_a_cascade_with_a_budget_asks_the_judge_for_its_share_only() -> None:
    answers: list[str | Exception] = ['{"supported": true}'] * 100
    judge = ScriptedJudge(answers)
    scores = iter([i / 100 for i in range(100)] * 2)
    cascade = Cascade(
        lambda r, c: local(next(scores))(r, c), judge, budget=EscalationBudget(0.1, 0.5, warmup=10)
    )

    async def run() -> None:
        for _ in range(200):
            await cascade.check("abc", "ctx")

    asyncio.run(run())
    # a sorted stream (the worst drift: each score ranks at the top of the recent ones) keeps the share too
    assert 10 <= cascade.stats.escalated <= 21 and len(judge.requests) == cascade.stats.escalated
    assert cascade.stats.judge_cost == PRICE * cascade.stats.escalated

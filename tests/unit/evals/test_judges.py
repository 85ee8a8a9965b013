"""Model-graded scorers: reply parsing, logprob weighting, position-bias handling, claim checking, and
every way a judge can fail (which must give UNMEASURED, never 0)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from pilothouse.domain.chat import CallContext, ChatReply, ChatStream
from pilothouse.domain.money import Money
from pilothouse.domain.traces import Usage
from pilothouse.evals.judges import (
    Judge,
    JudgeReply,
    extract_json_object,
    parse_label,
    parse_score,
    weighted_score,
)
from pilothouse.evals.scoring import Sample, ScorerConfigError, ScoreResult, build_scorer
from pilothouse.testing import SimulatedUpstream

Answer = str | JudgeReply | BaseException | Callable[[str], str]


class ScriptedJudge:
    """A judge model that answers from a script (each answer used once, in call order); a callable
    answer gets the prompt. Text answers cost 100 input and 10 output tokens, $0.001."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    @property
    def prompts(self) -> list[str]:
        return [call["messages"][-1]["content"] for call in self.calls]

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        logprobs: bool = False,
        response_format: dict[str, Any] | None = None,
    ) -> JudgeReply:
        self.calls.append(
            {
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "logprobs": logprobs,
                "response_format": response_format,
            }
        )
        answer = self.answers.pop(0)
        await asyncio.sleep(0)
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            answer = answer(messages[-1]["content"])
        if isinstance(answer, str):
            return JudgeReply(answer, input_tokens=100, output_tokens=10, cost_usd=Money.from_usd("0.001"))
        return answer


class SlowJudge(ScriptedJudge):
    async def complete(self, messages: list[dict[str, Any]], **options: Any) -> JudgeReply:
        await asyncio.sleep(30)
        raise AssertionError("unreachable")


QUESTION = Sample(
    item_id="q1",
    input={"topic": "tides"},
    messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What causes tides?"},
    ],
    output="Mostly the Moon's gravity, with help from the Sun.",
    expected="The gravitational pull of the Moon and the Sun.",
)


async def grade(spec: dict[str, Any], judge: Any, sample: Sample = QUESTION) -> ScoreResult:
    return await build_scorer(spec, judge).score(sample)


def top(*candidates: tuple[str, float]) -> list[tuple[str, float]]:
    """One logprob position from (token, probability) pairs."""
    return [(token, math.log(p)) for token, p in candidates]


# -- parsing ------------------------------------------------------------------------------------------


def test_parse_score_in_its_usual_shapes() -> None:
    assert parse_score("Score: 4\nReason: clear") == 4
    assert parse_score("**Score:** 3/5 - fine") == 3
    assert parse_score('```json\n{"score": 5, "reason": "x"}\n```') == 5
    assert parse_score('Sure! Here is my grade: {"Score": "2"} hope it helps') == 2
    assert parse_score(" 4 ") == 4
    assert parse_score("4/5") == 4
    assert parse_score("The response is good.") is None
    assert parse_score('{"score": "high"}') is None
    assert parse_score('{"score": 4') is None  # truncated JSON, no Score line


def test_extract_json_object_and_labels() -> None:
    assert extract_json_object('noise {"a": {"b": 1}} more {"c": 2}') == {"a": {"b": 1}}
    assert extract_json_object("[1, 2]") is None
    assert parse_label("Verdict: B\nReason: shorter", "verdict", ["A", "B", "tie"]) == "B"
    assert parse_label('{"verdict": "TIE"}', "verdict", ["A", "B", "tie"]) == "tie"
    assert parse_label("(C)", "choice", list("ABCDE")) == "C"
    assert parse_label("Choice: (D) they disagree", "choice", list("ABCDE")) == "D"
    assert (
        parse_label("(A) The submitted answer is a subset of the expert answer", "choice", list("ABCDE"))
        == "A"
    )
    assert (
        parse_label("A submitted answer can't be judged", "choice", list("ABCDE")) is None
    )  # no parentheses
    assert parse_label("Choice: F", "choice", list("ABCDE")) is None
    assert parse_label("Both are fine.", "verdict", ["A", "B", "tie"]) is None


def test_weighted_score_arithmetic() -> None:
    positions = [top(("Score", 1.0)), top((":", 1.0)), top((" 4", 0.6), (" 5", 0.3), (" 3", 0.1))]
    best, weighted = weighted_score(positions, 1, 5)  # type: ignore[misc]
    assert (best, weighted) == (4, pytest.approx(4 * 0.6 + 5 * 0.3 + 3 * 0.1))
    # Mass on non-score tokens is dropped and the rest renormalised.
    _, renormalised = weighted_score([top(("4", 0.5), ("5", 0.25), ("four", 0.25))], 1, 5)  # type: ignore[misc]
    assert renormalised == pytest.approx((4 * 0.5 + 5 * 0.25) / 0.75)
    # Two spellings of one score add up; out-of-scale numbers are not scores.
    _, merged = weighted_score([top(("4", 0.4), (" 4", 0.2), ("5", 0.3), ("9", 0.1))], 1, 5)  # type: ignore[misc]
    assert merged == pytest.approx((4 * 0.6 + 5 * 0.3) / 0.9)
    assert weighted_score([top(("Good", 0.9), ("4", 0.1))], 1, 5) is None


# -- rubric -------------------------------------------------------------------------------------------


async def test_rubric_score_is_normalised_and_usage_recorded() -> None:
    judge = ScriptedJudge("Score: 4\nReason: Correct and concise.")
    result = await grade({"type": "rubric", "criteria": "Is the answer about {{topic}}?"}, judge)
    assert (result.value, result.passed, result.error) == (0.75, True, None)
    assert result.reason == "Correct and concise."
    assert (result.judge_input_tokens, result.judge_output_tokens, result.judge_cost_usd) == (
        100,
        10,
        Money.from_usd("0.001"),
    )
    call = judge.calls[0]
    assert call["logprobs"] is True and call["temperature"] == 0.0 and call["max_tokens"] == 400
    assert call["response_format"]["json_schema"]["schema"]["required"] == ["score", "reason"]
    prompt = judge.prompts[0]
    assert "Criterion: Is the answer about tides?" in prompt
    assert "user: What causes tides?" in prompt and "Moon's gravity" in prompt
    assert "[Reference answer]\nThe gravitational pull" in prompt
    assert "from 1 to 5" in prompt


async def test_rubric_logprob_weighting() -> None:
    logprobs = [top(("Score", 0.99)), top((":", 0.99)), top((" 4", 0.6), (" 5", 0.3), (" 3", 0.1))]
    judge = ScriptedJudge(JudgeReply("Score: 4\nReason: ok", top_logprobs=logprobs))
    result = await grade({"type": "rubric", "criteria": "accurate"}, judge)
    assert result.value == pytest.approx((4.2 - 1) / 4)
    assert result.details["score"] == 4 and result.details["weighted_score"] == pytest.approx(4.2)
    assert result.judge_input_tokens is None and result.judge_cost_usd is None  # unknown, not zero

    # Logprobs that are about another number than the score given are not used.
    judge = ScriptedJudge(JudgeReply("Score: 2", top_logprobs=[top(("4", 0.9), ("2", 0.1))]))
    assert (await grade({"type": "rubric", "criteria": "accurate"}, judge)).value == 0.25
    judge = ScriptedJudge("Score: 2")
    assert (await grade({"type": "rubric", "criteria": "c", "logprobs": False}, judge)).value == 0.25
    assert judge.calls[0]["logprobs"] is False


async def test_rubric_custom_scale() -> None:
    judge = ScriptedJudge('{"score": 7, "reason": "mostly"}')
    result = await grade({"type": "rubric", "criteria": "c", "scale": [0, 10], "threshold": 0.8}, judge)
    assert (result.value, result.passed) == (0.7, False)
    assert "from 0 to 10" in judge.prompts[0]
    with pytest.raises(ScorerConfigError, match="'scale' must be"):
        build_scorer({"type": "rubric", "criteria": "c", "scale": [5, 1]}, ScriptedJudge())
    with pytest.raises(ScorerConfigError, match="'criteria' is required"):
        build_scorer({"type": "rubric"}, ScriptedJudge())


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("I'm sorry, but I can't help with grading this.", "the judge refused"),
        (JudgeReply("", refusal="I cannot assist with that."), "the judge refused"),
        ('```json\n{"score": 4, "reason": "unterminated\n```', "could not find a score"),
        ("The answer looks reasonable to me.", "could not find a score"),
        ("Score: 7\nReason: excellent", "the judge's score 7 is outside 1-5"),
        ("Score: 0", "outside 1-5"),
        (ConnectionError("connection reset by peer"), "the judge call failed: ConnectionError"),
    ],
)
async def test_rubric_judge_failures_are_unmeasured(answer: Answer, error: str) -> None:
    result = await grade({"type": "rubric", "criteria": "accurate"}, ScriptedJudge(answer))
    assert result.value is None and result.passed is None
    assert result.error is not None and error in result.error


async def test_failed_parse_still_records_usage() -> None:
    result = await grade({"type": "rubric", "criteria": "accurate"}, ScriptedJudge("no idea"))
    assert result.value is None and (result.judge_input_tokens, result.judge_output_tokens) == (100, 10)


async def test_judge_timeout_is_unmeasured() -> None:
    result = await grade({"type": "rubric", "criteria": "accurate", "timeout_s": 0.05}, SlowJudge())
    assert result.value is None and result.error == "the judge did not answer within 0.05 s"


# -- answer relevance ---------------------------------------------------------------------------------


async def test_answer_relevance_asks_about_the_last_user_message() -> None:
    judge = ScriptedJudge("Score: 5\nReason: on topic")
    result = await grade({"type": "answer-relevance"}, judge)
    assert (result.value, result.passed) == (1.0, True)
    assert "[Question]\nWhat causes tides?\n[/Question]" in judge.prompts[0]
    judge = ScriptedJudge("Score: 2")
    result = await grade({"type": "answer-relevance", "question": "Explain {{topic}}."}, judge)
    assert (result.value, result.passed) == (0.25, False)
    assert "Explain tides." in judge.prompts[0]


# -- factuality ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "value", "passed"),
    [
        ("Choice: A\nReason: subset", 0.4, True),
        ("Choice: B", 0.6, True),
        ('{"choice": "C", "reason": "same"}', 1.0, True),
        ("(D)", 0.0, False),
        ("Choice: E", 1.0, True),
    ],
)
async def test_factuality_choices(answer: str, value: float, passed: bool) -> None:
    judge = ScriptedJudge(answer)
    result = await grade({"type": "factuality"}, judge)
    assert (result.value, result.passed) == (value, passed)
    assert "[Expert answer]\nThe gravitational pull of the Moon and the Sun." in judge.prompts[0]


async def test_factuality_needs_a_reference_and_a_choice() -> None:
    no_reference = Sample("q2", output="Paris")
    result = await grade({"type": "factuality"}, ScriptedJudge("Choice: C"), no_reference)
    assert result.value is None and "needs a reference answer" in (result.error or "")
    garbage = await grade({"type": "factuality"}, ScriptedJudge("Choice: maybe"))
    assert garbage.value is None and "could not find a choice A-E" in (garbage.error or "")
    strict = {"type": "factuality", "choice_scores": {"A": 0.0}, "value": "{{topic}} come from the Moon"}
    judge = ScriptedJudge("Choice: A")
    assert (await grade(strict, judge)).value == 0.0
    assert "tides come from the Moon" in judge.prompts[0]
    with pytest.raises(ScorerConfigError, match="'choice_scores'"):
        build_scorer({"type": "factuality", "choice_scores": {"Z": 1}}, judge)


# -- pairwise -----------------------------------------------------------------------------------------

WITH_BASELINE = Sample(
    "q3",
    messages=[{"role": "user", "content": "Name a prime."}],
    output="7 is prime.",
    metadata={"baseline_output": "Nine."},
)


def prefers(text: str) -> Callable[[str], str]:
    """A judge that prefers the response containing ``text``, wherever it is placed."""

    def answer(prompt: str) -> str:
        a_block = prompt.split("[Response A]")[1].split("[/Response A]")[0]
        return "Verdict: A" if text in a_block else "Verdict: B"

    return answer


async def test_pairwise_judges_both_orders() -> None:
    judge = ScriptedJudge(prefers("7 is prime"), prefers("7 is prime"))
    result = await grade({"type": "pairwise"}, judge, WITH_BASELINE)
    assert (result.value, result.passed) == (1.0, True)
    assert result.details == {"verdicts": ["A", "B"], "consistent": True}
    first, second = judge.prompts
    assert first.index("7 is prime.") < first.index("Nine.")
    assert second.index("Nine.") < second.index("7 is prime.")
    assert result.judge_input_tokens == 200 and result.judge_cost_usd == Money.from_usd("0.002")

    loses = await grade({"type": "pairwise"}, ScriptedJudge(prefers("Nine"), prefers("Nine")), WITH_BASELINE)
    assert (loses.value, loses.passed) == (0.0, False)


async def test_pairwise_position_bias_counts_as_a_tie() -> None:
    result = await grade({"type": "pairwise"}, ScriptedJudge("Verdict: A", "Verdict: A"), WITH_BASELINE)
    assert (result.value, result.details["consistent"]) == (0.5, False)
    assert "inconsistent" in (result.reason or "")
    tie_and_win = await grade(
        {"type": "pairwise"}, ScriptedJudge("Verdict: tie", "Verdict: B"), WITH_BASELINE
    )
    assert tie_and_win.value == 0.5


async def test_pairwise_failures() -> None:
    no_baseline = await grade({"type": "pairwise"}, ScriptedJudge(), QUESTION)
    assert no_baseline.value is None and "needs a baseline output" in (no_baseline.error or "")
    half_broken = await grade({"type": "pairwise"}, ScriptedJudge("Verdict: A", "Hmm."), WITH_BASELINE)
    assert half_broken.value is None and "could not find a verdict" in (half_broken.error or "")
    assert half_broken.judge_input_tokens == 200  # both calls were paid for
    from_expected = Sample("q4", output="x", expected="y")
    judge = ScriptedJudge("Verdict: B", "Verdict: A")
    result = await grade({"type": "pairwise", "baseline": "{{expected}}"}, judge, from_expected)
    assert result.value == 0.0 and "[Response B]\ny\n" in judge.prompts[0]


# -- faithfulness -------------------------------------------------------------------------------------

RAG = Sample(
    "q5",
    messages=[{"role": "user", "content": "When was the Eiffel Tower built?"}],
    output="The Eiffel Tower was completed in 1889. It is 330 m tall. It is painted blue.",
    context="The Eiffel Tower, completed in 1889 for the World's Fair, is 330 metres tall.",
)


async def test_faithfulness_counts_supported_claims() -> None:
    judge = ScriptedJudge(
        '{"claims": ["The Eiffel Tower was completed in 1889.", "The Eiffel Tower is 330 m tall.", '
        '"The Eiffel Tower is painted blue."]}',
        '```json\n{"verdicts": [{"claim": 1, "supported": true, "reason": "stated"}, '
        '{"claim": 2, "supported": "yes", "reason": "stated"}, '
        '{"claim": 3, "supported": false, "reason": "not in context"}]}\n```',
    )
    result = await grade({"type": "faithfulness"}, judge, RAG)
    assert result.value == pytest.approx(2 / 3) and result.passed is False
    assert "painted blue" in (result.reason or "")
    assert result.details["supported"] == [True, True, False]
    assert "1. The Eiffel Tower was completed in 1889." in judge.prompts[1]
    assert "330 metres tall" in judge.prompts[1]
    assert (result.judge_input_tokens, result.judge_output_tokens) == (200, 20)


async def test_faithfulness_unmeasured_cases() -> None:
    no_claims = await grade({"type": "faithfulness"}, ScriptedJudge('{"claims": []}'), RAG)
    assert (no_claims.value, no_claims.error) == (None, None)
    assert no_claims.reason == "the output makes no factual claim" and no_claims.judge_input_tokens == 100

    no_context = await grade({"type": "faithfulness"}, ScriptedJudge(), QUESTION)
    assert no_context.value is None and "needs a context" in (no_context.error or "")

    miscounted = await grade(
        {"type": "faithfulness"},
        ScriptedJudge('{"claims": ["a", "b"]}', '{"verdicts": [{"claim": 1, "supported": true}]}'),
        RAG,
    )
    assert miscounted.value is None and "1 usable verdicts for 2 claims" in (miscounted.error or "")

    malformed = await grade({"type": "faithfulness"}, ScriptedJudge('{"claims": "a, b"}'), RAG)
    assert malformed.value is None and "a JSON list of claims" in (malformed.error or "")

    templated = Sample(
        "q6", input={"docs": "Water boils at 100 C at sea level."}, output="Water boils at 100 C."
    )
    judge = ScriptedJudge('{"claims": ["Water boils at 100 C."]}', '{"verdicts": [{"supported": true}]}')
    result = await grade({"type": "faithfulness", "context": "{{docs}}"}, judge, templated)
    assert (result.value, result.passed) == (1.0, True)


# -- the judge over a chat model ----------------------------------------------------------------------


async def test_judge_over_http_against_the_simulated_upstream() -> None:
    from pilothouse.gateway import HttpModel

    with SimulatedUpstream() as upstream:
        model = HttpModel(upstream.base_url + "/v1", "sim-judge", api_key="test-key")
        judge = Judge(model, structured=True)
        try:
            result = await grade({"type": "rubric", "criteria": "Is it accurate?"}, judge)
        finally:
            await model.close()
    # The simulated model answers the structured format with an instance of its schema:
    # {"score": 1, "reason": "<12 hash-chosen words>"}, the bottom of the 1-5 scale.
    assert (result.value, result.passed, result.error) == (0.0, False, None)
    assert result.details["score"] == 1.0 and len((result.reason or "").split()) == 12
    request = upstream.requests[0]
    assert request["model"] == "sim-judge" and request["max_tokens"] == 400 and request["temperature"] == 0
    assert request["logprobs"] is True and request["top_logprobs"] == 5
    assert request["response_format"]["type"] == "json_schema"
    prompt_words = len(request["messages"][0]["content"].split())
    # output: the 12 words and 3 JSON pieces ('{"score":', '1,', '"reason":')
    assert (result.judge_input_tokens, result.judge_output_tokens) == (prompt_words, 15)
    assert result.judge_cost_usd is None  # "sim-judge" has no price and no gateway said one: unknown, not 0


class ScriptedModel:
    """A chat model that answers every request with the same completion and keeps the requests."""

    model = "judge"

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload
        self.requests: list[dict[str, Any]] = []

    def describe(self) -> str:
        return "scripted"

    def endpoint(self) -> str:
        return "scripted"

    async def start(self, spans: Any = None) -> None:
        return None

    async def chat(self, request: dict[str, Any], context: CallContext) -> ChatReply:
        self.requests.append(request)
        usage = self.payload["usage"]
        return ChatReply(
            self.payload,
            Usage(usage["prompt_tokens"], usage["completion_tokens"]),
            None,
            1.0,
            context.trace_id,
        )

    async def stream(self, request: dict[str, Any], context: CallContext) -> ChatStream:
        raise NotImplementedError

    async def close(self) -> None:
        return None


async def test_judge_maps_logprobs_and_leaves_out_what_the_model_cannot_do() -> None:
    def position(token: str, alternatives: dict[str, float]) -> dict[str, Any]:
        return {
            "token": token,
            "logprob": math.log(alternatives[token]),
            "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in alternatives.items()],
        }

    payload = {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "judge",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Score: 5"},
                "logprobs": {
                    "content": [
                        position("Score", {"Score": 1.0}),
                        position(":", {":": 1.0}),
                        position(" 5", {" 5": 0.5, " 4": 0.5}),
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 3, "total_tokens": 53},
    }
    model = ScriptedModel(payload)
    judge = Judge(model, structured=False)  # plain model: no response_format sent
    reply = await judge.complete([{"role": "user", "content": "grade"}], max_tokens=5, logprobs=True)
    assert reply.text == "Score: 5" and (reply.input_tokens, reply.output_tokens, reply.cost_usd) == (
        50,
        3,
        None,
    )
    assert reply.top_logprobs is not None
    assert [token for token, _ in reply.top_logprobs[2]] == [" 5", " 4"]
    assert [logprob for _, logprob in reply.top_logprobs[2]] == pytest.approx([math.log(0.5)] * 2)
    assert "response_format" not in model.requests[0]
    result = await grade({"type": "rubric", "criteria": "c"}, judge)
    assert result.value == pytest.approx((4.5 - 1) / 4)

    no_logprobs = Judge(model, logprobs=False)
    await no_logprobs.complete([{"role": "user", "content": "x"}], max_tokens=5, logprobs=True)
    assert "logprobs" not in model.requests[-1]

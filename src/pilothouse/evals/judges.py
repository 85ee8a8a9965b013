"""Model-graded scorers over a narrow :class:`JudgeModel` interface, and :class:`Judge`, its one
implementation: any chat model (:class:`pilothouse.domain.chat.ChatModel`) asked the scorers' way.

A judge that fails (an error, a timeout, a refusal, a reply that cannot be parsed or a score out of
range) gives an UNMEASURED result (value None, ``error`` set), never a silent 0. Judge token usage and
cost are recorded on every result, failed or not.

====================  ===========================================================================  =====
type                  options (all take timeout_s (120), max_tokens)                               thr.
====================  ===========================================================================  =====
rubric                criteria (required), scale [1, 5], logprobs (true); G-Eval-style 0..1         0.5
answer-relevance      question (default: the last user message), logprobs (true); 1-5 -> 0..1       0.5
factuality            value (reference, default expected), choice_scores {A: .4, B: .6, C: 1, ...}  0.4
pairwise              baseline (default metadata["baseline_output"]), criteria; win 1, tie .5       0.5
faithfulness          context (default sample.context); supported claims / claims                   0.8
====================  ===========================================================================  =====

Position bias: :meth:`JudgeScorer.swap_check` says whether a verdict changes when the answers the judge
sees trade places (``pairwise`` asks both orders anyway; ``factuality`` swaps the output and the
reference); the others judge one answer, so there is nothing to swap (``position_swap`` is None).
Judge calibration (:mod:`pilothouse.evals.calibration`) reports the flip rate.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Protocol

from pilothouse.domain.chat import CallContext, ChatModel, ModelCallError
from pilothouse.domain.ids import new_trace_id
from pilothouse.domain.money import Money
from pilothouse.evals.calls import current_call, with_role
from pilothouse.evals.deterministic_scorers import strip_code_fence
from pilothouse.evals.scoring import (
    BaseScorer,
    Sample,
    ScoreResult,
    ScorerSpec,
    ScoringError,
    register_scorer,
)
from pilothouse.evals.templating import render, to_text

__all__ = [
    "ANSWER_RELEVANCE_PROMPT",
    "CLAIMS_PROMPT",
    "FACTUALITY_PROMPT",
    "PAIRWISE_PROMPT",
    "RUBRIC_PROMPT",
    "VERIFY_CLAIMS_PROMPT",
    "Judge",
    "JudgeModel",
    "JudgeReply",
    "extract_json_object",
    "parse_score",
    "weighted_score",
]

RUBRIC_PROMPT = """You are grading a response against a criterion.

Criterion: {{criteria}}

[Input]
{{input}}
[/Input]
{{reference}}
[Response]
{{output}}
[/Response]

Rate how well the response meets the criterion, from {{low}} (not at all) to {{high}} (fully).
Reply with the score first, exactly in this form:
Score: <integer from {{low}} to {{high}}>
Reason: <one sentence>"""

ANSWER_RELEVANCE_PROMPT = """Rate how relevant a response is to a question: does it address what was \
asked, without drifting off topic? Judge relevance only, not correctness.

[Question]
{{question}}
[/Question]

[Response]
{{output}}
[/Response]

Reply with the score first, exactly in this form:
Score: <integer from 1 (irrelevant) to 5 (fully relevant, nothing off topic)>
Reason: <one sentence>"""

FACTUALITY_PROMPT = """Compare the facts in a submitted answer with an expert answer to the same \
question. Ignore differences of style, grammar and punctuation.

[Question]
{{input}}
[/Question]

[Expert answer]
{{reference}}
[/Expert answer]

[Submitted answer]
{{output}}
[/Submitted answer]

Choose one:
(A) The submitted answer is a subset of the expert answer and fully consistent with it.
(B) The submitted answer is a superset of the expert answer and fully consistent with it.
(C) The submitted answer contains all the same details as the expert answer.
(D) The submitted answer and the expert answer disagree.
(E) The answers differ, but the differences do not matter for factuality.
Reply exactly in this form:
Choice: <A, B, C, D or E>
Reason: <one sentence>"""

PAIRWISE_PROMPT = """Compare two responses to the same request.

Criterion: {{criteria}}

[Request]
{{input}}
[/Request]

[Response A]
{{response_a}}
[/Response A]

[Response B]
{{response_b}}
[/Response B]

Which response is better by the criterion? Do not let their order or length sway you.
Reply exactly in this form:
Verdict: <A, B or tie>
Reason: <one sentence>"""

CLAIMS_PROMPT = """Break the response below into short, self-contained factual claims (one fact each; \
replace pronouns with what they refer to). Skip opinions, greetings and questions.

[Response]
{{output}}
[/Response]

Reply with JSON only: {"claims": ["<claim>", ...]} (an empty list if it makes no factual claim)."""

VERIFY_CLAIMS_PROMPT = """For each numbered claim, decide whether the context supports it: supported \
only if the context states it or directly implies it.

[Context]
{{context}}
[/Context]

[Claims]
{{claims}}
[/Claims]

Reply with JSON only, one verdict per claim in order:
{"verdicts": [{"claim": 1, "supported": true, "reason": "<short>"}, ...]}"""

DEFAULT_PAIRWISE_CRITERIA = "Which response answers the request better: more helpful, correct and clear?"
FACTUALITY_SCORES = {"A": 0.4, "B": 0.6, "C": 1.0, "D": 0.0, "E": 1.0}
_REFUSAL = re.compile(
    r"\b(?:I(?:'m| am) (?:sorry|unable|not able)|I can(?:no|')t (?:help|assist|comply|evaluate|do)"
    r"|as an AI)\b",
    re.IGNORECASE,
)
_SCORE_LINE = re.compile(
    r"^[\s*#>_-]*score[\s*_]*[:=][\s*]*([-+]?\d+(?:\.\d+)?)", re.IGNORECASE | re.MULTILINE
)
_BARE_NUMBER = re.compile(r"\s*([-+]?\d+(?:\.\d+)?)\s*(?:/\s*\d+)?\s*\.?\s*")
_REASON_LINE = re.compile(r"^[\s*#>_-]*reason(?:ing)?[\s*_]*:[\s*]*(.+)$", re.IGNORECASE | re.MULTILINE)
_FENCED = re.compile(r"```[\w-]*\s*\n?(.*?)```", re.DOTALL)


# -- the judge interface -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeReply:
    """What a judge model answered. ``top_logprobs``: for the first answer tokens, the candidate
    (token, logprob) pairs at each position, when the model gives them."""

    text: str
    top_logprobs: Sequence[Sequence[tuple[str, float]]] | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Money | None = None
    refusal: str | None = None  # an explicit refusal (OpenAI ``message.refusal``)


def judge_request(
    model: str,
    messages: list[dict[str, Any]],
    *,
    max_tokens: int,
    temperature: float,
    logprobs: bool,
    response_format: dict[str, Any] | None,
    top_logprobs: int = 5,
    max_tokens_field: str = "max_tokens",
) -> dict[str, Any]:
    """The chat request of one judge call: logprobs and response_format only when asked for (callers
    pass them only where the judge's endpoint supports them)."""
    request: dict[str, Any] = {
        "model": model,
        "messages": messages,
        max_tokens_field: max_tokens,
        "temperature": temperature,
    }
    if logprobs:
        request |= {"logprobs": True, "top_logprobs": top_logprobs}
    if response_format is not None:
        request["response_format"] = response_format
    return request


def judge_reply(
    response: Mapping[str, Any],
    *,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cost_usd: Money | None = None,
) -> JudgeReply:
    """The :class:`JudgeReply` of an OpenAI chat completion (text, refusal, the first positions' top
    log-probabilities); RuntimeError when it has no choice."""
    choices = response.get("choices") or []
    if not choices:
        raise RuntimeError("the judge answered without a choice")
    choice = choices[0]
    message = choice.get("message") or {}
    top: list[list[tuple[str, float]]] | None = None
    content = (choice.get("logprobs") or {}).get("content")
    if content:
        top = [
            [(c["token"], c["logprob"]) for c in position.get("top_logprobs") or []]
            or [(position["token"], position["logprob"])]
            for position in content[:20]
        ]
    return JudgeReply(
        text=message.get("content") or "",
        top_logprobs=top,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd,
        refusal=message.get("refusal"),
    )


class JudgeModel(Protocol):
    """The one call judge scorers make. ``response_format`` is an OpenAI JSON-schema response format; a
    judge that cannot honour it (or ``logprobs``) ignores it: the prompts ask for a parseable form anyway."""

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        logprobs: bool = False,
        response_format: dict[str, Any] | None = None,
    ) -> JudgeReply:
        """One chat completion."""
        ...


class Judge:
    """The judge scorers grade with: a chat model (:class:`pilothouse.domain.chat.ChatModel`, in-process
    or over HTTP) asked the scorers' way. Judge calls are made in the trace of the item being scored
    (role ``judge``), traced and priced like any call of that model.

    ``structured``: send the scorers' JSON-schema ``response_format`` (only for models that support
    structured outputs). ``logprobs``: whether the model may be asked for token logprobs.
    ``max_tokens_field``: ``max_completion_tokens`` for models that reject ``max_tokens``."""

    def __init__(
        self,
        model: ChatModel,
        *,
        structured: bool = False,
        logprobs: bool = True,
        top_logprobs: int = 5,
        max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
    ) -> None:
        self.model = model
        self.structured = structured
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.max_tokens_field = max_tokens_field

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        logprobs: bool = False,
        response_format: dict[str, Any] | None = None,
    ) -> JudgeReply:
        """One judge call, in the trace of the item being scored (a new trace outside a run)."""
        request = judge_request(
            self.model.model,
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            logprobs=logprobs and self.logprobs,
            response_format=response_format if self.structured else None,
            top_logprobs=self.top_logprobs,
            max_tokens_field=self.max_tokens_field,
        )
        outer = current_call.get()
        name = f"eval judge {self.model.model}"
        if outer is not None:
            context = with_role(outer, "judge", name)
        else:
            context = CallContext(new_trace_id(), name=name)
        try:
            reply = await self.model.chat(request, context)
        except ModelCallError as exc:
            raise RuntimeError(f"judge call failed: {exc.message}") from None
        usage = reply.usage
        return judge_reply(
            reply.response,
            input_tokens=usage.input_total if usage else None,
            output_tokens=usage.output if usage else None,
            cost_usd=reply.cost_usd,
        )


# -- parsing judge replies (pure) ---------------------------------------------------------------------


def extract_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a reply: the whole text, a fenced block, or embedded in prose."""
    candidates = [strip_code_fence(text).strip(), *(m.group(1).strip() for m in _FENCED.finditer(text))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def _json_field(document: Mapping[str, Any] | None, key: str) -> Any:
    if document is None:
        return None
    for name, value in document.items():
        if name.lower() == key:
            return value
    return None


def parse_score(text: str) -> float | None:
    """The score in a judge reply: JSON ``{"score": N}``, a ``Score: N`` line, or a bare number
    (``4`` or ``4/5``). None when there is none."""
    value = _json_field(extract_json_object(text), "score")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value
    match = _SCORE_LINE.search(text) or _BARE_NUMBER.fullmatch(text)
    return float(match.group(1)) if match else None


def parse_reason(text: str) -> str | None:
    """The judge's reason: JSON ``reason``/``reasoning``, or a ``Reason:`` line."""
    document = extract_json_object(text)
    for key in ("reason", "reasoning", "explanation"):
        value = _json_field(document, key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    match = _REASON_LINE.search(text)
    return match.group(1).strip() if match else None


def parse_label(text: str, key: str, labels: Sequence[str]) -> str | None:
    """A categorical answer (``Verdict: A``, ``{"choice": "C"}``, ``(C)``, a reply that starts with
    ``(C) ...``, or a bare label), upper-cased
    except ``tie``; None when it is not one of ``labels``."""
    wanted = {label.lower(): label for label in labels}
    value = _json_field(extract_json_object(text), key)
    if isinstance(value, str) and value.strip().strip("()[]").lower() in wanted:
        return wanted[value.strip().strip("()[]").lower()]
    line = re.search(rf"^[\s*#>_-]*{key}[\s*_]*[:=][\s*]*[(\[]?(\w+)", text, re.IGNORECASE | re.MULTILINE)
    bare = re.fullmatch(r"\s*[(\[]?(\w+)[)\]]?\.?\s*", text)
    lead = re.match(r"\s*[(\[](\w+)[)\]]", text)  # "(A) The submitted answer is ..."
    for match in (line, bare, lead):
        if match and match.group(1).lower() in wanted:
            return wanted[match.group(1).lower()]
    return None


def weighted_score(
    top_logprobs: Sequence[Sequence[tuple[str, float]]], low: int, high: int
) -> tuple[int, float] | None:
    """G-Eval's probability-weighted score: at the first position whose most likely token is a score
    (an integer in [low, high]), the mean of the score tokens weighted by their probabilities
    (renormalised over the score tokens). Returns (most likely score, weighted score), or None."""

    def as_score(token: str) -> int | None:
        stripped = token.strip()
        if stripped.isascii() and stripped.isdigit() and low <= int(stripped) <= high:
            return int(stripped)
        return None

    for position in top_logprobs:
        if not position:
            continue
        best_token, _ = max(position, key=lambda candidate: candidate[1])
        best = as_score(best_token)
        if best is None:
            continue
        probabilities: dict[int, float] = {}
        for token, logprob in position:
            score = as_score(token)
            if score is not None and math.isfinite(logprob):
                # Several tokens may spell one score (" 4" and "4"): their probabilities add up.
                probabilities[score] = probabilities.get(score, 0.0) + math.exp(logprob)
        total = sum(probabilities.values())
        if total <= 0:
            return None
        return best, sum(score * p for score, p in probabilities.items()) / total
    return None


def sample_prompt_text(sample: Sample) -> str:
    """The prompt the model under test saw, as plain text for a judge (the item's variables when the
    messages are not known)."""
    if sample.messages:
        lines = []
        for message in sample.messages:
            content = message.get("content")
            if isinstance(content, list):
                content = "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            lines.append(f"{message.get('role', 'user')}: {to_text(content)}")
        return "\n".join(lines)
    if sample.input:
        return "\n".join(f"{key}: {to_text(value)}" for key, value in sample.input.items())
    return "(no input)"


def _last_user_text(sample: Sample) -> str:
    for message in reversed(sample.messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            return to_text(content)
    return sample_prompt_text(sample)


def _json_format(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": schema}}


SCORE_FORMAT = _json_format("score", {"score": {"type": "integer"}, "reason": {"type": "string"}})


# -- judge scorers ------------------------------------------------------------------------------------


class JudgeFailure(Exception):
    """The judge could not give a verdict; the message becomes the unmeasured result's error.
    ``retryable`` False when asking again cannot help (a refusal or an unreadable answer at temperature
    0 comes back the same): the result's details say so, and the online worker does not pay again."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Usage:
    """Token and cost totals over a scorer's judge calls (cost None as soon as one call's is unknown)."""

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cost_usd: Money | None = Money.ZERO
        self.calls = 0

    def add(self, reply: JudgeReply) -> None:
        self.calls += 1
        if reply.input_tokens is not None:
            self.input_tokens = (self.input_tokens or 0) + reply.input_tokens
        if reply.output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + reply.output_tokens
        self.cost_usd = (
            None if self.cost_usd is None or reply.cost_usd is None else self.cost_usd + reply.cost_usd
        )

    def fields(self) -> dict[str, Any]:
        return {
            "judge_input_tokens": self.input_tokens,
            "judge_output_tokens": self.output_tokens,
            "judge_cost_usd": self.cost_usd if self.calls else None,
        }


def _unparseable(text: str, what: str) -> JudgeFailure:
    if _REFUSAL.search(text):
        return JudgeFailure(f"the judge refused: {text.strip()[:200]!r}", retryable=False)
    return JudgeFailure(
        f"could not find {what} in the judge's reply: {text.strip()[:200]!r}", retryable=False
    )


def _judge_failed(exc: JudgeFailure, usage: _Usage) -> ScoreResult:
    details = {} if exc.retryable else {"retryable": False}
    return ScoreResult.unmeasured(str(exc), details=details, **usage.fields())


class JudgeScorer(BaseScorer):
    """Base of the model-graded scorers: judge calls with a timeout, usage totals, failures as
    unmeasured results."""

    common_options: ClassVar[frozenset[str]] = frozenset({"timeout_s", "max_tokens"})
    default_max_tokens: ClassVar[int] = 400
    model_graded: ClassVar[bool] = True  # what pilothouse.evals.scoring.is_model_graded asks
    position_swap: ClassVar[str | None] = None  # how swap_check swaps, in words; None: nothing to swap

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        if spec.judge is None:
            raise spec.error("needs a judge model (build it with judge=...)")
        self.judge = spec.judge
        self.timeout_s = spec.number_option("timeout_s", 120.0, minimum=0.001)
        max_tokens = spec.number_option("max_tokens", self.default_max_tokens, minimum=1)
        self.max_tokens = int(max_tokens)

    async def ask(
        self,
        prompt: str,
        usage: _Usage,
        *,
        logprobs: bool = False,
        response_format: dict[str, Any] | None = None,
    ) -> JudgeReply:
        """One judge call; raises :class:`JudgeFailure` on an error, a timeout or a refusal."""
        try:
            reply = await asyncio.wait_for(
                self.judge.complete(
                    [{"role": "user", "content": prompt}],
                    max_tokens=self.max_tokens,
                    temperature=0.0,
                    logprobs=logprobs,
                    response_format=response_format,
                ),
                self.timeout_s,
            )
        except TimeoutError:
            raise JudgeFailure(f"the judge did not answer within {self.timeout_s:g} s") from None
        except Exception as exc:
            raise JudgeFailure(f"the judge call failed: {type(exc).__name__}: {exc}") from None
        usage.add(reply)
        if reply.refusal:
            raise JudgeFailure(f"the judge refused: {reply.refusal[:200]!r}", retryable=False)
        return reply

    @abstractmethod
    async def judge_sample(self, sample: Sample, usage: _Usage) -> ScoreResult:
        """The verdict from the judge (raise :class:`JudgeFailure` when there is none)."""

    async def measure(self, sample: Sample) -> ScoreResult:
        usage = _Usage()
        try:
            result = await self.judge_sample(sample, usage)
        except JudgeFailure as exc:
            return _judge_failed(exc, usage)
        return replace(result, **usage.fields())

    async def swap_check(self, sample: Sample, result: ScoreResult) -> ScoreResult:
        """Whether the verdict ``result`` on ``sample`` changes when the answers the judge sees trade
        places: value 1.0 when it flips, 0.0 when it holds; unmeasured when that cannot be told (the
        verdict or the swapped call failed, or the type has no ``position_swap``)."""
        return ScoreResult.unmeasured(reason=f"{self.spec.type} judges one answer: nothing to swap")

    async def grade_on_scale(
        self, prompt: str, usage: _Usage, low: int, high: int, *, logprobs: bool
    ) -> ScoreResult:
        """Ask for a ``Score: N`` on [low, high]; weight by logprobs when the judge gives them; 0..1."""
        reply = await self.ask(prompt, usage, logprobs=logprobs, response_format=SCORE_FORMAT)
        score = parse_score(reply.text)
        if score is None:
            raise _unparseable(reply.text, "a score")
        if not low <= score <= high:
            raise JudgeFailure(f"the judge's score {score:g} is outside {low}-{high}", retryable=False)
        weighted = weighted_score(reply.top_logprobs, low, high) if reply.top_logprobs else None
        if weighted is not None and weighted[0] != score:
            weighted = None  # the logprobs are about some other number than the score given
        final = score if weighted is None else weighted[1]
        details = {"score": score, "weighted_score": None if weighted is None else weighted[1]}
        return ScoreResult((final - low) / (high - low), reason=parse_reason(reply.text), details=details)


@register_scorer("rubric")
class RubricGrade(JudgeScorer):
    """G-Eval style: the judge rates the output against ``criteria`` on ``scale`` (default 1-5); with
    logprobs, the probability-weighted score. Value normalised to 0..1."""

    default_threshold = 0.5
    allowed_options = JudgeScorer.common_options | {"criteria", "scale", "logprobs"}

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        criteria = spec.text_option("criteria", required=True)
        if not criteria or not criteria.strip():
            raise spec.error("option 'criteria' must not be empty")
        self.criteria = criteria
        scale = spec.option("scale", [1, 5])
        if (
            not isinstance(scale, list | tuple)
            or len(scale) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in scale)
            or not 0 < scale[1] - scale[0] <= 100
        ):
            raise spec.error(f"option 'scale' must be [low, high] integers, low < high, not {scale!r}")
        self.low, self.high = int(scale[0]), int(scale[1])
        self.logprobs = spec.bool_option("logprobs", True)

    async def judge_sample(self, sample: Sample, usage: _Usage) -> ScoreResult:
        reference = ""
        if sample.expected is not None:
            reference = f"\n[Reference answer]\n{to_text(sample.expected)}\n[/Reference answer]\n"
        prompt = render(
            RUBRIC_PROMPT,
            {
                "criteria": to_text(self.render_option(self.criteria, sample)),
                "input": sample_prompt_text(sample),
                "reference": reference,
                "output": sample.output,
                "low": self.low,
                "high": self.high,
            },
        )
        return await self.grade_on_scale(prompt, usage, self.low, self.high, logprobs=self.logprobs)


@register_scorer("answer-relevance")
class AnswerRelevance(JudgeScorer):
    """How relevant the output is to the question (default: the last user message), 1-5 -> 0..1."""

    default_threshold = 0.5
    allowed_options = JudgeScorer.common_options | {"question", "logprobs"}

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.question = spec.text_option("question")
        self.logprobs = spec.bool_option("logprobs", True)

    async def judge_sample(self, sample: Sample, usage: _Usage) -> ScoreResult:
        if self.question is None:
            question = _last_user_text(sample)
        else:
            question = to_text(self.render_option(self.question, sample))
        prompt = render(ANSWER_RELEVANCE_PROMPT, {"question": question, "output": sample.output})
        return await self.grade_on_scale(prompt, usage, 1, 5, logprobs=self.logprobs)


@register_scorer("factuality")
class Factuality(JudgeScorer):
    """The output's facts against the reference answer (``value``, default ``expected``): subset 0.4,
    superset 0.6, same 1, disagreement 0, immaterial differences 1 (``choice_scores`` overrides)."""

    default_threshold = 0.4
    default_max_tokens = 300
    allowed_options = JudgeScorer.common_options | {"value", "choice_scores"}
    position_swap = "output and reference swapped, one more judge call; choices A and B trade places"

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        overrides = spec.option("choice_scores", {})
        if not isinstance(overrides, Mapping) or not all(
            key in FACTUALITY_SCORES
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and 0 <= v <= 1
            for key, v in overrides.items()
        ):
            raise spec.error("option 'choice_scores' maps A-E to numbers from 0 to 1")
        self.choice_scores = {**FACTUALITY_SCORES, **{k: float(v) for k, v in overrides.items()}}

    def _reference(self, sample: Sample) -> str:
        raw = self.render_option(self.spec.options["value"], sample) if "value" in self.spec.options else None
        reference = sample.expected if raw is None else raw
        if reference is None or not to_text(reference).strip():
            raise ScoringError(f"scorer '{self.name}' needs a reference answer (expected or 'value')")
        return to_text(reference)

    async def _choose(self, sample: Sample, reference: str, output: str, usage: _Usage) -> tuple[str, str]:
        prompt = render(
            FACTUALITY_PROMPT, {"input": sample_prompt_text(sample), "reference": reference, "output": output}
        )
        choice_format = _json_format(
            "factuality", {"choice": {"type": "string", "enum": list("ABCDE")}, "reason": {"type": "string"}}
        )
        reply = await self.ask(prompt, usage, response_format=choice_format)
        choice = parse_label(reply.text, "choice", list("ABCDE"))
        if choice is None:
            raise _unparseable(reply.text, "a choice A-E")
        return choice, reply.text

    async def judge_sample(self, sample: Sample, usage: _Usage) -> ScoreResult:
        choice, text = await self._choose(sample, self._reference(sample), sample.output, usage)
        return ScoreResult(self.choice_scores[choice], reason=parse_reason(text), details={"choice": choice})

    async def swap_check(self, sample: Sample, result: ScoreResult) -> ScoreResult:
        """Ask again with the output as the expert answer and the reference as the submission: a subset
        (A) should come back a superset (B) and vice versa, C, D and E unchanged."""
        choice = result.details.get("choice")
        if choice not in FACTUALITY_SCORES:
            return ScoreResult.unmeasured(reason="no choice to compare")
        usage = _Usage()
        try:
            swapped, _ = await self._choose(sample, sample.output, self._reference(sample), usage)
        except JudgeFailure as exc:
            return _judge_failed(exc, usage)
        except Exception as exc:  # a template or reference problem: unmeasured, like score()
            return ScoreResult.unmeasured(f"{type(exc).__name__}: {exc}", **usage.fields())
        back = {"A": "B", "B": "A"}.get(swapped, swapped)
        return ScoreResult(
            float(back != choice),
            reason=f"choice {choice}; swapped {swapped} (reads as {back})",
            details={"choices": [choice, swapped]},
            **usage.fields(),
        )


@register_scorer("pairwise")
class PairwiseComparison(JudgeScorer):
    """The output against a baseline output, judged in both orders: 1 when it wins both, 0 when it loses
    both, 0.5 otherwise (a tie, or an inconsistent pair that only followed position)."""

    default_threshold = 0.5
    default_max_tokens = 300
    allowed_options = JudgeScorer.common_options | {"baseline", "criteria"}
    position_swap = "both orders of every pair, which the scorer asks anyway"

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.baseline = spec.text_option("baseline")
        self.criteria = spec.text_option("criteria", DEFAULT_PAIRWISE_CRITERIA) or DEFAULT_PAIRWISE_CRITERIA

    async def _verdict(self, prompt: str, usage: _Usage) -> str:
        verdict_format = _json_format(
            "verdict",
            {"verdict": {"type": "string", "enum": ["A", "B", "tie"]}, "reason": {"type": "string"}},
        )
        reply = await self.ask(prompt, usage, response_format=verdict_format)
        verdict = parse_label(reply.text, "verdict", ["A", "B", "tie"])
        if verdict is None:
            raise _unparseable(reply.text, "a verdict A, B or tie")
        return verdict

    async def judge_sample(self, sample: Sample, usage: _Usage) -> ScoreResult:
        baseline: Any = sample.metadata.get("baseline_output")
        if self.baseline is not None:
            baseline = to_text(self.render_option(self.baseline, sample))
        if not isinstance(baseline, str):
            raise ScoringError(f"scorer '{self.name}' needs a baseline output (metadata.baseline_output)")
        shared = {
            "criteria": to_text(self.render_option(self.criteria, sample)),
            "input": sample_prompt_text(sample),
        }
        first, second = await asyncio.gather(
            self._verdict(
                render(PAIRWISE_PROMPT, {**shared, "response_a": sample.output, "response_b": baseline}),
                usage,
            ),
            self._verdict(
                render(PAIRWISE_PROMPT, {**shared, "response_a": baseline, "response_b": sample.output}),
                usage,
            ),
        )
        # As the output's result: first order it is A, second order it is B.
        outcomes = (
            {"A": "win", "B": "loss", "tie": "tie"}[first],
            {"A": "loss", "B": "win", "tie": "tie"}[second],
        )
        value = {("win", "win"): 1.0, ("loss", "loss"): 0.0}.get(outcomes, 0.5)
        consistent = outcomes[0] == outcomes[1]
        reason = f"output first: {outcomes[0]}; output second: {outcomes[1]}"
        if not consistent:
            reason += " (inconsistent across orders: counted as a tie)"
        return ScoreResult(
            value, reason=reason, details={"verdicts": [first, second], "consistent": consistent}
        )

    async def swap_check(self, sample: Sample, result: ScoreResult) -> ScoreResult:
        """A flip when the output's outcome (win, loss, tie) differs between the two orders."""
        consistent = result.details.get("consistent")
        if not isinstance(consistent, bool):
            return ScoreResult.unmeasured(reason="no verdict in both orders")
        return ScoreResult(float(not consistent), details={"verdicts": result.details.get("verdicts")})


CLAIMS_FORMAT = _json_format("claims", {"claims": {"type": "array", "items": {"type": "string"}}})
VERDICTS_FORMAT = _json_format(
    "verdicts",
    {
        "verdicts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "claim": {"type": "integer"},
                    "supported": {"type": "boolean"},
                    "reason": {"type": "string"},
                },
                "required": ["claim", "supported", "reason"],
                "additionalProperties": False,
            },
        }
    },
)


def _as_supported(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "supported"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("no", "false", "unsupported", "not supported"):
        return False
    return None


@register_scorer("faithfulness")
class Faithfulness(JudgeScorer):
    """The share of the output's factual claims that the context supports (claims extracted, then
    verified, by the judge). Unmeasured when there is no context or the output makes no claim."""

    default_threshold = 0.8
    default_max_tokens = 1500
    allowed_options = JudgeScorer.common_options | {"context"}

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.context = spec.text_option("context")

    async def judge_sample(self, sample: Sample, usage: _Usage) -> ScoreResult:
        context = (
            sample.context if self.context is None else to_text(self.render_option(self.context, sample))
        )
        if not context or not context.strip():
            raise ScoringError(f"scorer '{self.name}' needs a context (sample.context or 'context')")
        reply = await self.ask(
            render(CLAIMS_PROMPT, {"output": sample.output}), usage, response_format=CLAIMS_FORMAT
        )
        claims = _json_field(extract_json_object(reply.text), "claims")
        if not isinstance(claims, list) or not all(isinstance(c, str) for c in claims):
            raise _unparseable(reply.text, "a JSON list of claims")
        claims = [c.strip() for c in claims if c.strip()]
        if not claims:
            return ScoreResult.unmeasured(reason="the output makes no factual claim")
        numbered = "\n".join(f"{i}. {claim}" for i, claim in enumerate(claims, 1))
        prompt = render(VERIFY_CLAIMS_PROMPT, {"context": context, "claims": numbered})
        reply = await self.ask(prompt, usage, response_format=VERDICTS_FORMAT)
        verdicts = _json_field(extract_json_object(reply.text), "verdicts")
        if not isinstance(verdicts, list):
            raise _unparseable(reply.text, "a JSON list of verdicts")
        supported = [_as_supported(v.get("supported")) if isinstance(v, Mapping) else None for v in verdicts]
        if len(supported) != len(claims) or any(s is None for s in supported):
            raise JudgeFailure(
                f"the judge gave {len(verdicts)} usable verdicts for {len(claims)} claims", retryable=False
            )
        unsupported = [claim for claim, ok in zip(claims, supported, strict=True) if not ok]
        return ScoreResult(
            sum(1 for ok in supported if ok) / len(claims),
            reason=f"unsupported: {unsupported!r}" if unsupported else "every claim is supported",
            details={"claims": claims, "supported": supported},
        )

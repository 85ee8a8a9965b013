"""The gateway as a service: a model call goes admission -> input guards -> cache -> budget hold ->
route or cascade -> output guards -> settle -> record, and comes back as a :class:`GatewayReply` (or a
:class:`GatewayError`). The guards are the route's (``guardrails``; :mod:`pilothouse.gateway.guarding`).

The HTTP surfaces (``pilothouse.server``) only translate wire formats (OpenAI, Anthropic) to and from
these objects; in-process callers (eval targets, judges, cascade verifiers) use the same pipeline
through :class:`pilothouse.gateway.InProcessModel`. Every call that reaches a project becomes a span
handed to ``record`` (the server's ingest queue; never waiting for the database).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pilothouse.config import CascadeSettings
from pilothouse.costs.pricing import (
    GATEWAY_CACHE,
    Pricer,
    estimate_prompt_tokens,
    max_output_tokens,
    worst_case_cost,
)
from pilothouse.domain.chat import CallContext, SpanSink, current_call
from pilothouse.domain.guards import Guardrails, RouteGuards
from pilothouse.domain.keys import ApiKey
from pilothouse.domain.money import Money
from pilothouse.domain.traces import (
    MAX_CALL_TOKENS,
    MAX_MODEL_NAME_CHARS,
    USAGE_CLAMPED,
    Cost,
    SpanRecord,
    Status,
    Usage,
)
from pilothouse.gateway._answers import check_chat_answer, check_chunk, check_embeddings_answer
from pilothouse.gateway._caching import CacheOutcome, Caches, replay
from pilothouse.gateway.budgets import BudgetExceeded, BudgetGuard
from pilothouse.gateway.cache import CachePolicy
from pilothouse.gateway.cascade import Verifier, run_cascade
from pilothouse.gateway.guarding import (
    BLOCKED_CODE,
    GUARDRAILS_ATTRIBUTE,
    GuardBlocked,
    StreamRedactor,
    check_answer,
    check_input,
    check_output,
)
from pilothouse.gateway.limits import RateLimiter
from pilothouse.gateway.prompt_refs import PromptReferenceError, apply_prompt_reference
from pilothouse.gateway.recording import (
    CallSpan,
    StreamAssembler,
    checked_usage_from_openai,
    output_text,
    parse_traceparent,
)
from pilothouse.gateway.redis_client import RedisUnavailable
from pilothouse.gateway.router import Router, UnknownModel
from pilothouse.gateway.upstream_errors import SHOULD_RETRY, retry_cannot_help, upstream_status
from pilothouse.gateway.validation import InvalidRequest
from pilothouse.prompts import PromptRegistry
from pilothouse.providers.anthropic_native import NATIVE, without_native
from pilothouse.providers.base import Deployment, ProviderError, outgoing_traceparent

log = logging.getLogger("pilothouse.gateway")

Cascade = tuple[CascadeSettings, Verifier]


_ALLOW_CACHES = CachePolicy()
UPSTREAM_REQUEST_ID = "x-pilothouse-upstream-request-id"  # the upstream's own request id, passed on


@dataclass(slots=True)  # not frozen: one per request, and frozen ones are slower to make (never changed)
class Caller:
    """Who a call is for: the project it is recorded and billed in, the key it came with (None: the
    admin secret or an in-process caller, which have no limits), the end user and tags (budgets and
    reports by user and tag use them), and what the caller allows the caches to do."""

    project_id: str
    key: ApiKey | None = None
    user_id: str | None = None
    tags: tuple[str, ...] = ()
    cache_policy: CachePolicy = _ALLOW_CACHES


class GatewayError(Exception):
    """What the client is told when a call fails: an HTTP status, a message, OpenAI's error ``kind``
    (``type``) and ``code``, the parameter at fault and the headers to send (the trace id and cost,
    ``Retry-After``, rate-limit counters). Each surface renders it in its own JSON shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.kind = kind or error_kind(status)
        self.headers = headers or {}


class AnswerRefused(GatewayError):
    """A refusal of an answer an upstream gave (an output guard blocked it): the call is already
    recorded and settled, at the answer's cost."""


_KINDS = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def error_kind(status: int) -> str:
    """OpenAI's error ``type`` for an HTTP status (every surface of ours uses it)."""
    return _KINDS.get(status, "server_error" if status >= 500 else "invalid_request_error")


@dataclass(slots=True)
class GatewayReply:
    """A call's answer: ``response`` (an OpenAI chat completion or embeddings response) or, for a
    stream, ``chunks`` (OpenAI ``chat.completion.chunk`` dicts; iterating may raise
    :class:`GatewayError` when the upstream fails after the first chunk). ``headers``: the trace id,
    the cost (``pending`` for a stream), the cache outcome and the rate-limit counters. ``after``:
    work to run once the answer is on its way (recording the span, off the caller's latency)."""

    call: CallSpan
    headers: dict[str, str]
    response: dict[str, Any] | None = None
    chunks: AsyncIterator[dict[str, Any]] | None = None
    cost: Cost | None = None
    after: Callable[[], Awaitable[None]] | None = None


def _drop(_record: SpanRecord) -> None:
    return None


@dataclass(frozen=True, slots=True)
class RedisFaults:
    """What a call does while the Redis holding a feature's shared state is unavailable: fail closed
    (503 ``redis_unavailable``: rate limits and budgets by default, which cannot be enforced without
    it) or open (go on without the feature: the response cache by default, a miss). Counting a
    finished call's tokens or caching its answer never fails a call that was answered."""

    limits_fail_open: bool = False
    budgets_fail_open: bool = False
    cache_fail_open: bool = True


def redis_unavailable(exc: RedisUnavailable) -> GatewayError:
    """The 503 of a call that needs Redis while it is unavailable."""
    return GatewayError(
        503,
        f"The {exc.feature} of this gateway are unavailable (Redis cannot be reached); retry shortly.",
        code="redis_unavailable",
        kind="service_unavailable",
        headers={"Retry-After": "1"},
    )


@dataclass(slots=True)
class Gateway:
    """The model-call pipeline over a router and a price catalogue. Rate limits, budgets, caches and
    cascades are optional: an in-process gateway for evals has none of them."""

    router: Router
    pricer: Pricer
    record: SpanSink = _drop
    # where a stream's interrupted record goes before its first chunk (the durable mode's spool), so
    # that a server killed mid-stream still records the call at its worst-case cost
    interim: SpanSink | None = None
    limiter: RateLimiter | None = None
    budgets: BudgetGuard | None = None
    caches: Caches = field(default_factory=Caches)
    cascades: dict[str, Cascade] = field(default_factory=dict)
    redis_faults: RedisFaults = field(default_factory=RedisFaults)
    prompts: PromptRegistry | None = None  # resolves a request's ``prompt`` reference
    guardrails: Guardrails | None = None  # input and output guards per route (pilothouse.quality)
    _warned_at: dict[str, float] = field(default_factory=dict, repr=False)

    def model_names(self) -> list[str]:
        """The names clients can ask for: served models and cascade routes."""
        return [*self.router.model_names(), *self.cascades]

    # -- a call's life ----------------------------------------------------------------------------------

    def start(
        self,
        operation: str,
        caller: Caller,
        *,
        traceparent: str | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
    ) -> CallSpan:
        """Begin a call (its latency counts from now): in the trace of ``traceparent`` (a W3C
        header) or of ``trace_id``/``parent_id``, else in a new trace."""
        if trace_id is None:
            trace_id, parent_id = parse_traceparent(traceparent)
        return CallSpan(
            project_id=caller.project_id,
            operation=operation,
            request={},
            key_id=caller.key.id if caller.key else None,
            user_id=caller.user_id,
            trace_id=trace_id,
            parent_id=parent_id,
            tags=caller.tags,
        )

    async def fail(self, call: CallSpan, exc: Exception) -> GatewayError:
        """The client-facing error for ``exc`` (a refusal, an invalid request, an unknown model, an
        upstream failure), recorded on the call's span, its budget hold released."""
        await self._settle(call, None)
        if isinstance(exc, GatewayError):
            error = exc
        elif isinstance(exc, InvalidRequest):
            error = GatewayError(exc.status, exc.message, code="invalid_request", param=exc.param)
        elif isinstance(exc, UnknownModel):
            error = GatewayError(
                404,
                f"The model '{_shown(str(exc.args[0]))}' does not exist or is not served here "
                "(GET /v1/models lists them).",
                code="model_not_found",
                param="model",
            )
        elif isinstance(exc, ProviderError):
            headers = {"Retry-After": f"{exc.retry_after_s:g}"} if exc.retry_after_s is not None else None
            status, message, code, kind = upstream_status(
                exc, str(call.request.get("model", "")), call.attempts
            )
            error = GatewayError(status, message, code=code, kind=kind, headers=headers)
        else:
            log.error("gateway call %s failed unexpectedly", call.trace_id, exc_info=exc)
            error = GatewayError(
                500,
                "The gateway failed to handle this call; the server log has the details "
                f"(trace {call.trace_id}).",
                code="internal_error",
            )
        cost = call.refused_cost()
        error.headers.update(self._headers(call, cost))
        if retry_cannot_help(error.status, error.code, len(call.attempts)):
            error.headers[SHOULD_RETRY] = "false"
        self._save(call.record(status=Status.ERROR, error=error.message, http_status=error.status, cost=cost))
        return error

    async def _cancelled(self, call: CallSpan) -> None:
        """A call cancelled midway (its client left): the hold settled at its worst case once an
        upstream was asked (it may have spent), and the call traced."""
        await self._settle(call, None, unknown_is_worst_case=bool(call.attempts))
        self._save(
            call.record(
                status=Status.ERROR,
                error="cancelled: the client disconnected before the answer",
                http_status=499,
                cost=call.refused_cost(),
            )
        )

    async def apply_prompt(self, call: CallSpan, request: dict[str, Any]) -> dict[str, Any]:
        """``request`` with its ``prompt`` reference rendered from the registry (see
        :mod:`pilothouse.gateway.prompt_refs`); the call's span records the prompt's name and version.
        Raises :class:`GatewayError` (recorded) for a reference that cannot be used."""
        try:
            sticky = call.user_id if call.user_id is not None else request.get("user")
            rendered, version = await apply_prompt_reference(
                self.prompts, call.project_id, request, sticky if isinstance(sticky, str) else None
            )
        except PromptReferenceError as exc:
            raise await self.fail(call, exc) from None
        call.prompt = (version.name, version.version)
        variables = request["prompt"].get("variables") if isinstance(request.get("prompt"), dict) else None
        call.prompt_variables = dict(variables) if isinstance(variables, dict) and variables else None
        call.request = rendered
        return rendered

    async def chat(self, call: CallSpan, request: dict[str, Any], caller: Caller) -> GatewayReply:
        """A chat completion, streamed when ``request["stream"]``; ``request`` is a checked OpenAI
        chat request. Raises :class:`GatewayError` (recorded)."""
        call.request = request
        outgoing_traceparent.set(f"00-{call.trace_id}-{call.span_id}-01")  # the upstream joins the trace
        try:
            limit_headers = await self._admit(caller, request["model"])
            route = self.guardrails.for_model(request["model"]) if self.guardrails is not None else None
            if route is not None:  # guards check and redact the translated request and answer only
                request = without_native(request)
            if route is not None and route.input:
                request = await self._guard_input(call, route, request)
            cached = await self._lookup(caller, call, request)
            if (answer := cached.answer) is not None:
                # the check's own call is not billed to a budget: recorded, not metered
                self.caches.maybe_verify(self.router, self.pricer, cached, call, request, self.record)
                free = {"input": Money.ZERO, "output": Money.ZERO}
                hit_cost = Cost(free, GATEWAY_CACHE, answer.cost or Money.ZERO)
                if request.get("stream"):  # a streamed answer: its first chunk goes out now
                    call.first_token()
                self._save(
                    call.record_answer(answer.response, answer.provider, answer.deployment, cost=hit_cost)
                )
                return self._reply(call, answer.response, hit_cost, limit_headers, request)
            await self._reserve(caller, call, request)
            if (cascade := self.cascades.get(request["model"])) is not None:
                response, total = await self._cascade(caller, call, cascade, request)
                return self._reply(call, response, total, limit_headers, request)
            if not request.get("stream") or (route is not None and route.holds_stream):
                whole = (
                    {k: v for k, v in request.items() if k not in ("stream", "stream_options")}
                    if request.get("stream")
                    else request
                )
                response, deployment, cost, total, after = await self._answer(caller, call, whole, route)
                await self._store(cached, deployment, response, cost)
                headers = {**self._headers(call, total), **limit_headers}
                if request.get("stream"):  # held for its output guards: now replayed as a stream
                    await after()
                    return GatewayReply(call, headers, chunks=replay(response), cost=total)
                return GatewayReply(call, headers, response=response, cost=total, after=after)
            # Always ask the upstream for usage; the surface passes the usage chunk on only if asked.
            upstream_request = {
                **request,
                "stream_options": {**(request.get("stream_options") or {}), "include_usage": True},
            }
            stream, deployment = await self.router.chat_stream(upstream_request, call.attempts)
        except AnswerRefused:  # recorded and settled already
            raise
        except Exception as exc:  # an unexpected one too: traced as a 500, its budget hold released
            raise await self.fail(call, exc) from None
        except BaseException:  # cancelled (the client left): release the hold, whatever happened
            await self._cancelled(call)
            raise
        reply = GatewayReply(call, {**self._headers(call, "pending"), **limit_headers})
        reply.chunks = self._relay(caller, call, stream, deployment, cached, reply, route)
        self._record_interim(call, deployment)
        return reply

    def _record_interim(self, call: CallSpan, deployment: Deployment) -> None:
        """Hand a starting stream's interrupted record (worst-case cost) to ``interim``, if set."""
        if self.interim is None:
            return
        try:
            held = call.reservation
            worst = held.amount if held is not None else self.worst_case_cost(call.request)
            record = call.interrupted_record(deployment.provider, deployment.id, worst)
            record.metered = self.budgets is not None
            self.interim(record)
        except Exception:  # the stream goes on; only a crash during it would go unrecorded
            log.exception("gateway stream %s: its interrupted record could not be written", call.trace_id)

    # -- guardrails (gateway/guarding.py runs the guards; here their actions meet the call) ---------------

    async def _guard_input(
        self, call: CallSpan, route: RouteGuards, request: dict[str, Any]
    ) -> dict[str, Any]:
        """The request after the route's input guards (redacted, or for a fallback model); the trace
        keeps the request with what they found redacted. Raises a 400 when one blocks it."""
        outcome = await check_input(route, request)
        call.request = outcome.traced
        _note(call, outcome.outcomes)
        if outcome.blocked is not None:
            blocked = outcome.blocked
            raise GatewayError(blocked.status, blocked.message, code=blocked.code, param=blocked.param)
        return outcome.request

    async def _answer(
        self, caller: Caller, call: CallSpan, request: dict[str, Any], route: RouteGuards | None
    ) -> tuple[dict[str, Any], Deployment, Cost | None, Cost | None, Callable[[], Awaitable[None]]]:
        """A whole answer that passed the route's output guards: (response, deployment, its cost,
        the call's total cost with answers the guards turned down, the recording to run). An answer
        an output guard falls back from is recorded as a child span, and the fallback model asked;
        one it blocks is recorded and paid, and refused (:class:`AnswerRefused`, a 400)."""
        response, deployment = await self.router.chat(request, call.attempts)
        check_chat_answer(response)
        if route is None or not route.output:
            cost, after = await self._succeeded(caller, call, deployment, response)
            return response, deployment, cost, cost, after
        response, outcome = await check_answer(route.output, request, response)
        spent: Cost | None = Cost({})  # the answers turned down (None: of unknown cost)
        if outcome is not None and outcome.fallback is not None:
            spent = await self._turned_down(caller, call, request, response, deployment, outcome.traced)
            request = {**request, "model": outcome.fallback}
            response, deployment = await self.router.chat(request, call.attempts)
            check_chat_answer(response)
            earlier = outcome.outcomes
            response, outcome = await check_answer(route.output, request, response)
            if outcome is None:  # the fallback answered without text: nothing more to check
                _note(call, earlier)
            else:
                outcome.outcomes = earlier + outcome.outcomes
                if outcome.fallback is not None:  # the fallback's answer fails too: refused
                    outcome.blocked = GuardBlocked(
                        f"The answer was blocked: the fallback model '{request['model']}' failed the "
                        "guardrails too."
                    )
        traced = outcome.traced if outcome is not None and len(response.get("choices") or ()) == 1 else None
        if outcome is not None:
            _note(call, outcome.outcomes)
        if outcome is not None and outcome.blocked is not None:
            call.finish()
            usage = self._usage(call, response.get("usage"))
            cost = self._cost(deployment, response.get("model"), usage)
            total = _plus(cost, spent)
            await self._count_tokens(caller, usage)
            await self._settle(call, total)
            error = AnswerRefused(400, outcome.blocked.message, code=BLOCKED_CODE)
            error.headers.update(self._headers(call, total))
            self._save(
                call.record(
                    status=Status.ERROR,
                    served_model=response.get("model"),
                    provider=deployment.provider,
                    deployment=deployment.id,
                    output=traced,
                    usage=usage,
                    cost=cost,
                    error=outcome.blocked.message,
                    http_status=400,
                )
            )
            raise error
        cost, after = await self._succeeded(caller, call, deployment, response, traced, also_spent=spent)
        return response, deployment, cost, _plus(cost, spent), after

    async def _turned_down(
        self,
        caller: Caller,
        call: CallSpan,
        request: dict[str, Any],
        response: dict[str, Any],
        deployment: Deployment,
        traced: str,
    ) -> Cost | None:
        """Record an answer an output guard fell back from: a child span of the call, priced, its
        tokens counted; its cost (settled with the call's)."""
        usage = self._usage(call, response.get("usage"))
        cost = self._cost(deployment, response.get("model"), usage)
        await self._count_tokens(caller, usage)
        step = CallSpan(
            project_id=call.project_id,
            operation="chat",
            request=call.request,
            key_id=call.key_id,
            user_id=call.user_id,
            trace_id=call.trace_id,
            parent_id=call.span_id,
            tags=call.tags,
            started=call.started,
            start_ns=call.start_ns,
            extra={"gateway.guardrail_refused": True},
        )
        self._save(
            step.record_answer(
                response, deployment.provider, deployment.id, usage=usage, cost=cost, output=traced
            )
        )
        return cost

    async def embed(self, call: CallSpan, request: dict[str, Any], caller: Caller) -> GatewayReply:
        """Embeddings for a checked OpenAI embeddings request. Raises :class:`GatewayError`."""
        call.request = request
        outgoing_traceparent.set(f"00-{call.trace_id}-{call.span_id}-01")
        try:
            limit_headers = await self._admit(caller, request["model"])
            await self._reserve(caller, call, request)
            response, deployment = await self.router.embed(request, call.attempts)
            count = len(check_embeddings_answer(response)["data"])
            cost, after = await self._succeeded(caller, call, deployment, response, f"{count} embeddings")
        except Exception as exc:  # an unexpected one too: traced as a 500, its budget hold released
            raise await self.fail(call, exc) from None
        except BaseException:  # cancelled (the client left): release the hold, whatever happened
            await self._cancelled(call)
            raise
        return GatewayReply(
            call, {**self._headers(call, cost), **limit_headers}, response=response, cost=cost, after=after
        )

    async def count_tokens(self, caller: Caller, request: dict[str, Any]) -> dict[str, Any]:
        """``{"input_tokens": n}`` for a chat request: an Anthropic deployment's own count of the
        native Messages body riding along (:mod:`pilothouse.providers.anthropic_native`), else the
        gateway's estimate. Not a model call: neither recorded nor billed. Raises :class:`GatewayError`."""
        model = str(request["model"])
        if caller.key is not None and not caller.key.may_use(model):
            raise GatewayError(
                403,
                f"This key may not call the model '{_shown(model)}'.",
                code="model_not_allowed",
                param="model",
            )
        native = request.get(NATIVE)

        async def count(_d: Deployment, provider: Any, _sent: dict[str, Any]) -> dict[str, Any]:
            counter = getattr(provider, "count_tokens", None)
            if counter is None or native is None:
                return {"input_tokens": estimate_prompt_tokens(without_native(request))}
            result: dict[str, Any] = await counter(native["body"], native.get("headers") or {})
            return result

        try:
            result, _ = await self.router.run(request, "count_tokens", count, [])
        except UnknownModel:
            raise GatewayError(
                404, f"The model '{_shown(model)}' is not served here.", code="model_not_found", param="model"
            ) from None
        except ProviderError as exc:
            status, message, code, kind = upstream_status(exc, model, [])
            raise GatewayError(status, message, code=code, kind=kind) from None
        return result

    def worst_case_cost(self, request: Mapping[str, Any]) -> Money | None:
        """The most a request can cost on any deployment that may serve it (fallbacks and every step
        of a cascade included); None when one of them has no price."""
        model = request["model"]
        if (cascade := self.cascades.get(model)) is not None:
            total = Money.ZERO
            for step in cascade[0].models:
                step_worst = self.worst_case_cost({**request, "model": step})
                if step_worst is None:
                    return None
                total += step_worst
            return total
        prompt_tokens = estimate_prompt_tokens(dict(request))
        worst = Money.ZERO
        model = self.router.resolve(model)  # an alias's or a wildcard route's deployments
        for name in [model, *self.router.config.fallbacks.get(model, [])]:
            for deployment in self.router.deployments.get(name, []):
                row = self.pricer.row_for(deployment.provider, deployment.model)
                if row is None:
                    return None
                worst = max(worst, worst_case_cost(row, prompt_tokens, max_output_tokens(dict(request), row)))
        return worst

    async def close(self) -> None:
        """Close the upstream connections and shared counters; wait for background cache checks."""
        await self.router.close()
        if self.limiter is not None:
            await self.limiter.close()
        if self.budgets is not None:
            await self.budgets.close()
        await self.caches.close()

    # -- the steps --------------------------------------------------------------------------------------

    def _warn(self, what: str, exc: RedisUnavailable) -> None:
        """Log a Redis fault, at most once every 10 s per kind (a Redis that is down for a while
        must not flood the log with one line per call)."""
        now = time.monotonic()
        if now - self._warned_at.get(what, -1e18) >= 10.0:
            self._warned_at[what] = now
            log.warning("%s; %s (this is logged at most every 10 s)", exc, what)

    def _save(self, record: SpanRecord) -> None:
        """Record a call of this gateway; metered (its cost counts toward budgets when the ledgers are
        seeded from the store) when this gateway enforces budgets."""
        record.metered = self.budgets is not None
        self.record(record)

    @staticmethod
    def _headers(call: CallSpan, cost: Cost | str | None = "unknown") -> dict[str, str]:
        """The trace id, the call's cost (USD; ``unknown`` when the model has no price, never 0, though
        a request refused before any upstream was asked costs 0; ``pending`` for a stream: its cost is
        on the trace when the stream ends) and the cache outcome. The cost is Money's exact text."""
        cost_text = cost if isinstance(cost, str) else "unknown" if cost is None else str(cost.total)
        headers = {"x-pilothouse-trace-id": call.trace_id, "x-pilothouse-cost-usd": cost_text}
        if call.cache:
            headers["x-pilothouse-cache"] = call.cache
        if call.attempts and (upstream_id := call.attempts[-1].upstream_request_id):
            headers[UPSTREAM_REQUEST_ID] = upstream_id
        return headers

    def _reply(
        self,
        call: CallSpan,
        response: dict[str, Any],
        cost: Cost | None,
        limit_headers: dict[str, str],
        request: Mapping[str, Any],
    ) -> GatewayReply:
        """A complete answer (cached, or a cascade's), as asked: whole, or replayed as a stream."""
        headers = {**self._headers(call, cost), **limit_headers}
        if request.get("stream"):
            return GatewayReply(call, headers, chunks=replay(response), cost=cost)
        return GatewayReply(call, headers, response=response, cost=cost)

    async def _admit(self, caller: Caller, model: str) -> dict[str, str]:
        """Check the key's model allow-list and rate limits (counting this request); the rate-limit
        headers to send. Raises a 403 or 429 :class:`GatewayError`."""
        key = caller.key
        if key is None:  # the admin secret and in-process callers have no limits
            return {}
        if not key.may_use(model):
            raise GatewayError(
                403, f"This key may not call the model '{model}'.", code="model_not_allowed", param="model"
            )
        if (key.rpm is None and key.tpm is None) or self.limiter is None:
            return {}
        try:
            decision = await self.limiter.admit(key.id, key.rpm, key.tpm)
        except RedisUnavailable as exc:
            if not self.redis_faults.limits_fail_open:
                raise redis_unavailable(exc) from None
            self._warn("calls go on without their rate limits (limits_fail_open)", exc)
            return {}
        headers = {}
        reset = f"{max(1, math.ceil(decision.reset_s))}s"  # OpenAI's format; fixed one-minute windows
        if key.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(key.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, key.rpm - decision.requests))
            headers["x-ratelimit-reset-requests"] = reset
        if key.tpm is not None:
            headers["x-ratelimit-limit-tokens"] = str(key.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, key.tpm - decision.tokens))
            headers["x-ratelimit-reset-tokens"] = reset
        if not decision.allowed:
            limit = key.rpm if decision.exceeded == "requests" else key.tpm
            headers["Retry-After"] = str(max(1, math.ceil(decision.retry_after_s)))
            raise GatewayError(
                429,
                f"Rate limit reached for this key: {limit} {decision.exceeded} per minute. "
                f"Retry after {headers['Retry-After']} s.",
                code="rate_limit_exceeded",
                headers=headers,
            )
        return headers

    async def _reserve(self, caller: Caller, call: CallSpan, request: Mapping[str, Any]) -> None:
        """Hold the request's worst-case cost against the budgets it counts against (429
        ``budget_exceeded`` when a hard budget cannot take it)."""
        if self.budgets is None:
            return
        key_id = caller.key.id if caller.key else None
        try:
            budgets = await self.budgets.applicable(caller.project_id, key_id, call.user_id, call.tags)
            if not budgets:
                return
            worst = self.worst_case_cost(request)
            if worst is None:  # a model with no price: its spend cannot be counted, so it cannot be held
                return
            call.reservation = await self.budgets.reserve(budgets, worst)
        except BudgetExceeded as exc:
            raise GatewayError(429, str(exc), code="budget_exceeded", kind="budget_exceeded") from None
        except RedisUnavailable as exc:
            if not self.redis_faults.budgets_fail_open:
                raise redis_unavailable(exc) from None
            self._warn("calls go on without a budget hold (budgets_fail_open)", exc)

    async def _settle(
        self, call: CallSpan, cost: Cost | None, *, unknown_is_worst_case: bool = False
    ) -> None:
        """Release the call's budget hold, counting its actual cost (0 for a call that failed before
        spending; the worst case held when it spent an unknown amount)."""
        if call.reservation is not None and self.budgets is not None:
            spent = call.reservation.amount if unknown_is_worst_case else cost.total if cost else Money.ZERO
            try:
                await self.budgets.settle(call.reservation, max(spent, Money.ZERO))
            except RedisUnavailable as exc:  # the hold expires; the spend is seeded from the store later
                self._warn("budget holds are not settled; they expire, the store has the spend", exc)

    async def _lookup(self, caller: Caller, call: CallSpan, request: dict[str, Any]) -> CacheOutcome:
        """The caches' answer for ``request``; a miss while Redis is unavailable (or a 503 when the
        cache is configured to fail closed)."""
        try:
            return await self.caches.lookup(caller.cache_policy, call, request)
        except RedisUnavailable as exc:
            if not self.redis_faults.cache_fail_open:
                raise redis_unavailable(exc) from None
            self._warn("calls go on without the response cache (cache_fail_open)", exc)
            call.cache = "unavailable"
            return CacheOutcome()

    async def _store(
        self, cached: CacheOutcome, deployment: Deployment, response: dict[str, Any], cost: Cost | None
    ) -> None:
        try:
            await self.caches.store(cached, deployment, response, cost)
        except RedisUnavailable as exc:  # the call was answered: it is only not cached
            self._warn("answers are not cached", exc)

    @staticmethod
    def _usage(call: CallSpan, reported: Any) -> Usage:
        """The usage an upstream reported, each count bounded (:data:`MAX_CALL_TOKENS`, and the output
        by the request's own cap: an upstream cannot bill more output than was asked for); a count
        that had to be corrected is logged and marked on the call's span."""
        usage, clamped = checked_usage_from_openai(reported)
        cap = call.request.get("max_completion_tokens") or call.request.get("max_tokens")
        choices = call.request.get("n")
        if isinstance(cap, int) and cap > 0:
            cap *= choices if isinstance(choices, int) and choices > 0 else 1
            if usage.output > cap:
                reasoning = min(usage.reasoning, cap)
                usage = Usage(usage.input, cap, usage.cache_read, usage.cache_write, reasoning)
                clamped = True
        if clamped:
            call.extra[USAGE_CLAMPED] = True
            log.warning(
                "gateway call %s: the upstream reported token counts that are negative, fractional, "
                "unreadable or above %d; they were corrected (%s)",
                call.trace_id,
                MAX_CALL_TOKENS,
                str(reported)[:200],
            )
        return usage

    def _cost(self, deployment: Deployment, served_model: str | None, usage: Usage) -> Cost | None:
        return self.pricer.call_cost(deployment.provider, deployment.model, served_model, usage)

    async def _count_tokens(self, caller: Caller, usage: Usage) -> None:
        key = caller.key
        if key is not None and key.tpm is not None and usage.total and self.limiter is not None:
            try:
                await self.limiter.add_tokens(key.id, usage.total)
            except RedisUnavailable as exc:  # the call was answered: its tokens go uncounted
                self._warn("answered calls' tokens are not counted toward the limits", exc)

    async def _succeeded(
        self,
        caller: Caller,
        call: CallSpan,
        deployment: Deployment,
        response: dict[str, Any],
        output: str | None = None,
        *,
        also_spent: Cost | None = None,
    ) -> tuple[Cost | None, Callable[[], Awaitable[None]]]:
        """A completed non-streamed call: its tokens counted against the key's limits and its budget
        hold settled (with ``also_spent``: answers turned down on the way); its cost, and the work that
        records it once the response is on its way (the client does not wait for the trace record;
        the call's latency ends now)."""
        call.finish()
        usage = self._usage(call, response.get("usage"))
        cost = self._cost(deployment, response.get("model"), usage)
        await self._count_tokens(caller, usage)
        await self._settle(call, cost if also_spent is None else _plus(cost, also_spent))

        async def record() -> None:
            try:
                self._save(
                    call.record_answer(
                        response, deployment.provider, deployment.id, usage=usage, cost=cost, output=output
                    )
                )
            except Exception:
                log.exception("the trace of gateway call %s could not be recorded", call.trace_id)

        return cost, record

    async def _cascade(
        self, caller: Caller, call: CallSpan, cascade: Cascade, request: dict[str, Any]
    ) -> tuple[dict[str, Any], Cost | None]:
        """Serve a cascade route: each step is its own traced, priced generation (the answer's is the
        request's span, the rejected ones its children); the cost is their sum."""
        settings, verifier = cascade
        # a verifier's judge calls are recorded in this request's trace and project, under its span
        served = CallContext(call.trace_id, call.project_id, parent_id=call.span_id)
        token = current_call.set(served)
        try:
            steps = await run_cascade(self.router, settings, verifier, request, call.attempts)
        finally:
            current_call.reset(token)
        total: Cost | None = Cost({})
        summary = []
        for position, step in enumerate(steps):
            usage = self._usage(call, step.response.get("usage"))
            cost = self._cost(step.deployment, step.response.get("model"), usage)
            total = None if total is None or cost is None else Cost({"steps": total.total + cost.total})
            await self._count_tokens(caller, usage)
            verdict = step.verdict
            summary.append(
                {
                    "model": step.model,
                    "accepted": verdict is None or verdict.accepted,
                    "score": verdict.score if verdict else None,
                    "reason": verdict.reason if verdict else None,
                    "cost_usd": cost.total.usd if cost else None,  # a span attribute: plain JSON
                }
            )
            last = position == len(steps) - 1
            step_call = (
                call
                if last
                else CallSpan(
                    project_id=call.project_id,
                    operation="chat",
                    request={**request, "model": step.model},
                    key_id=call.key_id,
                    user_id=call.user_id,
                    trace_id=call.trace_id,
                    parent_id=call.span_id,
                    tags=call.tags,
                )
            )
            if last:
                call.extra["gateway.cascade"] = {
                    "name": settings.name,
                    "steps": summary,
                    "escalations": position,
                }
            self._save(
                step_call.record_answer(
                    step.response, step.deployment.provider, step.deployment.id, usage=usage, cost=cost
                )
            )
        await self._settle(call, total)
        return steps[-1].response, total

    async def _relay(
        self,
        caller: Caller,
        call: CallSpan,
        stream: AsyncIterator[dict[str, Any]],
        deployment: Deployment,
        cached: CacheOutcome,
        reply: GatewayReply,
        route: RouteGuards | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """The upstream's chunks, passed on; the call is recorded (and ``reply.cost`` set) when the
        stream ends: completed, failed after the first chunk (:class:`GatewayError` raised to the
        consumer), or cut by the consumer (the upstream call is cancelled). The route's redacting
        output guards redact the text chunk by chunk; its flagging ones check the whole text at the
        end (guards that block or fall back never get here: such a route's streams are held)."""
        assembler = StreamAssembler()
        redacting = tuple(use for use in route.output if use.per_chunk) if route is not None else ()
        flagging = tuple(use for use in route.output if not use.per_chunk) if route is not None else ()
        redactor = StreamRedactor(redacting) if redacting else None
        shown: str | None = None
        status, error = Status.OK, None
        timeout_s = self.router.settings.timeout_s
        deadline = call.started + timeout_s  # the total timeout covers the whole stream
        chunks = aiter(stream)
        try:
            while True:
                # no yield inside the timeout: it only ever interrupts the wait for the upstream
                async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                chunk = check_chunk(chunk)
                if redactor is None:
                    assembler.add(chunk)
                    choices = chunk.get("choices") or []
                    if choices and (choices[0].get("delta") or {}).get("content"):
                        call.first_token()
                    yield chunk
                    continue
                for out in redactor.chunk(chunk):  # none while the guards hold its text back
                    assembler.add(out)
                    if any((c.get("delta") or {}).get("content") for c in out.get("choices") or ()):
                        call.first_token()
                    yield out
            if redactor is not None and (last := redactor.flush()) is not None:
                assembler.add(last)
                yield last
            if redactor is not None:
                _note(call, redactor.outcomes())
            if flagging:
                text = output_text(assembler.response()) or ""
                checked = await check_output(flagging, call.request, text)
                _note(call, checked.outcomes)
                shown = checked.traced if checked.traced != text else None
        except ProviderError as exc:
            # The consumer already has part of the answer: the stream ends with an error.
            status, error = Status.ERROR, f"stream failed after the first chunk: {exc.message}"
            raise GatewayError(exc.status, error, code=exc.code, kind=exc.kind) from None
        except TimeoutError:
            status, error = Status.ERROR, f"stream exceeded the total timeout of {timeout_s:g} s"
            raise GatewayError(504, error, code="timeout", kind="timeout") from None
        except Exception as exc:
            log.error("gateway stream %s failed unexpectedly", call.trace_id, exc_info=exc)
            status, error = Status.ERROR, "the gateway failed while relaying the stream"
            raise GatewayError(500, f"{error} (trace {call.trace_id}).", code="internal_error") from None
        except BaseException:
            status, error = Status.ERROR, "client disconnected; upstream call cancelled"
            raise
        finally:
            # every step below may fail (an unreadable chunk, Redis gone): the hold is released and the
            # call recorded whatever happens
            final: dict[str, Any] = {}
            usage, cost = Usage(), None
            try:
                await stream.aclose()  # type: ignore[attr-defined]
                final = assembler.response()
                usage = self._usage(call, final.get("usage"))
                cost = reply.cost = self._cost(deployment, final.get("model"), usage)
            except Exception:
                log.exception("gateway stream %s: its answer could not be assembled", call.trace_id)
            # a stream cut before its usage arrived spent an unknown amount: keep its worst case
            await self._settle(call, cost, unknown_is_worst_case=usage.is_empty)
            try:
                await self._count_tokens(caller, usage)
                # a native Anthropic stream's answer is not cached: only its translation was assembled
                if status is Status.OK and not (
                    NATIVE in call.request and deployment.provider == "anthropic"
                ):
                    await self._store(cached, deployment, final, cost)
            except Exception:
                log.warning("gateway stream %s: counting its tokens or caching it failed", call.trace_id)
            self._save(
                call.record_answer(
                    final,
                    deployment.provider,
                    deployment.id,
                    usage=usage,
                    cost=cost,
                    output=shown,
                    status=status,
                    error=error,
                )
            )


def _note(call: CallSpan, outcomes: list[dict[str, Any]]) -> None:
    """Guard outcomes onto the call's span (``gateway.guardrails``)."""
    if outcomes:
        call.extra.setdefault(GUARDRAILS_ATTRIBUTE, []).extend(outcomes)


def _plus(cost: Cost | None, more: Cost | None) -> Cost | None:
    """The sum of two costs: None (unknown) when either is; ``cost`` itself when ``more`` is nothing."""
    if cost is None or more is None:
        return None
    if not more.items:
        return cost
    return Cost({"answers": cost.total + more.total}, cost.price_version)


def _shown(name: str) -> str:
    """A model name as an error message quotes it: cut past MAX_MODEL_NAME_CHARS (the message is
    stored with the call's span, and a client chooses the name)."""
    return name if len(name) <= MAX_MODEL_NAME_CHARS else name[:MAX_MODEL_NAME_CHARS] + "..."

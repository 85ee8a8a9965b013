"""Chat-completion clients that targets and judges call: the models of a gateway config in-process
(through the gateway's router, no HTTP), or any OpenAI-compatible endpoint (a Pilothouse gateway, vLLM,
OpenAI) through the ``openai`` client; and :class:`ClientJudge`, the judge adapter over them.

In-process calls become generation spans handed to a span sink (the runner stores them); HTTP calls
carry a W3C ``traceparent`` so a Pilothouse gateway records them in the trace the runner chose.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)
from pilothouse.evals.calls import (
    CallContext,
    Options,
    SpanSink,
    TargetConfigError,
    TargetError,
    current_call,
)
from pilothouse.evals.judges import JudgeReply, judge_reply, judge_request
from pilothouse.tracing.ids import new_span_id, new_trace_id

if TYPE_CHECKING:
    from pilothouse.costs.pricing import Pricer
    from pilothouse.gateway.router import Router

__all__ = [
    "ChatClient",
    "ChatReply",
    "ClientJudge",
    "OpenAIClient",
    "RouterClient",
    "build_judge",
    "chat_client",
    "default_config_path",
    "new_span_id",
    "new_trace_id",
    "retry_after_seconds",
]


@dataclass(frozen=True, slots=True)
class ChatReply:
    """An OpenAI chat completion and what the call cost."""

    response: Mapping[str, Any]
    usage: Usage | None
    cost_usd: float | None
    latency_ms: float
    trace_id: str | None


class ChatClient(Protocol):
    """A chat-completions endpoint the target and the judges call."""

    def describe(self) -> str:
        """Where calls go, in words."""
        ...

    def endpoint(self) -> str:
        """What identifies where calls go, for the response cache (no secrets)."""
        ...

    async def start(self, spans: SpanSink | None) -> None:
        """Open connections."""
        ...

    async def chat(self, request: dict[str, Any], context: CallContext) -> ChatReply:
        """One non-streamed completion; raises :class:`TargetError`."""
        ...

    async def close(self) -> None:
        """Close connections."""
        ...


@functools.lru_cache(maxsize=1)
def _packaged_pricer() -> Pricer:
    from pilothouse.costs.catalogue import PriceCatalogue
    from pilothouse.costs.pricing import Pricer

    return Pricer(PriceCatalogue.packaged())


def _usage(response: Mapping[str, Any]) -> Usage | None:
    from pilothouse.gateway.recording import usage_from_openai

    usage = response.get("usage")
    return usage_from_openai(usage) if isinstance(usage, dict) else None


def default_config_path() -> Path | None:
    """The gateway config of in-process model calls: $PILOTHOUSE_CONFIG, else ./pilothouse.yaml."""
    env = os.environ.get("PILOTHOUSE_CONFIG")
    if env:
        return Path(env)
    local = Path("pilothouse.yaml")
    return local if local.is_file() else None


class RouterClient:
    """Models of a gateway config called in-process through the gateway's router (retries, fallbacks,
    circuit breakers), no HTTP; each call becomes a generation span sent to the span sink."""

    def __init__(self, config_path: Path | None, model: str, section: str) -> None:
        from pilothouse.gateway.config import ConfigError, load_config

        self.config_path = config_path
        try:
            self.config = load_config(config_path)
        except (ConfigError, OSError) as exc:
            raise TargetConfigError(f"{section}.config: {exc}") from None
        names = sorted({d.name for d in self.config.deployments})
        self.deployments = [d for d in self.config.deployments if d.name == model]
        if model not in names:
            where = f"the config {config_path}" if config_path else "no gateway config (none found)"
            raise TargetConfigError(
                f"{section}.model: {model!r} is not served by {where} (models: {', '.join(names) or 'none'});"
                " set base_url to call an OpenAI-compatible server, or config to a gateway config file"
            )
        self._router: Router | None = None
        self._pricer: Pricer | None = None
        self._spans: SpanSink | None = None

    def describe(self) -> str:
        return f"in-process ({self.config_path or 'no config'})"

    def endpoint(self) -> str:
        # the deployments behind the name: another upstream model or server is another cache entry
        served = sorted(d.id + (f" {d.options}" if d.options else "") for d in self.deployments)
        return "in-process: " + "; ".join(served)

    async def start(self, spans: SpanSink | None) -> None:
        from pilothouse.costs.catalogue import PriceCatalogue
        from pilothouse.costs.pricing import Pricer
        from pilothouse.gateway.router import Router

        if self._router is None:
            self._router = Router(self.config)
            self._pricer = Pricer(PriceCatalogue.packaged(self.config.prices))
        self._spans = spans

    async def chat(self, request: dict[str, Any], context: CallContext) -> ChatReply:
        from pilothouse.gateway.router import Attempt, UnknownModel
        from pilothouse.providers.base import ProviderError

        assert self._router is not None and self._pricer is not None, "start() first"
        attempts: list[Attempt] = []
        start_ns, started = time.time_ns(), time.perf_counter()
        cost: Cost | None = None
        try:
            response, deployment = await self._router.chat(request, attempts)
        except ProviderError as exc:
            self._record(request, context, start_ns, started, None, None, None, exc.message, attempts)
            raise TargetError(
                f"{exc.status}: {exc.message}",
                retryable=exc.retryable,
                status=exc.status,
                retry_after_s=exc.retry_after_s,
            ) from None
        except UnknownModel as exc:
            raise TargetError(f"no deployment serves {exc}") from None
        latency_ms = (time.perf_counter() - started) * 1000
        usage = _usage(response)
        if usage is not None:
            cost = self._pricer.cost(deployment.provider, deployment.model, usage) or self._pricer.cost(
                deployment.provider, response.get("model"), usage
            )
        self._record(
            request, context, start_ns, started, response, usage, cost, None, attempts, deployment.id
        )
        return ChatReply(response, usage, cost.total if cost else None, latency_ms, context.trace_id)

    def _record(
        self,
        request: dict[str, Any],
        context: CallContext,
        start_ns: int,
        started: float,
        response: Mapping[str, Any] | None,
        usage: Usage | None,
        cost: Cost | None,
        error: str | None,
        attempts: Sequence[Any],
        deployment: str | None = None,
    ) -> None:
        if self._spans is None:
            return
        from pilothouse.gateway.recording import output_text

        attributes: dict[str, Any] = context.attributes()
        attributes["gateway.attempts"] = [a.as_dict() for a in attempts]
        if deployment:
            attributes["gateway.deployment"] = deployment
        provider = deployment.split("/", 1)[0] if deployment else None
        model = request.get("model")
        observation = Observation(
            trace_id=context.trace_id,
            id=new_span_id(),
            name=f"eval {context.role} {model}",
            kind=ObservationKind.GENERATION,
            start_ns=start_ns,
            end_ns=start_ns + int((time.perf_counter() - started) * 1e9),
            status=Status.ERROR if error else Status.OK,
            status_message=error,
            input=json.dumps(request.get("messages"), ensure_ascii=False, default=str),
            output=output_text(dict(response)) if response is not None else None,
            attributes=attributes,
            provider=provider,
            request_model=model if isinstance(model, str) else None,
            model=(response or {}).get("model") or model,
            model_parameters={k: v for k, v in request.items() if k not in ("model", "messages")},
            usage=usage or Usage(),
            cost=cost,
        )
        trace = TraceAttributes(name="eval", tags=("eval",), metadata={"eval.run_id": context.run_id})
        self._spans(SpanRecord(context.project_id, observation, trace))

    async def close(self) -> None:
        if self._router is not None:
            await self._router.close()
            self._router = None


class OpenAIClient:
    """An OpenAI-compatible endpoint through the ``openai`` client (its own retries off: the runner
    retries and backs off). A Pilothouse gateway's cost header is used when present, else the price
    catalogue (``provider`` helps it find the model)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        headers: Mapping[str, str],
        provider: str | None,
        timeout_s: float,
    ) -> None:
        self.base_url = base_url
        self.api_key = api_key or os.environ.get("PILOTHOUSE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.headers = dict(headers)
        self.provider = provider
        self.timeout_s = timeout_s
        self._client: Any = None

    def describe(self) -> str:
        return self.base_url

    def endpoint(self) -> str:
        return self.base_url

    async def start(self, spans: SpanSink | None) -> None:
        if self._client is not None:
            return
        try:
            from openai import AsyncOpenAI
        except ImportError:  # pragma: no cover - an optional dependency
            raise TargetConfigError("base_url needs the openai package: pip install openai") from None
        self._client = AsyncOpenAI(
            base_url=self.base_url,
            api_key=self.api_key or "not-needed",
            max_retries=0,  # the runner retries, and slows down on 429s
            timeout=self.timeout_s,
            default_headers=self.headers,
        )

    async def chat(self, request: dict[str, Any], context: CallContext) -> ChatReply:
        import openai

        traceparent = f"00-{context.trace_id}-{new_span_id()}-01"
        started = time.perf_counter()
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                **request, extra_headers={"traceparent": traceparent}
            )
        except openai.APIStatusError as exc:
            status = exc.status_code
            retry_after = retry_after_seconds(exc.response.headers.get("retry-after"))
            message = _error_message(exc)
            retryable = status == 429 or status >= 500 or status == 408
            raise TargetError(
                f"{status}: {message}", retryable=retryable, status=status, retry_after_s=retry_after
            ) from None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise TargetError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            response = json.loads(raw.content)
        except ValueError:
            raise TargetError("the endpoint answered something that is not JSON", retryable=True) from None
        if not isinstance(response, dict):
            raise TargetError("the endpoint answered something other than a JSON object", retryable=True)
        usage = _usage(response)
        cost = _cost_header(raw.headers.get("x-pilothouse-cost-usd"))
        if cost is None and usage is not None and "x-pilothouse-cost-usd" not in raw.headers:
            priced = _packaged_pricer().cost(self.provider, str(request.get("model")), usage)
            cost = priced.total if priced else None
        trace_id = raw.headers.get("x-pilothouse-trace-id") or context.trace_id
        return ChatReply(response, usage, cost, latency_ms, trace_id)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def retry_after_seconds(value: str | None) -> float | None:
    """The seconds of a ``Retry-After`` header (None when absent or a date)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _cost_header(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "unknown", "pending") else None
    except ValueError:
        return None


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return str(error["message"])
    return str(getattr(exc, "message", exc))


def chat_client(opts: Options, model: str, base_dir: Path, timeout_s: float) -> ChatClient:
    base_url = opts.text("base_url")
    if base_url is not None:
        return OpenAIClient(base_url, opts.text("api_key"), opts.headers(), opts.text("provider"), timeout_s)
    config = opts.text("config")
    path = (
        (base_dir / config) if config and not Path(config).is_absolute() else Path(config) if config else None
    )
    return RouterClient(path or default_config_path(), model, opts.section)


# -- judges -------------------------------------------------------------------------------------------

_JUDGE_KEYS = {
    "model",
    "base_url",
    "api_key",
    "provider",
    "config",
    "headers",
    "timeout_s",
    "structured",
    "logprobs",
}


class ClientJudge:
    """A :class:`pilothouse.evals.judges.JudgeModel` over the same clients targets use, so judge calls
    are traced in the item's trace (role ``judge``) and priced like target calls."""

    def __init__(self, client: ChatClient, model: str, *, structured: bool, logprobs: bool) -> None:
        self.client = client
        self.model = model
        self.structured = structured
        self.logprobs = logprobs

    async def complete(
        self,
        messages: list[dict[str, Any]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        logprobs: bool = False,
        response_format: dict[str, Any] | None = None,
    ) -> JudgeReply:
        """One judge call, in the trace of the item being scored."""
        request = judge_request(
            self.model,
            messages,
            max_tokens=max_tokens,
            temperature=temperature,
            logprobs=logprobs and self.logprobs,
            response_format=response_format if self.structured else None,
        )
        outer = current_call.get()
        context = (
            replace(outer, role="judge")
            if outer is not None
            else CallContext("", "", 0, new_trace_id(), "judge")
        )
        try:
            reply = await self.client.chat(request, context)
        except TargetError as exc:
            raise RuntimeError(f"judge call failed: {exc.message}") from None
        usage = reply.usage
        return judge_reply(
            reply.response,
            input_tokens=usage.input_total if usage else None,
            output_tokens=usage.output if usage else None,
            cost_usd=reply.cost_usd,
        )


def build_judge(options: Mapping[str, Any], base_dir: Path, model: str | None = None) -> ClientJudge:
    """A judge from the spec's ``judge`` mapping (``model`` overrides its model: a scorer's ``judge``)."""
    opts = Options(options, "judge", _JUDGE_KEYS)
    name = model or opts.text("model", required=True)
    assert name is not None
    timeout_s = opts.number("timeout_s", 120.0) or 120.0
    client = chat_client(opts, name, base_dir, timeout_s)
    return ClientJudge(
        client, name, structured=opts.boolean("structured", False), logprobs=opts.boolean("logprobs", True)
    )


async def start_judge(judge: ClientJudge, spans: SpanSink | None) -> None:
    """Open a judge's client."""
    await judge.client.start(spans)


async def close_judge(judge: ClientJudge) -> None:
    """Close a judge's client."""
    await judge.client.close()

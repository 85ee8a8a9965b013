"""What an eval evaluates: targets by kind, from a registry a plugin can add to.

=========  ==================================================================================  =====
kind       spec keys                                                                           cache
=========  ==================================================================================  =====
model      model, messages (templates) or prompt, max_tokens, temperature, params, headers,     on
           base_url + api_key (any OpenAI-compatible server, e.g. a Pilothouse gateway), or
           config (a gateway config file; default $PILOTHOUSE_CONFIG, else ./pilothouse.yaml)
           to call the model in-process through the gateway's router; provider (for prices)
callable   callable: "package.module:function" (sync or async) or, in Python, the function     off
http       url, method (POST), headers, body (a template: any JSON value), output (a path into  on
           the JSON answer: ``$.choices[0].message.content``; default the whole body)
=========  ==================================================================================  =====

Every call is traced. A model target calls a chat model (:class:`pilothouse.domain.chat.ChatModel`):
through an HTTP endpoint a W3C ``traceparent`` header carries the trace id the runner chose (a Pilothouse
gateway then records the call in that trace); in-process calls become generation spans the runner
stores itself, with ``eval.run_id``, ``eval.item_id``, ``eval.epoch`` and ``eval.role`` attributes. The
same chat models serve as judges (:func:`pilothouse.evals.clients.build_judge`), so judge calls are
traced and priced the same way, and accounted apart from the target's.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.ids import new_span_id
from pilothouse.domain.money import Money
from pilothouse.domain.redaction import redact_url
from pilothouse.evals.calls import CallContext, Options, SpanSink, TargetConfigError, TargetError
from pilothouse.evals.clients import chat_model
from pilothouse.evals.templating import render_messages, render_value
from pilothouse.gateway import retry_after_seconds

__all__ = [
    "CallContext",
    "Prepared",
    "Target",
    "TargetConfigError",
    "TargetError",
    "TargetReply",
    "available_targets",
    "build_target",
    "register_target",
    "target_kind",
]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A request ready to send: ``request`` (JSON-able) is what the response cache key covers;
    ``messages`` are the chat messages scorers see."""

    request: Mapping[str, Any]
    messages: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class TargetReply:
    """A target's answer and what it cost (None: unknown, never 0)."""

    output: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Money | None = None
    latency_ms: float | None = None
    trace_id: str | None = None


class Target(Protocol):
    """One thing to evaluate. ``prepare`` is pure (renders the item); ``call`` does the I/O."""

    kind: str
    cache_default: bool

    def describe(self) -> str:
        """The target in words, for run listings."""
        ...

    def identity(self) -> Mapping[str, Any]:
        """What identifies the target for the response cache (never secrets)."""
        ...

    def prepare(self, item: DatasetItem) -> Prepared:
        """The request for one item; raises TemplateError when a variable is missing."""
        ...

    async def start(self, spans: SpanSink | None) -> None:
        """Open clients; ``spans`` receives the spans of in-process calls."""
        ...

    async def call(self, prepared: Prepared, context: CallContext) -> TargetReply:
        """One call; raises :class:`TargetError`."""
        ...

    async def close(self) -> None:
        """Close clients."""
        ...


TargetFactory = Callable[[Mapping[str, Any], Path], Target]
_targets: dict[str, TargetFactory] = {}


def register_target(kind: str) -> Callable[[TargetFactory], TargetFactory]:
    """Register a target kind: a factory taking the spec's target mapping and the spec's folder."""

    def decorate(factory: TargetFactory) -> TargetFactory:
        _targets[kind] = factory
        return factory

    return decorate


def available_targets() -> list[str]:
    """Registered target kinds."""
    return sorted(_targets)


def target_kind(options: Mapping[str, Any]) -> str:
    """The kind of a target mapping: its ``type``, else guessed from ``callable``, ``url`` or ``model``."""
    kind = options.get("type")
    if kind is not None:
        if kind not in _targets:
            raise TargetConfigError(
                f"target.type: unknown {kind!r} (known: {', '.join(available_targets())})"
            )
        return str(kind)
    for key, guessed in (("callable", "callable"), ("url", "http"), ("model", "model")):
        if key in options:
            return guessed
    raise TargetConfigError("target: needs 'model' (a model), 'callable' (a Python function) or 'url' (HTTP)")


def build_target(options: Mapping[str, Any], base_dir: Path) -> Target:
    """A target from its spec mapping (a callable in ``callable`` is fine from Python)."""
    return _targets[target_kind(options)](options, base_dir)


def _messages_option(opts: Options) -> tuple[dict[str, Any], ...] | None:
    messages = opts.options.get("messages")
    prompt = opts.options.get("prompt")
    if messages is not None and prompt is not None:
        raise opts.error("prompt", "give 'messages' or 'prompt', not both")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise opts.error("prompt", "must be a string (the user message template)")
        return ({"role": "user", "content": prompt},)
    if messages is None:
        return None
    if not isinstance(messages, list) or not messages:
        raise opts.error("messages", "must be a non-empty list of {role, content}")
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, Mapping):
            raise opts.error(where, "must be a mapping with role and content")
        role = message.get("role")
        if role not in ("system", "user", "assistant", "developer", "tool"):
            raise opts.error(f"{where}.role", f"must be system, user or assistant, not {role!r}")
        if not isinstance(message.get("content"), str | list):
            raise opts.error(f"{where}.content", "must be a string (a template) or content parts")
    return tuple(dict(m) for m in messages)


def _text_of(response: Mapping[str, Any]) -> str:
    choices = response.get("choices") or []
    if not choices:
        raise TargetError("the model answered without a choice")
    message = choices[0].get("message") or {}
    content = message.get("content")
    if isinstance(content, str):
        return content
    if message.get("tool_calls"):
        return json.dumps(message["tool_calls"], ensure_ascii=False)
    return ""


_MODEL_KEYS = {
    "model",
    "base_url",
    "api_key",
    "provider",
    "config",
    "messages",
    "prompt",
    "max_tokens",
    "temperature",
    "params",
    "headers",
    "timeout_s",
    "cache",
    "prompt_version",  # set by the spec parser for ``prompt: name@label``: the registry's version used
}


@register_target("model")
class ModelTarget:
    """A chat model with a prompt template: in-process through a gateway config, or any
    OpenAI-compatible ``base_url``."""

    kind = "model"
    cache_default = True

    def __init__(self, options: Mapping[str, Any], base_dir: Path) -> None:
        opts = Options(options, "target", _MODEL_KEYS)
        model = opts.text("model", required=True)
        assert model is not None
        self.model = model
        self.messages = _messages_option(opts)
        self.parameters: dict[str, Any] = opts.mapping("params")
        max_tokens = opts.integer("max_tokens")
        if max_tokens is not None:
            self.parameters["max_tokens"] = max_tokens
        temperature = opts.number("temperature")
        if temperature is not None:
            self.parameters["temperature"] = temperature
        for reserved in ("model", "messages", "stream"):
            if reserved in self.parameters:
                raise opts.error(f"params.{reserved}", "is set by the target itself")
        timeout_s = opts.number("timeout_s", 600.0) or 600.0
        self.client = chat_model(opts, model, base_dir, timeout_s)
        self.span_name = f"eval target {model}"
        used = opts.mapping("prompt_version")  # {name, version}: every call's span names it
        self.prompt_attributes = (
            {"pilothouse.prompt.name": str(used["name"]), "pilothouse.prompt.version": str(used["version"])}
            if used
            else {}
        )

    def describe(self) -> str:
        return f"model {self.model} @ {self.client.describe()}"

    def identity(self) -> Mapping[str, Any]:
        identity = {"kind": "model", "endpoint": self.client.endpoint()}
        if self.prompt_attributes:
            identity["prompt"] = self.prompt_attributes["pilothouse.prompt.name"]
            identity["prompt_version"] = self.prompt_attributes["pilothouse.prompt.version"]
        return identity

    def prepare(self, item: DatasetItem) -> Prepared:
        if self.messages is not None:
            messages = render_messages(self.messages, item.variables())
        elif item.messages is not None:
            messages = [dict(m) for m in item.messages]
        else:
            raise TargetError("the target has no 'messages' template and the item has no messages")
        return Prepared({"model": self.model, "messages": messages, **self.parameters}, tuple(messages))

    async def start(self, spans: SpanSink | None) -> None:
        await self.client.start(spans)

    async def call(self, prepared: Prepared, context: CallContext) -> TargetReply:
        context = context.named(self.span_name)
        if self.prompt_attributes:
            context = replace(context, attributes={**context.attributes, **self.prompt_attributes})
        reply = await self.client.chat(dict(prepared.request), context)
        usage = reply.usage
        return TargetReply(
            output=_text_of(reply.response),
            input_tokens=usage.input_total if usage else None,
            output_tokens=usage.output if usage else None,
            cost_usd=reply.cost_usd,
            latency_ms=reply.latency_ms,
            trace_id=reply.trace_id,
        )

    async def close(self) -> None:
        await self.client.close()


def load_callable(reference: Any, where: str = "target.callable") -> Callable[..., Any]:
    """A function from ``"package.module:function"`` (or the function itself)."""
    if callable(reference):
        return reference  # type: ignore[no-any-return]  # a user's function
    if not isinstance(reference, str) or ":" not in reference:
        raise TargetConfigError(f"{where}: must be 'package.module:function', not {reference!r}")
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetConfigError(f"{where}: cannot import {module_name!r}: {exc}") from None
    function: Any = module
    for part in attribute.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise TargetConfigError(f"{where}: {module_name!r} has no {attribute!r}")
    if not callable(function):
        raise TargetConfigError(f"{where}: {reference!r} is not callable")
    return function  # type: ignore[no-any-return]


def _reply_from_value(value: Any) -> TargetReply:
    if isinstance(value, TargetReply):
        return value
    if isinstance(value, Mapping) and "output" in value:
        cost = value.get("cost_usd")
        if isinstance(cost, int | float | str) and not isinstance(cost, bool):
            try:
                cost = Money.from_usd(cost)
            except ValueError:
                cost = None
        return TargetReply(
            output=value["output"] if isinstance(value["output"], str) else json.dumps(value["output"]),
            input_tokens=value.get("input_tokens"),
            output_tokens=value.get("output_tokens"),
            cost_usd=cost if isinstance(cost, Money) else None,
        )
    if isinstance(value, str):
        return TargetReply(value)
    return TargetReply(json.dumps(value, ensure_ascii=False, default=str))


@register_target("callable")
class CallableTarget:
    """A Python function ``f(input) -> str`` (sync functions run in a worker thread), where ``input`` is
    the item's variables (``{"messages": [...]}`` for a chat item). It may return a mapping with
    ``output`` and optionally ``input_tokens``, ``output_tokens``, ``cost_usd``."""

    kind = "callable"
    cache_default = False

    def __init__(self, options: Mapping[str, Any], base_dir: Path) -> None:
        opts = Options(options, "target", {"callable", "cache", "timeout_s"})
        reference = options.get("callable")
        self.function = load_callable(reference)
        self.name = (
            reference
            if isinstance(reference, str)
            else f"{getattr(self.function, '__module__', '?')}:{getattr(self.function, '__qualname__', '?')}"
        )
        self.is_async = inspect.iscoroutinefunction(self.function)
        del opts, base_dir

    def describe(self) -> str:
        return f"callable {self.name}"

    def identity(self) -> Mapping[str, Any]:
        return {"kind": "callable", "function": self.name}

    def prepare(self, item: DatasetItem) -> Prepared:
        arguments = dict(item.input)
        if item.messages is not None:
            arguments.setdefault("messages", [dict(m) for m in item.messages])
        return Prepared({"input": arguments}, tuple(item.messages or ()))

    async def start(self, spans: SpanSink | None) -> None:
        return None

    async def call(self, prepared: Prepared, context: CallContext) -> TargetReply:
        argument = dict(prepared.request["input"])
        started = time.perf_counter()
        try:
            if self.is_async:
                value = await self.function(argument)
            else:
                value = await asyncio.to_thread(self.function, argument)
                if inspect.isawaitable(value):
                    value = await value
        except TargetError:
            raise
        except Exception as exc:  # the function's own failure: unmeasured, with the reason
            raise TargetError(f"{type(exc).__name__}: {exc}") from None
        reply = _reply_from_value(value)
        latency_ms = (time.perf_counter() - started) * 1000
        return TargetReply(
            reply.output,
            reply.input_tokens,
            reply.output_tokens,
            reply.cost_usd,
            reply.latency_ms if reply.latency_ms is not None else latency_ms,
            context.trace_id,
        )

    async def close(self) -> None:
        return None


_PATH_TOKEN = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\[['\"]([^'\"]+)['\"]\]")


def parse_json_path(path: str, where: str) -> list[str | int]:
    """Steps of a JSONPath-like path: ``$.choices[0].message.content``, ``data.text``, ``$['a b']``."""
    text = path.strip()
    text = text[1:] if text.startswith("$") else text
    if text and not text.startswith((".", "[")):
        text = "." + text
    steps: list[str | int] = []
    position = 0
    while position < len(text):
        match = _PATH_TOKEN.match(text, position)
        if match is None:
            raise TargetConfigError(f"{where}: cannot read the path {path!r} at {text[position:]!r}")
        name, index, quoted = match.groups()
        steps.append(int(index) if index is not None else (name or quoted))
        position = match.end()
    return steps


def follow_json_path(document: Any, steps: Sequence[str | int]) -> Any:
    """The value at a parsed path; KeyError when it is not there."""
    current = document
    for step in steps:
        if isinstance(step, int) and isinstance(current, list) and -len(current) <= step < len(current):
            current = current[step]
            continue
        if not (isinstance(step, str) and isinstance(current, Mapping) and step in current):
            raise KeyError(step)
        current = current[step]
    return current


@register_target("http")
class HttpTarget:
    """Any HTTP endpoint: ``body`` (a template) sent as JSON, the answer read at ``output``."""

    kind = "http"
    cache_default = True

    def __init__(self, options: Mapping[str, Any], base_dir: Path) -> None:
        opts = Options(
            options, "target", {"url", "method", "headers", "body", "output", "timeout_s", "cache"}
        )
        url = opts.text("url", required=True)
        assert url is not None
        self.url = url
        self.method = (opts.text("method", "POST") or "POST").upper()
        self.headers = opts.headers()
        self.body = options.get("body")
        output = opts.text("output", env=False)
        self.output_path = parse_json_path(output, "target.output") if output else None
        self.output_text = output
        self.timeout_s = opts.number("timeout_s", 600.0) or 600.0
        self._client: Any = None
        del base_dir

    def describe(self) -> str:
        return f"http {self.method} {redact_url(self.url)}"

    def identity(self) -> Mapping[str, Any]:
        return {"kind": "http", "url": self.url, "method": self.method, "output": self.output_text}

    def prepare(self, item: DatasetItem) -> Prepared:
        variables = item.variables()
        body = render_value(self.body, variables) if self.body is not None else dict(item.input)
        return Prepared({"body": body}, tuple(item.messages or ()))

    async def start(self, spans: SpanSink | None) -> None:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s, limits=httpx.Limits(max_connections=1000), headers=self.headers
            )

    async def call(self, prepared: Prepared, context: CallContext) -> TargetReply:
        import httpx

        traceparent = context.traceparent(new_span_id())
        started = time.perf_counter()
        try:
            response = await self._client.request(
                self.method, self.url, json=prepared.request["body"], headers={"traceparent": traceparent}
            )
        except httpx.HTTPError as exc:
            raise TargetError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code >= 400:
            status = response.status_code
            raise TargetError(
                f"{status}: {response.text[:300]}",
                retryable=status in (408, 429) or status >= 500,
                status=status,
                retry_after_s=retry_after_seconds(response.headers.get("retry-after")),
            )
        output: Any = response.text
        if self.output_path is not None:
            try:
                output = follow_json_path(response.json(), self.output_path)
            except (ValueError, KeyError):
                raise TargetError(f"the answer has nothing at {self.output_text!r}") from None
        text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
        return TargetReply(text, latency_ms=latency_ms, trace_id=context.trace_id)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

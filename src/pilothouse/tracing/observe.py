"""``@observe`` and ``with span(...)``: application code as traced observations.

Input and output are recorded as JSON (``pilothouse.input`` / ``pilothouse.output``); trace-level facts
(user, session, tags) as the attributes the collector reads (``user.id``, ``session.id``, ...).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast, overload

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Status, StatusCode

from pilothouse.domain.redaction import REDACTED, names_a_secret
from pilothouse.domain.traces import ObservationKind
from pilothouse.tracing.sdk import get_tracer

F = TypeVar("F", bound=Callable[..., Any])
MAX_VALUE_CHARS = 100_000


def to_json_text(value: Any) -> str:
    """JSON text of any value (strings stay as they are; unknown objects use their repr)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value, default=repr, option=orjson.OPT_NON_STR_KEYS).decode()
        except (TypeError, orjson.JSONEncodeError):
            text = repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


class ObservationSpan:
    """Handle on a live observation: set its output, usage, model or the trace's user and session."""

    def __init__(self, span: otel_trace.Span) -> None:
        self.span = span

    @property
    def trace_id(self) -> str:
        """Hex id of the trace this observation belongs to."""
        return format(self.span.get_span_context().trace_id, "032x")

    @property
    def id(self) -> str:
        """Hex id of this observation."""
        return format(self.span.get_span_context().span_id, "016x")

    def update(
        self,
        *,
        input: Any = None,
        output: Any = None,
        model: str | None = None,
        usage: Mapping[str, int] | None = None,
        metadata: Mapping[str, Any] | None = None,
        level: str | None = None,
    ) -> None:
        """Record input, output, model, token usage (``input``, ``output``, ``cache_read``,
        ``cache_write``, ``reasoning``; input counts all prompt tokens), metadata, or ``level="error"``."""
        s = self.span
        if input is not None:
            s.set_attribute("pilothouse.input", to_json_text(input))
        if output is not None:
            s.set_attribute("pilothouse.output", to_json_text(output))
        if model is not None:
            s.set_attribute("gen_ai.request.model", model)
        if usage:
            names = {
                "input": "gen_ai.usage.input_tokens",
                "output": "gen_ai.usage.output_tokens",
                "cache_read": "gen_ai.usage.cache_read.input_tokens",
                "cache_write": "gen_ai.usage.cache_creation.input_tokens",
                "reasoning": "gen_ai.usage.reasoning.output_tokens",
            }
            for key, value in usage.items():
                if key not in names:
                    raise ValueError(f"unknown usage key {key!r} (known: {', '.join(names)})")
                s.set_attribute(names[key], int(value))
        if metadata:
            for key, value in metadata.items():
                s.set_attribute(
                    f"metadata.{key}",
                    value if isinstance(value, str | int | float | bool) else to_json_text(value),
                )
        if level is not None and level.lower() == "error":
            s.set_status(Status(StatusCode.ERROR))

    def update_trace(
        self,
        *,
        name: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Set trace-level facts (they apply to the whole trace, whichever span carries them)."""
        s = self.span
        if name is not None:
            s.set_attribute("pilothouse.trace.name", name)
        if user_id is not None:
            s.set_attribute("user.id", user_id)
        if session_id is not None:
            s.set_attribute("session.id", session_id)
        if tags:
            s.set_attribute("pilothouse.trace.tags", [str(t) for t in tags])
        if metadata:
            s.set_attribute("pilothouse.trace.metadata", to_json_text(dict(metadata)))


def current_observation() -> ObservationSpan | None:
    """The observation the caller runs inside, or None."""
    span = otel_trace.get_current_span()
    return ObservationSpan(span) if span.get_span_context().is_valid else None


def update_current_trace(**facts: Any) -> None:
    """Set ``user_id``, ``session_id``, ``tags``, ``metadata`` or ``name`` of the current trace."""
    obs = current_observation()
    if obs is None:
        raise RuntimeError("update_current_trace() must run inside a span or @observe function")
    obs.update_trace(**facts)


def _kind_attr(kind: str | ObservationKind) -> str:
    try:
        return ObservationKind(kind).value
    except ValueError:
        raise ValueError(
            f"unknown kind {kind!r} (known: {', '.join(k.value for k in ObservationKind)})"
        ) from None


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: str | ObservationKind = ObservationKind.SPAN,
    input: Any = None,
    metadata: Mapping[str, Any] | None = None,
) -> Iterator[ObservationSpan]:
    """A block of code as an observation: ``with pilothouse.span("retrieve", kind="retrieval") as s:``.

    An exception marks it as an error (and is re-raised)."""
    attributes = {"pilothouse.observation.kind": _kind_attr(kind)}
    with get_tracer().start_as_current_span(name, attributes=attributes, record_exception=True) as otel_span:
        handle = ObservationSpan(otel_span)
        if input is not None or metadata:
            handle.update(input=input, metadata=metadata)
        yield handle


def _input_reader(fn: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """A function from a call's (args, kwargs) to its arguments by name, defaults included (``self``
    and ``cls`` left out; an argument named like a secret, ``api_key``, ``password``, ``headers``,
    ``token``, as ``<redacted>``). Plain signatures take a fast path; others go through ``inspect``."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return lambda args, kwargs: {"args": args, "kwargs": kwargs}
    params = list(signature.parameters.values())
    names = [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    defaults = {
        p.name: p.default for p in params if p.default is not p.empty and p.name not in ("self", "cls")
    }
    plain = all(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) for p in params)
    secrets = [p.name for p in params if names_a_secret(p.name)]

    def read(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if plain and len(args) <= len(names):
            values = dict(defaults)
            values.update(zip(names, args, strict=False))
            values.update(kwargs)
        else:
            try:
                bound = signature.bind_partial(*args, **kwargs)
            except TypeError:
                return {"args": args, "kwargs": kwargs}
            bound.apply_defaults()
            values = dict(bound.arguments)
        values.pop("self", None)
        values.pop("cls", None)
        for name in secrets:
            if name in values:
                values[name] = REDACTED
        for name in kwargs if not plain else ():  # **kwargs gathered under one name
            if names_a_secret(name):
                for gathered in values.values():
                    if isinstance(gathered, dict) and name in gathered:
                        gathered[name] = REDACTED
        return values

    return read


def _generator_output(items: list[Any]) -> Any:
    return "".join(items) if items and all(isinstance(i, str) for i in items) else items


@overload
def observe(func: F) -> F: ...


@overload
def observe(
    func: None = None,
    *,
    name: str | None = None,
    kind: str | ObservationKind = ...,
    capture_input: bool = True,
    capture_output: bool = True,
) -> Callable[[F], F]: ...


def observe(
    func: F | None = None,
    *,
    name: str | None = None,
    kind: str | ObservationKind = ObservationKind.SPAN,
    capture_input: bool = True,
    capture_output: bool = True,
) -> F | Callable[[F], F]:
    """Trace every call of a function (sync, async, generator or async generator) as an observation,
    with its arguments as input and its result (or everything it yielded) as output."""
    kind_value = _kind_attr(kind)

    def decorate(fn: F) -> F:
        span_name = name or fn.__qualname__
        read_input = _input_reader(fn)

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> otel_trace.Span:
            attributes = {"pilothouse.observation.kind": kind_value}
            if capture_input:
                attributes["pilothouse.input"] = to_json_text(read_input(args, kwargs))
            return get_tracer().start_span(span_name, attributes=attributes)

        def fail(s: otel_trace.Span, exc: BaseException) -> None:
            s.record_exception(exc)
            s.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))

        def finish(s: otel_trace.Span, result: Any) -> None:
            if capture_output and result is not None:
                s.set_attribute("pilothouse.output", to_json_text(result))
            s.end()

        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                s = start(args, kwargs)
                items: list[Any] = []
                ctx = otel_trace.set_span_in_context(s)
                token = otel_context.attach(ctx)
                try:
                    agen = fn(*args, **kwargs)
                finally:
                    otel_context.detach(token)
                try:
                    while True:
                        token = otel_context.attach(ctx)
                        try:
                            item = await agen.__anext__()
                        except StopAsyncIteration:
                            break
                        finally:
                            otel_context.detach(token)
                        items.append(item)
                        yield item
                except BaseException as exc:
                    fail(s, exc)
                    raise
                finally:
                    finish(s, _generator_output(items) if capture_output else None)

            return cast(F, agen_wrapper)

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                s = start(args, kwargs)
                items: list[Any] = []
                ctx = otel_trace.set_span_in_context(s)
                token = otel_context.attach(ctx)
                try:
                    gen = fn(*args, **kwargs)
                finally:
                    otel_context.detach(token)
                try:
                    while True:
                        token = otel_context.attach(ctx)
                        try:
                            item = next(gen)
                        except StopIteration:
                            break
                        finally:
                            otel_context.detach(token)
                        items.append(item)
                        yield item
                except BaseException as exc:
                    fail(s, exc)
                    raise
                finally:
                    finish(s, _generator_output(items) if capture_output else None)

            return cast(F, gen_wrapper)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                s = start(args, kwargs)
                token = otel_context.attach(otel_trace.set_span_in_context(s))
                result = None
                try:
                    result = await fn(*args, **kwargs)
                    return result
                except BaseException as exc:
                    fail(s, exc)
                    raise
                finally:
                    otel_context.detach(token)
                    finish(s, result)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            s = start(args, kwargs)
            token = otel_context.attach(otel_trace.set_span_in_context(s))
            result = None
            try:
                result = fn(*args, **kwargs)
                return result
            except BaseException as exc:
                fail(s, exc)
                raise
            finally:
                otel_context.detach(token)
                finish(s, result)

        return cast(F, sync_wrapper)

    return decorate(func) if func is not None else decorate

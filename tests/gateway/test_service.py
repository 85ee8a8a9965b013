"""The gateway as a service, in-process and without HTTP: a call's reply, its headers and its span; a
refusal; a stream; a cascade whose judge is a model of the same gateway."""

from __future__ import annotations

from typing import Any

import pytest

from pilothouse.costs.catalogue import PriceCatalogue
from pilothouse.costs.pricing import Pricer
from pilothouse.domain.money import Money
from pilothouse.domain.traces import SpanRecord, Status
from pilothouse.evals.verifier import add_cascades
from pilothouse.gateway import Caller, Gateway, GatewayError, Router, gateway_config

CONFIG = {
    "models": [
        {"name": "cheap", "provider": "sim", "model": "cheap-1", "price": {"input": 0.1, "output": 0.4}},
        {"name": "strong", "provider": "sim", "model": "strong-1", "price": {"input": 2.5, "output": 10.0}},
    ],
    "cascades": [
        {
            "name": "smart",
            "models": ["cheap", "strong"],
            "verifier": {"type": "rubric", "criteria": "Is it correct?"},
            "judge": "strong",
        }
    ],
}


@pytest.fixture
def gateway() -> tuple[Gateway, list[SpanRecord]]:
    config = gateway_config(CONFIG, "test")
    spans: list[SpanRecord] = []
    served = Gateway(Router(config), Pricer(PriceCatalogue.packaged(config.prices)), spans.append)
    add_cascades(served, config.cascades)
    return served, spans


def _ask(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Why is the sky blue?"}], **extra}


async def test_a_call_answers_with_its_cost_and_records_one_span(
    gateway: tuple[Gateway, list[SpanRecord]],
) -> None:
    served, spans = gateway
    caller = Caller("p1", user_id="u1", tags=("t",))
    call = served.start("chat", caller)
    reply = await served.chat(call, _ask("cheap"), caller)
    assert reply.response is not None and reply.response["model"] == "cheap-1"
    assert reply.cost is not None and reply.cost.total > Money.ZERO
    assert reply.headers["x-pilothouse-trace-id"] == call.trace_id
    assert reply.headers["x-pilothouse-cost-usd"] == str(reply.cost.total)  # Money's exact text
    assert not spans  # recorded once the answer is on its way
    assert reply.after is not None
    await reply.after()
    (span,) = spans
    assert (span.project_id, span.trace.user_id, span.trace.tags) == ("p1", "u1", ("t",))
    assert span.observation.model == "cheap-1" and span.observation.cost == reply.cost
    await served.close()


async def test_a_refusal_is_a_gateway_error_recorded_at_no_cost(
    gateway: tuple[Gateway, list[SpanRecord]],
) -> None:
    served, spans = gateway
    caller = Caller("p1")
    call = served.start("chat", caller)
    with pytest.raises(GatewayError) as caught:
        await served.chat(call, _ask("nope"), caller)
    assert (caught.value.status, caught.value.code, caught.value.kind) == (
        404,
        "model_not_found",
        "not_found_error",
    )
    assert caught.value.headers["x-pilothouse-cost-usd"] == "0"
    (span,) = spans
    assert span.observation.status is Status.ERROR and span.observation.cost is not None
    assert span.observation.cost.total == Money.ZERO


async def test_a_stream_is_recorded_when_it_ends_with_its_cost(
    gateway: tuple[Gateway, list[SpanRecord]],
) -> None:
    served, spans = gateway
    caller = Caller("p1")
    call = served.start("chat", caller)
    reply = await served.chat(call, _ask("cheap", stream=True), caller)
    assert reply.chunks is not None and reply.headers["x-pilothouse-cost-usd"] == "pending"
    text = "".join(
        [(c["choices"][0]["delta"].get("content") or "") async for c in reply.chunks if c.get("choices")]
    )
    (span,) = spans
    assert span.observation.output == text and reply.cost is not None
    assert span.observation.cost == reply.cost and span.observation.usage.output > 0


async def test_a_cascade_judge_is_recorded_in_the_request_trace_and_project(
    gateway: tuple[Gateway, list[SpanRecord]],
) -> None:
    served, spans = gateway
    caller = Caller("tenant-a")
    call = served.start("chat", caller)
    reply = await served.chat(call, _ask("smart"), caller)
    assert reply.response is not None
    judged = [s for s in spans if s.observation.name.startswith("eval judge")]
    assert judged, [s.observation.name for s in spans]
    for span in judged:
        assert span.project_id == "tenant-a" and span.observation.trace_id == call.trace_id
        assert span.observation.parent_id == call.span_id and span.observation.model == "strong-1"

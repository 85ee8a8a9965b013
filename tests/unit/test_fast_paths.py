"""The normaliser's Python fast paths against the general code they skip, on the same inputs.

They are not accelerators of ``pilothouse._speedups`` (no second implementation: a branch that skips
work when the input allows), but each promises the general path's result, and that is tested here."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pilothouse.tracing import conventions
from pilothouse.tracing.otlp import RawSpan, decode_protobuf

PAYLOADS = sorted((Path(__file__).parents[1] / "corpus" / "payloads").glob("*/*.pb"))


def corpus_spans() -> list[RawSpan]:
    return [s for p in PAYLOADS if not p.name.endswith(".logs.pb") for s in decode_protobuf(p.read_bytes())]


def test_trace_attributes_cheap_path_gives_the_general_result() -> None:
    """Spans without trace-level slots or resource facts skip ``_more_trace_attributes``."""
    rng = random.Random(2)
    cases: list[tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]] = []
    for raw in corpus_spans():
        slots, groups, _ = conventions._sort_attributes(dict(raw.attributes))
        cases.append((slots, groups, raw.resource))
    ids: list[Any] = [None, "u-1", "", 7, ["a"], {"k": 1}, 1.5]
    for _ in range(300):
        slots = {name: rng.choice(ids) for name in ("user_id", "session_id") if rng.random() < 0.7}
        groups = {"traceloop.association.properties.": {"team": "x"}} if rng.random() < 0.3 else {}
        cases.append((slots, groups, {"service.name": "svc"}))
    cheap = 0
    for slots, groups, resource in cases:
        trace_facts = slots.keys() & conventions._TRACE_SLOTS or resource.keys() & conventions._TRACE_RESOURCE
        if trace_facts:  # the general path only
            continue
        got = conventions._trace_attributes(slots, groups, resource)
        general = conventions._more_trace_attributes(
            slots, resource, dict(got.metadata), slots.get("user_id"), slots.get("session_id")
        )
        assert got == general, slots
        cheap += 1
    assert cheap > 300


def test_message_fast_paths_give_the_general_result() -> None:
    """One role-and-content message, and messages of role and content only, skip ``unflatten``."""
    rng = random.Random(3)
    for role, content in (("message.role", "message.content"), ("role", "content")):
        for count in range(1, 13):
            order = list(range(count))
            rng.shuffle(order)
            flat: dict[str, Any] = {}
            for i in order:
                pair = [(f"{i}.{role}", rng.choice(["user", "assistant", None])), (f"{i}.{content}", f"t{i}")]
                rng.shuffle(pair)
                flat.update(pair)
            general = [conventions._strip_message(m) for m in conventions.unflatten(flat) if m is not None]
            assert conventions._messages(flat) == general, flat

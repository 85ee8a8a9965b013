"""The batch rollups (each call's measures once, every bucket summed at the end by numpy) equal adding
each call to each of its buckets one at a time (``_add_rollup``, the reference), floats included: the
latency sums of a bucket are added in the same order from 0.0."""

from __future__ import annotations

import random

import pytest

from pilothouse.domain.money import Money
from pilothouse.domain.rollups import (
    DIM_GRANULARITIES_S,
    ROLLUP_GRANULARITIES_S,
    RollupSums,
    _add_rollup,
    _dimension_values,
    batch_deltas,
)
from pilothouse.domain.traces import (
    REFUSED_PRICE_VERSION,
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)


def _calls(seed: int, n: int = 400) -> list[SpanRecord]:
    """Model calls and other spans of a few traces over three hours, with users, tags (some repeated),
    keys, prompts, errors, refusals and unpriced calls."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        start = 1_700_000_000 * 10**9 + rng.randrange(3 * 3600 * 10**9)
        status = rng.choice([Status.OK, Status.OK, Status.ERROR])
        cost = rng.choice(
            [
                None,
                Cost(
                    {"input": Money.from_usd(rng.random() / 100)},
                    "v1",
                    saved=Money.from_usd(rng.random() / 1000),
                ),
                Cost({}, REFUSED_PRICE_VERSION),
            ]
        )
        observation = Observation(
            trace_id=f"{rng.randrange(60):032x}",
            id=f"{i:016x}",
            name=rng.choice(["chat", "embed"]),
            start_ns=start,
            end_ns=start + rng.randrange(-(10**6), 10**10),  # some end before they start
            kind=rng.choice([ObservationKind.GENERATION, ObservationKind.SPAN]),
            status=status,
            model=rng.choice([None, "m1", "m2"]),
            request_model=rng.choice([None, "m1"]),
            usage=Usage(
                rng.randrange(50), rng.randrange(50), rng.randrange(5), rng.randrange(3), rng.randrange(4)
            ),
            cost=cost,
            prompt_name=rng.choice([None, "greet"]),
            prompt_version=rng.choice([None, 3]),
            attributes={"gateway.key_id": rng.choice(["k1", "k2"])},
            ttft_ns=rng.choice([None, rng.randrange(5 * 10**9)]),
        )
        facts = TraceAttributes(
            user_id=rng.choice([None, "u1", "u2", "u3"]),
            tags=tuple(rng.sample(["a", "b", "c"], rng.randrange(3))) * rng.randrange(1, 3),
        )
        out.append(SpanRecord(rng.choice(["p", "q"]), observation, facts, metered=rng.random() < 0.5))
    return out


def _one_by_one(
    records: list[SpanRecord],
    stored: dict[tuple[str, str], tuple[str | None, list[str]]],
    duplicates: set[tuple[str, str, str]],
) -> tuple[dict[object, RollupSums], dict[object, RollupSums]]:
    """The rollups by adding each call to each of its buckets (the code before the batch sums)."""
    traces = batch_deltas(records, stored, duplicates).traces  # the merged trace facts (tested elsewhere)
    rollups: dict[object, RollupSums] = {}
    dims: dict[object, RollupSums] = {}
    for record in records:
        o = record.observation
        if (record.project_id, o.trace_id, o.id) in duplicates:
            continue
        if o.kind.is_model_call or not o.usage.is_empty:
            key = (record.project_id, o.trace_id)
            _add_rollup(rollups, record, ROLLUP_GRANULARITIES_S[0])
            for dimension, value in _dimension_values(record, traces[key], stored.get(key)):
                for granularity in DIM_GRANULARITIES_S:
                    _add_rollup(dims, record, granularity, dimension, value)
    return rollups, dims


@pytest.mark.parametrize("seed", range(4))
def test_batch_rollups_equal_adding_calls_one_at_a_time(seed: int) -> None:
    records = _calls(seed)
    stored = {("p", f"{n:032x}"): ("stored-user", ["old-tag"]) for n in range(0, 60, 7)}
    duplicates = {(r.project_id, r.observation.trace_id, r.observation.id) for r in records[::11]}
    deltas = batch_deltas(records, stored, duplicates)
    rollups, dims = _one_by_one(records, stored, duplicates)
    assert deltas.dim_rollups == dims  # every sum, the latency floats and histograms exactly
    finest = {key: sums for key, sums in deltas.rollups.items() if key[0] == ROLLUP_GRANULARITIES_S[0]}
    assert finest == rollups
    assert {key[0] for key in deltas.rollups} == set(ROLLUP_GRANULARITIES_S)
    # the TTFT sketch and the savings: every streamed call once per granularity, every saving exactly
    counted = [
        r for r in records if (r.project_id, r.observation.trace_id, r.observation.id) not in duplicates
    ]
    calls = [r for r in counted if r.observation.kind.is_model_call or not r.observation.usage.is_empty]
    hours = [s for key, s in deltas.rollups.items() if key[0] == 3600]
    assert sum(sum(s.ttft_counts) for s in hours) == sum(r.observation.ttft_ns is not None for r in calls) > 0
    saved = sum((r.observation.cost.saved for r in calls if r.observation.cost), Money.ZERO)
    assert sum((s.saved_usd for s in hours), Money.ZERO) == saved != Money.ZERO
    assert all(not s.ttft_counts for s in deltas.dim_rollups.values())  # the model rollups' only


def test_sums_past_int64_are_exact() -> None:
    """Token counts a client made up, whose sum int64 would not hold, are added as Python integers."""
    records = _calls(7, n=60)
    huge = 2**62
    for record in records[:3]:
        record.observation.kind = ObservationKind.GENERATION
        record.observation.usage = Usage(huge, 1)
    deltas = batch_deltas(records)
    _, dims = _one_by_one(records, {}, set())
    assert deltas.dim_rollups == dims
    total = sum(s.input_tokens for k, s in deltas.dim_rollups.items() if k[0] == 86400 and k[3] == "key")
    assert total == sum(
        r.observation.usage.input
        for r in records
        if r.observation.kind.is_model_call or not r.observation.usage.is_empty
    )
    assert total > 2**63

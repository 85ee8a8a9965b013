"""The online evaluators' rules, pure: definitions checked field by field, filters, and a sample that
every process agrees on."""

from __future__ import annotations

import uuid

import pytest

from pilothouse.quality.online import RuleError, parse_definition, sampled

SCORER = {"type": "contains", "value": "Paris"}


def test_sampling_is_a_stable_share_of_trace_ids() -> None:
    ids = [uuid.UUID(int=n * 7919 + 13).hex for n in range(20_000)]
    picked = [i for i in ids if sampled(i, 0.05)]
    assert 0.04 < len(picked) / len(ids) < 0.06
    assert picked == [i for i in ids if sampled(i, 0.05)]  # the same verdict every time, everywhere
    assert set(picked) <= {i for i in ids if sampled(i, 0.2)}  # a larger sample holds the smaller one
    assert not any(sampled(i, 0.0) for i in ids[:100]) and all(sampled(i, 1.0) for i in ids[:100])


def test_filters_match_what_the_trace_has() -> None:
    d = parse_definition(
        {
            "scorer": SCORER,
            "filters": {
                "name": "chat",
                "tags": ["prod", "eu"],
                "metadata": {"tier": "free", "beta": True},
                "model": ["m1"],
            },
        }
    )
    f = d.filters
    assert f.matches_trace("chat", ("eu", "prod", "x"), {"tier": "free", "beta": True})
    assert not f.matches_trace("chat", ("prod",), {"tier": "free", "beta": True})  # every tag
    assert not f.matches_trace("chat", ("eu", "prod"), {"tier": "paid", "beta": True})
    assert not f.matches_trace("other", ("eu", "prod"), {"tier": "free", "beta": True})
    assert f.matches_spans("m1", set(), set()) and f.matches_spans(None, {"x"}, {"m1"})
    assert not f.matches_spans("m2", {"x"}, {"m3"})
    score = parse_definition(
        {"scorer": SCORER, "filters": {"score": {"name": "thumbs", "max": 0}}}
    ).filters.score
    assert score is not None
    assert score.matches([("thumbs", 0.0, None)]) and not score.matches(
        [("thumbs", 1.0, None), ("x", 0.0, None)]
    )


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "must be a JSON object"),
        ({"scorer": SCORER, "sampling": 1.5}, "'sampling' must be between 0 and 1"),
        ({"scorer": SCORER, "sampling": "all"}, "'sampling' must be a number"),
        ({"scorer": "contains"}, "'scorer' must be a scorer spec"),
        ({"scorer": SCORER, "filters": {"colour": "red"}}, "unknown filter 'colour'"),
        ({"scorer": SCORER, "filters": {"tags": ["x"] * 51}}, "more than 50 values"),
        ({"scorer": SCORER, "filters": {"metadata": {"k": {"deep": 1}}}}, "'filters.metadata.k'"),
        ({"scorer": SCORER, "daily_cost_cap_usd": -1}, "'daily_cost_cap_usd' must be at least 0"),
        ({"scorer": SCORER, "context": "somewhere"}, "'context' must be"),
        ({"scorer": SCORER, "owner": "me"}, "unknown field 'owner'"),
        ({"scorer": SCORER, "review": {"queue": "a b"}}, "'review.queue' must be a queue's name"),
        ({"scorer": SCORER, "review": {"queue": "q", "when": "often"}}, "'review.when' must be one of"),
        ({"scorer": SCORER, "review": {"queue": "q", "when": "disagrees"}}, "'review.with'"),
        ({"scorer": SCORER, "review": {"queue": "q", "with": "other"}}, "'review.with'"),
        ({"scorer": SCORER, "review": {"queue": "q", "band": 0.1}}, "'review.band' goes with"),
        ({"scorer": SCORER, "review": {"queue": "q", "when": "uncertain", "band": 2}}, "'review.band'"),
        ({"scorer": {"type": "json-schema", "schema": "/etc/passwd"}}, "may not name a file on the server"),
        ({"scorer": {"type": "hallucination", "model": "../weights"}}, "may not name a file on the server"),
    ],
)
def test_bad_definitions_name_the_field(document: object, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_definition(document)


def test_the_stored_form_is_canonical() -> None:
    a = parse_definition({"scorer": SCORER, "filters": {"tags": ["b", "a"], "model": "m"}})
    b = parse_definition({"filters": {"model": ["m"], "tags": ["a", "b"]}, "scorer": SCORER, "sampling": 1})
    assert a.document() == b.document()  # saving the same rules again is not a new version


def test_review_rules_say_which_scored_traces_people_see() -> None:
    failed = parse_definition({"scorer": SCORER, "review": {"queue": "triage"}}).review
    assert failed is not None and failed.document() == {"queue": "triage", "when": "failed"}
    assert failed.wants(0.0, False, 0.5, None) == "failed (0.00)"
    assert failed.wants(1.0, True, 0.5, None) is None
    unsure = parse_definition(
        {"scorer": SCORER, "review": {"queue": "triage", "when": "uncertain", "band": 0.2}}
    ).review
    assert unsure is not None and unsure.wants(0.62, True, 0.5, None) is not None
    assert unsure.wants(0.75, True, 0.5, None) is None
    other = {"queue": "triage", "when": "disagrees", "with": "judge"}
    disagrees = parse_definition({"scorer": SCORER, "review": other}).review
    assert disagrees is not None and disagrees.document() == other
    assert disagrees.wants(1.0, True, 0.5, 0.0) == "disagrees with judge (1.00 vs 0.00)"
    assert disagrees.wants(1.0, True, 0.5, 0.9) is None and disagrees.wants(1.0, True, 0.5, None) is None

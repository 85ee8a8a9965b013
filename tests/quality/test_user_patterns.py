"""Regular expressions from users (an online evaluator's ``regex`` scorer, a guard's patterns) that
backtrack catastrophically: each runs under a time limit and the server goes on serving. Before, one
such pattern froze every thread of the process (``re`` holds the interpreter's lock) for hours."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from pilothouse.config import parse_config
from pilothouse.domain.guards import GuardContext
from pilothouse.domain.keys import Scope
from pilothouse.evals.patterns import PatternError, PatternTimeout, compile_pattern, find_spans, search
from pilothouse.evals.scoring import Sample, ScorerConfigError, ScoreResult, build_scorer
from pilothouse.quality.guardrails import build_guardrails
from pilothouse.quality.online import OnlineEvaluators, OnlineWorker, WorkerOptions
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.quality.online_traces import store_trace
from tests.server.inprocess import InProcessServer

# (a|aa)+$ on 40 'a' and a '!': about 10^8 steps of backtracking, hours for re
EVIL, VICTIM = r"(a|aa)+$", "a" * 40 + "!"


def test_a_backtracking_pattern_stops_at_its_time_limit() -> None:
    pattern = compile_pattern(EVIL)
    with pytest.raises(PatternTimeout):
        search(pattern, VICTIM, 0.05)
    with pytest.raises(PatternTimeout):
        find_spans([compile_pattern("b"), pattern], VICTIM, 0.05)
    assert search(compile_pattern(r"\d+", 0), "order 66", 1.0).group() == "66"
    assert find_spans([compile_pattern("a+")], "xaax a", 1.0) == [(1, 3), (5, 6)]


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("(?:a{1000}){1000}", "expand"),  # regex would unroll it: minutes and gigabytes to compile
        ("x{4294967294}", "expand"),
        ("(unclosed", "not a regular expression"),
        ("abc{e<=1}", "literal '{'"),  # fuzzy matching in the regex package, literal text in re
        ("[[:alpha:]]+", "literal '[:'"),
    ],
)
def test_patterns_that_cost_too_much_or_read_differently_are_refused(source: str, why: str) -> None:
    with pytest.raises(PatternError, match=re.escape(why)):
        compile_pattern(source)


def test_a_guard_whose_pattern_runs_past_its_limit_fails_closed() -> None:
    guard = {"type": "regex", "patterns": [EVIL], "action": "redact", "label": "X"}
    config = parse_config({"models": [{"name": "m", "provider": "sim"}], "guardrails": [{"output": [guard]}]})
    guardrails = build_guardrails(config.guardrails)
    route = None if guardrails is None else guardrails.for_model("m")
    assert route is not None
    (use,) = route.output
    result = asyncio.run(use.check(VICTIM, GuardContext({}, None)))
    assert not result.passed and "time limit" in (result.reason or "")
    assert use.locate is not None and [(f.start, f.end) for f in use.locate(VICTIM)] == [(0, len(VICTIM))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[InProcessServer, str]]:
    home = tmp_path_factory.mktemp("patterns")
    echo = {"provider": "sim", "model": "echo-1", "options": {"echo": True}}
    config = {
        "models": [{**echo, "name": "guarded"}, {**echo, "name": "redacted"}],
        "guardrails": [
            {"models": ["guarded"], "input": [{"type": "regex", "patterns": [EVIL]}]},
            {
                "models": ["redacted"],
                "output": [{"type": "regex", "patterns": [EVIL], "action": "redact", "label": "X"}],
            },
        ],
    }
    (home / "pilothouse.yaml").write_text(yaml.safe_dump(config))
    with InProcessServer(
        sqlite_at_head(home / "p.db"), home=home, config=home / "pilothouse.yaml"
    ) as running:
        yield running, running.create_key("patterns", scopes=frozenset({Scope.GATEWAY, Scope.ADMIN}))


def test_the_gateway_refuses_a_text_its_guard_cannot_finish_and_keeps_serving(
    server: tuple[InProcessServer, str],
) -> None:
    running, key = server
    headers = {"Authorization": f"Bearer {key}"}
    answer = httpx.post(
        f"{running.base_url}/v1/chat/completions",
        json={"model": "guarded", "messages": [{"role": "user", "content": VICTIM}]},
        headers=headers,
        timeout=60,
    )
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["code"] == "guardrail_blocked" and "time limit" in error["message"]
    fine = httpx.post(
        f"{running.base_url}/v1/chat/completions",
        json={"model": "guarded", "messages": [{"role": "user", "content": "bbb"}]},
        headers=headers,
        timeout=60,
    )
    assert fine.status_code == 200


def test_an_evaluator_pattern_that_expands_too_far_is_a_400(server: tuple[InProcessServer, str]) -> None:
    running, key = server
    answer = httpx.post(
        f"{running.base_url}/api/evaluators",
        json={"name": "huge", "scorer": {"type": "regex", "value": "(?:a{1000}){1000}"}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert answer.status_code == 400 and "expand" in answer.json()["error"]["message"]


@pytest.mark.slow
def test_an_online_regex_scorer_that_backtracks_leaves_the_item_unmeasured(tmp_path: Path) -> None:
    store = SqlStore.from_url(sqlite_at_head(tmp_path / "online.db"))
    try:
        service = OnlineEvaluators(store)
        service.create("default", "evil", {"scorer": {"type": "regex", "value": EVIL}})
        trace = store_trace(store, output=VICTIM)
        fine = store_trace(store, output="aaaa")
        worker = OnlineWorker(
            service, lambda _name: None, WorkerOptions(poll_s=0.0, settle_s=0.0, retry_base_s=0.0)
        )
        for _ in range(50):
            asyncio.run(worker.run_once())
            items = {
                i.trace_id: i for t in (trace, fine) for i in service.online.items_for_trace("default", t)
            }
            if all(i.state != "pending" for i in items.values()) and len(items) == 2:
                break
        assert items[trace].state == "unmeasured" and "ran past" in (items[trace].reason or "")
        assert items[trace].attempts == 1  # the same output would time out again: no retry
        assert items[fine].state == "scored" and items[fine].value == 1.0
    finally:
        store.close()


def score_json(schema: dict[str, object], output: str) -> ScoreResult:
    scorer = build_scorer({"type": "json-schema", "schema": schema}, None)
    return asyncio.run(scorer.score(Sample(item_id="x", output=output)))


def test_json_schema_patterns_run_with_a_time_limit_too() -> None:
    # the json-schema scorer's schema comes from any project's admin as well; jsonschema used re
    victim = orjson.dumps(VICTIM).decode()
    by_value = score_json({"type": "string", "pattern": EVIL}, victim)
    assert by_value.value is None and "ran past" in (by_value.error or "")
    by_key = {"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False}
    result = score_json(by_key, orjson.dumps({VICTIM: 1}).decode())
    assert result.value is None and "ran past" in (result.error or "")
    # ordinary patterns keep their meaning
    assert score_json({"type": "string", "pattern": "^a+!$"}, victim).value == 1.0
    assert score_json(by_key | {"patternProperties": {"^x": {}}}, '{"x1": 1}').value == 1.0
    assert score_json(by_key | {"patternProperties": {"^x": {}}}, '{"y": 1}').value == 0.0
    with pytest.raises(ScorerConfigError, match="unevaluatedProperties"):
        build_scorer({"type": "json-schema", "schema": {**by_key, "unevaluatedProperties": False}}, None)
    with pytest.raises(ScorerConfigError, match="expand"):
        build_scorer({"type": "json-schema", "schema": {"pattern": "(?:a{1000}){1000}"}}, None)


def test_a_json_schema_guard_whose_pattern_runs_past_its_limit_fails() -> None:
    guard = {"type": "json_schema", "schema": {"type": "string", "pattern": EVIL}, "action": "block"}
    config = parse_config({"models": [{"name": "m", "provider": "sim"}], "guardrails": [{"output": [guard]}]})
    guardrails = build_guardrails(config.guardrails)
    route = None if guardrails is None else guardrails.for_model("m")
    assert route is not None
    result = asyncio.run(route.output[0].check(orjson.dumps(VICTIM).decode(), GuardContext({}, None)))
    assert not result.passed and "ran past" in (result.reason or "")


def test_a_streamed_redaction_past_its_limit_redacts_the_whole_piece(
    server: tuple[InProcessServer, str],
) -> None:
    running, key = server
    body = {"model": "redacted", "stream": True, "messages": [{"role": "user", "content": VICTIM}]}
    text = ""
    with httpx.stream(
        "POST",
        f"{running.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    ) as answer:
        assert answer.status_code == 200
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                for choice in orjson.loads(line[6:])["choices"]:
                    text += choice["delta"].get("content") or ""
    assert "a" not in text and "[X]" in text  # failed closed: nothing of the answer got out


def test_many_texts_in_one_request_share_one_time_budget(server: tuple[InProcessServer, str]) -> None:
    # 300 texts that each backtrack: 300 time limits one after another held the request for minutes
    running, key = server
    parts = [{"type": "text", "text": VICTIM} for _ in range(300)]
    answer = httpx.post(
        f"{running.base_url}/v1/chat/completions",
        json={"model": "guarded", "messages": [{"role": "user", "content": parts}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert answer.status_code == 400 and "time limit" in answer.json()["error"]["message"]


def test_unique_items_takes_linear_time_and_keeps_json_equality() -> None:
    # jsonschema's own uniqueItems compared objects pairwise: 2,000 took 8 s, a 1 MB answer hours
    unique = {"type": "array", "uniqueItems": True}
    many = orjson.dumps([{"a": i} for i in range(50_000)]).decode()
    assert score_json(unique, many).value == 1.0
    for same in ([1, 1.0], [{"a": 1, "b": 2}, {"b": 2, "a": 1}], [[1], [1.0]], ["x", "x"]):
        assert score_json(unique, orjson.dumps(same).decode()).value == 0.0, same
    for distinct in ([1, True], [0, False], [[1, 2], [2, 1]], [{"a": 1}, {"a": 1, "b": 2}]):
        assert score_json(unique, orjson.dumps(distinct).decode()).value == 1.0, distinct

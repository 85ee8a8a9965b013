"""One Pilothouse server for the UI tests (the app of ``pilothouse serve``, served in this process on
loopback), seeded through the gateway, OTLP, the query API, the CLI and the eval store; and a headless
Debian chromium driven by Playwright."""

from __future__ import annotations

import os
import random
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import EvalResult, RunStatus, ScoreRecord, SummaryBuilder
from pilothouse.domain.money import Money
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from tests.evals.stored import JUDGED_SPEC, store_run
from tests.server.inprocess import InProcessServer, cli_in_process
from tests.spans import export_request, llm_attributes, new_span_id, new_trace_id, otlp_span

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# `make screenshots` refreshes the pictures in docs/; an ordinary run leaves the working tree alone.
SCREENSHOTS = Path(
    os.environ.get("PILOTHOUSE_SCREENSHOTS") or tempfile.gettempdir() + "/pilothouse-screenshots"
)
SESSION_SECRET = "ui-tests-session-secret-0123456789abcdef"
ADMIN_SECRET = "ph-admin-secret-for-ui-tests-0123456789"
ARGUMENTS = '{"city": "Paris", "unit": "C"}'


@dataclass
class Seeded:
    """What the seeded server holds, for tests to look for."""

    server: InProcessServer
    database_url: str
    admin_key: str  # a project key with the admin and read scopes
    read_key: str  # read only
    ingest_key: str  # no read scope: cannot log in
    other_key: str  # admin key of another project
    tool_trace: str  # an OTLP trace: agent -> LLM with a tool call -> tool -> LLM
    other_trace: str  # a trace of the other project
    session_id: str
    runs: dict[str, str] = field(default_factory=dict)  # name -> run id
    other_run: str = ""
    dataset: str = "capitals"

    @property
    def base_url(self) -> str:
        return self.server.base_url


def _key(url: str, name: str, scopes: str, project: str = "default") -> str:
    done = cli_in_process(
        "keys", "create", "--name", name, "--scopes", scopes, "--project", project, "--database-url", url
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _chat(http: httpx.Client, key: str, model: str, text: str, user: str, **extra: Any) -> None:
    headers = {"Authorization": f"Bearer {key}", "x-pilothouse-user": user, "x-pilothouse-tags": "ui-test"}
    body = {
        "model": model,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
    }
    body.update(extra)
    if body.get("stream"):
        with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            assert response.status_code == 200, response.read()
            for _ in response.iter_lines():
                pass
    else:
        response = http.post("/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200, response.text


def _otlp(http: httpx.Client, key: str, spans: list[Any]) -> None:
    response = http.post(
        "/v1/traces",
        content=export_request(spans).SerializeToString(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"},
    )
    assert response.status_code == 200, response.text


def _tool_trace(http: httpx.Client, key: str, session: str, turn: int, start_ns: int) -> str:
    trace_id, root = new_trace_id(), new_span_id()
    person = {"user.id": "alice", "session.id": session, "tag.tags": ["agent", "ui-test"]}
    question = ["What's the weather in Paris?", "And in Oslo?", "Thanks! Pack an umbrella?"][turn]
    first = {
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "You are a travel assistant. Use tools.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": question,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": ARGUMENTS,
        "llm.invocation_parameters": '{"temperature": 0.2, "max_tokens": 256}',
    }
    second = {
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": question,
        "llm.input_messages.1.message.role": "tool",
        "llm.input_messages.1.message.content": '{"temp_c": 14, "sky": "rain"}',
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": f"Turn {turn + 1}: 14 °C and rain, bring an umbrella.",
    }
    spans = [
        otlp_span(
            "travel-agent",
            {
                "openinference.span.kind": "AGENT",
                "input.value": question,
                "output.value": "14 °C and rain",
                **person,
            },
            trace_id=trace_id,
            span_id=root,
            start_ns=start_ns,
            duration_ms=900,
        ),
        otlp_span(
            "plan",
            {**llm_attributes("gpt-4o-mini", 120, 30), **first, **person},
            trace_id=trace_id,
            parent_id=root,
            start_ns=start_ns + 10_000_000,
            duration_ms=300,
        ),
        otlp_span(
            "get_weather",
            {
                "openinference.span.kind": "TOOL",
                "tool.name": "get_weather",
                "input.value": '{"city": "Paris"}',
                "output.value": '{"temp_c": 14, "sky": "rain"}',
                **person,
            },
            trace_id=trace_id,
            parent_id=root,
            start_ns=start_ns + 320_000_000,
            duration_ms=150,
        ),
        otlp_span(
            "answer",
            {**llm_attributes("gpt-4o-mini", 160, 25), **second, **person},
            trace_id=trace_id,
            parent_id=root,
            start_ns=start_ns + 480_000_000,
            duration_ms=400,
        ),
    ]
    _otlp(http, key, spans)
    return trace_id.hex()


def _history(http: httpx.Client, key: str, now_ns: int, count: int = 160) -> None:
    """Traces of the last day (as an instrumented app would have sent them), so that the charts have
    a shape: two models, a prompt with two versions, some errors, a slower evening."""
    rng = random.Random(7)
    spans = []
    for i in range(count):
        start = now_ns - int((i + 0.5) / count * 86_400e9) - rng.randrange(0, 300_000_000_000)
        hour = (start // 3_600_000_000_000) % 24
        trace_id, root = new_trace_id(), new_span_id()
        model = "gpt-4o" if i % 3 else "llama-3.1-8b"
        slow = 2.5 if 17 <= hour <= 21 else 1.0
        person = {"user.id": f"user-{rng.randrange(8)}", "tag.tags": ["history"]}
        llm = llm_attributes(model, rng.randrange(200, 1500), rng.randrange(20, 300), **person)
        llm["pilothouse.prompt.name"] = "support-answer"
        llm["pilothouse.prompt.version"] = "2" if i < count // 2 else "1"
        duration = rng.lognormvariate(6.2, 0.5) * slow
        spans.append(
            otlp_span(
                "support-bot",
                {"input.value": "help", **person},
                trace_id=trace_id,
                span_id=root,
                start_ns=start,
                duration_ms=duration + 20,
            )
        )
        spans.append(
            otlp_span(
                "answer",
                llm,
                trace_id=trace_id,
                parent_id=root,
                start_ns=start + 5_000_000,
                duration_ms=duration,
                error=rng.random() < 0.04,
            )
        )
    _otlp(http, key, spans)


def _seed_evals(url: str) -> tuple[dict[str, str], str]:
    store = SqlStore.from_url(url)
    evals = EvalStore(store)
    runs: dict[str, str] = {}
    # two runs graded by a judge nobody calibrated (older than the capitals runs the pages show first)
    for name, quality in (("judged-baseline", [1.0] * 40), ("judged-candidate", [1.0] * 28 + [0.0] * 12)):
        scores = {"contains": [1.0] * 40, "quality": quality}
        runs[name] = store_run(evals, scores, spec=JUDGED_SPEC, dataset="explanations", name=name).id
    capitals = [
        ("France", "Paris"),
        ("Norway", "Oslo"),
        ("Japan", "Tokyo"),
        ("Peru", "Lima"),
        ("Kenya", "Nairobi"),
        ("Chile", "Santiago"),
        ("Egypt", "Cairo"),
        ("Spain", "Madrid"),
        ("Italy", "Rome"),
        ("India", "New Delhi"),
        ("Ghana", "Accra"),
        ("Cuba", "Havana"),
    ] * 3
    items = [
        DatasetItem(id=f"q{i:02d}", input={"country": c}, expected=a) for i, (c, a) in enumerate(capitals)
    ]
    version, _ = evals.import_items(
        "default", "capitals", items, source="tests/ui", description="Capital cities"
    )
    for name, wrong in (("baseline", {3, 7}), ("candidate", {3, 7, 11, 15, 19, 23, 27, 31})):
        run = evals.create_run(
            "default",
            name=name,
            spec={"dataset": "capitals"},
            dataset="capitals",
            dataset_version_id=version.id,
            dataset_version=version.version,
            target=f"model {name}-model",
            epochs=1,
            items_total=len(items),
            scorers=["exact_match", "similarity"],
        )
        results = []
        for position, item in enumerate(items, 1):
            bad = position in wrong
            answer = "I am not sure." if bad else str(item.expected)
            results.append(
                EvalResult(
                    run_id=run.id,
                    item_id=item.id,
                    epoch=1,
                    position=position,
                    output=answer,
                    latency_ms=120.0 + position,
                    input_tokens=20,
                    output_tokens=5,
                    cost_usd=Money.from_usd("0.00002"),
                    scores=(
                        ScoreRecord("exact_match", 0.0 if bad else 1.0, not bad),
                        ScoreRecord("similarity", 0.2 if bad else 0.9 + (position % 5) / 100, not bad),
                    ),
                )
            )
        evals.write_results(results)
        builder = SummaryBuilder({"exact_match": 1.0, "similarity": 1.0})
        builder.add_all(results)
        evals.set_run_status(run.id, RunStatus.COMPLETED, builder.summary())
        runs[name] = run.id
    other = evals.create_run(
        "other",
        name="secret-run",
        spec={},
        dataset=None,
        dataset_version_id=None,
        dataset_version=None,
        target="model x",
        epochs=1,
        items_total=0,
        scorers=["exact_match"],
    )
    store.close()
    return runs, other.id


def _wait_for_traces(http: httpx.Client, key: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        data = http.get(
            "/api/traces", params={"limit": 500}, headers={"Authorization": f"Bearer {key}"}
        ).json()
        if len(data["data"]) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"only {len(data['data'])} of {count} traces were stored")


@pytest.fixture(scope="package")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    home = tmp_path_factory.mktemp("ui")
    url = f"sqlite:///{home / 'ui.db'}"
    config = home / "pilothouse.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {
                        "name": "gpt-4o-mini",
                        "provider": "sim",
                        "model": "gpt-4o-mini",
                        "options": {"output_tokens": 9, "cached_fraction": 0.25},
                    },
                    {
                        "name": "claude-haiku",
                        "provider": "sim",
                        "model": "claude-3-5-haiku-20241022",
                        "options": {"output_tokens": 14, "latency_ms": 15, "tokens_per_s": 2000},
                    },
                    {
                        "name": "flaky",
                        "provider": "sim",
                        "model": "sim-flaky",
                        "options": {"error_rate": 1.0},
                    },
                ],
                "fallbacks": {"flaky": ["gpt-4o-mini"]},
                "router": {"retries": 0, "backoff_s": 0.01, "max_backoff_s": 0.05, "breaker_failures": 3},
            }
        )
    )
    admin = _key(url, "ui-admin", "admin,read,gateway,ingest")
    read = _key(url, "ui-reader", "read")
    ingest = _key(url, "ci-ingest", "ingest,gateway")
    other = _key(url, "other-admin", "admin,read,gateway,ingest", project="other")
    server = InProcessServer(
        url,
        home=home,
        config=config,
        env={"PILOTHOUSE_SESSION_SECRET": SESSION_SECRET, "PILOTHOUSE_ADMIN_KEY": ADMIN_SECRET},
    )
    try:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            questions = [
                "Capital of France?",
                "Explain tides in one line.",
                "Haiku about the sea.",
                "What is 2+2?",
                "Translate 'hello' to Spanish.",
            ]
            for i in range(12):
                user = ("alice", "bob", "carol")[i % 3]
                model = ("gpt-4o-mini", "claude-haiku")[i % 2]
                extra = {"stream": True, "stream_options": {"include_usage": True}} if i % 3 == 0 else {}
                _chat(http, admin, model, questions[i % len(questions)], user, **extra)
            for _ in range(3):  # every attempt fails over to gpt-4o-mini; the breaker opens
                _chat(http, admin, "flaky", "Are you there?", "dave")
            now = time.time_ns()
            session = "chat-42"
            tool_traces = [
                _tool_trace(http, admin, session, turn, now - (3 - turn) * 60_000_000_000)
                for turn in range(3)
            ]
            _history(http, admin, now)
            other_trace = new_trace_id()
            _otlp(
                http,
                other,
                [otlp_span("other-secret", llm_attributes("gpt-4o", 10, 5), trace_id=other_trace)],
            )
            _wait_for_traces(http, admin, 18 + 160)
            response = http.post(
                "/api/scores",
                json={"trace_id": tool_traces[-1], "name": "helpful", "value": 1, "comment": "good answer"},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert response.status_code == 201, response.text
        runs, other_run = _seed_evals(url)
        yield Seeded(
            server=server,
            database_url=url,
            admin_key=admin,
            read_key=read,
            ingest_key=ingest,
            other_key=other,
            tool_trace=tool_traces[-1],
            other_trace=other_trace.hex(),
            session_id=session,
            runs=runs,
            other_run=other_run,
        )
    finally:
        server.stop()


def login(client: httpx.Client, key: str, project: str | None = None, next_path: str = "/") -> httpx.Response:
    """Log ``client`` in through the login form; returns the answer to the POST."""
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token, page.text
    data = {"key": key, "login_token": token.group(1), "next": next_path}
    if project is not None:
        data["project"] = project
    return client.post("/login", data=data)


def csrf_of(html: str) -> str:
    """The CSRF token in a page's forms."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, through Playwright (skipped outside CI when it is missing)."""
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) for the UI tests"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            instance.close()

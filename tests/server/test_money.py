"""Money as users see it: one call's cost reads the same digits in the ``x-pilothouse-cost-usd`` header,
the API and ``--json`` (the exact decimal), and the same text in the CLI and the web UI (the one format
for people); sums carry no float noise; a budget is full, and alerts 100%, at exactly its limit.

Each test failed before costs were :class:`~pilothouse.domain.money.Money`: the header had ten fixed
decimals, the API exponents, the CLI six decimals and the UI three significant digits; report and
budget sums were floats (0.1 + 0.2 = 0.30000000000000004); ten $0.10 calls were 0.9999999999999999 of
a $1.00 budget, which never reached 100%.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pilothouse.cli import cli
from pilothouse.domain.budgets import BudgetPeriod, BudgetScope
from pilothouse.domain.money import Money
from pilothouse.store.costs import CostStore
from tests.server.conftest import Served, serve

MODELS = [
    # 16 tokens at $0.3086419753 per 1M: $0.0000049382716048, $0.000004938272 to the pico-dollar
    {
        "name": "fine",
        "provider": "sim",
        "model": "fine-1",
        "options": {"output_tokens": 16, "latency_ms": 0},
        "price": {"input": 0, "output": 0.3086419753},
    },
    # $0.01 a token: a dime for 10 tokens, twenty cents for 20 (and each request's worst case, at
    # max_tokens of the same)
    {
        "name": "dime",
        "provider": "sim",
        "model": "dime-1",
        "options": {"output_tokens": 10, "latency_ms": 0},
        "price": {"input": 0, "output": 10_000},
    },
    {
        "name": "twenty",
        "provider": "sim",
        "model": "twenty-1",
        "options": {"output_tokens": 20, "latency_ms": 0},
        "price": {"input": 0, "output": 10_000},
    },
]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Served]:
    config = tmp_path / "money.yaml"
    config.write_text(yaml.safe_dump({"models": MODELS}))
    yield from serve(tmp_path, config=config)


def _budget(app: Served, limit: str, **options: Any) -> None:
    """A project budget for the day, which the running gateway enforces from the next request."""
    CostStore(app.store).create_budget(
        "p1", BudgetScope.PROJECT, "", BudgetPeriod.DAY, Money.from_usd(limit), **options
    )
    app.client.app.state.pilothouse.budgets.invalidate()  # type: ignore[attr-defined]


def _numbers(text: str) -> Any:
    """JSON with every number kept as the text it was written as."""
    return json.loads(text, parse_float=str, parse_int=str)


def _call(app: Served, model: str, max_tokens: int) -> Any:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    return app.client.post("/v1/chat/completions", json=body, headers=app.auth)


def _cli(app: Served, *args: str) -> str:
    url = app.store.engine.url.render_as_string(hide_password=False)
    done = CliRunner().invoke(cli, [*args, "--database-url", url])
    assert done.exit_code == 0, done.output
    return done.output


def _ui(app: Served, path: str) -> str:
    """A web UI page, logged in with the app's key."""
    form = app.client.get("/login").text
    token = re.search(r'name="login_token" value="([^"]+)"', form)
    assert token is not None
    login = {"login_token": token.group(1), "key": app.key, "next": "/", "project": "p1"}
    assert app.client.post("/login", data=login, follow_redirects=False).status_code == 303
    page = app.client.get(path)
    assert page.status_code == 200, page.text
    return page.text


def test_one_call_cost_reads_the_same_in_the_header_the_api_the_cli_and_the_ui(app: Served) -> None:
    reply = _call(app, "fine", 16)
    assert reply.status_code == 200, reply.text
    header = reply.headers["x-pilothouse-cost-usd"]
    assert header == "0.000004938272"  # exact to the pico-dollar (it was "0.0000049383")
    trace_id = reply.headers["x-pilothouse-trace-id"]
    app.drain()

    detail = _numbers(app.client.get(f"/api/traces/{trace_id}", headers=app.auth).text)
    listed = _numbers(app.client.get("/api/traces", headers=app.auth).text)["data"][0]
    shown = _numbers(_cli(app, "traces", "show", trace_id, "--project", "p1", "--json"))
    listed_cli = _numbers(_cli(app, "traces", "list", "--project", "p1", "--json").splitlines()[0])
    (call,) = detail["observations"]
    assert call["cost"]["total"] == header and call["cost"]["items"]["output"] == header  # not 4.938272e-06
    assert detail["cost_usd"] == listed["cost_usd"] == shown["cost_usd"] == listed_cli["cost_usd"] == header

    # people read the one format everywhere: three significant digits under a dollar
    person = Money.from_usd(header).display()
    assert person == "$0.00000494"
    text = _cli(app, "traces", "show", trace_id, "--project", "p1")
    assert f"ms  {person}" in text.splitlines()[0] and f"out=16  {person}" in text  # was "$0.000005"
    page = _ui(app, f"/traces/{trace_id}")
    assert page.count(person) >= 3  # the trace's cost, the call's, and its output line item


def test_sums_of_costs_have_no_float_noise(app: Served) -> None:
    _budget(app, "5")
    assert _call(app, "dime", 10).headers["x-pilothouse-cost-usd"] == "0.1"
    assert _call(app, "twenty", 20).headers["x-pilothouse-cost-usd"] == "0.2"
    app.drain()

    (budget,) = _numbers(app.client.get("/api/budgets", headers=app.auth).text)["data"]
    assert budget["spent_usd"] == "0.3"  # 0.1 + 0.2 (was 0.30000000000000004)
    assert budget["limit_usd"] == "5" and budget["reserved_usd"] == "0"
    report = _numbers(app.client.get("/api/costs", params={"by": "project"}, headers=app.auth).text)
    (row,) = report["data"]
    assert row["spend_usd"] == "0.3" and row["cost_per_request_usd"] == "0.15"
    csv = _cli(app, "costs", "report", "--by", "project", "--since", "1h", "--csv").splitlines()
    assert csv[1].startswith("p1,2,0,0.3,0.15,")
    table = _cli(app, "costs", "report", "--by", "project", "--since", "1h")
    assert "$0.300" in table and "total spend $0.300 over 1 groups" in table


def test_a_budget_is_full_and_alerts_100_percent_at_exactly_its_limit(
    app: Served, caplog: pytest.LogCaptureFixture
) -> None:
    _budget(app, "1.00", alert_thresholds=(0.5, 1.0))
    with caplog.at_level(logging.WARNING, logger="pilothouse.budgets"):
        codes = [_call(app, "dime", 10).status_code for _ in range(11)]
    assert codes == [200] * 10 + [429]  # ten dimes fill $1.00; the eleventh cannot fit
    alerts = [r.getMessage() for r in caplog.records if "budget alert" in r.getMessage()]
    assert len(alerts) == 2 and "reached 50%" in alerts[0]
    assert "reached 100% ($1.00 spent)" in alerts[1]  # floats had 0.9999999999999999: no 100% alert
    (budget,) = _numbers(app.client.get("/api/budgets", headers=app.auth).text)["data"]
    assert budget["spent_usd"] == "1" and budget["reserved_usd"] == "0"

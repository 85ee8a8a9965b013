"""``pilothouse prices`` and ``pilothouse costs recompute`` on a real database, as a user runs them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from pilothouse.costs.catalogue import PriceCatalogue
from pilothouse.costs.pricing import GATEWAY_CACHE, Pricer
from pilothouse.domain.money import Money
from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    SpanRecord,
    Status,
    TraceAttributes,
    Usage,
)
from pilothouse.gateway.config import load_gateway_config
from pilothouse.gateway.recording import CallSpan
from pilothouse.store.sql import SqlStore
from tests.server.process import cli

pytestmark = pytest.mark.slow  # the commands as a user runs them


def _config(tmp_path: Path, name: str, input_price: float, output_price: float) -> Path:
    path = tmp_path / name
    model = {
        "name": "m",
        "provider": "sim",
        "model": "m1",
        "price": {"input": input_price, "output": output_price},
    }
    path.write_text(yaml.safe_dump({"models": [model]}))
    return path


def _seed(url: str, config: Path) -> list[str]:
    """Three calls of m1 (1,000 in / 500 out each), priced with ``config``, and one of gpt-4o."""
    pricer = Pricer(PriceCatalogue.packaged(load_gateway_config(config).prices))
    store = SqlStore.from_url(url)
    now = time.time_ns()
    records = []
    for i, (provider, model) in enumerate([("sim", "m1")] * 3 + [("openai", "gpt-4o")]):
        o = Observation(
            f"{i + 1:032x}", f"{i + 1:016x}", "chat", now - 10**9, now,
            kind=ObservationKind.GENERATION, provider=provider, model=model,
            usage=Usage(input=1000, output=500), ttft_ns=250_000_000,
        )  # fmt: skip
        pricer.price_observation(o)
        records.append(SpanRecord("default", o, TraceAttributes(user_id="u")))
    store.write_spans(records)
    store.close()
    return [r.observation.trace_id for r in records]


def test_prices_list_show_and_check(tmp_path: Path) -> None:
    listed = cli("prices", "list", "--provider", "anthropic")
    assert listed.returncode == 0 and "claude-haiku-4-5" in listed.stdout
    assert all(line.startswith(("PROVIDER", "anthropic")) for line in listed.stdout.splitlines())
    shown = cli("prices", "show", "gpt-4o")
    # the price change of 2024: both rows, the current one marked
    assert "openai/gpt-4o@2024-05-13" in shown.stdout and "* openai/gpt-4o@2024-10-02" in shown.stdout
    missing = cli("prices", "show", "no-such-model")
    assert missing.returncode == 1 and missing.stderr.startswith("Error: no price for 'no-such-model'")

    url = f"sqlite:///{tmp_path / 'p.db'}"
    config = _config(tmp_path, "a.yaml", 1.0, 2.0)
    _seed(url, config)
    # A gateway request refused before any upstream was asked (a typo in the model name) costs $0
    # and names no model to price
    refused = CallSpan("default", "chat", {"model": "gpt-4o-mnii"}, None, None, f"{9:032x}", None)
    store = SqlStore.from_url(url)
    store.write_spans([refused.record(status=Status.ERROR, http_status=404)])
    store.close()
    unpriced = cli("prices", "check", "--since", "1h", "--database-url", url)
    assert unpriced.returncode == 1 and "m1" in unpriced.stdout and "gpt-4o" not in unpriced.stdout
    priced = cli("prices", "check", "--since", "1h", "--config", str(config), "--database-url", url)
    assert priced.returncode == 0 and "every traced model has a price (4 calls checked)" in priced.stdout
    bad = cli("prices", "check", "--since", "yesterday-ish", "--database-url", url)
    assert bad.returncode == 2 and bad.stderr.startswith("Error:")


def usd(text: str) -> Money:
    return Money.from_usd(text)


def test_recompute_reprices_calls_traces_and_rollups(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    old = _config(tmp_path, "old.yaml", 1.0, 2.0)  # $0.001 + $0.001 = $0.002 a call
    new = _config(tmp_path, "new.yaml", 2.0, 4.0)  # corrected: $0.004 a call
    trace_ids = _seed(url, old)

    dry = cli("costs", "recompute", "--since", "1h", "--config", str(new), "--dry-run", "--database-url", url)
    assert dry.returncode == 0, dry.stderr
    line = next(line for line in dry.stdout.splitlines() if line.startswith("m1"))
    assert line.split()[1:] == ["3", "$0.00600", "$0.0120", "+$0.00600"]
    assert "4 calls checked, 3 would change" in dry.stderr

    store = SqlStore.from_url(url)
    detail = store.get_trace("default", trace_ids[0])
    assert detail is not None and detail.trace.cost_usd == usd("0.002")  # dry run: unchanged

    done = cli("costs", "recompute", "--since", "1h", "--config", str(new), "--database-url", url)
    assert done.returncode == 0 and "3 changed" in done.stderr
    detail = store.get_trace("default", trace_ids[0])
    assert detail is not None and detail.trace.cost_usd == usd("0.004")
    (call,) = detail.observations
    assert call.cost is not None and call.cost.price_version == "config:m/m1"
    assert call.cost.items == {"input": usd("0.002"), "output": usd("0.002")}
    now_s = time.time_ns() // 10**9
    metrics = {
        m.model: m.sums.cost_usd for m in store.model_metrics("default", now_s - 7200, now_s + 60, 3600)
    }
    assert metrics["m1"] == usd("0.012")  # the dashboard rollups moved by the same difference
    assert metrics["gpt-4o"] == usd("0.0075")  # 1,000 x $2.50 / 1M + 500 x $10 / 1M
    store.close()

    shown = cli("traces", "show", trace_ids[0], "--database-url", url).stdout
    assert "$0.00400" in shown.splitlines()[0]  # the trace's cost
    assert "m1  in=1000 out=500  ttft=250.0 ms  $0.00400" in shown  # the call's
    again = cli("costs", "recompute", "--since", "1h", "--config", str(new), "--database-url", url)
    assert "every cost is current" in again.stdout
    # without the config m1 has no price now: its calls keep the cost they have (a forgotten --config
    # must not throw known costs away), and the command says so
    kept = cli("costs", "recompute", "--since", "1h", "--database-url", url)
    assert kept.returncode == 0 and "4 calls checked: no cost changed" in kept.stdout
    assert "3 calls kept their cost" in kept.stderr
    store = SqlStore.from_url(url)
    detail = store.get_trace("default", trace_ids[1])
    assert detail is not None and detail.trace.cost_usd == usd("0.004")
    store.close()
    # the config named by $PILOTHOUSE_CONFIG counts as --config
    with_env = {"PILOTHOUSE_CONFIG": str(old)}
    env = cli("costs", "recompute", "--since", "1h", "--database-url", url, env=with_env)
    assert env.returncode == 0 and "3 changed" in env.stderr


def test_recompute_keeps_a_gateway_cache_hit_free_and_reprices_what_it_saved(tmp_path: Path) -> None:
    """A new user's check: re-pricing left the hits' savings at the old price (and must never bill a
    hit at the full price)."""
    url = f"sqlite:///{tmp_path / 'h.db'}"
    old = _config(tmp_path, "old.yaml", 1.0, 2.0)  # $0.002 a call
    new = _config(tmp_path, "new.yaml", 2.0, 4.0)  # $0.004 a call
    store = SqlStore.from_url(url)
    now = time.time_ns()
    hit = Observation(
        f"{9:032x}", f"{9:016x}", "chat", now - 10**9, now, kind=ObservationKind.GENERATION,
        provider="sim", model="m1", usage=Usage(input=1000, output=500),
    )  # fmt: skip
    hit.cost = Cost({"input": Money.ZERO, "output": Money.ZERO}, GATEWAY_CACHE, usd("0.002"))
    store.write_spans([SpanRecord("default", hit, TraceAttributes(user_id="u"))])
    store.close()
    done = cli("costs", "recompute", "--since", "1h", "--config", str(new), "--database-url", url)
    assert done.returncode == 0 and "1 changed" in done.stderr, done.stderr
    store = SqlStore.from_url(url)
    detail = store.get_trace("default", hit.trace_id)
    assert detail is not None and detail.trace.cost_usd == Money.ZERO
    (call,) = detail.observations
    assert (
        call.cost is not None and call.cost.total == Money.ZERO and call.cost.price_version == GATEWAY_CACHE
    )
    assert call.cost.saved == usd("0.004")
    now_s = time.time_ns() // 10**9
    (metrics,) = store.model_metrics("default", now_s - 7200, now_s + 60, 3600)
    assert metrics.sums.cost_usd == Money.ZERO and metrics.sums.saved_usd == usd("0.004")
    store.close()
    again = cli("costs", "recompute", "--since", "1h", "--config", str(old), "--database-url", url)
    assert again.returncode == 0 and "1 changed" in again.stderr


def test_recompute_shows_calls_that_had_no_price_as_unknown_not_as_zero(tmp_path: Path) -> None:
    # m1 was served without a price (its cost unknown); a config gives it one later. The dry run used
    # to show BEFORE $0.00 and a "+" difference, as if the calls had been free.
    url = f"sqlite:///{tmp_path / 'u.db'}"
    unpriced = tmp_path / "unpriced.yaml"
    unpriced.write_text(yaml.safe_dump({"models": [{"name": "m", "provider": "sim", "model": "m1"}]}))
    _seed(url, unpriced)
    priced = _config(tmp_path, "priced.yaml", 2.0, 4.0)  # $0.004 a call
    args = ("--since", "1h", "--config", str(priced), "--dry-run", "--database-url", url)
    dry = cli("costs", "recompute", *args)
    assert dry.returncode == 0, dry.stderr
    line = next(line for line in dry.stdout.splitlines() if line.startswith("m1"))
    assert line.split()[1:] == ["3", "unknown", "$0.0120", "-"], line

"""The exact response cache through a real gateway: a repeated request is answered from the cache,
streamed or not, on both surfaces, at no cost, with the saving in the cost report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import yaml

from pilothouse.testing import SimConfig, SimulatedUpstream, free_port
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer
from tests.server.process import cli

MESSAGES = [{"role": "user", "content": "what is the capital of france"}]


class CachedGateway:
    def __init__(self, server: InProcessServer, upstream: SimulatedUpstream, key: str) -> None:
        self.server, self.upstream, self.key = server, upstream, key
        self.client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)

    def chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
        return self.client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=messages, **kwargs
        )


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[CachedGateway]:
    with SimulatedUpstream(SimConfig(cached_fraction=0.0)) as upstream:
        config = tmp_path / "cache.yaml"
        model = {
            "name": "gpt-4o-mini",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": upstream.base_url + "/v1",
        }
        config.write_text(yaml.safe_dump({"models": [model], "cache": {"enabled": True, "ttl_s": 600}}))
        with InProcessServer(sqlite_at_head(tmp_path / "cache.db"), home=tmp_path, config=config) as server:
            yield CachedGateway(server, upstream, server.create_key("c"))


def test_repeated_requests_come_from_the_cache(gw: CachedGateway) -> None:
    first = gw.chat(MESSAGES)
    assert first.headers["x-pilothouse-cache"] == "miss" and len(gw.upstream.requests) == 1
    original_cost = float(first.headers["x-pilothouse-cost-usd"])
    assert original_cost > 0
    second = gw.chat(MESSAGES)
    assert second.headers["x-pilothouse-cache"] == "hit" and len(gw.upstream.requests) == 1
    assert second.headers["x-pilothouse-cost-usd"] == "0"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content

    # the same request streamed: replayed as a stream from the cache, usage included when asked
    stream = gw.chat(MESSAGES, stream=True, stream_options={"include_usage": True})
    assert stream.headers["x-pilothouse-cache"] == "hit"
    chunks = list(stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == first.parse().choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    assert len(gw.upstream.requests) == 1

    # a streamed answer is stored too, and serves a later buffered request
    other = [{"role": "user", "content": "and the capital of spain"}]
    streamed_text = "".join(
        c.choices[0].delta.content or "" for c in gw.chat(other, stream=True).parse() if c.choices
    )
    buffered = gw.chat(other)
    assert buffered.headers["x-pilothouse-cache"] == "hit"
    assert buffered.parse().choices[0].message.content == streamed_text
    assert len(gw.upstream.requests) == 2

    # different parameters are a different request; opting out reads nothing
    assert gw.chat(MESSAGES, temperature=0.5).headers["x-pilothouse-cache"] == "miss"
    no_cache = gw.chat(MESSAGES, extra_headers={"Cache-Control": "no-cache"})
    assert no_cache.headers["x-pilothouse-cache"] == "skip" and len(gw.upstream.requests) == 4

    # the Anthropic surface shares the cache (the request is the same once translated)
    claude = anthropic.Anthropic(base_url=gw.server.base_url, api_key=gw.key, max_retries=0)
    raw = claude.messages.with_raw_response.create(model="gpt-4o-mini", max_tokens=100, messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["x-pilothouse-cache"] == "miss"  # max_tokens makes it another request
    again = claude.messages.with_raw_response.create(model="gpt-4o-mini", max_tokens=100, messages=MESSAGES)  # type: ignore[arg-type]
    assert again.headers["x-pilothouse-cache"] == "hit"
    with claude.messages.stream(model="gpt-4o-mini", max_tokens=100, messages=MESSAGES) as s:  # type: ignore[arg-type]
        assert s.response.headers["x-pilothouse-cache"] == "hit"
        assert s.get_final_message().content[0].text == again.parse().content[0].text  # type: ignore[union-attr]

    # hits cost $0 and their saving shows in the trace and in the cost report
    auth = {"Authorization": f"Bearer {gw.key}"}
    deadline = time.monotonic() + 10
    while True:  # traces reach the store through the ingest queue
        detail = httpx.get(
            f"{gw.server.base_url}/api/traces/{second.headers['x-pilothouse-trace-id']}", headers=auth
        )
        if detail.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    call = detail.json()["observations"][0]
    assert call["attributes"]["gateway.cache"] == "hit"
    assert call["ttft_ms"] is None  # a buffered answer has no first token (TTFT counts streams only)
    streamed = httpx.get(
        f"{gw.server.base_url}/api/traces/{stream.headers['x-pilothouse-trace-id']}", headers=auth
    ).json()["observations"][0]
    assert streamed["attributes"]["gateway.cache"] == "hit" and streamed["ttft_ms"] is not None
    assert call["cost"]["total"] == 0 and call["cost"]["saved"] == pytest.approx(original_cost, abs=1e-9)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (row,) = httpx.get(f"{gw.server.base_url}/api/costs", headers=auth).json()["data"]
        if row["requests"] == 10:
            break
        time.sleep(0.05)
    assert row["requests"] == 10
    # hits of the first request: 2 (buffered and streamed) at its original cost, plus the others'
    assert row["saved_usd"] >= 2 * original_cost


def test_cache_entries_are_counted_per_project(gw: CachedGateway) -> None:
    """Issue 21 class 13: ``/api/cache`` counts the caller's project's entries, not every project's."""
    other = gw.server.create_key("o", project="other")
    gw.chat(MESSAGES)
    gw.chat([{"role": "user", "content": "a second question"}])
    mine = httpx.get(gw.server.base_url + "/api/cache", headers={"Authorization": f"Bearer {gw.key}"})
    theirs = httpx.get(gw.server.base_url + "/api/cache", headers={"Authorization": f"Bearer {other}"})
    assert mine.json()["exact"] == {"enabled": True, "entries": 2}
    assert theirs.json()["exact"] == {"enabled": True, "entries": 0}


@pytest.mark.slow  # `pilothouse serve` refuses the config: the process and its stderr are the point
def test_cache_config_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"models": [], "cache": {"enabled": True, "ttl": 5}}))
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = cli("serve", "--config", str(config), "--database-url", url, "--port", str(free_port()))
    assert result.returncode != 0 and "cache" in result.stderr and "Traceback" not in result.stderr

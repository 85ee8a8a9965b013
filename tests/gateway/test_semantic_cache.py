"""The semantic cache through a real gateway with the local embedding model: paraphrases are answered
from the cache within a scope, a sample of hits is re-checked against fresh answers, and a route whose
measured precision falls below the floor switches its semantic cache off."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.server.inprocess import InProcessServer

pytestmark = pytest.mark.slow


def _serve(tmp_path: Path, options: dict[str, Any], semantic: dict[str, Any]) -> tuple[InProcessServer, str]:
    config = tmp_path / "semantic.yaml"
    model = {"name": "sim", "provider": "sim", "model": "sim-1", "options": options}
    config.write_text(
        yaml.safe_dump({"models": [model], "cache": {"semantic": {"enabled": True, **semantic}}})
    )
    server = InProcessServer(f"sqlite:///{tmp_path / 'semantic.db'}", home=tmp_path, config=config)
    return server, server.create_key("s")


def _ask(client: openai.OpenAI, question: str, system: str | None = None) -> tuple[str, str]:
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    raw = client.chat.completions.with_raw_response.create(model="sim", messages=messages)  # type: ignore[arg-type]
    return raw.headers["x-pilothouse-cache"], raw.parse().choices[0].message.content or ""


def _report(server: InProcessServer, key: str, verified: int) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:  # re-checks run in the background
        report: dict[str, Any] = httpx.get(
            f"{server.base_url}/api/cache", headers={"Authorization": f"Bearer {key}"}
        ).json()
        route = report["semantic"]["routes"].get("sim", {})
        if route.get("verified", 0) >= verified or time.monotonic() > deadline:
            return report
        time.sleep(0.05)


def test_paraphrases_hit_within_their_scope(tmp_path: Path) -> None:
    # echo: the simulated model answers with the question's words, so answers show what was asked
    server, key = _serve(tmp_path, {"echo": True}, {"threshold": 0.9, "verify_sample": 1.0})
    with server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
        assert _ask(client, "What is the capital of France?") == ("miss", "What is the capital of France?")
        # a paraphrase (cosine 0.95) gets the first answer; another question (0.68) does not
        assert _ask(client, "Tell me the capital of France.") == (
            "semantic-hit",
            "What is the capital of France?",
        )
        assert _ask(client, "What is the capital of Spain?")[0] == "miss"
        # another system prompt is another scope
        assert _ask(client, "Tell me the capital of France.", system="Answer in French.")[0] == "miss"
        # earlier turns change what a question means: conversations are left out by default
        raw = client.chat.completions.with_raw_response.create(
            model="sim",
            messages=[
                {"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "What is the capital of France?"},
            ],
        )
        assert raw.headers["x-pilothouse-cache"] == "miss"
        # the hit was re-checked against a fresh answer: the paraphrase's echo agrees with the cached one
        report = _report(server, key, verified=1)
        assert report["semantic"]["routes"]["sim"] == {
            "hits": 1, "misses": 3, "verified": 1, "agreed": 1, "precision": 1.0, "enabled": True,
        }  # fmt: skip
        assert report["exact"] == {"enabled": False}
        assert report["semantic"]["entries"] == 3  # the three misses
        # another project sees none of it (issue 21 class 13)
        other = server.create_key("o", project="other")
        theirs = httpx.get(f"{server.base_url}/api/cache", headers={"Authorization": f"Bearer {other}"})
        assert theirs.json()["semantic"]["entries"] == 0 and theirs.json()["semantic"]["routes"] == {}


def test_low_precision_switches_the_route_off(tmp_path: Path) -> None:
    # hashed answers differ for every prompt: every re-checked hit disagrees with its fresh answer
    semantic = {"threshold": 0.9, "verify_sample": 1.0, "answer_threshold": 0.999, "min_verified": 2}
    server, key = _serve(tmp_path, {}, semantic)
    with server:
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
        assert _ask(client, "What is the capital of France?")[0] == "miss"
        assert _ask(client, "Tell me the capital of France.")[0] == "semantic-hit"
        assert _ask(client, "Tell me the capital of France!")[0] == "semantic-hit"
        report = _report(server, key, verified=2)
        route = report["semantic"]["routes"]["sim"]
        assert route["precision"] == 0.0 and route["enabled"] is False
        assert _ask(client, "Tell me the capital of France.")[0] == "miss"  # the route is off now
        # each re-check call is traced (and priced) inside the trace of the hit it checked
        auth = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 10
        while True:  # traces reach the store through the ingest queue
            names = []
            for row in httpx.get(f"{server.base_url}/api/traces", headers=auth).json()["data"]:
                detail = httpx.get(f"{server.base_url}/api/traces/{row['id']}", headers=auth).json()
                names.append(sorted(o["name"] for o in detail["observations"]))
            if names.count(["cache-verify sim", "chat sim"]) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert names.count(["cache-verify sim", "chat sim"]) == 2

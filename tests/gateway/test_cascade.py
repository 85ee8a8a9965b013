"""Cascade routing: the cheap model answers what it knows, the strong one the rest; each step is traced
and priced; Pilothouse's own report on a dataset gives the share kept cheap, the cost saved and the
quality retained."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer
from tests.server.process import cli

# 20 questions; half easy (difficulty 0.2), half hard (0.8)
ITEMS = [
    {"id": f"q{i}", "question": f"what is the code word number {i}", "answer": f"word{i}x", "difficulty": d}
    for i, d in enumerate([0.2, 0.8] * 10)
]
M = 1e-6


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    knowledge = tmp_path / "knowledge.jsonl"
    knowledge.write_text("\n".join(json.dumps(i) for i in ITEMS))
    sim = {"provider": "sim", "options": {"knowledge": str(knowledge)}}
    config = {
        "models": [
            {**sim, "name": "cheap", "model": "cheap-1", "price": {"input": 0.1, "output": 0.4}},
            {**sim, "name": "strong", "model": "strong-1", "price": {"input": 2.5, "output": 10.0}},
        ],
        "cascades": [
            {
                "name": "smart",
                "models": ["cheap", "strong"],
                "verifier": {"type": "regex", "value": "(?i)not sure|do not know", "negate": True},
            }
        ],
    }
    config["models"][0]["options"] = {**sim["options"], "skill": 0.5}  # the cheap model knows the easy half
    path = tmp_path / "cascade.yaml"
    path.write_text(yaml.safe_dump(config))
    yield path, knowledge


def test_cascade_through_the_gateway(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    config, _knowledge = setup
    with InProcessServer(sqlite_at_head(tmp_path / "cascade.db"), home=tmp_path, config=config) as server:
        key = server.create_key("c")
        client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0)
        assert "smart" in {m.id for m in client.models.list()}

        def ask(question: str, **kwargs: Any) -> Any:
            return client.chat.completions.with_raw_response.create(
                model="smart", messages=[{"role": "user", "content": question}], **kwargs
            )

        easy = ask("what is the code word number 0")
        assert easy.parse().choices[0].message.content == "word0x" and easy.parse().model == "cheap-1"
        # 7 prompt words, 1 answer word at the cheap model's prices
        assert float(easy.headers["x-pilothouse-cost-usd"]) == pytest.approx(7 * 0.1 * M + 1 * 0.4 * M)
        hard = ask("what is the code word number 1")
        assert hard.parse().choices[0].message.content == "word1x" and hard.parse().model == "strong-1"
        # the cheap model's hedge ("I am not sure.": 4 words) and the strong model's answer are both paid
        cheap_cost, strong_cost = 7 * 0.1 * M + 4 * 0.4 * M, 7 * 2.5 * M + 1 * 10.0 * M
        assert float(hard.headers["x-pilothouse-cost-usd"]) == pytest.approx(cheap_cost + strong_cost)
        stream = ask("what is the code word number 3", stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream.parse() if c.choices)
        assert text == "word3x"

        auth = {"Authorization": f"Bearer {key}"}
        detail = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = httpx.get(
                f"{server.base_url}/api/traces/{hard.headers['x-pilothouse-trace-id']}", headers=auth
            )
            if r.status_code == 200 and len(r.json()["observations"]) == 2:
                detail = r.json()
                break
            time.sleep(0.05)
        assert detail is not None and detail["cost_usd"] == pytest.approx(cheap_cost + strong_cost)
        root, child = detail["observations"]
        assert (
            root["model"] == "strong-1" and child["model"] == "cheap-1" and child["parent_id"] == root["id"]
        )
        steps = root["attributes"]["gateway.cascade"]["steps"]
        assert [(s["model"], s["accepted"]) for s in steps] == [("cheap", False), ("strong", True)]


@pytest.mark.slow  # the CLI command
def test_cascade_report_on_a_dataset(tmp_path: Path, setup: tuple[Path, Path]) -> None:
    config, knowledge = setup
    report = cli("costs", "cascade-report", "--config", str(config), "--cascade", "smart",
                 "--dataset", str(knowledge))  # fmt: skip
    assert report.returncode == 0, report.stderr
    figures = dict(line.split(":", 1) for line in report.stdout.splitlines())
    figures = {k.strip(): v.strip() for k, v in figures.items()}
    assert figures["items"] == "20"
    assert figures["kept on the cheapest model"] == "50.0%"
    assert figures["quality, cascade"] == "100.0%" and figures["quality retained"] == "100.0%"
    # easy: cheap only; hard: a cheap hedge and the strong answer; against the strong model on all 20
    saved = float(figures["cost saved"].rstrip("%"))
    cheap_answer, cheap_hedge, strong = 7 * 0.1 + 1 * 0.4, 7 * 0.1 + 4 * 0.4, 7 * 2.5 + 1 * 10.0
    expected = 1 - (10 * cheap_answer + 10 * (cheap_hedge + strong)) / (20 * strong)
    assert saved == pytest.approx(expected * 100, abs=0.1)
    bad = cli(
        "costs", "cascade-report", "--config", str(config), "--cascade", "nope", "--dataset", str(knowledge)
    )
    assert bad.returncode == 2 and "no cascade 'nope'" in bad.stderr

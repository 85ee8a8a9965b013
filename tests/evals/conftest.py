"""Fixtures of the eval tests: a store, a simulated model (echoing the prompt), spec files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pilothouse.domain.datasets import DatasetItem
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from pilothouse.testing import SimConfig, SimulatedUpstream
from tests.conftest import sqlite_at_head

TOPICS = ["tides", "gravity", "rainbows", "volcanoes", "photosynthesis", "magnets", "comets", "glaciers"]


@pytest.fixture
def eval_store(tmp_path: Path) -> Iterator[EvalStore]:
    """An eval store on a fresh SQLite file."""
    store = EvalStore(SqlStore.from_url(sqlite_at_head(tmp_path / "evals.db")))
    yield store
    store.store.close()


@pytest.fixture(scope="module")
def echo_upstream() -> Iterator[SimulatedUpstream]:
    """An OpenAI-compatible server whose answer repeats the last user message."""
    with SimulatedUpstream(SimConfig(echo=True)) as upstream:
        yield upstream


def topic_items(n: int) -> list[dict[str, Any]]:
    """``n`` items ``{"topic": ...}`` (topics repeat with a number when n is large)."""
    return [{"topic": TOPICS[i % len(TOPICS)] + ("" if i < len(TOPICS) else str(i))} for i in range(n)]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sim_config(path: Path, **options: Any) -> Path:
    """A gateway config serving ``sim`` (the simulated model, echoing) in-process."""
    return write_yaml(
        path,
        {
            "models": [
                {"name": "sim", "provider": "sim", "model": "sim-1", "options": {"echo": True, **options}}
            ],
            "router": {"retries": 0},
        },
    )


def explain_spec(
    tmp_path: Path, n: int = 8, *, prompt: str = "Explain {{topic}} briefly.", **keys: Any
) -> dict[str, Any]:
    """A spec mapping over ``n`` topic items, in-process through ``sim`` unless ``target`` is given."""
    write_jsonl(tmp_path / "items.jsonl", topic_items(n))
    target = keys.pop("target", None) or {
        "model": "sim",
        "config": str(sim_config(tmp_path / "models.yaml")),
        "max_tokens": 64,
        "messages": [{"role": "user", "content": prompt}],
    }
    return {
        "dataset": "items.jsonl",
        "target": target,
        "scorers": [{"type": "contains", "value": "{{topic}}"}],
        **keys,
    }


def item(item_id: str, **variables: Any) -> DatasetItem:
    return DatasetItem(id=item_id, input=variables)

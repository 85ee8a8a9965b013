"""The registry across real server processes: a label moved through one ``pilothouse serve`` reaches
another one's gateway (pushed over Redis, or by the database poll without it), and the SDK keeps
serving prompts after its server is killed."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

import pilothouse
from pilothouse.domain.keys import Scope
from pilothouse.prompts import (
    ChangeWatcher,
    PromptClient,
    PromptRegistry,
    PromptUnavailable,
    configure_prompts,
    parse_ref,
    publish_change,
)
from pilothouse.store.sql import SqlStore
from pilothouse.testing import PilothouseServer
from tests.conftest import sqlite_at_head

pytestmark = pytest.mark.slow

CONFIG = "models:\n  - {name: echo, provider: sim, model: echo-1, options: {echo: true}}\n"


def _seed(url: str) -> str:
    store = SqlStore.from_url(url)
    try:
        registry = PromptRegistry(store)
        registry.create(
            "default", "greet", {"prompt": "One {{who}}", "model": "echo"}, actor="t", labels=["production"]
        )
        registry.create("default", "greet", {"prompt": "Two {{who}}", "model": "echo"}, actor="t")
        _, key = store.create_api_key(
            "default", "editor", frozenset({Scope.ADMIN, Scope.READ, Scope.GATEWAY})
        )
    finally:
        store.close()
    return key


def _answer(server: PilothouseServer, key: str) -> str:
    body = {"prompt": {"name": "greet", "variables": {"who": "there"}}}
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def _label_move_reaches_the_other_process(tmp_path: Path, url: str, env: dict[str, str]) -> None:
    key = _seed(url)
    config = tmp_path / "models.yaml"
    config.write_text(CONFIG)
    args = ["--config", str(config)]
    with PilothouseServer(url, args=args, env=env) as one, PilothouseServer(url, args=args, env=env) as two:
        assert _answer(one, key) == _answer(two, key) == "One there"  # both have version 1 cached now
        moved = httpx.post(
            f"{one.base_url}/api/prompts/greet/labels",
            json={"label": "production", "version": 2},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert moved.status_code == 200, moved.text
        assert _answer(one, key) == "Two there"  # the process that moved it: at once
        deadline = time.monotonic() + 30  # a generous bound for a loaded machine, not the target
        while _answer(two, key) != "Two there":
            assert time.monotonic() < deadline, "the other process never saw the label move"
            time.sleep(0.05)


def test_label_move_reaches_another_process_by_polling(tmp_path: Path) -> None:
    url = sqlite_at_head(tmp_path / "two.db")
    _label_move_reaches_the_other_process(tmp_path, url, {"PILOTHOUSE_PROMPT_POLL_SECONDS": "0.2"})


def test_label_move_reaches_another_process_over_redis(tmp_path: Path, empty_pg_url: str) -> None:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    # the database poll is set to a minute: a move seen within the test's bound was pushed
    env = {"PILOTHOUSE_REDIS_URL": "redis://127.0.0.1:6379/0", "PILOTHOUSE_PROMPT_POLL_SECONDS": "60"}
    _label_move_reaches_the_other_process(tmp_path, empty_pg_url, env)


def test_sdk_serves_the_last_version_and_the_fallback_with_the_server_killed(tmp_path: Path) -> None:
    url = sqlite_at_head(tmp_path / "sdk.db")
    key = _seed(url)
    server = PilothouseServer(url)
    client = PromptClient(server.base_url, key, cache_seconds=0.0)  # every call after the first is stale
    configure_prompts(client)
    try:
        first = pilothouse.get_prompt("greet", fallback="Fallback {{who}}")
        assert (first.version, first.compile(who="you")) == (1, "One you")
        assert pilothouse.get_prompt("greet", version=2).version == 2
        server.proc.kill()
        server.proc.wait(30)
        for _ in range(3):  # stale, refreshed in the background, which fails: the last version serves
            again = pilothouse.get_prompt("greet", fallback="Fallback {{who}}")
            assert (again.version, again.fallback) == (1, False)
            time.sleep(0.05)
        assert client.last_error is not None and "cannot reach" in client.last_error
        never = pilothouse.get_prompt("farewell", fallback=[{"role": "user", "content": "Bye {{who}}"}])
        assert never.fallback and never.version == 0
        assert never.messages({"who": "now"}) == [{"role": "user", "content": "Bye now"}]
        with pytest.raises(PromptUnavailable, match="cannot reach"):
            pilothouse.get_prompt("farewell")
    finally:
        configure_prompts(None)
        client.close()
        server.stop()


def test_the_watcher_falls_back_to_polling_when_redis_is_away(tmp_path: Path) -> None:
    url = sqlite_at_head(tmp_path / "watch.db")
    _seed(url)
    here, there = SqlStore.from_url(url), SqlStore.from_url(url)
    listening, writing = PromptRegistry(here), PromptRegistry(there)
    watcher = ChangeWatcher(listening, poll_seconds=0.05, redis_url="redis://127.0.0.1:1/0")  # nothing there
    watcher.start()
    try:
        ref = parse_ref("greet@production")
        assert listening.resolve("default", ref).version == 1
        writing.set_label("default", "greet", "production", 2, actor="t")
        publish_change("redis://127.0.0.1:1/0", "default", "greet")  # a CLI's publish: logged, not raised
        deadline = time.monotonic() + 30
        while listening.resolve("default", ref).version != 2:
            assert time.monotonic() < deadline, "the watcher never heard of the change"
            time.sleep(0.02)
        assert watcher.heard >= 1
    finally:
        watcher.stop()
        here.close()
        there.close()

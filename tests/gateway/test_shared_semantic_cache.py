"""The semantic cache shared through Redis (gateway/shared_semantic_cache.py): semantic caches, as the
processes of one server would hold them, on one event loop, a real Redis and the local embedding model."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from pilothouse.config import SemanticCacheSettings, Settings
from pilothouse.gateway.cache import CachedAnswer
from pilothouse.gateway.semantic_cache import Embedder, SemanticCache, local_embedder
from pilothouse.gateway.shared_semantic_cache import SharedSemanticCache
from tests.server.process import ServerProcess, cli
from tests.server.test_workers import redis_url  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow  # loads the embedding model

QUESTION, PARAPHRASE = "What is the capital of France?", "Tell me the capital of France."  # cosine 0.95


@pytest.fixture(scope="module")
def embed() -> Embedder:
    return local_embedder(SemanticCacheSettings().model)


@pytest.fixture
def scope(redis_url: str) -> Iterator[str]:  # noqa: F811 - the fixture
    """A store scope of this test's own; its keys are deleted afterwards."""
    name = f"semshare-test-{uuid.uuid4().hex[:8]}"
    yield name
    _delete_keys(redis_url, name)


def _delete_keys(redis_url: str, scope: str) -> None:  # noqa: F811 - the fixture's name
    client = redis.from_url(redis_url)
    keys = list(client.scan_iter(f"pilothouse:semantic:{scope}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _request(question: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": question}]}


def _answer(text: str) -> CachedAnswer:
    response = {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}
    return CachedAnswer(response, "sim", "sim-1", None)


async def _until(check: Callable[[], bool], tries: int = 500) -> None:
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.01)


async def _store(cache: SemanticCache, project: str, question: str, text: str) -> None:
    missed = await cache.lookup(project, _request(question))
    assert missed is not None and missed.answer is None
    cache.add(missed, _answer(text))


async def _found(cache: SemanticCache, project: str, question: str) -> str | None:
    found = await cache.lookup(project, _request(question))
    assert found is not None
    return None if found.answer is None else found.answer.response["choices"][0]["message"]["content"]


def _caches(embed: Embedder, n: int, **settings: Any) -> list[SemanticCache]:
    config = SemanticCacheSettings(enabled=True, threshold=0.9, **settings)
    return [SemanticCache(config, embed) for _ in range(n)]


def test_an_answer_stored_by_one_process_is_a_hit_in_the_others_of_its_project_and_scope(
    embed: Embedder,
    redis_url: str,  # noqa: F811 - the fixture
    scope: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        one, two, late, elsewhere = _caches(embed, 4)
        for cache in (one, two, late, elsewhere):
            cache.warm_up()
        shared = [SharedSemanticCache(one, redis_url, scope), SharedSemanticCache(two, redis_url, scope)]
        shared.append(SharedSemanticCache(elsewhere, redis_url, scope + "-another-server"))
        for sharing in shared:
            sharing.start(loop)
        try:
            publisher = redis.from_url(redis_url)
            channel = f"pilothouse:semantic:{scope}"
            await _until(lambda: publisher.pubsub_numsub(channel)[0][1] == 2)  # both listen
            publisher.publish(f"pilothouse:semantic:{scope}", b"not json")  # ignored, logged once
            publisher.publish(f"pilothouse:semantic:{scope}", b'{"type": "entry", "k": 1}')
            wrong = {  # well formed, but a vector of 3 floats where the model's have 384
                "type": "entry", "o": "x", "id": "x-1", "k": "k", "p": "p1", "m": "all-minilm-l6-v2",
                "e": time.time() + 60, "v": base64.b64encode(b"\0" * 12).decode(),
                "a": {"r": {}, "p": None, "d": None, "c": None},
            }  # fmt: skip
            publisher.publish(f"pilothouse:semantic:{scope}", json.dumps(wrong))
            publisher.close()
            await _store(one, "p1", QUESTION, "Paris.")
            await _until(lambda: shared[1].applied == 1)
            assert await _found(two, "p1", PARAPHRASE) == "Paris."
            assert await _found(two, "p2", PARAPHRASE) is None  # another project never gets it
            assert await _found(elsewhere, "p1", PARAPHRASE) is None  # nor another server's
            assert two.report("p1")["entries"] == 1 and two.report("p2")["entries"] == 0
            # a process that starts later loads the live entries
            shared.append(SharedSemanticCache(late, redis_url, scope))
            shared[-1].start(loop)
            await _until(lambda: shared[-1].applied == 1)
            assert await _found(late, "p1", PARAPHRASE) == "Paris."
            # an answer stored by the other process comes back to the first (once)
            await _store(two, "p1", "How tall is Mount Everest?", "8,849 m.")
            await _until(lambda: shared[0].applied == 1)
            assert await _found(one, "p1", "What is the height of Mount Everest?") == "8,849 m."
            assert one.report("p1")["entries"] == 2 and late.report("p1")["entries"] == 2
            assert shared[2].applied == 0 and elsewhere.report("p1")["entries"] == 0
        finally:
            for sharing in shared:
                await asyncio.to_thread(sharing.stop)

    with caplog.at_level(logging.WARNING, logger="pilothouse.cache"):
        asyncio.run(run())
    foreign = [r for r in caplog.records if "not ours" in r.getMessage()]
    assert len(foreign) == 6  # three messages, each received by the two processes of that scope


def test_an_expired_entry_is_not_loaded(embed: Embedder, redis_url: str, scope: str) -> None:  # noqa: F811
    async def run() -> None:
        loop = asyncio.get_running_loop()
        one, late = _caches(embed, 2, ttl_s=3.0)
        one.warm_up()
        late.warm_up()
        shared = [SharedSemanticCache(one, redis_url, scope)]
        shared[0].start(loop)
        try:
            await _store(one, "p1", QUESTION, "Paris.")
            await asyncio.sleep(3.2)  # that entry expires; the next keeps the scope's record alive
            await _store(one, "p1", "How tall is Mount Everest?", "8,849 m.")
            shared.append(SharedSemanticCache(late, redis_url, scope))
            shared[-1].start(loop)
            await _until(lambda: shared[-1].applied == 1)
            await asyncio.sleep(0.2)
            assert shared[-1].applied == 1 and late.report("p1")["entries"] == 1
            assert await _found(late, "p1", PARAPHRASE) is None
            assert await _found(late, "p1", "What is the height of Mount Everest?") == "8,849 m."
        finally:
            for sharing in shared:
                await asyncio.to_thread(sharing.stop)

    asyncio.run(run())


def test_a_route_switched_off_in_one_process_is_off_in_all(
    embed: Embedder,
    redis_url: str,  # noqa: F811 - the fixture
    scope: str,
) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        settings = {"min_verified": 1, "answer_threshold": 0.999}
        one, two, late = _caches(embed, 3, **settings)
        shared = [SharedSemanticCache(one, redis_url, scope), SharedSemanticCache(two, redis_url, scope)]
        for sharing in shared:
            sharing.start(loop)
        try:
            await _store(two, "p1", QUESTION, "Paris.")
            assert not await one.record_verification("m", "Paris.", "Bananas are yellow.", "p1")
            assert not one.routes["m"].enabled
            await _until(lambda: not two.routes["m"].enabled)
            assert not two.routes["m"].enabled
            assert await two.lookup("p1", _request(PARAPHRASE)) is None  # off: not even looked up
            shared.append(SharedSemanticCache(late, redis_url, scope))
            shared[-1].start(loop)
            await _until(lambda: "m" in late.routes and not late.routes["m"].enabled)
            assert late.report("p1")["routes"] == {} and not late.routes["m"].enabled
        finally:
            for sharing in shared:
                await asyncio.to_thread(sharing.stop)

    asyncio.run(run())


def test_without_redis_the_cache_answers_per_process(
    embed: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        (cache,) = _caches(embed, 1)
        sharing = SharedSemanticCache(cache, "redis://127.0.0.1:1/0", f"semshare-test-{uuid.uuid4().hex[:8]}")
        sharing.start(asyncio.get_running_loop())
        try:
            await _store(cache, "p1", QUESTION, "Paris.")
            assert await _found(cache, "p1", PARAPHRASE) == "Paris."
            deadline = time.monotonic() + 10
            while "unavailable" not in caplog.text and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await _store(cache, "p1", "How tall is Mount Everest?", "8,849 m.")
            assert await _found(cache, "p1", "What is the height of Mount Everest?") == "8,849 m."
        finally:
            await asyncio.to_thread(sharing.stop)

    with caplog.at_level(logging.WARNING, logger="pilothouse.cache"):
        asyncio.run(run())
    warnings = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith("per process until it is back")


def _ask(http: httpx.Client, question: str, **headers: str) -> tuple[str, str]:
    response = http.post(
        "/v1/chat/completions",
        json={"model": "sim", "messages": [{"role": "user", "content": question}]},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return response.headers["x-pilothouse-cache"], response.json()["choices"][0]["message"]["content"]


def test_a_semantic_hit_is_served_by_the_worker_that_did_not_store_it(
    tmp_path: Path,
    pg_server: str,
    redis_url: str,  # noqa: F811 - the fixture
) -> None:
    key = (
        cli("keys", "create", "--name", "semshare", "--database-url", pg_server)
        .stdout.strip()
        .splitlines()[-1]
    )
    config = tmp_path / "config.yaml"
    # echo: the simulated model answers with the question's words, so an answer shows who asked it
    model = {"name": "sim", "provider": "sim", "model": "sim", "options": {"echo": True}}
    config.write_text(
        yaml.safe_dump({"models": [model], "cache": {"semantic": {"enabled": True, "threshold": 0.9}}})
    )
    env = {"PILOTHOUSE_REDIS_URL": redis_url, "PILOTHOUSE_HOME": str(tmp_path)}
    with ServerProcess(pg_server, args=("--config", str(config), "--workers", "2"), env=env) as pair:
        auth = {"Authorization": f"Bearer {key}"}
        storing = httpx.Client(base_url=pair.base_url, headers=auth, timeout=30)  # one connection: one worker
        other: httpx.Client | None = None
        try:
            stored_by = storing.get("/health").json()["pid"]
            assert _ask(storing, QUESTION) == ("miss", QUESTION)
            for _ in range(200):  # new connections until the kernel hands one to the other worker
                other = httpx.Client(base_url=pair.base_url, headers=auth, timeout=30)
                if other.get("/health").json()["pid"] != stored_by:
                    break
                other.close()
                other = None
            assert other is not None, "the kernel handed every connection to one worker"
            # until the entry reached that worker (no-store: it keeps no answer of its own)
            for _ in range(200):
                outcome = _ask(other, PARAPHRASE, **{"Cache-Control": "no-store"})
                if outcome[0] == "semantic-hit":
                    break
                time.sleep(0.05)
            assert outcome == ("semantic-hit", QUESTION)  # the first worker's answer
            assert other.get("/health").json()["pid"] != stored_by
        finally:
            storing.close()
            if other is not None:
                other.close()
    _delete_keys(redis_url, Settings(database_url=pg_server).store_id)  # the server's store scope

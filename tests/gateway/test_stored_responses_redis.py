"""Responses API answers kept in Redis: shared by every process, per project, bounded per answer, and a
Redis fault is RedisUnavailable (a 503), never a silent miss."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from pilothouse.gateway.redis_client import RedisUnavailable
from pilothouse.gateway.stored_responses import RedisResponseStore, StoredResponse
from tests.gateway.test_limits import redis_url  # noqa: F401  (the fixture)


def _answer(response_id: str, text: str = "hello") -> StoredResponse:
    return StoredResponse({"id": response_id, "output_text": text}, [{"role": "user", "content": "hi"}])


def test_answers_are_shared_per_project_and_bounded(redis_url: str) -> None:  # noqa: F811
    async def run() -> None:
        prefix = f"test:{uuid.uuid4().hex}:"
        one, other = (
            RedisResponseStore(redis_url, 1000, 60, prefix),
            RedisResponseStore(redis_url, 1000, 60, prefix),
        )
        try:
            assert await one.aput("p1", _answer("resp_1"))
            seen = await other.aget("p1", "resp_1")  # another process reads it
            assert seen is not None and seen.response["output_text"] == "hello"
            assert await other.aget("p2", "resp_1") is None  # another project does not
            assert await one.aget("p", "1:resp_1") is None  # nor a pair spelling the same text
            assert not await one.aput("p1", _answer("resp_2", "x" * 2000))  # larger than one may be
            assert await other.adelete("p1", "resp_1") and not await one.adelete("p1", "resp_1")
        finally:
            await one.close()
            await other.close()

    asyncio.run(run())


def test_a_redis_fault_is_unavailable_not_a_miss() -> None:
    async def run() -> None:
        store = RedisResponseStore("redis://127.0.0.1:1/0", 1000, 60)
        try:
            with pytest.raises(RedisUnavailable, match="stored responses"):
                await store.aget("p1", "resp_1")
        finally:
            await store.close()

    asyncio.run(run())

"""Shared fixtures: real SQLite and PostgreSQL stores, span builders, a served app; the two test tiers."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pilothouse.store.sql import SqlStore

PG_ADMIN_URL = os.environ.get("PILOTHOUSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# -- the two tiers ----------------------------------------------------------------------------------
# `make test-fast` runs `pytest -m "not slow"`: the pure core and the app in this process. A test is
# slow when it starts a program (a server, the CLI, a browser), loads a model, or takes seconds (heavy
# computing, waiting out real timeouts). Tests that use a fixture below are marked slow here; a test
# left unmarked that starts a program or imports torch fails and says so, so a new test cannot slip
# into the fast tier by accident.

SLOW_FIXTURES = frozenset({"smollm2_first_load", "browser"})
# The fault-and-abuse suite (issue 21): attacks on a live app, in `make test` and not in the fast tier
ABUSE_SUITE = (
    "tests/abuse/",
    "tests/gateway/test_hostile_messages.py",
    "tests/gateway/test_webhook_ssrf.py",
    "tests/gateway/test_money_abuse.py",
    "tests/gateway/test_redis_faults.py",
    "tests/server/test_auth_throttle.py",
    "tests/server/test_hostile_params.py",
    "tests/ui/test_session_hardening.py",
)
_SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.system", "os.exec", "os.spawn"})
_running_fast: list[str] = []  # the node id of the test running now, when it is not marked slow


def _refuse_processes_in_fast_tests(event: str, _args: tuple[object, ...]) -> None:
    if _running_fast and event in _SPAWN_EVENTS:
        raise RuntimeError(
            f"{_running_fast[0]} starts a process ({event}) but is not marked slow: mark it "
            "@pytest.mark.slow, or drive the app in-process (tests/server/inprocess.py)"
        )


sys.addaudithook(_refuse_processes_in_fast_tests)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.nodeid.startswith(
            ABUSE_SUITE
        ):
            item.add_marker(pytest.mark.slow)


def _fast_tier_guard(item: pytest.Item) -> Generator[None, object, object]:
    slow = item.get_closest_marker("slow") is not None
    had_torch = sys.modules.get("torch") is not None
    if not slow:
        _running_fast[:] = [item.nodeid]
    try:
        result = yield
    finally:
        _running_fast.clear()
    if not slow and not had_torch and sys.modules.get("torch") is not None:
        pytest.fail(f"{item.nodeid} loads torch (a model) but is not marked slow: mark it @pytest.mark.slow")
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _fast_tier_guard(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _fast_tier_guard(item))


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("postgresql://", "postgresql://", 1), connect_timeout=3):
            return None
    except Exception as exc:
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session (dropped afterwards).

    Skips when PostgreSQL is not running, except in CI, where that is a failure."""
    problem = _pg_available()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and is not reachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    yield from _new_pg_database("ph_test")


def _new_pg_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped when the generator is closed."""
    import psycopg

    # $PILOTHOUSE_TEST_PG_PREFIX names the databases of one person's runs on a shared server
    name = f"{os.environ.get('PILOTHOUSE_TEST_PG_PREFIX', '')}{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_pg_url(pg_server: str) -> Iterator[str]:
    """The URL of a new PostgreSQL database with no tables (for migration tests); ``pg_server``
    first checks that PostgreSQL runs."""
    yield from _new_pg_database("ph_empty")


_HEAD_DB: list[Path] = []


def sqlite_at_head(path: Path) -> str:
    """``sqlite:///PATH``, a new SQLite database already migrated to head: a copy of one that Alembic
    migrated once for the session (migrating costs a tenth of a second of CPU per database, and the
    fast tier makes over a hundred). Migrations from an empty database are tested in test_migrations."""
    if not _HEAD_DB:
        folder = Path(tempfile.mkdtemp(prefix="pilothouse-head-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        SqlStore.from_url(f"sqlite:///{folder / 'head.db'}").close()
        assert not (folder / "head.db-wal").exists()  # closed cleanly: the file alone is the database
        _HEAD_DB.append(folder / "head.db")
    shutil.copyfile(_HEAD_DB[0], path)
    return f"sqlite:///{path}"


def _clean(store: SqlStore) -> None:
    from pilothouse.store.tables import metadata

    with store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """A migrated, empty store on SQLite (a file) and on the real PostgreSQL."""
    if request.param == "sqlite":
        s = SqlStore.from_url(sqlite_at_head(tmp_path / "test.db"))
    else:
        s = SqlStore.from_url(request.getfixturevalue("pg_server"))
        _clean(s)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlStore]:
    """A migrated SQLite store (for tests where the database kind does not matter)."""
    s = SqlStore.from_url(sqlite_at_head(tmp_path / "test.db"))
    yield s
    s.close()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of converted local models for the whole session (converting SmolLM2 takes ~20 s:
    :func:`smollm2_first_load` does it once, whichever test asks first)."""
    return tmp_path_factory.mktemp("models")


@dataclass(frozen=True)
class FirstLoad:
    """The load that converted SmolLM2's GGUF into the session's model cache, and its greedy answer
    to :data:`FIRST_QUESTION` (12 tokens at most)."""

    directory: Path
    dequantised: bool
    answer: dict[str, Any]
    printed: str  # what the conversion wrote to stderr


FIRST_QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="session")
def smollm2_first_load(model_cache: Path) -> FirstLoad:
    """SmolLM2 converted into :func:`model_cache` (once per session), by the ``local`` provider."""
    from pilothouse.providers.base import Deployment
    from pilothouse.providers.local import LocalProvider

    options = {"cache_dir": str(model_cache)}
    provider = LocalProvider(Deployment(name="smol", provider="local", model="smollm2", options=options))

    async def convert() -> FirstLoad:
        printed = io.StringIO()
        try:
            with contextlib.redirect_stderr(printed):
                loaded = await provider.load()
            reply = await provider.chat({"messages": FIRST_QUESTION, "max_tokens": 12})
        finally:
            await provider.close()
        return FirstLoad(
            loaded.directory, loaded.dequantised, reply["choices"][0]["message"], printed.getvalue()
        )

    return asyncio.run(convert())

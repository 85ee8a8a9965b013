"""Engines and migrations: plain database URLs in, a tuned SQLAlchemy engine out."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

log = logging.getLogger("pilothouse.store")


def normalise_url(url: str) -> str:
    """Accept plain URLs (``postgresql://``, ``sqlite:///``) and pick our drivers (psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername not in ("sqlite", "sqlite+pysqlite", "postgresql+psycopg"):
        raise ValueError(f"unsupported database {parsed.drivername!r}: use sqlite:/// or postgresql://")
    return parsed.render_as_string(hide_password=False)


def _bind_without_lookups() -> None:
    """Let sqlite3 bind None and bytes through an adapter that returns the value itself. The module binds
    only int, float, str and bytearray directly: every other value first goes through a failed lookup
    of its adapter and of two attributes, and a stored span binds many NULLs; a registered adapter
    replaces those with one dict lookup and a C call (measure with ``python benchmarks/ingest.py``).
    What is bound stays the same. The adapter table is the module's, shared by the process: one that
    is already registered is kept."""
    adapters = sqlite3.adapters
    if (type(None), sqlite3.PrepareProtocol) not in adapters:
        # {}.get(None) is None, and a C call: no Python frame per value
        sqlite3.register_adapter(type(None), cast(Callable[[None], None], {}.get))
    if (bytes, sqlite3.PrepareProtocol) not in adapters:
        sqlite3.register_adapter(bytes, bytes)


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    from pilothouse.store.rows import hist_add_packed, unpack

    # ph_text(x): the text of a column that may hold a packed (compressed) value, for searches.
    dbapi_connection.create_function("ph_text", 1, unpack, deterministic=True)
    dbapi_connection.create_function("ph_hist_add", 2, hist_add_packed, deterministic=True)
    cursor = dbapi_connection.cursor()
    # Big pages pack ~1 KB span rows with little slack; this only takes effect on a new database.
    cursor.execute("PRAGMA page_size=16384")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA cache_size=-16384")
    cursor.close()


def create_private_file(path: Path) -> None:
    """Make sure the SQLite file ``path`` exists and only its owner can read it: every trace is in it.
    A folder we create is 0700 and a file we create 0600 (whatever the umask); SQLite gives its
    ``-wal`` and ``-shm`` files the mode of the database file. An existing file is left as it is, with
    a warning when other users can read it (a shared file may be meant to be shared)."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "the database file %s can be read by other users (mode %o); 'chmod 600 %s' keeps its "
                "traces private",
                path,
                stat.S_IMODE(mode),
                path,
            )
        return
    os.fchmod(fd, 0o600)  # os.open's mode is masked by the umask too
    os.close(fd)


def tighten_private_file(path: Path) -> None:
    """Make the SQLite file at ``path`` (with its ``-wal`` and ``-shm`` files) 0600 and its folder 0700
    if they are more open: for the default database in Pilothouse's own home folder, which earlier
    versions created readable by every local user. Files of other owners are left alone."""
    uid = os.getuid()
    for target, mode in (
        (path.parent, 0o700),
        *((path.with_name(path.name + s), 0o600) for s in ("", "-wal", "-shm")),
    ):
        try:
            info = target.stat()
        except FileNotFoundError:
            continue
        if info.st_uid == uid and stat.S_IMODE(info.st_mode) & ~mode:
            os.chmod(target, stat.S_IMODE(info.st_mode) & mode)
            log.info("made %s private to its owner (mode %o)", target, stat.S_IMODE(info.st_mode) & mode)


def make_engine(url: str) -> Engine:
    """Engine for ``url``; SQLite files get WAL mode and are created private (:func:`create_private_file`)."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            create_private_file(Path(parsed.database))
        _bind_without_lookups()
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _tune_sqlite)
        return engine
    engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    event.listen(engine, "connect", _text_without_nul)
    return engine


def _text_without_nul(dbapi_connection: Any, _record: Any) -> None:
    """Bind text parameters with U+FFFD in place of a NUL character (U+0000), which PostgreSQL's text
    columns cannot hold: a score comment, a review, a filter value or any other text a client sent
    with one was a 500 (SQLite keeps it). Only parameters bound as text are rewritten: the spans'
    binary COPY (the ingest path, where a Python call per value would cost) keeps the C dumper, and
    the batch writer replaces NULs in span records itself (``domain.traces.replace_nul_characters``)."""
    from psycopg.types.string import StrDumper, StrDumperUnknown

    class _TextDumper(StrDumper):
        def dump(self, obj: str) -> Any:
            return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)

    class _UnknownDumper(StrDumperUnknown):
        def dump(self, obj: str) -> Any:
            return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)

    dbapi_connection.adapters.register_dumper(str, _TextDumper)
    dbapi_connection.adapters.register_dumper(str, _UnknownDumper)  # last: what a plain %s uses


def head_revision() -> str:
    """The newest migration's revision id (each file in ``migrations/versions`` starts with its id)."""
    versions = resources.files("pilothouse.store") / "migrations" / "versions"
    return max(p.name.split("_", 1)[0] for p in versions.iterdir() if p.name[:4].isdigit())


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None for a new database)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return None if value is None else str(value)


# PostgreSQL: the advisory lock every process migrating the database takes first (an arbitrary bigint)
MIGRATION_LOCK = 7_310_201_126_000_001


def upgrade_schema(engine: Engine) -> None:
    """Apply every pending Alembic migration (idempotent). A database already at the newest revision
    is left alone without importing Alembic (a tenth of a second of every start). On PostgreSQL the
    migrations run under an advisory lock: servers started together on a new database (docs/deploy.md)
    migrate it one after the other, and the later ones find it at head (without the lock the second
    failed on a duplicate table or type)."""
    if current_revision(engine) == head_revision():
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("pilothouse.store") / "migrations"))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # held until this transaction ends
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")

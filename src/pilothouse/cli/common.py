"""What every command group shares: the database option, settings, one-line errors, and a quick
start (the store, the config model and their libraries are imported when a command opens them, not
when the command line is read)."""

from __future__ import annotations

import gc
import socket
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from pilothouse.store.sql import SqlStore

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class CliError(Exception):
    """A failure reported as one line on stderr with a non-zero exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def database_option(func: F) -> F:
    """``--database-url`` (else PILOTHOUSE_DATABASE_URL, else the SQLite file in PILOTHOUSE_HOME)."""
    return click.option(
        "--database-url",
        default=None,
        help="sqlite:///path or postgresql://user@host/db (default: $PILOTHOUSE_DATABASE_URL, else "
        "the server: section of $PILOTHOUSE_CONFIG, else $PILOTHOUSE_HOME/pilothouse.db, "
        "./.pilothouse/pilothouse.db).",
    )(func)


def open_store(database_url: str | None, *, create: bool = False) -> SqlStore:
    """The migrated store of the configured database; one-line error when it cannot be opened. A
    SQLite file that is not there is made only when ``create``: a command that reads, run from
    another folder than the server's, must not answer from a new empty database."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from pilothouse.config import ConfigError, load_settings
    from pilothouse.store.sql import SqlStore

    try:
        url = load_settings(database_url=database_url).resolved_database_url
    except ConfigError as exc:
        raise CliError(f"invalid settings: {exc}", exit_code=2) from None
    path = make_url(url).database if url.startswith("sqlite") else None
    if not create and path and path != ":memory:" and not Path(path).exists():
        raise CliError(
            f"no database at {Path(path).absolute()}: run this where `pilothouse serve` keeps its data "
            "(./.pilothouse), or set PILOTHOUSE_HOME, PILOTHOUSE_CONFIG (the config file `serve` "
            "was given, when its server: section names the database) or --database-url"
        )
    try:
        return SqlStore.from_url(url)
    except (SQLAlchemyError, ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CliError(f"cannot open database {shown_url(url)}: {reason}", exit_code=2) from exc


def shown_url(url: str) -> str:
    """A database URL as it may be printed: its password hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("://", 1)[0] + "://..." if "@" in url else url


def check_port(host: str, port: int) -> None:
    """Fail in one line, before anything is printed or opened, when another process listens there."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        reason = exc.strerror or exc
        raise CliError(f"cannot start: cannot resolve host {host!r}: {reason}", exit_code=2) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise CliError(
                f"cannot start: {host}:{port} is taken ({exc.strerror or exc}); stop the other server or "
                "pass --port"
            ) from None


@contextmanager
def start_up() -> Iterator[None]:
    """No garbage collection while a command imports and opens what it needs, then what it made
    frozen out of later collections. Start-up makes hundreds of thousands of objects (modules,
    classes, SQL tables) that live as long as the process and hold no garbage; the collector would
    scan them again at every full collection, a tenth of a second of a short command's life."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine on uvloop when it is installed (it comes with uvicorn's standard
    extras; its event loop makes an HTTP exchange cost less Python time), else on asyncio's loop.
    Ctrl-C cancels the coroutine as with :func:`asyncio.run`."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)

"""One process that writes every ingested span on SQLite, when ``serve --workers N`` runs several.

SQLite has one writer at a time. Several worker processes each committing their own batches would
queue on the file's lock (and each commit rewrites the index pages it touched), so on SQLite the parent
of ``serve --workers N`` starts one more process, the span writer, and the workers hand it their
batches over a Unix socket in the home folder (``multiprocessing.connection``, authenticated by a key
the parent makes at start and passes to its children only):

- a worker's batch-writer thread still normalises and prices its spans (that work is spread over the
  workers' cores) and sends them in chunks; its ingest queue stays bounded as before, so a worker whose
  writer lags answers 429, never holds more;
- the writer takes the chunks of every worker that are waiting and stores them in one transaction
  (group commit), then acknowledges each; the store skips spans it already holds, so a chunk sent
  twice (a writer that died after its commit, before its answer) is counted once;
- a worker keeps each chunk until it is acknowledged; when the writer is gone, the worker sends them
  again to the next one, which the parent starts (:class:`WriterSupervisor`); meanwhile the collector
  answers 503 with Retry-After (:attr:`WriterClient.down`).

Reads, and the rare other writes (keys, scores, datasets, evals, retention), stay in each worker on the
database directly, waiting on SQLite's busy timeout when the writer holds the lock.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import os
import queue
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

from pilothouse.domain.traces import SpanRecord

log = logging.getLogger("pilothouse.span_writer")
MAX_SOCKET_PATH = 100  # a Unix socket's path is limited to 108 bytes
IN_FLIGHT_CHUNKS = 4  # chunks a worker sends before it waits for their answers
TEMP_PREFIX = "pilothouse-writer-"
QUEUED_CHUNKS = 8  # chunks the writer holds, of all workers; past that the workers' sends block
HANDSHAKE_S = 5.0  # a connection that has not proved the key by then is cut


class SpanWriteRefused(RuntimeError):
    """The writer could not store a chunk (the database refused it); the ingest queue retries."""


@dataclass(frozen=True, slots=True)
class WriterAddress:
    """Where the span writer listens, and the key its clients prove they hold."""

    path: str
    authkey: bytes

    @classmethod
    def make(cls, home: Path) -> WriterAddress:
        """A new socket path in ``home`` (in a private temporary folder when that path would be too long
        for a socket) and a new random key. The name carries the pid and a random part: pids repeat (a
        container's server is often pid 1), and another server's socket must never be taken for ours."""
        path = str(home / f"span-writer-{os.getpid()}-{secrets.token_hex(4)}.sock")
        if len(path.encode()) > MAX_SOCKET_PATH:
            path = os.path.join(tempfile.mkdtemp(prefix=TEMP_PREFIX), "span-writer.sock")
        return cls(path, secrets.token_bytes(32))

    def as_json(self) -> dict[str, str]:
        """For the workers' options (the environment of the parent's children)."""
        return {"path": self.path, "authkey": self.authkey.hex()}

    @classmethod
    def from_json(cls, value: dict[str, str]) -> WriterAddress:
        """The inverse of :meth:`as_json`."""
        return cls(value["path"], bytes.fromhex(value["authkey"]))


# -- the writer process ------------------------------------------------------------------------------


class SpanWriterServer:
    """Accepts workers' connections and stores their chunks, one transaction for all that wait."""

    def __init__(
        self, store: Any, address: WriterAddress, batch_spans: int = 20_000, *, collect: bool = False
    ) -> None:
        self.store = store
        self.address = address
        self.batch_spans = batch_spans
        # the writer process runs without automatic collections (the chunks' objects all live until
        # their group is stored: a collection meanwhile frees nothing and walks them all), and
        # collects once after each group
        self.collect = collect
        self.written = 0
        self._queue: queue.Queue[tuple[Connection, int, list[SpanRecord]] | None] = queue.Queue(QUEUED_CHUNKS)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address.path)  # a socket left by a writer that was killed
        old_umask = os.umask(0o177)  # the socket file is the owner's only
        try:
            # no authkey here: Listener.accept() would run the handshake on the accepting thread, so
            # one connection that never answers would keep every worker out (see _handshake)
            self._listener = Listener(address.path, "AF_UNIX")
        finally:
            os.umask(old_umask)
        self._closing = False
        self._threads = [
            threading.Thread(target=self._accept, name="span-writer-accept", daemon=True),
            threading.Thread(target=self._write, name="span-writer", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                conn = self._listener.accept()
            except OSError:
                if self._closing:
                    return
                log.warning("a connection to the span writer failed", exc_info=True)
                continue
            threading.Thread(target=self._serve, args=(conn,), name="span-writer-read", daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        """One connection, on its own thread: the key's handshake (cut after :data:`HANDSHAKE_S`), then
        its chunks until it closes."""
        if self._handshake(conn):
            self._read(conn)

    def _handshake(self, conn: Connection) -> bool:
        cut = threading.Timer(HANDSHAKE_S, _shut, args=(conn,))
        cut.daemon = True
        cut.start()
        try:
            deliver_challenge(conn, self.address.authkey)
            answer_challenge(conn, self.address.authkey)
            conn.send(("hello", os.getpid()))
        except Exception:  # no key (AuthenticationError), garbage, silence past the deadline
            log.warning("a connection to the span writer was refused", exc_info=True)
            conn.close()
            return False
        finally:
            cut.cancel()
        return True

    def _read(self, conn: Connection) -> None:
        try:
            while True:
                kind, seq, records = conn.recv()
                if kind == "write":
                    self._queue.put((conn, seq, records))  # blocks when full: backpressure
        except (EOFError, OSError):
            pass  # the worker closed its end (or died): its unanswered chunks it sends again
        except Exception:  # not a message of ours (it held the key): that connection only is dropped
            log.warning("a span writer connection sent what is not a chunk; it is closed", exc_info=True)
            conn.close()

    def _write(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            spans = len(first[2])
            stop = False  # the stop marker came within the group: stop after writing it
            while spans < self.batch_spans:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # not put back: a reader blocked on the full queue could take its place
                    stop = True
                    break
                group.append(item)
                spans += len(item[2])
            try:
                self.store.write_span_chunks(records for _, _, records in group)
            except Exception:
                if len(group) == 1:
                    log.exception("a chunk of %d spans could not be stored", spans)
                    answers = [self._failed(group[0][1])]
                else:  # one chunk must not fail the others' (another worker's, another tenant's)
                    answers = [self._alone(seq, records) for _, seq, records in group]
            else:
                self.written += spans
                answers = [("ok", seq) for _, seq, _ in group]
            for (conn, _, _), answer in zip(group, answers, strict=True):
                with contextlib.suppress(OSError):  # that worker is gone: its next connection sends it again
                    conn.send(answer)
            del group, first
            if self.collect:
                gc.collect()
            if stop:
                return

    def _alone(self, seq: int, records: list[SpanRecord]) -> tuple[Any, ...]:
        """Store one chunk in a transaction of its own: its answer."""
        try:
            self.store.write_span_chunks((records,))
        except Exception:
            log.exception("a chunk of %d spans could not be stored", len(records))
            return self._failed(seq)
        self.written += len(records)
        return ("ok", seq)

    @staticmethod
    def _failed(seq: int) -> tuple[Any, ...]:
        return ("failed", seq, "the database refused it (the span writer's log has the error)")

    def close(self, timeout_s: float = 60.0) -> None:
        """Stop accepting, store what is queued, stop."""
        self._closing = True
        self._listener.close()
        self._queue.put(None)
        self._threads[1].join(timeout_s)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.address.path)


def run_writer(
    address: WriterAddress, database_url: str, batch_spans: int, log_level: str, parent: Connection
) -> None:
    """The writer process: serve until the parent says stop on ``parent`` (after its workers stopped)
    or dies (the pipe closes). Ctrl-C, and a SIGTERM sent to the whole process group (``timeout``,
    systemd), reach the writer too: it ignores them and waits for its parent, so that the workers'
    last batches still find it."""
    from pilothouse.store.sql import SqlStore

    logging.basicConfig(level=log_level.upper())
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    store = SqlStore.from_url(database_url, migrate=False)  # the parent migrated it
    gc.freeze()  # what start-up made lives as long as the process: never walked again
    gc.disable()
    server = SpanWriterServer(store, address, batch_spans, collect=True)
    try:
        parent.recv()  # "stop", or EOFError when the parent is gone
    except (EOFError, OSError):
        log.warning("the server's parent process is gone: the span writer stops")
    finally:
        server.close()
        store.close()


class WriterSupervisor:
    """The parent's side: starts the writer process, starts it again when it dies, stops it last."""

    def __init__(self, address: WriterAddress, database_url: str, batch_spans: int, log_level: str) -> None:
        self.address = address
        self._args = (address, database_url, batch_spans, log_level)
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._pipe: Connection | None = None  # the parent's end of the running writer's stop pipe
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="span-writer-supervisor", daemon=True)
        self.starts = 0
        self._spawned_at = 0.0

    def start(self, ready_timeout_s: float = 60.0) -> None:
        """Start the writer, and return once it listens (or ``ready_timeout_s`` passed)."""
        self._spawn()
        deadline = time.monotonic() + ready_timeout_s
        while not os.path.exists(self.address.path) and time.monotonic() < deadline:
            if not self._process.is_alive():
                raise RuntimeError(f"the span writer process exited at start ({self._process.exitcode})")
            time.sleep(0.05)
        self._thread.start()

    def _spawn(self) -> None:
        if self._pipe is not None:
            self._pipe.close()
        self._pipe, child_end = self._context.Pipe()
        self._process = self._context.Process(
            target=run_writer, args=(*self._args, child_end), name="pilothouse-span-writer"
        )
        self._process.start()
        child_end.close()  # the writer's copy alone: its recv ends when this process is gone
        self._spawned_at = time.monotonic()
        self.starts += 1

    def _supervise(self) -> None:
        delay = 0.1
        while not self._stopping.is_set():
            self._process.join(0.5)
            if self._process.is_alive() or self._stopping.is_set():
                continue
            log.error("the span writer exited (%s); starting another", self._process.exitcode)
            # one that keeps dying at start is started again less and less often (up to every 5 s)
            delay = 0.1 if time.monotonic() - self._spawned_at > 10 else min(5.0, delay * 2)
            if self._stopping.wait(delay):
                return
            self._spawn()

    @property
    def pid(self) -> int | None:
        """The writer process now."""
        return self._process.pid if self._process is not None else None

    def stop(self, timeout_s: float = 60.0) -> None:
        """Let the writer store what it holds, and stop it (after the workers stopped)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._process is not None and self._process.is_alive():
            assert self._pipe is not None
            with contextlib.suppress(OSError):
                self._pipe.send("stop")  # it stores what it holds, then exits
            self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        folder = os.path.dirname(self.address.path)
        if os.path.basename(folder).startswith(TEMP_PREFIX) and folder.startswith(tempfile.gettempdir()):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # the private folder of a socket path too long for the home folder


def _shut(conn: Connection) -> None:
    """Ends a blocked read on ``conn`` from another thread (shutting the socket down, not closing the
    descriptor its reader still uses)."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(conn.fileno())) as sock:
        sock.shutdown(socket.SHUT_RDWR)


# -- the workers' side -------------------------------------------------------------------------------


class WriterClient:
    """A worker's connection to the span writer, used by its batch-writer thread only: in place of the
    store's ``write_span_chunks``. A chunk is held until the writer acknowledges it; while the writer
    cannot be reached :attr:`down` says why, and the chunks wait for the next writer."""

    def __init__(self, address: WriterAddress, retry_s: float = 0.1) -> None:
        self.address = address
        self.retry_s = retry_s
        self.pid: int | None = None
        self.down: str | None = None  # why the writer cannot be reached now (None: it can)
        self._conn: Connection | None = None
        self._seq = 0
        self._closed = threading.Event()

    def write_span_chunks(self, chunks: Iterable[Sequence[SpanRecord]]) -> None:
        """Send every chunk and return once the writer committed them all; raises
        :class:`SpanWriteRefused` when it could not store one (the ingest queue retries the batch, and
        the store skips what was stored)."""
        unacked: dict[int, list[SpanRecord]] = {}  # in the order sent
        for chunk in chunks:
            self._seq += 1
            unacked[self._seq] = list(chunk)
            self._send(self._seq, unacked)
            while len(unacked) >= IN_FLIGHT_CHUNKS:
                self._answer(unacked)
        while unacked:
            self._answer(unacked)

    def _send(self, seq: int, unacked: dict[int, list[SpanRecord]]) -> None:
        if self._conn is None:
            self._connected(unacked)  # a new connection is sent every chunk unanswered, this one too
            return
        try:
            self._conn.send(("write", seq, unacked[seq]))
        except OSError:
            self._lost(unacked)

    def _answer(self, unacked: dict[int, list[SpanRecord]]) -> None:
        conn = self._connected(unacked)
        try:
            answer = conn.recv()
        except (EOFError, OSError):
            self._lost(unacked)
            return
        if answer[0] == "ok":
            unacked.pop(answer[1], None)  # an answer to an earlier batch's chunk is ignored
        elif answer[0] == "failed" and unacked.pop(answer[1], None) is not None:
            raise SpanWriteRefused(f"the span writer could not store a chunk: {answer[2]}")

    def _lost(self, unacked: dict[int, list[SpanRecord]]) -> None:
        """The connection broke: connect again (to the writer the parent starts) and send every chunk
        not yet acknowledged."""
        self._drop()
        self.down = "the span writer process is not answering (the server restarts it)"
        log.warning("lost the span writer with %d chunks unanswered; they will be sent again", len(unacked))
        self._connected(unacked)

    def _connected(self, unacked: dict[int, list[SpanRecord]]) -> Connection:
        while self._conn is None:
            if self._closed.is_set():
                raise ConnectionError("the span writer client is closed")
            conn: Connection | None = None
            try:
                conn = Client(self.address.path, "AF_UNIX", authkey=self.address.authkey)
                hello = conn.recv()
                for seq, records in unacked.items():  # the next writer gets what the last did not answer
                    conn.send(("write", seq, records))
            except (OSError, EOFError, AuthenticationError) as exc:  # a key refused: another server's socket
                if conn is not None:
                    conn.close()
                self.down = f"the span writer process is not answering (the server restarts it): {exc}"
                self._closed.wait(self.retry_s)
                continue
            self._conn = conn
            self.pid = int(hello[1])
            self.down = None
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Stop waiting for a writer and end the connection: shut down, not closed, since the batch
        thread may still be using it (after a drain that timed out); that thread's :meth:`_drop`
        closes it, so its descriptor number is never reused under it."""
        self._closed.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(OSError):
                _shut(conn)

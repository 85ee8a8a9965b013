"""A write-ahead spool on disk: what the durable mode (``server.durable``) appends before it answers.

Records go to append-only segment files (``<id>.wal``, 0600) in one folder that one process holds
locked. A record is framed as ``length (u32 LE) | crc32 (u32 LE) | payload``; the CRC covers the
length and the payload. :meth:`Spool.append` copies a record to memory and returns its segment;
:meth:`Spool.flush` writes what was appended and fsyncs it in a thread of its own, and every request
waiting meanwhile shares that one fsync (group commit): a request answers once the flush that covers
its records is done. A segment is closed once it holds ``segment_bytes``; a closed segment whose every
record the batch writer has committed to the database (:meth:`Spool.done`) is deleted.

At start-up the segments a previous process left (``leftover``) are read back with :func:`read_segment`
and replayed. A record whose length or CRC does not check ends its segment: a crash during a write
leaves a torn last record, which was never fsynced and so never acknowledged.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("pilothouse.spool")

MAGIC = b"PHSPOOL1"  # the first bytes of every segment file
_FRAME = struct.Struct("<II")  # payload length, crc32 of (length bytes + payload)
_LENGTH = struct.Struct("<I")
MAX_RECORD_BYTES = 1 << 31  # a length field past this is a torn header, not a record
_IOV_MAX = 512  # buffers per writev call (Linux allows 1024)
# fdatasync where there is one (Linux): an appended file's size is flushed with its data
_datasync = getattr(os, "fdatasync", os.fsync)


class SpoolInUse(RuntimeError):
    """Another process holds the spool folder (two servers must not share, or replay, one spool)."""


def frame(payload: bytes) -> bytes:
    """The header of ``payload``'s record (the payload follows it)."""
    length = _LENGTH.pack(len(payload))
    return _FRAME.pack(len(payload), zlib.crc32(payload, zlib.crc32(length)))


@dataclass(slots=True, eq=False)  # compared and hashed by identity
class _Segment:
    id: int
    path: Path
    size: int = len(MAGIC)  # bytes appended so far, the file header included
    outstanding: int = 0  # records appended and not yet committed to the database
    unwritten: int = 0  # records appended and not yet written to the file
    closed: bool = False  # takes no more records
    fd: int | None = None  # open in the flusher thread while records are written to it
    created: bool = False  # the file exists (its folder entry was fsynced)


@dataclass(slots=True)
class SpoolStats:
    """Counters since start-up."""

    records: int = 0
    bytes: int = 0
    fsyncs: int = 0
    segments_deleted: int = 0


@dataclass(slots=True)
class _Pending:
    """What was appended and not yet written: (segment, record payload) in order."""

    parts: list[tuple[_Segment, bytes]] = field(default_factory=list)


class Spool:
    """Append-only segment files with group commit; see the module."""

    def __init__(self, folder: Path, *, segment_bytes: int = 16 * 1024 * 1024) -> None:
        self.folder = folder
        self.segment_bytes = segment_bytes
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise SpoolInUse(f"the spool folder {folder} is in use by another server process") from None
        ids = sorted(int(p.stem) for p in folder.glob("*.wal") if p.stem.isdigit())
        self.leftover = [folder / f"{i:012d}.wal" for i in ids]  # a previous process's, to replay
        self._next_id = (ids[-1] + 1) if ids else 1
        self.stats = SpoolStats()
        self._lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._pending = _Pending()
        self._appended = 0  # records appended
        self._durable = 0  # records written and fsynced
        self._failed: OSError | None = None  # a failed write or fsync: nothing more is acknowledged
        self._active = self._open_segment()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="pilothouse-spool")
        self._flushing: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None
        self._closed = False

    @property
    def failure(self) -> str | None:
        """Why the spool refuses to acknowledge anything more (a failed write or fsync), or None."""
        return None if self._failed is None else f"durable spool unwritable: {self._failed}"

    def _open_segment(self) -> _Segment:  # under self._lock (or in __init__)
        segment = _Segment(self._next_id, self.folder / f"{self._next_id:012d}.wal")
        self._next_id += 1
        self._segments[segment.id] = segment
        return segment

    # -- the request path ---------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Add one record (in memory until the next flush; its CRC is computed there, off the event
        loop); its segment's id, for :meth:`done`."""
        size = _FRAME.size + len(payload)
        with self._lock:
            segment = self._active
            if segment.size > len(MAGIC) and segment.size + size > self.segment_bytes:
                segment.closed = True
                segment = self._active = self._open_segment()
            segment.size += size
            segment.outstanding += 1
            segment.unwritten += 1
            self._pending.parts.append((segment, payload))
            self._appended += 1
            self.stats.records += 1
            self.stats.bytes += size
            return segment.id

    async def flush(self) -> None:
        """Return once every record appended so far is on disk (fsynced). Requests that call this
        while a flush is running wait for it and then share the next one. Raises ``OSError`` once a
        write or an fsync has failed (a record that may not be on disk is never acknowledged)."""
        target = self._appended
        loop = asyncio.get_running_loop()
        while self._durable < target:
            if self._failed is not None:
                raise self._failed
            if self._flushing is None or self._flushing[0] is not loop or self._flushing[1].done():
                self._flushing = (loop, loop.run_in_executor(self._executor, self._write_out))
            await asyncio.shield(self._flushing[1])

    def flush_sync(self) -> None:
        """:meth:`flush`, from a thread that has no event loop (start-up, shutdown, tests)."""
        if self._durable < self._appended:
            self._executor.submit(self._write_out).result()

    def done(self, segment_ids: Iterable[int]) -> None:
        """Records of these segments (one id per record) are committed to the database (the batch
        writer's thread calls this after its commit)."""
        with self._lock:
            for segment_id in segment_ids:
                self._segments[segment_id].outstanding -= 1

    # -- the flusher thread -------------------------------------------------------------------------

    def _write_out(self) -> None:
        with self._lock:
            if self._failed is not None:
                raise self._failed
            pending, self._pending = self._pending, _Pending()
            target = self._appended
        try:
            touched = self._write(pending.parts)
            for segment in touched:
                assert segment.fd is not None
                _datasync(segment.fd)
            self.stats.fsyncs += 1
        except OSError as exc:
            log.error("the spool could not be written (%s): no more requests are acknowledged", exc)
            with self._lock:
                self._failed = exc
            raise
        with self._lock:
            self._durable = max(self._durable, target)
            for segment, _ in pending.parts:
                segment.unwritten -= 1
            # A record may be committed before it is written (the batch writer can be faster than
            # the flusher): a segment goes once nothing of it is left to write either.
            done = [s for s in self._segments.values() if s.closed and not s.unwritten]
            finished = [s for s in done if not s.outstanding]
            closing = [s for s in done if s.fd is not None]
        for segment in closing:  # a closed segment takes no more writes
            assert segment.fd is not None
            os.close(segment.fd)
            segment.fd = None
        self._delete(finished)

    def _write(self, parts: list[tuple[_Segment, bytes]]) -> list[_Segment]:
        """Write the records, in order and framed, to their segment files (a new file begins with
        :data:`MAGIC`); the segments written to."""
        touched: dict[_Segment, None] = {}  # in order, once each
        new_files = False
        i = 0
        while i < len(parts):
            segment = parts[i][0]
            j = i
            while j < len(parts) and parts[j][0] is segment and j - i < _IOV_MAX // 2:
                j += 1
            buffers = []
            if segment.fd is None:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
                segment.fd = os.open(segment.path, flags, 0o600)
                if not segment.created:
                    new_files = segment.created = True
                    buffers.append(MAGIC)
            for _, payload in parts[i:j]:
                buffers.append(frame(payload))  # zlib.crc32 lets other threads run on large payloads
                buffers.append(payload)
            expected = sum(map(len, buffers))
            written = os.writev(segment.fd, buffers)
            if written != expected:  # short write: the rest, one buffer at a time
                rest = b"".join(buffers)[written:]
                while rest:
                    rest = rest[os.write(segment.fd, rest) :]
            touched[segment] = None
            i = j
        if new_files:  # a new file's folder entry must be on disk too
            dir_fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return list(touched)

    def _delete(self, segments: list[_Segment]) -> None:
        for segment in segments:
            with self._lock:
                if self._segments.pop(segment.id, None) is None:
                    continue
            segment.path.unlink(missing_ok=True)
            self.stats.segments_deleted += 1

    # -- start-up and shutdown ----------------------------------------------------------------------

    def discard_leftover(self) -> None:
        """Delete the previous process's segments (after their records were replayed and committed)."""
        for path in self.leftover:
            path.unlink(missing_ok=True)
        self.leftover = []

    @property
    def unflushed(self) -> int:
        """Records appended and not yet on disk."""
        return self._appended - self._durable

    def close(self) -> None:
        """Write out what is pending and release the folder. Segments whose records are all committed
        are deleted; any other stays, to be replayed by the next process."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush_sync()
            with self._lock:
                for segment in self._segments.values():
                    segment.closed = True
            self._executor.submit(self._write_out).result()
        except OSError:
            log.exception("closing the spool")
        finally:
            self._executor.shutdown()
            for segment in self._segments.values():
                if segment.fd is not None:
                    os.close(segment.fd)
                    segment.fd = None
            os.close(self._lock_fd)


def read_segment(path: Path) -> tuple[list[bytes], int]:
    """The records of one segment file in order, and how many bytes at its end were dropped: a
    record whose length or CRC does not check ends the segment (a torn tail)."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        return [], len(data)
    records: list[bytes] = []
    offset = len(MAGIC)
    end = len(data)
    while offset + _FRAME.size <= end:
        length, crc = _FRAME.unpack_from(data, offset)
        start = offset + _FRAME.size
        if length > MAX_RECORD_BYTES or start + length > end:
            break
        payload = data[start : start + length]
        if zlib.crc32(payload, zlib.crc32(_LENGTH.pack(length))) != crc:
            break
        records.append(payload)
        offset = start + length
    return records, end - offset

"""``PilothouseServer``: ``pilothouse serve`` as a child process on a free loopback port, for tests and
benchmarks that need the real wire (streaming, shutdown, load)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

PILOTHOUSE_BIN = Path(sys.executable).parent / "pilothouse"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PilothouseServer:
    """Starts ``pilothouse serve --database-url URL`` and returns once ``/health`` answers.

    ``with PilothouseServer("sqlite:///x.db") as server: httpx.get(server.base_url + "/api/traces")``.
    ``command_prefix`` wraps the command (``["taskset", "-c", "0"]`` pins it to a core);
    ``capture_output`` keeps what the server prints (see :meth:`output`).
    """

    def __init__(
        self,
        database_url: str,
        *,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        command_prefix: Sequence[str] = (),
        capture_output: bool = True,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        command = [
            *command_prefix,
            str(PILOTHOUSE_BIN),
            "serve",
            "--port",
            str(self.port),
            "--database-url",
            database_url,
            "--log-level",
            "warning",
            *args,
        ]
        sink = subprocess.PIPE if capture_output else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT if capture_output else subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + start_timeout_s
        while True:
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"pilothouse serve did not start: {self.output()}")
            time.sleep(0.05)

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self.proc.pid

    def terminate(self, timeout_s: float = 120.0) -> int:
        """SIGTERM (the server drains its ingest queue), wait, return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        """Stop the server if it still runs."""
        if self.proc.poll() is None:
            self.terminate()

    def output(self) -> str:
        """What the server printed (once it has stopped), when started with ``capture_output``."""
        if self.proc.stdout is None or self.proc.poll() is None:
            return ""
        return self.proc.stdout.read()

    def __enter__(self) -> PilothouseServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

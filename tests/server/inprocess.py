"""The app of ``pilothouse serve`` served by uvicorn on a thread of this process, on a free loopback port:
real HTTP (streams, disconnects, any client) without a process to start; and ``pilothouse`` commands
run in this process. Tests where the process itself is the point (signals, exit statuses and stderr of
the command, start-up errors) use :class:`pilothouse.testing.PilothouseServer` and ``process.cli``."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from pilothouse.config import load_config
from pilothouse.domain.keys import DEFAULT_SCOPES
from pilothouse.gateway.config import GatewayConfig
from pilothouse.server import create_app
from pilothouse.store.sql import SqlStore
from pilothouse.testing import free_port


class InProcessServer:
    """The app ``pilothouse serve --config CONFIG --database-url URL`` would serve (settings from the
    arguments, ``env`` over the environment, then the config file), on ``base_url`` until :meth:`stop`.
    Returns once it listens (its lifespan has started).

    ``with InProcessServer("sqlite:///x.db", home=tmp_path, config=path) as server: ...``
    """

    def __init__(
        self,
        database_url: str,
        *,
        home: Path,
        config: Path | None = None,
        env: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.store = SqlStore.from_url(database_url)
        try:
            with pytest.MonkeyPatch.context() as patch:
                for name, value in (env or {}).items():
                    patch.setenv(name, value)
                loaded = load_config(config, home=home, database_url=database_url, port=self.port, **settings)
                self.settings = loaded.server
                self.app = create_app(
                    self.settings, store=self.store, gateway_config=GatewayConfig.from_config(loaded)
                )
        except BaseException:
            self.store.close()
            raise
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
                proxy_headers=False,  # as `pilothouse serve`: server.trusted_proxies decides
                timeout_graceful_shutdown=5,  # a stream a test left open does not hold the stop
            )
        )
        self._thread = threading.Thread(target=self._server.run, name="pilothouse-serve", daemon=True)
        self._thread.start()
        # `started` is set once the lifespan has run and the port listens; a safety net against a hang
        for _ in range(6000):
            if self._server.started:
                return
            if not self._thread.is_alive():
                break
            self._thread.join(0.01)
        self.stop()
        raise RuntimeError("the in-process server did not start (its error is logged above)")

    def create_key(self, name: str = "test", project: str = "default", **options: Any) -> str:
        """A new API key's secret (every default scope unless ``scopes=`` says otherwise)."""
        scopes = options.pop("scopes", frozenset(DEFAULT_SCOPES))
        _, secret = self.store.create_api_key(project, name, scopes, **options)
        return secret

    def stop(self) -> None:
        """Stop serving (the ingest queue drains first) and close the store."""
        self._server.should_exit = True
        self._thread.join(60)
        self.store.close()

    def __enter__(self) -> InProcessServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cli_in_process(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``pilothouse ARGS`` in this process (click's runner), answered like ``process.cli``."""
    from click.testing import CliRunner

    from pilothouse.cli import cli

    result = CliRunner().invoke(cli, list(args))
    return subprocess.CompletedProcess(["pilothouse", *args], result.exit_code, result.stdout, result.stderr)

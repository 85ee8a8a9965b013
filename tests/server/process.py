"""The ``pilothouse`` command as a real process, for tests where the wire matters."""

from __future__ import annotations

import os
import subprocess

from pilothouse.testing import PilothouseServer
from pilothouse.testing._server import PILOTHOUSE_BIN

ServerProcess = PilothouseServer


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the ``pilothouse`` command."""
    return subprocess.run(
        [str(PILOTHOUSE_BIN), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )

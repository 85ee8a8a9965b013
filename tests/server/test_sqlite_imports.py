"""A server on SQLite does not load PostgreSQL's driver (10 MiB of RSS and its import time)."""

import subprocess
import sys

import pytest


@pytest.mark.slow  # a fresh interpreter: this one has imported psycopg for the PostgreSQL tests
def test_an_app_on_sqlite_loads_no_psycopg(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import sys\n"
        "from pilothouse.config import Settings\n"
        "from pilothouse.server.app import create_app\n"
        "from pilothouse.store.sql import SqlStore\n"
        f"store = SqlStore.from_url('sqlite:///{tmp_path}/x.db')\n"
        "create_app(Settings(), store)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'psycopg'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"

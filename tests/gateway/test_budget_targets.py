"""A budget is refused when it would not limit what its creator means: a key budget naming no active key
of the project (its name, a typo, a revoked key), a project budget naming another project (the value was
silently dropped, and the budget limited the key's own project). One rule for the CLI and the API (the
web UI's form uses it too)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pilothouse.cli import main
from pilothouse.domain.keys import Scope
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with InProcessServer(sqlite_at_head(tmp_path / "b.db"), home=tmp_path) as running:
        yield running


def _create(server: InProcessServer, admin: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/api/budgets",
        json={"period": "day", "limit_usd": 1, **body},
        headers={"Authorization": f"Bearer {admin}"},
    )


def test_the_api_refuses_a_budget_that_would_limit_nothing_meant(server: InProcessServer) -> None:
    admin = server.create_key("admin", scopes=frozenset(Scope))
    app_key, _ = server.store.create_api_key("default", "app", frozenset({Scope.GATEWAY}))
    app_key_id = app_key.id
    old_key, _ = server.store.create_api_key("default", "old", frozenset({Scope.GATEWAY}))
    revoked_id = old_key.id
    assert server.store.revoke_api_key(revoked_id)

    for value, says in [
        ("app", "there is no key with id 'app'"),  # the key's name, not its id
        ("nosuchkey", "there is no key with id 'nosuchkey'"),
        (revoked_id, "is revoked"),
    ]:
        refused = _create(server, admin, scope="key", scope_value=value)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["param"] == "scope_value"
        assert says in refused.json()["error"]["message"].lower()
    other_project = _create(server, admin, scope="project", scope_value="other")
    assert other_project.status_code == 400 and "takes no value" in other_project.text

    made = _create(server, admin, scope="key", scope_value=app_key_id)
    assert made.status_code == 201, made.text
    assert made.json()["scope_value"] == app_key_id
    assert _create(server, admin, scope="project").status_code == 201


def _cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """``pilothouse ARGS`` through its console entry point (one-line errors, exit statuses)."""
    capsys.readouterr()
    monkeypatch.setattr(sys, "argv", ["pilothouse", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_refuses_them_too(
    server: InProcessServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.database_url
    key, _ = server.store.create_api_key("default", "app", frozenset({Scope.GATEWAY}))
    key_id = key.id
    base = ("budgets", "create", "--limit-usd", "5", "--database-url", url)
    code, _, err = _cli(monkeypatch, capsys, *base, "--scope", "key", "--value", "app")
    assert code == 2 and "there is no key with id 'app'" in err, err
    code, _, err = _cli(monkeypatch, capsys, *base, "--scope", "project", "--value", "other")
    assert code == 2 and "takes no value ('other')" in err and "--project" in err, err
    code, _, err = _cli(monkeypatch, capsys, *base, "--scope", "key", "--value", key_id)
    assert code == 0, err
    code, out, _ = _cli(monkeypatch, capsys, "budgets", "list", "--database-url", url)
    assert f"key {key_id} monthly $5.00" in out

"""Issue 21 class 12: logging out ends the session on the server (a copy of the old cookie opens
nothing, on this process and after a restart); failed logins and failed API keys are throttled per
client address and key prefix (429 with Retry-After); the admin key must be long; the session cookie is
Secure when the client came over HTTPS (directly or through a trusted proxy)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pilothouse.config import ConfigError, load_config
from pilothouse.domain.keys import Scope
from pilothouse.ui.session import LOGIN_COOKIE, SESSION_COOKIE
from tests.server.inprocess import InProcessServer
from tests.ui.conftest import csrf_of, login

SECRET = "session-hardening-tests-secret-0123456789"


def _server(tmp_path: Path, **settings: Any) -> InProcessServer:
    return InProcessServer(
        f"sqlite:///{tmp_path / 'ui.db'}",
        home=tmp_path,
        env={"PILOTHOUSE_SESSION_SECRET": SECRET},
        **settings,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcessServer]:
    with _server(
        tmp_path, auth_failures_burst=3, auth_failures_per_minute=1, trusted_proxies=["127.0.0.1"]
    ) as s:
        yield s


def test_logout_ends_the_session_on_the_server(tmp_path: Path) -> None:
    server = _server(tmp_path)
    key = server.create_key("admin", scopes=frozenset({Scope.ADMIN, Scope.READ}))
    with httpx.Client(base_url=server.base_url) as browser:
        assert login(browser, key).status_code == 303
        stolen = browser.cookies[SESSION_COOKIE]
        page = browser.get("/keys")
        assert page.status_code == 200
        csrf = csrf_of(page.text)
        assert browser.post("/logout", data={"csrf": csrf}).status_code == 303
    with httpx.Client(base_url=server.base_url, cookies={SESSION_COOKIE: stolen}) as thief:
        assert thief.get("/keys").status_code == 303  # to the login page
        made = thief.post("/keys", data={"csrf": csrf, "name": "backdoor", "scopes": "admin"})
        assert made.status_code == 303 and made.headers["location"].startswith("/login")
    names = [k.name for k in server.store.list_api_keys("default")]
    assert "backdoor" not in names
    server.stop()
    again = _server(tmp_path)  # a restart: the revocation is stored, not only remembered
    try:
        with httpx.Client(base_url=again.base_url, cookies={SESSION_COOKIE: stolen}) as thief:
            assert thief.get("/keys").status_code == 303
    finally:
        again.stop()


def test_failed_api_keys_are_throttled_per_address_and_prefix(server: InProcessServer) -> None:
    good = server.create_key("reader", scopes=frozenset({Scope.READ}))
    with httpx.Client(base_url=server.base_url) as http:

        def get(secret: str, client: str) -> httpx.Response:
            headers = {"Authorization": f"Bearer {secret}", "X-Forwarded-For": client}
            return http.get("/api/traces", headers=headers)

        assert [get(f"ph-guess-{n:04d}xxxx", "203.0.113.7").status_code for n in range(3)] == [401] * 3
        refused = get("ph-guess-9999xxxx", "203.0.113.7")
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "too_many_auth_failures"
        # the throttled address is refused before its key is looked up, good key or not ...
        assert get(good, "203.0.113.7").status_code == 429
        assert get(good, "198.51.100.1").status_code == 200  # another client is not affected
        # ... except a key that worked lately: clients sharing a proxy with a broken one keep working
        assert get(good, "203.0.113.7").status_code == 200
        # one key prefix guessed from many addresses is throttled too
        prefix = "ph-target0"
        codes = [get(f"{prefix}{n}", f"192.0.2.{n}").status_code for n in range(4)]
        assert codes == [401, 401, 401, 429]


def test_failed_logins_are_throttled(server: InProcessServer) -> None:
    with httpx.Client(base_url=server.base_url, headers={"X-Forwarded-For": "203.0.113.9"}) as browser:
        assert [login(browser, f"ph-wrong-{n}").status_code for n in range(3)] == [401] * 3
        refused = login(browser, "ph-wrong-x")
        assert refused.status_code == 429 and "Too many failed" in refused.text
        assert int(refused.headers["retry-after"]) >= 1


def test_secure_cookie_follows_https_and_trusted_proxies(tmp_path: Path) -> None:
    made = iter(range(100))

    def session_cookie(server: InProcessServer, headers: dict[str, str]) -> str:
        """The Set-Cookie of a login (the login form's cookie sent back by hand: httpx keeps a Secure
        cookie away from plain HTTP, as a browser would; here the TLS ends at the pretend proxy)."""
        key = server.create_key(f"r{next(made)}", scopes=frozenset({Scope.READ}))
        with httpx.Client(base_url=server.base_url, headers=headers) as browser:
            form = browser.get("/login")
            token = re.search(r'name="login_token" value="([^"]+)"', form.text)
            assert token is not None
            answer = browser.post(
                "/login",
                data={"key": key, "login_token": token.group(1), "next": "/"},
                headers={"Cookie": f"{LOGIN_COOKIE}={token.group(1)}"},
            )
            assert answer.status_code == 303, answer.text
            return next(c for c in answer.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))

    https = {"X-Forwarded-Proto": "https"}
    with _server(tmp_path / "a") as untrusted:  # no trusted proxy: the header is the client's claim
        assert "secure" not in session_cookie(untrusted, {}).lower()
        assert "secure" not in session_cookie(untrusted, https).lower()
    with _server(tmp_path / "b", trusted_proxies=["127.0.0.0/8"]) as behind_tls:
        assert "secure" in session_cookie(behind_tls, https).lower()
        assert "secure" not in session_cookie(behind_tls, {}).lower()
    with _server(tmp_path / "c", secure_cookies="always") as always:
        assert "secure" in session_cookie(always, {}).lower()


def test_a_short_admin_key_is_a_one_line_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOTHOUSE_ADMIN_KEY", "hunter2")
    with pytest.raises(ConfigError) as refused:
        load_config()
    message = str(refused.value)
    assert message.startswith("PILOTHOUSE_ADMIN_KEY: must be at least 16 characters")
    assert "hunter2" not in message and "\n" not in message
    monkeypatch.setenv("PILOTHOUSE_ADMIN_KEY", "x" * 16)
    assert load_config().server.admin_key == "x" * 16

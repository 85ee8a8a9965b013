"""The UI over plain HTTP: nothing is readable without a session, sessions are what they claim, bad
input gets a clear message (never a stack trace or another project's data)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pilothouse.ui.session import SESSION_COOKIE
from tests.ui.conftest import ADMIN_SECRET, Seeded, csrf_of, login

PAGES = [
    "/",
    "/traces",
    "/sessions",
    "/users",
    "/models",
    "/costs",
    "/keys",
    "/datasets",
    "/evals",
    "/prompts",
    "/monitors",
]


@pytest.fixture(scope="module")
def admin(seeded: Seeded) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=seeded.base_url, timeout=30) as client:
        assert login(client, seeded.admin_key).status_code == 303
        yield client


def _no_leak(response: httpx.Response) -> None:
    assert "Traceback" not in response.text
    assert "other-secret" not in response.text and "secret-run" not in response.text


def test_nothing_is_readable_without_a_session(seeded: Seeded) -> None:
    with httpx.Client(base_url=seeded.base_url, timeout=30) as anonymous:
        for path in [
            *PAGES,
            f"/traces/{seeded.tool_trace}",
            f"/sessions/{seeded.session_id}",
            f"/evals/{seeded.runs['baseline']}",
            "/datasets/capitals",
        ]:
            response = anonymous.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login"), path
            assert "capitals" not in response.text and "alice" not in response.text
        posted = anonymous.post(f"/traces/{seeded.tool_trace}/scores", data={"name": "x", "value": "1"})
        assert posted.status_code == 303 and posted.headers["location"].startswith("/login")
        htmx = anonymous.get("/", headers={"HX-Request": "true"})
        assert htmx.status_code == 401 and htmx.headers["hx-redirect"] == "/login"
        # a forged or tampered cookie is no session
        anonymous.cookies.set(SESSION_COOKIE, "eyJrIjoiYWRtaW4ifQ.AAAA")
        assert anonymous.get("/traces").status_code == 303


def test_login_refuses_bad_keys_with_a_reason(seeded: Seeded) -> None:
    with httpx.Client(base_url=seeded.base_url, timeout=30) as client:
        wrong = login(client, "ph-not-a-key")
        assert wrong.status_code == 401 and "not valid" in wrong.text
        no_read = login(client, seeded.ingest_key)
        assert (
            no_read.status_code == 403
            and "neither the &#39;read&#39; nor the &#39;admin&#39; scope" in no_read.text
        )
        assert SESSION_COOKIE not in client.cookies
        # the login form's own token guards against login CSRF
        forged = client.post("/login", data={"key": seeded.admin_key, "login_token": "forged"})
        assert forged.status_code == 400 and "expired" in forged.text


def test_session_cookie_names_the_key_not_its_secret(seeded: Seeded) -> None:
    with httpx.Client(base_url=seeded.base_url, timeout=30) as client:
        response = login(client, seeded.read_key, next_path="/traces?status=error")
        assert response.status_code == 303 and response.headers["location"] == "/traces?status=error"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
        assert seeded.read_key not in cookie and seeded.read_key[3:20] not in cookie
        page = client.get("/keys")
        assert page.status_code == 200 and "admin" in page.text and "ui-admin" not in page.text  # no key list
        assert "The database takes" not in page.text  # nor the storage figures
        assert page.headers["cache-control"] == "no-store"
        assert "default-src 'self'" in page.headers["content-security-policy"]
        # a read key may not change keys
        denied = client.post(
            "/keys", data={"csrf": csrf_of(client.get("/traces").text), "name": "x", "scopes": "read"}
        )
        assert denied.status_code == 403 and "admin" in denied.text


def test_admin_secret_logs_into_the_project_it_names(seeded: Seeded) -> None:
    with httpx.Client(base_url=seeded.base_url, timeout=30) as client:
        assert login(client, ADMIN_SECRET, project="other").status_code == 303
        page = client.get("/traces")
        assert "other-secret" in page.text and "travel-agent" not in page.text
        assert client.get(f"/traces/{seeded.tool_trace}").status_code == 404
    with httpx.Client(base_url=seeded.base_url, timeout=30) as client:
        bad = login(client, ADMIN_SECRET, project="../etc")
        assert bad.status_code == 400 and "project id" in bad.text


def test_another_projects_ids_are_not_found(seeded: Seeded, admin: httpx.Client) -> None:
    for path, what in (
        (f"/traces/{seeded.other_trace}", "trace"),
        (f"/evals/{seeded.other_run}", "eval run"),
        (f"/evals/compare?baseline={seeded.runs['baseline']}&candidate={seeded.other_run}", "eval run"),
        ("/sessions/no-such-session", "session"),
        ("/datasets/no-such-dataset", "dataset"),
        ("/traces/ffffffffffffffffffffffffffffffff", "trace"),
    ):
        response = admin.get(path)
        assert response.status_code == 404, path
        assert f"There is no {what}" in response.text, path
        _no_leak(response)
    csrf = csrf_of(admin.get("/traces").text)
    scored = admin.post(
        f"/traces/{seeded.other_trace}/scores", data={"csrf": csrf, "name": "x", "value": "1"}
    )
    assert scored.status_code == 404
    revoked = admin.post("/keys/not-a-key-id/revoke", data={"csrf": csrf})
    assert revoked.status_code == 404


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (
            "/traces?min_latency_ms=fast",
            "Invalid query parameter &#39;min_latency_ms&#39;: &#39;fast&#39; is not a number",
        ),
        ("/traces?from=yesterday", "Invalid query parameter &#39;from&#39;"),
        ("/traces?status=broken", "must be &#39;ok&#39; or &#39;error&#39;"),
        ("/traces?cursor=%%%", "cursor is not one this server gave out"),
        ("/traces?colour=red", "unknown filter"),
        ("/?range=2d", "&#39;range&#39; must be one of 1h, 24h, 7d, 30d"),
        ("/?refresh=1", "&#39;refresh&#39; must be"),
        ("/sessions?cursor=zzz", "cursor"),
        ("/evals/compare?baseline=&candidate=", "Choose a baseline and a candidate"),
        ("/evals/compare?baseline=a&candidate=b&margin=lots", "must be a number such as 0.02"),
        ("/datasets/capitals?after=-1", "is not a whole number"),
    ],
)
def test_bad_input_gets_a_clear_message(admin: httpx.Client, path: str, message: str) -> None:
    response = admin.get(path)
    assert response.status_code == 400, response.text
    assert message in response.text
    _no_leak(response)


def test_forms_need_the_sessions_csrf_token(seeded: Seeded, admin: httpx.Client) -> None:
    for token in (None, "forged"):
        data = {"name": "sneaky", "value": "1"} | ({"csrf": token} if token else {})
        response = admin.post(f"/traces/{seeded.tool_trace}/scores", data=data)
        assert response.status_code == 403 and "CSRF" in response.text
    assert "sneaky" not in admin.get(f"/traces/{seeded.tool_trace}").text
    # another session's token does not fit this session
    with httpx.Client(base_url=seeded.base_url, timeout=30) as other:
        login(other, seeded.admin_key)
        foreign = csrf_of(other.get("/traces").text)
    response = admin.post(
        f"/traces/{seeded.tool_trace}/scores", data={"csrf": foreign, "name": "x", "value": "1"}
    )
    assert response.status_code == 403


def test_bad_score_form_says_what_is_wrong(seeded: Seeded, admin: httpx.Client) -> None:
    csrf = csrf_of(admin.get("/traces").text)
    response = admin.post(
        f"/traces/{seeded.tool_trace}/scores",
        data={"csrf": csrf, "name": "helpful", "data_type": "numeric", "value": "very", "comment": "meh"},
    )
    assert response.status_code == 400 and "Score not added: &#39;very&#39; is not a number." in response.text
    # the form keeps what was typed (issue 23, item 10)
    for typed in ('id="s-name" name="name"', 'value="helpful"', 'value="very"', 'value="meh"'):
        assert typed in response.text
    assert '<option value="numeric" selected>' in response.text


def test_revoking_the_sessions_key_ends_the_session(seeded: Seeded) -> None:
    from tests.server.inprocess import cli_in_process

    done = cli_in_process(
        "keys",
        "create",
        "--name",
        "short-lived",
        "--scopes",
        "read,admin",
        "--database-url",
        seeded.database_url,
    )
    secret = done.stdout.strip().splitlines()[-1]
    key_id = done.stderr.split("Created key ")[1].split()[0]
    with httpx.Client(base_url=seeded.base_url, timeout=30) as client:
        assert login(client, secret).status_code == 303
        keys_page = client.get("/keys")
        assert keys_page.status_code == 200
        assert "The database takes" in keys_page.text and "are kept for ever" in keys_page.text  # storage
        revoked = client.post(f"/keys/{key_id}/revoke", data={"csrf": csrf_of(keys_page.text)})
        assert revoked.status_code == 303
        after = client.get("/traces")
        assert after.status_code == 303 and after.headers["location"].startswith("/login")


def test_static_assets_are_vendored_with_their_licences(seeded: Seeded) -> None:
    with httpx.Client(base_url=seeded.base_url, timeout=30) as client:
        for path in (
            "/static/vendor/htmx-2.0.11.min.js",
            "/static/vendor/uPlot-1.6.32.iife.min.js",
            "/static/app.js",
            "/static/app.css",
        ):
            assert client.get(path).status_code == 200, path
        page = client.get("/login").text
        assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page
    licences = __import__("pathlib").Path(__file__).resolve().parents[2] / "src/pilothouse/ui/static/LICENSES"
    assert {p.name for p in licences.iterdir()} >= {"htmx.org-2.0.11-LICENSE", "uplot-1.6.32-LICENSE"}


def test_auto_refresh_gets_the_dashboard_fragment(admin: httpx.Client) -> None:
    page = admin.get("/?refresh=30")
    assert 'hx-trigger="every 30s"' in page.text and "<html" in page.text
    fragment = admin.get("/?refresh=30", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<div id="dashboard"') and "<html" not in fragment.text


def test_a_gateway_trace_shows_its_attempts_and_fallback(seeded: Seeded, admin: httpx.Client) -> None:
    listing = admin.get("/traces", params={"name": "chat flaky"})
    trace_id = listing.text.split('href="/traces/', 1)[1].split('"', 1)[0]
    page = admin.get(f"/traces/{trace_id}").text
    assert "Attempts and fallbacks" in page
    assert "sim/sim-flaky@default" in page and "simulated server error" in page  # the failed try
    assert "sim/gpt-4o-mini@default" in page  # the fallback that answered
    assert "Be brief." in page and 'class="msg role-system"' in page

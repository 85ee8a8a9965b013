"""Issue 21 class 11: no query parameter of any GET route of the API or the UI gives a 500. The routes
come from the app itself (Starlette's route table), their parameters from the source of the modules
that read them, so that a new route or parameter is walked without editing this test."""

from __future__ import annotations

import base64
import importlib
import inspect
import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from pilothouse.domain.keys import DEFAULT_SCOPES
from pilothouse.server import Settings, create_app
from pilothouse.store.sql import SqlStore
from pilothouse.ui.routes import PAGES
from tests.conftest import sqlite_at_head
from tests.ui.conftest import login

pytestmark = pytest.mark.slow  # some thousands of requests


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


HOSTILE = [
    "inf",
    "-inf",
    "nan",
    "1e300",
    "-1e300",
    "-1",
    "0001-01-01",
    "9999-12-31T23:59:59",
    "99999999999999999999999",
    "999999999999w",
    "\x00",
    "x" * 3000,
    _cursor(f"{10**30}:abc"),
    _cursor("-99999999999999999999999:\x00"),
    _cursor("nan:x"),
    "!!!",
]
_PARAM = re.compile(r'params(?:\.get|\.getlist)?[(\[]\s*"(\w+)"|params,\s*"(\w+)"')
_PATH_VALUES = {"trace_id": "0af7651916cd43dd8448eb211c80319c", "run_id": "r1", "name": "capitals"}


_IMPORTED = re.compile(r"from (pilothouse\.(?:server|ui)\.\w+) import")


def _parameters(module_name: str, depth: int = 1) -> set[str]:
    """The query parameter names that a module reads, and the server and UI modules it imports
    (a UI page parses the trace filters with the API's parser)."""
    source = inspect.getsource(importlib.import_module(module_name))
    names = {found.group(1) or found.group(2) for found in _PARAM.finditer(source)}
    if depth:
        for imported in _IMPORTED.findall(source):
            names |= _parameters(imported, depth - 1)
    return names


def _get_routes(app: TestClient) -> dict[str, set[str]]:
    """Every GET route of the app (path parameters filled in) and the query parameters it may read."""
    pages = {path: handler for path, handler, method in PAGES if method == "GET"}
    starlette = app.app.app  # type: ignore[attr-defined]  # FastPathApp wraps the Starlette app
    routes = {}
    for route in starlette.routes:
        if isinstance(route, Route) and route.methods and "GET" in route.methods:
            path = re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: _PATH_VALUES.get(m.group(1), "x1"), route.path)
            routes[path] = _parameters(pages.get(route.path, route.endpoint).__module__)
    return routes


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("hostile")
    store = SqlStore.from_url(sqlite_at_head(tmp / "api.db"))
    _, key = store.create_api_key("p1", "test", frozenset(DEFAULT_SCOPES))
    app = create_app(Settings(home=tmp), store=store)
    with TestClient(app, follow_redirects=False, raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {key}"
        assert login(test_client, key).status_code == 303  # type: ignore[arg-type]  # UI pages too
        yield test_client
    store.close()


def test_the_walk_finds_routes_and_parameters(client: TestClient) -> None:
    routes = _get_routes(client)
    assert {"/api/traces", "/api/sessions", "/traces", "/costs", "/evals/compare"} <= set(routes)
    assert {"from", "to", "cursor", "min_latency_ms", "min_cost_usd", "limit"} <= routes["/traces"]
    assert "since" in routes["/api/costs"]


def test_no_hostile_query_parameter_gives_a_500(client: TestClient) -> None:
    failures = []
    for path, names in _get_routes(client).items():
        for name in sorted(names):
            for value in HOSTILE:
                response = client.get(path, params={name: value}, follow_redirects=False)
                if response.status_code >= 500:
                    failures.append(f"GET {path}?{name}={value[:40]!r}: {response.status_code}")
                elif (
                    response.status_code == 400
                    and path.startswith("/api")
                    and response.json()["error"].get("param") is None  # the API's shape names it
                ):
                    failures.append(f"GET {path}?{name}={value[:40]!r}: 400 without its param")
    assert not failures, f"{len(failures)} bad answers:\n" + "\n".join(failures[:60])


def test_no_hostile_path_parameter_gives_a_500(client: TestClient) -> None:
    starlette = client.app.app  # type: ignore[attr-defined]
    templates = [
        r.path
        for r in starlette.routes
        if isinstance(r, Route) and r.methods and "GET" in r.methods and "{" in r.path
    ]
    assert "/api/traces/{trace_id}" in templates
    failures = []
    for template in templates:
        for value in HOSTILE:
            path = re.sub(r"\{(\w+)(?::\w+)?\}", quote(value, safe=""), template)
            response = client.get(path, follow_redirects=False)
            if response.status_code >= 500:
                failures.append(f"GET {template} with {value[:40]!r}: {response.status_code}")
    assert not failures, "\n".join(failures)

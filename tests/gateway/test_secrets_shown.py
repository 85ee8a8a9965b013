"""Issue 21 class 9: a password in a deployment's or an eval target's ``base_url`` and the values of an
eval target's ``headers`` are used for the calls but never shown or stored: not on ``/metrics``,
``/api/deployments``, in traces, in ``eval_runs.spec``, nor on the UI's pages."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from pilothouse.domain.keys import Scope
from pilothouse.evals import Evaluations
from pilothouse.evals.spec import parse_spec
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from pilothouse.testing import SimulatedUpstream
from tests.evals.conftest import explain_spec
from tests.gateway.conftest import start_gateway
from tests.ui.conftest import login

PASSWORD = "HUNTER2-upstream-password"


def test_deployment_url_password_is_redacted_wherever_it_is_shown(
    tmp_path: Path, upstream: SimulatedUpstream
) -> None:
    url = upstream.base_url.replace("http://", f"http://bob:{PASSWORD}@") + "/v1"
    gw = start_gateway(
        tmp_path, upstream, [{"name": "m", "provider": "openai", "model": "gpt-4o-mini", "base_url": url}]
    )
    try:
        base = gw.server.base_url
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        answer = httpx.post(base + "/v1/chat/completions", json=body, headers=gw.auth)
        assert answer.status_code == 200, answer.text  # the deployment is used, password and all
        shown = {
            "/metrics": httpx.get(base + "/metrics").text,
            "/api/deployments": httpx.get(base + "/api/deployments", headers=gw.auth).text,
            "trace": str(gw.traces(1)),
        }
        with httpx.Client(base_url=base) as browser:
            admin = gw.server.create_key("ui", scopes=frozenset({Scope.ADMIN, Scope.READ}))
            assert login(browser, admin).status_code == 303
            shown["UI /models"] = browser.get("/models").text
        for where, text in shown.items():
            assert PASSWORD not in text, where
        assert "bob:<redacted>@127.0.0.1" in shown["/api/deployments"]
        assert "bob:<redacted>@" in shown["trace"]
    finally:
        gw.server.stop()


def test_query_string_values_are_redacted_with_the_password() -> None:
    from pilothouse.domain.redaction import redact_url

    shown = redact_url("openai/m@http://bob:HUNTER2@127.0.0.1:1/v1?api_key=SECRETQ&token=TOK2#x")
    assert shown == "openai/m@http://bob:<redacted>@127.0.0.1:1/v1?api_key=<redacted>&token=<redacted>#x"
    assert redact_url("http://host/v1") == "http://host/v1"


def test_eval_target_headers_and_url_password_are_used_but_not_stored(
    tmp_path: Path, upstream: SimulatedUpstream
) -> None:
    gw = start_gateway(
        tmp_path,
        upstream,
        [{"name": "m", "provider": "openai", "model": "gpt-4o-mini", "base_url": upstream.base_url + "/v1"}],
    )
    try:
        # the gateway's key travels only in target.headers: a redacted header would be a 401
        target = {
            "model": "m",
            "base_url": gw.base_url.replace("http://", f"http://bob:{PASSWORD}@"),
            "headers": {"Authorization": f"Bearer {gw.key}", "X-Env": "${HOME}"},
            "prompt": "Explain {{topic}}.",
        }
        spec = parse_spec(explain_spec(tmp_path, 3, target=target), base_dir=tmp_path)
        store = SqlStore.from_url(gw.server.database_url)
        run = asyncio.run(Evaluations.over(store).run(spec))
        assert run.summary is not None and run.summary.errors == 0
        stored = EvalStore(store).get_run(run.id)
        store.close()
        assert stored is not None
        text = str(stored.spec) + stored.target
        assert PASSWORD not in text and gw.key not in text
        assert stored.spec["target"]["headers"] == {"Authorization": "<redacted>", "X-Env": "${HOME}"}
        assert stored.spec["target"]["base_url"].startswith("http://bob:<redacted>@127.0.0.1")
        with httpx.Client(base_url=gw.server.base_url) as browser:
            admin = gw.server.create_key("ui", scopes=frozenset({Scope.ADMIN, Scope.READ}))
            assert login(browser, admin).status_code == 303
            page = browser.get(f"/evals/{run.id}")
            assert page.status_code == 200
            assert PASSWORD not in page.text and gw.key not in page.text
    finally:
        gw.server.stop()


def test_secrets_in_free_text_are_found_and_redacted_and_plain_text_is_kept() -> None:
    from pilothouse.domain.redaction import redact_text, secret_spans

    key = "sk-ant-" + "x9" * 15
    text = (
        f"called https://alice:S3CRET@api.example/v1?token=T0KEN99 with {key}; "
        "Authorization: Bearer abc.def-ghi_jkl; password: hunter22; token: none"
    )
    assert redact_text(text) == (
        "called https://alice:<redacted>@api.example/v1?token=<redacted> with <redacted>; "
        "Authorization: Bearer <redacted>; password: <redacted>; token: none"
    )
    plain = "The summary says 12 people came; see https://example.org/page for the token limit."
    assert redact_text(plain) == plain
    assert list(secret_spans("Bearer short")) == []  # under 8 characters: a word, not a token
    # bounded patterns: a long run of what almost matches is read in linear time
    assert redact_text("Bearer " + "a" * 100_000) == "Bearer <redacted>" + "a" * (100_000 - 2000)

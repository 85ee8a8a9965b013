"""The review screen shows a chat input as its messages (role and text), not as the JSON it is stored
as, over a real server on loopback."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import httpx

from pilothouse.domain.keys import Scope
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer
from tests.ui.conftest import login

CONFIG = "models:\n  - {name: parrot, provider: sim, model: echo-1, options: {echo: true}}\n"


def test_the_review_screen_shows_a_chat_input_as_messages(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(CONFIG)
    url = sqlite_at_head(tmp_path / "r.db")
    with InProcessServer(url, home=tmp_path, config=config, online_evals=False) as server:
        key = server.create_key("lead", scopes=frozenset(Scope))
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as api:
            chat = [
                {"role": "system", "content": "Answer from the passage."},
                {"role": "user", "content": "Where is the Louvre?"},
            ]
            trace_id = api.post("/v1/chat/completions", json={"model": "parrot", "messages": chat}).headers[
                "x-pilothouse-trace-id"
            ]
            deadline = time.monotonic() + 30
            while not api.get("/api/traces").json()["data"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert api.post("/api/review/configs", json={"name": "ok", "kind": "boolean"}).status_code == 201
            assert api.post("/api/review/queues", json={"name": "q", "configs": ["ok"]}).status_code == 201
            assert api.post("/api/review/queues/q/items", json={"trace_ids": [trace_id]}).json()["added"] == 1
        with httpx.Client(base_url=server.base_url, follow_redirects=True) as browser:
            assert login(browser, key).status_code == 200
            page = browser.get("/review/queues/q")
    assert page.status_code == 200, page.text
    shown = re.search(r'<div id="review-input">(.*?)</ol>', page.text, re.S)
    assert shown, page.text
    roles = re.findall(r'<li class="msg role-(\w+)">', shown.group(1))
    assert roles == ["system", "user"]
    text = html.unescape(shown.group(1))
    assert "Where is the Louvre?" in text and '"role":' not in text

"""The online evaluators page and the trace page's online results, in-process: what the worker did
shows where people look, with the worker's watchdog."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pilothouse.quality.online import OnlineWorker, WorkerOptions
from tests.quality.online_traces import store_trace
from tests.server.conftest import Served, serve
from tests.ui.conftest import login

pytestmark = pytest.mark.slow  # a login and a served app: over 0.3 s


@pytest.fixture
def viewer(tmp_path: Path) -> Iterator[Served]:
    """The app (no worker of its own: the test runs one, step by step) with a session of project p1."""
    for served in serve(tmp_path, online_evals=False):
        assert [r.status_code for r in login(served.client, served.key).history] == [303]
        yield served


def test_the_page_lists_evaluators_and_the_trace_shows_their_results(viewer: Served) -> None:
    online = viewer.client.app.state.pilothouse.online  # type: ignore[attr-defined]
    online.create("p1", "mentions-paris", {"scorer": {"type": "contains", "value": "Paris"}})
    online.create("p1", "mentions-rome", {"scorer": {"type": "contains", "value": "Rome"}, "sampling": 0.5})
    filters = {"tags": ["prod", "eu"], "metadata": {"tier": "free"}}
    online.create("p1", "filtered", {"scorer": {"type": "contains", "value": "x"}, "filters": filters})
    trace = store_trace(viewer.store, project="p1")
    worker = OnlineWorker(online, lambda _name: None, WorkerOptions(settle_s=0))
    for _ in range(5):
        # in a thread of its own: the browser tests' Playwright keeps an event loop running in this one
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, worker.run_once()).result()

    page = viewer.client.get("/evaluators")
    assert page.status_code == 200
    assert "No worker runs in this process" in page.text
    assert page.text.count('<th scope="row">mentions-') == 2
    assert ">50.0%<" in page.text or ">50%<" in page.text
    # filters read as words, not as Python's repr of a list
    assert "tags: eu, prod; metadata: tier free" in page.text and "[&#39;" not in page.text

    shown = viewer.client.get(f"/traces/{trace}").text
    assert 'id="online-h"' in shown and "mentions-paris" in shown and ">scored<" in shown
    assert "mentions-paris v1" in shown  # the score itself, source online

"""An eval run's scorer details end to end (issue 24), in a real browser (Debian's chromium) against the
seeded server: a run with the real ``hallucination`` scorer (the local detector, and a cascade whose
judge is the simulated model) stores each score's details; the results API gives them; the run page
counts each item's unsupported spans and links the item, whose page shows the response with the
span highlighted and says whether the judge was called. A run stored before details were kept still
opens. The local detector loads a model: slow."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from pilothouse.domain.evals import EvalRun
from pilothouse.evals.runner import run_eval
from pilothouse.evals.spec import parse_spec
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from tests.evals.conftest import write_jsonl, write_yaml
from tests.ui.conftest import Seeded
from tests.ui.test_browser import shot

pytestmark = pytest.mark.slow

CONTEXT = "The Eiffel Tower, built in 1889 for the World's Fair, is 330 metres tall."
WRONG = "The Eiffel Tower is 450 metres tall and was built in 1889."
RIGHT = "The Eiffel Tower was built in 1889."


@pytest.fixture(scope="module")
def checked_run(seeded: Seeded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EvalRun]:
    """A run of two answers against their context: one the context contradicts (450 metres), one it
    supports; scored by the local detector and by a cascade that sends every check to its judge."""
    folder = tmp_path_factory.mktemp("hallucination-run")
    knowledge = folder / "verdicts.jsonl"  # the judge knows the wrong answer, and quotes it
    write_jsonl(
        knowledge,
        [
            {
                "question": "450 metres",
                "answer": '{"supported": false, "unsupported": ["450 metres tall"]}',
                "difficulty": 0,
            }
        ],
    )
    models = [
        {"name": "sim", "provider": "sim", "model": "sim-1", "options": {"echo": True}},
        {"name": "judge", "provider": "sim", "model": "sim-judge", "options": {"knowledge": str(knowledge)}},
    ]
    config = str(write_yaml(folder / "models.yaml", {"models": models, "router": {"retries": 0}}))
    write_jsonl(
        folder / "facts.jsonl",
        [
            {"id": "tower-height", "input": {"answer": WRONG, "context": CONTEXT}},
            {"id": "tower-built", "input": {"answer": RIGHT, "context": CONTEXT}},
        ],
    )
    spec = {
        "name": "tower-facts",
        "dataset": "facts.jsonl",
        "target": {
            "model": "sim",
            "config": config,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": "{{answer}}"}],
        },
        "judge": {"model": "judge", "config": config},
        "scorers": [
            {"type": "hallucination", "name": "faithful"},  # the local detector alone
            {"type": "hallucination", "name": "cascade", "escalate": 1.0},  # every check to the judge
        ],
    }
    store = SqlStore.from_url(seeded.database_url)
    try:
        # on a thread of its own: the browser's Playwright holds an event loop on this one
        with ThreadPoolExecutor(1) as pool:
            run = pool.submit(asyncio.run, run_eval(parse_spec(spec, base_dir=folder), EvalStore(store)))
            done = run.result()
        yield done
    finally:
        store.close()


def test_the_results_api_gives_the_spans_and_the_judge_calls(seeded: Seeded, checked_run: EvalRun) -> None:
    with httpx.Client(base_url=seeded.base_url, timeout=30) as http:
        answer = http.get(
            f"/api/evals/runs/{checked_run.id}/results",
            headers={"Authorization": f"Bearer {seeded.admin_key}"},
        )
    assert answer.status_code == 200, answer.text
    by_item = {r["item_id"]: {s["scorer"]: s for s in r["scores"]} for r in answer.json()["data"]}
    wrong, right = by_item["tower-height"], by_item["tower-built"]
    assert (
        wrong["faithful"]["details"]["source"] == "local"
        and "judge_called" not in wrong["faithful"]["details"]
    )
    assert wrong["cascade"]["details"]["judge_called"] is True and wrong["cascade"]["value"] == 0.0
    (span,) = wrong["cascade"]["details"]["spans"]  # the judge's quote, found in the response
    assert WRONG[span["start"] : span["end"]] == span["text"] == "450 metres tall"
    assert right["cascade"]["details"]["spans"] == []


def test_the_item_page_highlights_the_unsupported_span(
    browser: Any, seeded: Seeded, checked_run: EvalRun
) -> None:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    try:
        tab.goto(seeded.base_url + "/login")
        tab.fill("#key", seeded.admin_key)
        tab.click("button[type=submit]")
        tab.wait_for_url(re.compile(r"/$"))
        tab.goto(f"{seeded.base_url}/evals/{checked_run.id}")
        row = tab.locator("tbody tr", has=tab.locator("code", has_text="tower-height"))
        expect(row.get_by_role("link", name="1 unsupported span")).to_have_count(2)  # both scorers
        expect(row.get_by_text("judge called")).to_be_visible()  # the cascade's column
        row.locator("a.item-link").click()
        tab.wait_for_url(re.compile(r"/items/tower-height$"))
        marks = tab.locator("pre.response mark.unsupported")
        expect(marks).to_have_count(1)
        assert "450 metres tall" in marks.first.inner_text()
        assert tab.locator("pre.response").inner_text() == WRONG  # highlighted, not changed
        cascade = tab.locator("tr[data-scorer='cascade']")
        expect(cascade.locator(".judge-called")).to_have_text("judge called: yes")
        expect(cascade.locator("ol.spans li mark")).to_have_text("450 metres tall")
        faithful = tab.locator("tr[data-scorer='faithful']")
        expect(faithful.locator(".judge-called")).to_have_text("judge called: no")
        expect(faithful.locator("dl.kv dt", has_text="label")).to_be_visible()
        shot(tab, "eval-item")

        tab.goto(f"{seeded.base_url}/evals/{checked_run.id}/items/tower-built")
        expect(tab.locator("pre.response mark.unsupported")).to_have_count(0)
        assert tab.locator("pre.response").inner_text() == RIGHT

        # a run stored before details were kept: its items open, their scores without details
        tab.goto(f"{seeded.base_url}/evals/{seeded.runs['candidate']}")
        tab.locator("a.item-link").first.click()
        expect(tab.get_by_text("no details stored").first).to_be_visible()
        expect(tab.locator("tr[data-scorer='exact_match'] td.num")).to_have_text("1")
        missing = tab.goto(f"{seeded.base_url}/evals/{checked_run.id}/items/no-such-item")
        assert missing is not None and missing.status == 404
    finally:
        context.close()
    assert not errors, f"errors in the page: {errors}"

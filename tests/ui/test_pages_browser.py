"""Issue 23, items 8 and 10-12 in a real browser (Debian's chromium) against the seeded server: local
times with UTC on hover, no clipped columns at 1440 px and no sideways scroll at 390 px; the score
form's errors beside it with the typed values kept, every POST redirected; the first run (the key
``pilothouse serve`` prints opens the Keys page, an empty project says what to do next with this
server's URL); keys (last used, a key picker for budgets, revoked keys' budgets), dataset items
(edit, delete, metadata, the runs that used the dataset), the run page's expected answers and judge
reasons, and a styled 404. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import EvalResult, RunStatus, ScoreRecord
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from pilothouse.testing import PilothouseServer
from tests.ui.conftest import Seeded, _key
from tests.ui.test_browser import shot

pytestmark = pytest.mark.slow


def _context(browser: Any, **options: Any) -> Any:
    context = browser.new_context(**{"viewport": {"width": 1440, "height": 900}, **options})
    return context


@pytest.fixture
def tab(browser: Any, seeded: Seeded) -> Iterator[Any]:
    context = _context(browser, color_scheme="light", timezone_id="Asia/Tokyo")
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    _log_in(page, seeded, seeded.admin_key)
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def _log_in(page: Any, seeded: Seeded, key: str) -> None:
    page.goto(seeded.base_url + "/login")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))


def test_times_are_local_with_utc_on_hover(tab: Any, seeded: Seeded) -> None:
    tab.goto(f"{seeded.base_url}/traces/{seeded.tool_trace}")
    started = tab.locator(".facts time").first
    utc = started.get_attribute("title")
    assert utc.endswith(" UTC")
    shown = started.inner_text()
    at = datetime.strptime(utc, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    assert shown.startswith((at + timedelta(hours=9)).strftime("%Y-%m-%d %H:%M:%S"))  # Tokyo
    assert "UTC" not in shown
    tab.goto(seeded.base_url + "/traces")  # the list's times too
    first = tab.locator("table.traces time").first
    assert first.get_attribute("title").endswith(" UTC") and "UTC" not in first.inner_text()


CLIPPED = """[...document.querySelectorAll('.table-wrap')]
  .filter(w => w.scrollWidth > w.clientWidth + 1)
  .map(w => (w.closest('section, main').querySelector('h1, h2, h3') || {}).textContent)"""
# what sticks out of the page at the right (for the message of a failure)
WIDE = """[...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1
    && e.parentElement.getBoundingClientRect().right <= document.documentElement.clientWidth + 1)
  .slice(0, 5)
  .map(e => e.tagName + '.' + e.className + ' in ' + e.parentElement.className)"""
PAGES = ["/", "/traces", "/sessions", "/users", "/models", "/costs", "/keys", "/datasets", "/evals"]


def test_no_clipped_columns_at_1440_and_no_sideways_scroll_at_390(browser: Any, seeded: Seeded) -> None:
    pages = [
        *PAGES,
        f"/traces/{seeded.tool_trace}",
        f"/evals/{seeded.runs['candidate']}",
        "/datasets/capitals",
    ]
    for width in (1440, 390):
        context = _context(browser, viewport={"width": width, "height": 900})
        page = context.new_page()
        _log_in(page, seeded, seeded.admin_key)
        for path in pages:
            page.goto(seeded.base_url + path)
            page.wait_for_load_state("load")
            sideways = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            wide = page.evaluate(WIDE)
            assert sideways <= 0, f"{path} at {width} px scrolls sideways by {sideways} px: {wide}"
            if width == 1440:  # every table fits its box: nothing hidden behind a scroll bar
                clipped = page.evaluate(CLIPPED)
                assert not clipped, f"{path} at 1440 px clips columns of {clipped}"
        if width == 390:
            page.goto(f"{seeded.base_url}/traces/{seeded.tool_trace}")
            shot(page, "trace-390", full_page=False)
        context.close()


def test_the_score_form_keeps_typed_values_beside_its_error_and_every_post_redirects(
    tab: Any, seeded: Seeded
) -> None:
    tab.goto(f"{seeded.base_url}/traces/{seeded.tool_trace}")
    tab.fill("#s-name", "tone")
    tab.select_option("#s-type", "numeric")
    tab.fill("#s-value", "very good")
    tab.fill("#s-comment", "kept after the error")
    tab.click("form[aria-label='Add a score'] button[type=submit]")
    error = tab.locator("#scores [role=alert]")
    assert "is not a number" in error.inner_text()
    assert tab.input_value("#s-name") == "tone" and tab.input_value("#s-value") == "very good"
    assert tab.input_value("#s-comment") == "kept after the error"
    # the error sits right above the form it is about
    assert (
        tab.evaluate(
            "document.querySelector('#scores [role=alert]').nextElementSibling.getAttribute('aria-label')"
        )
        == "Add a score"
    )
    tab.fill("#s-value", "0.5")
    tab.click("form[aria-label='Add a score'] button[type=submit]")
    tab.wait_for_selector("#scores td:has-text('kept after the error')")
    count = tab.locator("#scores td:has-text('kept after the error')").count()
    tab.reload()  # a GET: nothing is posted again
    assert tab.locator("#scores td:has-text('kept after the error')").count() == count


def test_the_first_key_opens_the_keys_page(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'first.db'}"
    env = {"PILOTHOUSE_HOME": str(tmp_path)}
    first = PilothouseServer(url, env=env)
    first.stop()
    printed = first.output()
    key = re.search(r"\n\s+(ph-\S+)", printed)
    assert key, printed
    assert "scopes admin, gateway, ingest, read" in printed
    with PilothouseServer(url, env=env) as server, httpx.Client(base_url=server.base_url) as client:
        form = client.get("/login").text
        token = re.search(r'name="login_token" value="([^"]+)"', form)
        assert token
        client.post("/login", data={"key": key.group(1), "login_token": token.group(1), "next": "/keys"})
        keys = client.get("/keys")
        assert keys.status_code == 200 and "first key" in keys.text and "Create a key" in keys.text
        home = client.get("/")
        assert "send a first trace" in home.text
        assert f"curl {server.base_url}/v1/chat/completions" in home.text


def test_an_empty_project_says_what_to_do_next_with_this_servers_url(browser: Any, seeded: Seeded) -> None:
    fresh = _key(seeded.database_url, "fresh-reader", "read", project="fresh")
    context = _context(browser, color_scheme="light")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=seeded.base_url)
    page = context.new_page()
    _log_in(page, seeded, fresh)
    start = page.locator("section.onboarding")
    assert "send a first trace" in start.inner_text()
    snippets = start.locator("pre code").all_inner_texts()
    assert any(f"curl {seeded.base_url}/v1/chat/completions" in s for s in snippets)
    assert any(f'base_url="{seeded.base_url}/v1"' in s for s in snippets)
    assert any(f'pilothouse.init(base_url="{seeded.base_url}"' in s for s in snippets)
    start.locator("button.copy").first.click()
    expect(start.locator(".copied")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == snippets[0]
    shot(page, "onboarding")
    # a key without admin is told how to get one on the Keys page
    page.goto(seeded.base_url + "/keys")
    assert "pilothouse keys create --name me --scopes read,admin --project fresh" in page.inner_text("main")
    context.close()


def test_keys_last_used_budget_key_picker_and_revoked_keys_budgets(tab: Any, seeded: Seeded) -> None:
    tab.goto(seeded.base_url + "/keys")
    admin_row = tab.locator("tr:has(th:has-text('ui-admin'))")
    assert "(gateway)" in admin_row.inner_text()  # its gateway calls: last used
    # known to the minute (a rollup bucket): shown without seconds, never as an exact time
    last_used = admin_row.locator("td:has-text('(gateway)') time").inner_text()
    assert re.search(r"\d\d:\d\d", last_used) and not re.search(r"\d\d:\d\d:\d\d", last_used), last_used
    assert "no gateway call" in tab.locator("tr:has(th:has-text('ui-reader'))").inner_text()
    # a key made here, a budget on it chosen by name, then the key revoked
    tab.fill("#k-name", "picker-bot")
    tab.click("form[action='/keys'] button[type=submit]")
    tab.wait_for_selector("#new-secret")
    tab.select_option("#b-scope", "key")
    picker = tab.locator("#b-key option", has_text="picker-bot").get_attribute("value")
    tab.select_option("#b-key", picker)
    tab.fill("#b-limit", "7")
    tab.click("form[action='/budgets'] button[type=submit]")
    tab.wait_for_selector("text=Budget created.")
    budget = tab.locator("li.budget:has-text('picker-bot')")
    assert "$7.00" in budget.inner_text() and "key revoked" not in budget.inner_text()
    # an error keeps what was typed
    tab.select_option("#b-scope", "key")
    tab.fill("#b-limit", "lots")
    tab.click("form[action='/budgets'] button[type=submit]")
    assert "Budget not created" in tab.inner_text("[role=alert]")
    assert tab.input_value("#b-limit") == "lots" and tab.input_value("#b-scope") == "key"
    row = tab.locator("tr:has(th:has-text('picker-bot'))")
    row.locator("summary").click()
    row.locator("button.danger").click()
    tab.wait_for_selector("text=Key revoked.")
    assert "key revoked" in tab.locator("li.budget:has-text('picker-bot')").inner_text()
    assert tab.locator("#b-key option", has_text="picker-bot").count() == 0  # not offered any more


def test_dataset_items_are_edited_and_deleted_with_metadata_and_runs_shown(tab: Any, seeded: Seeded) -> None:
    store = SqlStore.from_url(seeded.database_url)
    items = [
        DatasetItem(id="a", input={"q": "one"}, expected="1", metadata={"topic": "count"}),
        DatasetItem(id="b", input={"q": "two"}, expected="2"),
        DatasetItem(id="c", input={"q": "three"}, expected="3"),
        DatasetItem(id="d", messages=({"role": "user", "content": "four?"},), expected="4"),
    ]
    EvalStore(store).import_items("default", "editable", items, source="tests/ui")
    store.close()
    tab.goto(seeded.base_url + "/datasets/editable")
    assert '"topic": "count"' in tab.locator("tr:has(code:text-is('a'))").inner_text()
    assert re.search(
        r"\b1 message\b", tab.locator("tr:has(code:text-is('d'))").inner_text()
    )  # not "1 messages"
    tab.click("tr:has(code:text-is('b')) >> text=Edit")
    tab.fill("#i-input", "not json")
    tab.click("form[aria-label='Edit the item'] button[type=submit]")
    assert "must be a JSON object" in tab.inner_text("[role=alert]")
    assert tab.input_value("#i-input") == "not json"  # kept
    tab.fill("#i-input", '{"q": "two, edited"}')
    tab.fill("#i-metadata", '{"reviewed": true}')
    tab.click("form[aria-label='Edit the item'] button[type=submit]")
    tab.wait_for_selector("text=Item b edited: editable is now v2 (4 items).")
    assert "two, edited" in tab.locator("tr:has(code:text-is('b'))").inner_text()
    row = tab.locator("tr:has(code:text-is('c'))")
    row.locator("summary").click()
    row.locator("button.danger").click()
    tab.wait_for_selector("text=Item c deleted: editable is now v3 (3 items).")
    assert tab.locator("tr:has(code:text-is('c'))").count() == 0
    tab.goto(seeded.base_url + "/datasets/editable?version=1")  # older versions stay
    assert tab.locator("tr:has(code:text-is('c'))").count() == 1
    assert tab.locator("a:text-is('Edit')").count() == 0
    tab.goto(seeded.base_url + "/datasets/capitals")
    runs = tab.locator("section[aria-labelledby=runs-h]")
    assert "baseline" in runs.inner_text() and "candidate" in runs.inner_text()
    runs.locator("a", has_text="candidate").click()
    tab.wait_for_url(re.compile(rf"/evals/{seeded.runs['candidate']}$"))


def test_run_page_shows_expected_answers_judge_reasons_and_one_number_format(
    tab: Any, seeded: Seeded
) -> None:
    tab.goto(f"{seeded.base_url}/evals/{seeded.runs['candidate']}")
    headers = tab.locator("table:has(th:text-is('expected')) thead th").all_inner_texts()
    assert headers[:5] == ["#", "item", "input", "expected", "output"]
    first = tab.locator("table:has(th:text-is('expected')) tbody tr").first
    assert "Paris" in first.locator("td").nth(2).inner_text()
    values = tab.locator("table:has(th:text-is('expected')) tbody td.num span").all_inner_texts()
    assert "0.91" in values and "0.910000" not in values
    # a judge's reasons are on the page, not only on hover
    store = SqlStore.from_url(seeded.database_url)
    evals = EvalStore(store)
    run = evals.create_run(
        "default",
        name="judged-with-reasons",
        spec={},
        dataset=None,
        dataset_version_id=None,
        dataset_version=None,
        target="model x",
        epochs=1,
        items_total=1,
        scorers=["judge"],
    )
    reason = "The answer names the capital but adds a wrong population figure."
    result = EvalResult(
        run_id=run.id,
        item_id="q1",
        epoch=1,
        position=1,
        output="Paris, 90 million people",
        latency_ms=10.0,
        scores=(ScoreRecord("judge", 0.5, False, reason=reason),),
    )
    evals.write_results([result])
    evals.set_run_status(run.id, RunStatus.COMPLETED)
    store.close()
    tab.goto(f"{seeded.base_url}/evals/{run.id}")
    shown = tab.locator("td .reason")
    assert shown.is_visible() and shown.inner_text() == reason


def test_a_styled_404_for_an_unknown_page_and_json_for_an_unknown_api_path(tab: Any, seeded: Seeded) -> None:
    response = tab.goto(seeded.base_url + "/no-such-page")
    assert response.status == 404
    assert tab.inner_text("h1") == "Page not found"
    assert tab.locator("nav.side").count() == 1 and tab.locator(".error-code").inner_text() == "404"
    shot(tab, "not-found", full_page=False)
    with httpx.Client(base_url=seeded.base_url) as client:
        api = client.get("/api/no-such-thing", headers={"Authorization": f"Bearer {seeded.admin_key}"})
        assert api.status_code == 404 and api.headers["content-type"].startswith("application/json")
        anonymous = client.get("/no-such-page")
        assert anonymous.status_code == 303 and "/login" in anonymous.headers["location"]

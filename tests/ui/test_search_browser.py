"""Issue 23 items 6 and 7 in a real browser (Debian's chromium) against the seeded server: a text
search through the index with filters and a sort, a saved view, a CSV export of the filtered list and
bulk actions (dataset, score) on ticked traces. The screenshot goes to docs/screenshots/."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from tests.ui.conftest import SCREENSHOTS, Seeded

pytestmark = pytest.mark.slow


@pytest.fixture
def tab(browser: Any, seeded: Seeded) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1440, "height": 1000}, color_scheme="light", locale="en-GB", accept_downloads=True
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def _names(tab: Any) -> list[str]:
    return [tab.locator("table.traces tbody tr th a").nth(i).inner_text() for i in range(_count(tab))]


def _count(tab: Any) -> int:
    return int(tab.locator("table.traces tbody tr th a").count())


def test_search_filter_save_export_and_bulk(tab: Any, seeded: Seeded, tmp_path: Path) -> None:
    tab.goto(seeded.base_url + "/login")
    tab.fill("#key", seeded.admin_key)
    tab.press("#key", "Enter")
    tab.wait_for_url("**/")
    tab.goto(seeded.base_url + "/traces")
    tab.fill("#f-q", "tides")
    tab.select_option("#f-sort", "latency")
    tab.click("form.filters button[type=submit]")
    tab.wait_for_url("**/traces?*q=tides*")
    assert _count(tab) == 3  # "Explain tides in one line." was asked three times through the gateway
    assert "latency" in (tab.locator("th[aria-sort]").inner_text())
    tab.fill("#f-q", "nowhere-to-be-found")
    tab.click("form.filters button[type=submit]")
    tab.wait_for_selector("text=No traces match these filters.")

    tab.fill("#f-q", "tides")
    tab.fill("#f-user", "bob")
    tab.click("form.filters button[type=submit]")
    tab.wait_for_url("**user_id=bob*")
    assert _count(tab) == 1

    tab.fill("#view-name", "bob's tides")
    tab.click("#save-view button[type=submit]")
    tab.wait_for_selector("#review-done")
    assert "Saved the view" in tab.inner_text("#review-done")
    assert tab.locator("#view-list a", has_text="bob's tides").count() == 1
    tab.goto(seeded.base_url + "/traces")
    tab.click('#view-list a:has-text("bob\'s tides")')
    tab.wait_for_url("**user_id=bob*")
    assert _count(tab) == 1

    tab.fill("#f-user", "")
    tab.click("form.filters button[type=submit]")
    tab.wait_for_url("**q=tides*")
    with tab.expect_download() as download:
        tab.click("#export-csv")
    path = tmp_path / "traces.csv"
    download.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert len(rows) == 3 and all("tides" in r["input"] for r in rows)

    boxes = tab.locator("input[form='review-add']")
    boxes.nth(0).check()
    boxes.nth(1).check()
    tab.fill("#bulk-dataset", "tides-from-search")
    tab.click("#bulk-dataset-add")
    tab.wait_for_selector("#review-done")
    assert "2 traces added to tides-from-search" in tab.inner_text("#review-done")
    tab.locator("input[form='review-add']").nth(2).check()
    tab.fill("#bulk-score-name", "on-topic")
    tab.fill("#bulk-score-value", "1")
    tab.click("#bulk-score-add")
    tab.wait_for_selector("#review-done")
    assert "score on-topic added to 1 trace" in tab.inner_text("#review-done")
    assert "on-topic" in tab.inner_text("table.traces")  # the list shows the new score
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / "trace-search.png"), full_page=True)

    store = SqlStore.from_url(seeded.database_url)
    try:
        version = EvalStore(store).get_version("default", "tides-from-search")
        assert version is not None and version.item_count == 2
    finally:
        store.close()

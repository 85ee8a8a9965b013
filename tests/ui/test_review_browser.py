"""The review flow in a real browser (Debian's chromium) against the seeded server: a reviewer logs in
with a user name and password, opens a queue, answers with the keyboard (1-9, n), sees the unsupported
span highlighted, writes a corrected output, and adds a trace to a queue from the trace list. The
screenshots go to docs/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from pilothouse.quality.review import ReviewService
from pilothouse.store.sql import SqlStore
from tests.ui.conftest import SCREENSHOTS, Seeded

pytestmark = pytest.mark.slow
PASSWORD = "rita-reviews-2026"


@pytest.fixture(scope="module")
def queue(seeded: Seeded) -> Iterator[ReviewService]:
    store = SqlStore.from_url(seeded.database_url)
    service = ReviewService(store)
    service.create_config(
        "default", "grounded", "boolean", description="Does the context support every claim?"
    )
    service.create_config("default", "tone", "categorical", categories=["curt", "neutral", "warm"])
    service.create_queue("default", "browser-review", ["grounded", "tone"])
    service.add_user("default", "rita", PASSWORD, "Rita Reviewer")
    service.enqueue(seeded.tool_trace, "browser-review", "detector unsure", spans=[(0, 6)], source="detector")
    yield service
    store.close()


@pytest.fixture
def tab(browser: Any, seeded: Seeded) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1360, "height": 900}, color_scheme="light", locale="en-GB"
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "status of 40" not in m.text else None,
    )
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def test_a_reviewer_reviews_with_the_keyboard(tab: Any, seeded: Seeded, queue: ReviewService) -> None:
    tab.goto(seeded.base_url + "/review")
    assert "/login" in tab.url
    tab.click("summary:has-text('Log in as a reviewer')")
    tab.fill("#username", "rita")
    tab.fill("#password", "not-her-password")
    tab.click("#user-login")
    tab.wait_for_selector("#login-error")
    assert "do not match" in tab.inner_text("#login-error")
    tab.fill("#username", "rita")
    tab.fill("#password", PASSWORD)
    tab.click("#user-login")
    tab.wait_for_url(re.compile(r"/review$"))
    assert "rita" in tab.inner_text("main")
    tab.click("a.start-review:has-text('browser-review')")
    tab.wait_for_selector("#review-form")
    assert tab.inner_text("#item-reason").startswith("detector unsure")
    assert tab.locator("#review-output mark.unsupported").count() == 1
    assert tab.locator("fieldset.score-config.active").get_attribute("data-config") == "grounded"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / "review.png"), full_page=True)
    tab.keyboard.press("2")  # grounded: no; the next question is highlighted
    assert tab.is_checked("input[name='score:grounded'][value='false']")
    assert tab.locator("fieldset.score-config.active").get_attribute("data-config") == "tone"
    tab.keyboard.press("3")  # tone: warm
    assert tab.is_checked("input[name='score:tone'][value='warm']")
    tab.fill("#corrected", "It rains in Paris: 14 °C.")
    tab.focus("#corrected")
    tab.keyboard.press("s")  # typing in a text box: no shortcut
    assert tab.input_value("#corrected").endswith("s")
    tab.fill("#corrected", "It rains in Paris: 14 °C.")
    tab.locator("fieldset.score-config").first.click()
    tab.keyboard.press("n")  # save, and the next item (none left for rita)
    tab.wait_for_selector("#queue-empty")
    assert "Saved." in tab.inner_text("#review-done")
    (review,) = [r for r in queue.results.reviews_of("default", _item_id(queue)) if not r.skipped]
    assert review.reviewer == "rita" and review.corrected_output == "It rains in Paris: 14 °C."
    assert {(s.config_name, s.string_value) for s in review.scores} == {
        ("grounded", "false"),
        ("tone", "warm"),
    }

    tab.goto(seeded.base_url + "/traces")
    tab.locator("input[form='review-add']").first.check()
    tab.select_option("#review-queue", "browser-review")
    tab.click("#review-add-selected")
    tab.wait_for_selector("#review-done")
    assert "added to browser-review" in tab.inner_text("#review-done")
    tab.goto(seeded.base_url + "/review/agreement")
    assert tab.locator("section.agreement[data-config='grounded']").count() == 1


def _item_id(service: ReviewService) -> str:
    (item,) = [i for i in service.store.list_items(service.queue("default", "browser-review")) if i.reviews]
    return item.id

"""The prompt pages in a real browser: create a prompt, edit it as a new version, diff the two, move
the production label and read the history; screenshots go with the others."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ui.conftest import SCREENSHOTS, Seeded

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tab(browser: Any, seeded: Seeded) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1360, "height": 900}, color_scheme="light", locale="en-GB"
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def test_create_edit_diff_and_label_a_prompt(tab: Any, seeded: Seeded) -> None:
    tab.goto(seeded.base_url + "/prompts")
    tab.fill("#key", seeded.admin_key)
    tab.click("button[type=submit]")
    tab.wait_for_url(re.compile(r"/prompts$"))
    tab.fill("#p-name", "ui-greeting")
    tab.fill("#p-prompt", "Say hello to {{name}}.")
    tab.fill("#p-model", "gpt-4o-mini")
    tab.fill("#p-labels", "production")
    tab.click("text=Create prompt")
    tab.wait_for_url(re.compile(r"/prompts/ui-greeting\?done=created"))
    assert "New version stored." in tab.inner_text("main")
    tab.fill("#e-prompt", "Say hello warmly to {{name}}.")
    tab.fill("#e-message", "warmer")
    tab.click("text=Save as v2")
    tab.wait_for_url(re.compile(r"done=created"))
    tab.select_option("#d-from", "1")
    tab.select_option("#d-to", "2")
    tab.click("button:has-text('Diff')")
    tab.wait_for_selector("pre.diff ins")
    assert "+Say hello warmly to {{name}}." in tab.inner_text("pre.diff")
    tab.select_option("#l-version", "2")
    tab.click("text=Move label")
    tab.wait_for_url(re.compile(r"done=labelled"))
    assert "production → v2" in tab.inner_text("section[aria-labelledby=hist-h]")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / "prompt.png"), full_page=True)
    tab.click("nav.side >> text=Prompts")
    assert "production → v2" in tab.inner_text("main table")

"""Issue 23, item 9 in a real browser (Debian's chromium): the trace view as a split view. A trace of
10,000 spans (sent through OTLP) renders only the rows in sight, expands, collapses, is searched and a
span is selected (its detail fetched on demand, the URL naming it); long messages are collapsed behind
"Show all"; markdown is rendered and nothing of a span's text runs as HTML; ids are copied; previous
and next trace. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.spans import export_request, llm_attributes, new_span_id, new_trace_id, otlp_span
from tests.ui.conftest import Seeded, login
from tests.ui.test_browser import shot

pytestmark = pytest.mark.slow

ITERATIONS = 99
STEPS = 100  # 1 root + 99 iterations + 99 * 100 steps = 10,000 spans
NEEDLE = "needle-step-7777"
HIDDEN = "only-in-the-detail-of-one-deep-span"  # a deep span's input: never in the page itself
XSS_NAME = '</script><script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
XSS_TEXT = (
    "# Plan\n\nThis is **bold**, *italic* and `code <b>`.\n\n"
    "- first item\n- second [docs](https://example.com/a_b_c)\n\n"
    "```python\nprint('<script>')\n```\n\n"
    '<script>window.__xss = 3</script><img src=x onerror="window.__xss = 4">\n'
    '[click](javascript:window.__xss=5) and <a href="javascript:window.__xss=6">there</a>'
)
LONG_TEXT = "\n".join(f"line {i}: " + "lorem ipsum " * 8 for i in range(200))


@dataclass
class Traces:
    big: str
    xss: str
    needle_span: str
    deep_span: str
    last_span: str  # the last span of the tree in depth-first order


def _post(http: httpx.Client, key: str, spans: list[Any]) -> None:
    for at in range(0, len(spans), 2000):
        response = http.post(
            "/v1/traces",
            content=export_request(spans[at : at + 2000]).SerializeToString(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf"},
        )
        assert response.status_code == 200, response.text


def _wait(http: httpx.Client, key: str, trace_id: str, count: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = http.get(f"/api/traces/{trace_id}", headers={"Authorization": f"Bearer {key}"})
        if response.status_code == 200 and len(response.json()["observations"]) >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"trace {trace_id} was not stored with {count} spans")


@pytest.fixture(scope="module")
def traces(seeded: Seeded) -> Traces:
    start = time.time_ns() - 3 * 86_400 * 10**9  # three days ago: out of the 24-hour dashboards
    trace_id, root = new_trace_id(), new_span_id()
    spans = [
        otlp_span(
            "research-agent",
            {"openinference.span.kind": "AGENT", "input.value": "Find the answer.", "output.value": "42"},
            trace_id=trace_id,
            span_id=root,
            start_ns=start,
            duration_ms=60_000,
        )
    ]
    needle = deep = last = b""
    for i in range(ITERATIONS):
        iteration = new_span_id()
        at = start + i * 600_000_000
        spans.append(
            otlp_span(
                f"iteration-{i}",
                {"openinference.span.kind": "CHAIN"},
                trace_id=trace_id,
                span_id=iteration,
                parent_id=root,
                start_ns=at,
                duration_ms=590,
            )
        )
        for j in range(STEPS):
            step = new_span_id()
            number = i * STEPS + j
            name = NEEDLE if number == 7777 else f"step-{number}"
            if j % 10 == 0:
                attributes = llm_attributes("gpt-4o-mini", 100, 20)
            else:
                attributes = {"openinference.span.kind": "TOOL", "tool.name": "search", "input.value": "q"}
            if number == 5555:
                attributes["input.value"] = HIDDEN
                deep = step
            spans.append(
                otlp_span(
                    name,
                    attributes,
                    trace_id=trace_id,
                    span_id=step,
                    parent_id=iteration,
                    start_ns=at + j * 5_000_000,
                    duration_ms=4,
                    error=number == 4242,
                )
            )
            if number == 7777:
                needle = step
            last = step
    xss_id, xss_root = new_trace_id(), new_span_id()
    answer = {
        **llm_attributes("gpt-4o-mini", 50, 400),
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "Write a plan in markdown.",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": XSS_TEXT,
    }
    long_answer = {
        **llm_attributes("gpt-4o-mini", 50, 4000),
        "llm.input_messages.0.message.role": "user",
        "llm.input_messages.0.message.content": "Write a lot.",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.content": LONG_TEXT,
    }
    xss_spans = [
        otlp_span(
            XSS_NAME, {"openinference.span.kind": "AGENT"}, trace_id=xss_id, span_id=xss_root, start_ns=start
        ),
        otlp_span("markdown-answer", answer, trace_id=xss_id, parent_id=xss_root, start_ns=start + 1000),
        otlp_span("long-answer", long_answer, trace_id=xss_id, parent_id=xss_root, start_ns=start + 2000),
    ]
    with httpx.Client(base_url=seeded.base_url, timeout=60) as http:
        _post(http, seeded.admin_key, spans)
        _post(http, seeded.admin_key, xss_spans)
        _wait(http, seeded.admin_key, trace_id.hex(), len(spans))
        _wait(http, seeded.admin_key, xss_id.hex(), len(xss_spans))
    return Traces(trace_id.hex(), xss_id.hex(), needle.hex(), deep.hex(), last.hex())


@pytest.fixture
def tab(browser: Any, seeded: Seeded) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme="light")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=seeded.base_url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    dialogs: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(seeded.base_url + "/login")
    page.fill("#key", seeded.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"
    assert not dialogs, f"dialogs opened: {dialogs}"


def _eventually(tab: Any, expression: str, expected: Any) -> None:
    """Wait until ``expression`` evaluates to ``expected`` (the page's CSP forbids wait_for_function's
    eval)."""
    deadline = time.monotonic() + 10
    value = None
    while time.monotonic() < deadline:
        value = tab.evaluate(expression)
        if value == expected:
            return
        tab.wait_for_timeout(50)
    raise AssertionError(f"{expression} is {value!r}, not {expected!r}")


def _rows(tab: Any) -> list[str]:
    return [t.strip() for t in tab.locator("#span-tree .tree-row .tree-name").all_inner_texts()]


def test_a_trace_of_10000_spans_renders_expands_searches_and_selects(
    tab: Any, seeded: Seeded, traces: Traces
) -> None:
    tab.goto(f"{seeded.base_url}/traces/{traces.big}")
    tab.wait_for_selector("#span-tree[data-ready]")
    assert "10,000" in tab.inner_text("#tree-h")
    # large: the root is open, the iterations closed; only the rows in sight are in the page
    assert tab.locator("#span-tree .tree-row").count() < 80
    assert _rows(tab)[:3] == ["research-agent", "iteration-0", "iteration-1"]
    assert tab.evaluate("document.querySelector('#span-tree .tree-rows').offsetHeight") == 100 * 28
    assert "Find the answer." in tab.inner_text("#span-detail")  # the root is selected first

    # expand one iteration: its 100 steps follow it
    iteration = tab.locator("#span-tree .tree-row:has(.tree-name:text-is('iteration-1'))")
    assert iteration.get_attribute("aria-expanded") == "false"
    iteration.locator(".twisty").click()
    assert iteration.get_attribute("aria-expanded") == "true"
    assert _rows(tab)[3:5] == ["step-100", "step-101"]
    assert tab.evaluate("document.querySelector('#span-tree .tree-rows').offsetHeight") == 200 * 28

    # expand all, scroll to the end: every span is there, still only a screenful in the page
    tab.click("#tree-expand")
    assert tab.evaluate("document.querySelector('#span-tree .tree-rows').offsetHeight") == 10_000 * 28
    tab.evaluate("document.getElementById('span-tree').scrollTop = 1e9")
    tab.wait_for_selector(f"#row-{traces.last_span}")
    assert tab.locator("#span-tree .tree-row").count() < 80
    tab.click("#tree-collapse")
    assert tab.evaluate("document.querySelector('#span-tree .tree-rows').offsetHeight") == 100 * 28

    # search: the match with its ancestors
    tab.fill("#tree-search", "needle")
    expect(tab.locator("#tree-status")).to_have_text("1 span matches")
    assert _rows(tab) == ["research-agent", "iteration-77", NEEDLE]
    tab.click(f"#row-{traces.needle_span}")
    tab.wait_for_selector(f"#span-detail [data-span='{traces.needle_span}']")
    assert NEEDLE in tab.inner_text("#span-detail h2")
    assert f"?span={traces.needle_span}" in tab.url
    assert tab.get_attribute(f"#row-{traces.needle_span}", "aria-selected") == "true"
    assert (
        tab.evaluate("document.getElementById('s-obs-span').value") == traces.needle_span
    )  # a score goes on the selected span
    shot(tab, "trace-view", full_page=False)
    tab.fill("#tree-search", "")
    expect(tab.locator("#tree-status")).to_have_text("")

    # the keyboard: down moves the cursor, Enter selects
    tab.focus("#span-tree")
    tab.keyboard.press("ArrowDown")
    tab.keyboard.press("Enter")
    tab.wait_for_selector("#span-detail [data-span]")

    # the link opens the trace with that span selected and in sight
    tab.goto(f"{seeded.base_url}/traces/{traces.big}?span={traces.deep_span}")
    tab.wait_for_selector("#span-tree[data-ready]")
    assert HIDDEN in tab.inner_text("#span-detail")
    assert tab.get_attribute(f"#row-{traces.deep_span}", "aria-selected") == "true"


def test_the_page_of_a_10000_span_trace_carries_the_tree_not_the_texts(
    seeded: Seeded, traces: Traces
) -> None:
    with httpx.Client(base_url=seeded.base_url, timeout=30) as client:
        login(client, seeded.admin_key)
        page = client.get(f"/traces/{traces.big}")
        assert page.status_code == 200
        assert len(page.content) < 1_000_000, len(page.content)
        assert HIDDEN not in page.text  # fetched when that span is selected
        fragment = client.get(f"/traces/{traces.big}/spans/{traces.deep_span}")
        assert fragment.status_code == 200 and HIDDEN in fragment.text and "<html" not in fragment.text
        assert "content-security-policy" in fragment.headers
        missing = client.get(f"/traces/{traces.big}/spans/ffffffffffffffff")
        assert missing.status_code == 404
        other = client.get(f"/traces/{seeded.other_trace}/spans/{traces.deep_span}")
        assert other.status_code == 404


def test_span_text_never_runs_as_html_and_markdown_is_rendered(
    tab: Any, seeded: Seeded, traces: Traces
) -> None:
    tab.goto(f"{seeded.base_url}/traces/{traces.xss}")
    tab.wait_for_selector("#span-tree[data-ready]")
    assert XSS_NAME in _rows(tab)  # the name shown as text
    tab.click("#span-tree .tree-row:has(.tree-name:text-is('markdown-answer'))")
    tab.wait_for_selector("#span-detail .md strong")
    answer = tab.locator("#span-detail .msg.role-assistant .md")
    assert answer.locator("strong").inner_text() == "bold"
    assert answer.locator("em").inner_text() == "italic"
    assert answer.locator("code").first.inner_text() == "code <b>"
    assert answer.locator("li").all_inner_texts() == ["first item", "second docs"]
    assert answer.locator("a").get_attribute("href") == "https://example.com/a_b_c"
    assert "print('<script>')" in answer.locator("pre.code").inner_text()
    assert answer.locator("h4").inner_text() == "Plan"
    assert answer.locator("script, img, a[href^=javascript]").count() == 0
    assert "<script>window.__xss = 3</script>" in answer.inner_text()  # shown, not run
    assert tab.locator("#span-detail script, #span-detail img, #span-tree img").count() == 0
    assert tab.evaluate("window.__xss") is None
    shot(tab, "trace-markdown", full_page=False)

    # a long message is collapsed behind "Show all"
    tab.click("#span-tree .tree-row:has(.tree-name:text-is('long-answer'))")
    button = tab.locator("#span-detail [data-show-all]")
    button.wait_for()
    clamp = tab.locator("#span-detail .clamp")
    collapsed = clamp.bounding_box()["height"]
    assert "Show all (" in button.inner_text()
    button.click()
    assert button.inner_text() == "Show less" and button.get_attribute("aria-expanded") == "true"
    assert clamp.bounding_box()["height"] > 3 * collapsed
    assert tab.evaluate("window.__xss") is None


def test_copy_ids_and_links_and_walk_to_the_previous_and_next_trace(
    tab: Any, seeded: Seeded, traces: Traces
) -> None:
    tab.goto(f"{seeded.base_url}/traces/{seeded.tool_trace}")
    tab.wait_for_selector("#span-tree[data-ready]")
    tab.click("button[aria-label='Copy the trace id']")
    expect(tab.locator(".copied")).to_have_text("Copied.")
    _eventually(tab, "navigator.clipboard.readText()", seeded.tool_trace)
    span_id = tab.get_attribute("#span-detail [data-span]", "data-span")
    tab.click("button[aria-label='Copy the span id']")
    _eventually(tab, "navigator.clipboard.readText()", span_id)
    tab.click("#span-detail button[aria-label='Copy a link to this span']")
    link = f"{seeded.base_url}/traces/{seeded.tool_trace}?span={span_id}"
    _eventually(tab, "navigator.clipboard.readText()", link)

    older = tab.get_attribute("#older-trace", "href")
    tab.click("#older-trace")
    tab.wait_for_url(re.compile(re.escape(older) + "$"))
    tab.wait_for_selector("#newer-trace")
    tab.click("#newer-trace")
    tab.wait_for_url(re.compile(rf"/traces/{seeded.tool_trace}$"))

"""The UI in a real browser (Debian's chromium, headless) against a real ``pilothouse serve``: log in,
read the dashboard, filter traces, open a trace, add a score, create and revoke a key, compare two
eval runs. Each page's screenshot goes to docs/screenshots/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ui.conftest import SCREENSHOTS, Seeded

pytestmark = pytest.mark.slow
HAIKU = "claude-3-5-haiku-20241022"  # the upstream model the gateway's "claude-haiku" deployment serves


@pytest.fixture(scope="module")
def page(browser: Any, seeded: Seeded) -> Iterator[Any]:
    context = browser.new_context(
        viewport={"width": 1360, "height": 900}, color_scheme="light", locale="en-GB"
    )
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    tab = context.new_page()
    tab.set_default_timeout(10_000)
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    # a refused login answers 401, which the console reports; anything else is a fault of the page
    tab.on(
        "console",
        lambda m: errors.append(m.text) if m.type == "error" and "status of 40" not in m.text else None,
    )
    yield tab
    context.close()
    assert not errors, f"errors in the page: {errors}"
    outside = [u for u in requests if not u.startswith(seeded.base_url) and not u.startswith("data:")]
    assert not outside, f"the pages asked for something outside the server: {outside}"


def shot(tab: Any, name: str, full_page: bool = True) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=full_page)


def test_log_in_and_read_the_dashboard(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.base_url + "/traces")
    assert "/login" in page.url
    page.fill("#key", "ph-wrong")
    page.press("#key", "Enter")
    page.wait_for_selector("#login-error")
    assert "not valid" in page.inner_text("#login-error")
    shot(page, "login", full_page=False)
    page.fill("#key", seeded.admin_key)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/traces$"))  # back where the visitor was going
    page.click("nav.side >> text=Overview")
    page.wait_for_selector("figure.chart .uplot canvas")
    requests = page.inner_text(".kpi:has-text('Requests') .value")
    assert int(requests.replace(",", "")) >= 15
    assert page.locator("figure.chart .uplot").count() == 5
    assert "gpt-4o-mini" in page.inner_text("section[aria-label='By model']")
    assert "alice" in page.inner_text("section[aria-label='By end user']")
    # keyboard: the first Tab reaches the skip link, which moves focus to the content
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.click("text=24h")
    page.wait_for_selector("figure.chart .uplot canvas")
    shot(page, "dashboard")
    page.click(".ranges >> text=7d")
    page.wait_for_url(re.compile(r"range=7d"))
    page.wait_for_selector("figure.chart .uplot canvas")
    page.click("figure[data-chart=requests] summary")
    page.wait_for_selector("figure[data-chart=requests] .chart-table tbody tr")
    assert page.locator("figure[data-chart=requests] .chart-table table tbody tr").count() == 168
    # auto-refresh: HTMX swaps the dashboard in place and the charts are drawn again
    page.select_option("#refresh", "30")
    page.click("form.inline button")
    page.wait_for_selector("#dashboard[hx-trigger='every 30s']")
    page.evaluate("document.querySelector('#dashboard').dataset.old = '1'")
    page.evaluate("htmx.ajax('GET', '/?range=24h&refresh=30', {target: '#dashboard', swap: 'outerHTML'})")
    page.wait_for_selector("#dashboard:not([data-old])")
    page.wait_for_selector("#dashboard figure.chart[data-drawn] .uplot canvas")


def test_filter_traces_and_keep_the_filters_in_the_url(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.base_url + "/traces")
    page.fill("#f-model", HAIKU)
    page.press("#f-model", "Enter")
    page.wait_for_url(f"{seeded.base_url}/traces?model={HAIKU}")  # only the filters that are set
    rows = page.locator("table.traces tbody tr")
    assert rows.count() == 6
    assert all(HAIKU in rows.nth(i).inner_text() for i in range(rows.count()))
    page.goto(seeded.base_url + "/traces")
    shot(page, "traces", full_page=False)
    page.goto(seeded.base_url + "/traces?q=umbrella&user_id=alice")  # a saved filter is just a URL
    assert page.locator("table.traces tbody tr").count() == 3
    assert page.input_value("#f-q") == "umbrella"
    page.fill("#f-lat", "slow")
    page.press("#f-lat", "Enter")
    assert "is not a number" in page.inner_text("[role=alert]")


def test_open_a_trace_see_its_tree_and_messages_and_score_it(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.base_url + "/traces?name=travel-agent")
    page.click("table.traces tbody tr:first-child th a")
    page.wait_for_url(re.compile(r"/traces/[0-9a-f]{32}"))
    page.wait_for_selector("#span-tree[data-ready]")
    tree = page.locator("#span-tree .tree-row")
    assert tree.count() == 4
    assert [tree.nth(i).locator(".tree-name").inner_text() for i in range(4)] == [
        "travel-agent",
        "plan",
        "get_weather",
        "answer",
    ]
    page.click("#span-tree .tree-row:has(.tree-name:text-is('plan'))")
    page.wait_for_selector("#span-detail h2:has-text('plan')")
    plan = page.locator("#span-detail")
    assert "get_weather" in plan.locator(".tool-call").inner_text()
    assert '"city": "Paris"' in plan.locator(".tool-call pre").inner_text()
    assert "You are a travel assistant" in plan.locator(".msg.role-system").inner_text()
    plan.locator("summary:text-is('Model parameters')").click()
    assert '"temperature": 0.2' in plan.locator("details[open] pre").inner_text()
    shot(page, "trace")
    page.fill("#s-name", "accuracy")
    page.select_option("#s-type", "numeric")
    page.fill("#s-value", "0.8")
    page.fill("#s-comment", "checked by hand")
    page.click("form[aria-label='Add a score'] button[type=submit]")
    page.wait_for_selector("#scores td:has-text('checked by hand')")
    assert "accuracy" in page.inner_text("#scores table")
    page.fill("#d-name", "from-traces")
    page.click("form[aria-label='Add this trace to a dataset'] button")
    assert "Added to from-traces (now v1, 1 items)" in page.inner_text("#dataset [role=status]")


def test_sessions_users_models_and_costs(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.base_url + "/sessions")
    page.click(f"text={seeded.session_id}")
    turns = page.locator("ol.conversation > li")
    assert turns.count() == 3
    assert "And in Oslo?" in turns.nth(1).inner_text()
    shot(page, "session")
    page.goto(seeded.base_url + "/users")
    assert page.locator("tbody tr").count() >= 4
    shot(page, "users")
    page.goto(seeded.base_url + "/models")
    flaky = page.locator("tr:has(th:text-is('flaky'))").first
    assert "open" in flaky.inner_text()
    shot(page, "models")
    page.goto(seeded.base_url + "/costs?range=24h")
    page.wait_for_selector("figure.chart .uplot canvas")
    assert "$" in page.inner_text(".kpi:has-text('Spend') .value")
    shot(page, "costs")


def test_create_a_key_see_its_secret_once_and_revoke_it(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.base_url + "/keys")
    page.fill("#k-name", "ci-bot")
    page.uncheck("input[name=scopes][value=gateway]")
    page.fill("#k-rpm", "60")
    page.fill("#k-budget", "25")
    page.click("form[action='/keys'] button[type=submit]")
    secret = page.input_value("#new-secret")
    assert secret.startswith("ph-") and len(secret) > 40
    row = page.locator("tr:has(th:has-text('ci-bot'))")
    assert "ingest, read" in row.inner_text() and "60 req/min" in row.inner_text()
    assert "$25" in page.inner_text("#budgets")
    shot(page, "keys")
    assert "/keys?created=" in page.url  # the POST redirected: a reload creates nothing
    page.reload()
    assert page.locator("#new-secret").count() == 0 and secret not in page.content()
    assert "shown once" in page.inner_text("[role=status]")
    assert page.locator("tr:has(th:has-text('ci-bot'))").count() == 1
    page.goto(seeded.base_url + "/keys")
    assert page.locator("#new-secret").count() == 0 and secret not in page.content()
    row = page.locator("tr:has(th:has-text('ci-bot'))")
    row.locator("summary").click()
    row.locator("button.danger").click()
    page.wait_for_selector("text=Key revoked.")
    assert "revoked" in page.locator("tr:has(th:has-text('ci-bot'))").inner_text()


def test_compare_two_eval_runs(page: Any, seeded: Seeded) -> None:
    page.goto(seeded.base_url + "/datasets")
    page.click("text=capitals")
    assert page.locator("tbody tr").count() == 36
    shot(page, "dataset")
    page.goto(seeded.base_url + "/evals")
    shot(page, "evals")
    page.click(f"a[href='/evals/{seeded.runs['candidate']}']")
    assert page.locator("#metrics-h + div tbody tr").count() == 2
    shot(page, "run")
    page.go_back()
    page.select_option("#c-base", seeded.runs["baseline"])
    page.select_option("#c-cand", seeded.runs["candidate"])
    page.click("form[aria-label='Compare two runs'] button")
    page.wait_for_url(re.compile(r"/evals/compare\?"))
    verdict = page.inner_text("#verdict-h")
    assert "REGRESSION" in verdict
    changed = page.locator("#changed-h ~ div tbody tr")
    assert changed.count() == 12  # six items got worse, on two metrics
    assert "q10" in page.inner_text("#changed-h ~ div")  # position 11
    shot(page, "compare")


def test_the_compare_page_refuses_an_uncalibrated_judge_as_the_gate_does(page: Any, seeded: Seeded) -> None:
    baseline, candidate = seeded.runs["judged-baseline"], seeded.runs["judged-candidate"]
    page.goto(f"{seeded.base_url}/evals/compare?baseline={baseline}&candidate={candidate}")
    refusal = page.inner_text("#gate-refusal")
    assert "metric 'quality' is graded by a judge (rubric, model judge) with no calibration" in refusal
    assert page.locator("#verdict-h").count() == 0
    page.fill("#g-alpha", "0.1")
    page.check("#g-uncalibrated")
    page.click("form[aria-label='Gate settings'] button")
    page.wait_for_url(re.compile(r"allow_uncalibrated=1"))
    assert "REGRESSION" in page.inner_text("#verdict-h")
    findings = page.inner_text(".findings")
    assert "below alpha 0.09" in findings and "Judge: uncalibrated" in findings  # look 1: 0.9 alpha
    assert page.is_checked("#g-uncalibrated") and page.input_value("#g-alpha") == "0.1"


def test_dark_mode(browser: Any, seeded: Seeded) -> None:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, color_scheme="dark")
    tab = context.new_page()
    tab.goto(seeded.base_url + "/login")
    tab.fill("#key", seeded.read_key)
    tab.press("#key", "Enter")
    tab.wait_for_selector("figure.chart .uplot canvas")
    background = tab.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(15, 18, 23)"
    shot(tab, "dashboard-dark")
    tab.goto(f"{seeded.base_url}/traces/{seeded.tool_trace}")
    shot(tab, "trace-dark")
    context.close()

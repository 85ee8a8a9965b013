"""The compare page in-process (over ASGI): it shows the gate's verdict as ``pilothouse gate`` decides
it, so it refuses a metric graded by an uncalibrated judge unless told to allow it, and it uses the
alpha it is given."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilothouse.store.evals import EvalStore
from tests.evals.stored import JUDGED_SPEC, calibrate, store_run
from tests.server.conftest import Served, serve
from tests.ui.conftest import login


@pytest.fixture
def viewer(tmp_path: Path) -> Iterator[Served]:
    """The app with a logged-in session of project p1."""
    for served in serve(tmp_path):
        logged_in = login(served.client, served.key)
        assert [r.status_code for r in logged_in.history] == [303], logged_in.text
        yield served


def _verdict(html: str) -> str | None:
    found = re.search(r'id="verdict-h">Gate verdict: <span class="badge \w+">(\w+)</span>', html)
    return None if found is None else found.group(1)


def test_an_uncalibrated_judge_is_refused_as_the_gate_refuses_it(viewer: Served) -> None:
    evals = EvalStore(viewer.store)
    base = store_run(evals, {"contains": [1.0] * 50, "quality": [1.0] * 50}, project="p1", spec=JUDGED_SPEC)
    cand = store_run(
        evals, {"contains": [1.0] * 50, "quality": [1.0] * 35 + [0.0] * 15}, project="p1", spec=JUDGED_SPEC
    )
    page = viewer.client.get("/evals/compare", params={"baseline": base.id, "candidate": cand.id})
    assert page.status_code == 400
    assert _verdict(page.text) is None  # no verdict where `pilothouse gate` exits 2
    text = page.text.replace("&#39;", "'")
    assert "metric 'quality' is graded by a judge (rubric, model judge) with no calibration" in text
    assert "or pass 'Allow uncalibrated judges'" in text
    assert 'name="allow_uncalibrated" value="1">' in page.text  # the box to tick, not yet ticked

    allowed = viewer.client.get(
        "/evals/compare", params={"baseline": base.id, "candidate": cand.id, "allow_uncalibrated": "1"}
    )
    assert allowed.status_code == 200 and _verdict(allowed.text) == "REGRESSION"
    assert "Judge: uncalibrated (not calibrated against human labels; allowed)." in allowed.text
    assert "--allow-uncalibrated</code>" in allowed.text and "checked>" in allowed.text

    calibrate(evals, JUDGED_SPEC, "quality", project="p1", kappa=0.3)
    calibrated = viewer.client.get("/evals/compare", params={"baseline": base.id, "candidate": cand.id})
    assert calibrated.status_code == 200 and _verdict(calibrated.text) == "REGRESSION"
    assert "Judge: kappa 0.30, TPR 83.3%, TNR 83.3% (calibration v1, n 12)." in calibrated.text
    weak = viewer.client.get(
        "/evals/compare", params={"baseline": base.id, "candidate": cand.id, "min_kappa": "0.4"}
    )
    assert weak.status_code == 400 and "has kappa 0.300, below minimum kappa 0.4" in weak.text


def test_alpha_reaches_the_comparison(viewer: Served) -> None:
    evals = EvalStore(viewer.store)
    base = store_run(evals, {"contains": [1.0] * 20}, project="p1")
    cand = store_run(evals, {"contains": [1.0] * 17 + [0.0] * 3}, project="p1")  # mid-p McNemar p 0.0625
    params = {"baseline": base.id, "candidate": cand.id}
    assert _verdict(viewer.client.get("/evals/compare", params=params).text) == "INCONCLUSIVE"
    lenient = viewer.client.get("/evals/compare", params={**params, "alpha": "0.2"})
    assert lenient.status_code == 200 and _verdict(lenient.text) == "REGRESSION"
    assert "below alpha 0.18" in lenient.text and "--alpha 0.2</code>" in lenient.text  # look 1: 0.9 alpha
    bad = viewer.client.get("/evals/compare", params={**params, "alpha": "0.7"})
    assert bad.status_code == 400 and "alpha must be between 0 and 0.5, not 0.7" in bad.text
    assert viewer.client.get("/evals/compare", params={**params, "alpha": "x"}).status_code == 400


def test_a_changed_item_links_each_runs_item_page(viewer: Served) -> None:
    evals = EvalStore(viewer.store)
    base = store_run(evals, {"contains": [1.0] * 10}, project="p1")
    cand = store_run(evals, {"contains": [1.0] * 9 + [0.0]}, project="p1")
    page = viewer.client.get("/evals/compare", params={"baseline": base.id, "candidate": cand.id}).text
    assert f'href="/evals/{base.id}/items/i009"' in page and f'href="/evals/{cand.id}/items/i009"' in page
    item = viewer.client.get(f"/evals/{cand.id}/items/i009")  # a run without details: still opens
    assert item.status_code == 200 and "no details stored" in item.text and "out 9" in item.text
    assert viewer.client.get(f"/evals/{cand.id}/items/nope").status_code == 404
    assert viewer.client.get(f"/evals/{cand.id}/items/a%00b").status_code == 404

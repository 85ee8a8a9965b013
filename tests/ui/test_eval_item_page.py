"""An eval run's item page in-process (over ASGI) with details a plugin scorer could write: whatever
they hold (markup in item ids, outputs and details; spans out of range, reversed, overlapping or not
whole numbers; a ``judge_called`` that is not ``true``), the page escapes it and never fails; a span's
score says what it measures, and a judge that was called but whose answer was not used is said so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from pilothouse.domain.evals import EvalResult, ScoreRecord
from pilothouse.store.evals import EvalStore
from pilothouse.ui.pages_eval_item import EPOCHS_SHOWN
from tests.server.conftest import Served, serve
from tests.ui.conftest import login

ITEM = "<img src=x onerror=alert(1)>/../x?y#z"
OUTPUT = "<script>alert('out')</script> The tower is 450 metres tall."
SPANS = [
    {
        "start": 31,
        "end": 59,
        "text": "<b>The tower is 450 metres tall.</b>",
        "reason": "<i>r</i>",
        "score": 0.89,
    },
    {"start": -5, "end": 3},
    {"start": 9, "end": 2},
    {"start": 1.5, "end": 4},
    {"start": True, "end": 4},
    {"start": "0", "end": "4"},
    {"start": 0, "end": 10**30},
    {"start": 40, "end": 10_000},
    "not a span",
]


@pytest.fixture
def viewer(tmp_path: Path) -> Iterator[Served]:
    for served in serve(tmp_path):
        login(served.client, served.key)
        yield served


def _run(served: Served, details: dict[str, object]) -> str:
    evals = EvalStore(served.store)
    run = evals.create_run(
        "p1", name="hostile", spec={}, dataset="d", dataset_version_id=None, dataset_version=None,
        target="test", epochs=1, items_total=1, scorers=["cascade"],
    )  # fmt: skip
    score = ScoreRecord("cascade", 0.4, False, None, "<script>alert('reason')</script>", details)
    evals.write_results([EvalResult(run.id, ITEM, 0, 1, OUTPUT, scores=(score,))])
    return run.id


def test_hostile_details_are_escaped_and_the_span_score_and_an_unused_judge_are_said(viewer: Served) -> None:
    details = {"spans": SPANS, "source": "local", "judge_called": True, "<script>k</script>": "<script>v"}
    run_id = _run(viewer, details)
    page = viewer.client.get(f"/evals/{run_id}/items/{quote(ITEM, safe='')}")
    assert page.status_code == 200, page.text
    assert "<script>" not in page.text and "<img" not in page.text and "<b>" not in page.text
    assert "&lt;script&gt;alert(&#39;out&#39;)&lt;/script&gt;" in page.text
    # the one highlighted stretch: the well-formed span (0..10**30 and 40..10_000 are clipped)
    assert page.text.count('<mark class="unsupported" title="not supported by the context">') >= 1
    assert "(unsupported 0.89)" in page.text
    assert "its answer was not used: the local verdict stands" in page.text
    run_page = viewer.client.get(f"/evals/{run_id}")
    assert run_page.status_code == 200 and "9 unsupported spans</a> · judge called" in run_page.text


def test_a_judge_called_that_is_not_true_is_not_said_called(viewer: Served) -> None:
    run_id = _run(viewer, {"spans": [], "source": "local", "judge_called": "<script>yes</script>"})
    page = viewer.client.get(f"/evals/{run_id}/items/{quote(ITEM, safe='')}")
    assert page.status_code == 200 and "judge called: <strong>no</strong>" in page.text
    assert "</a> · judge called" not in viewer.client.get(f"/evals/{run_id}").text


def test_a_run_of_many_epochs_shows_its_first_ones_and_says_so(viewer: Served) -> None:
    evals = EvalStore(viewer.store)
    epochs = EPOCHS_SHOWN + 5
    run = evals.create_run(
        "p1", name="many", spec={}, dataset="d", dataset_version_id=None, dataset_version=None,
        target="test", epochs=epochs, items_total=1, scorers=["s"],
    )  # fmt: skip
    evals.write_results(
        [
            EvalResult(run.id, "i", e, 1, f"answer {e}", scores=(ScoreRecord("s", 1.0, details={"e": e}),))
            for e in range(epochs)
        ]
    )
    page = viewer.client.get(f"/evals/{run.id}/items/i")
    assert page.status_code == 200
    assert page.text.count('class="card eval-result"') == EPOCHS_SHOWN
    assert f"answer {EPOCHS_SHOWN - 1}" in page.text and f"answer {EPOCHS_SHOWN}<" not in page.text
    assert f"The first {EPOCHS_SHOWN} of the run's {epochs} epochs" in page.text
    every = viewer.client.get(f"/api/evals/runs/{run.id}/results", params={"item": "i"}, headers=viewer.auth)
    assert len(every.json()["data"]) == epochs

"""The eval store on both databases: datasets, runs, results with their scores, the cache."""

from __future__ import annotations

import orjson
from sqlalchemy import select

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import CachedResponse, EvalResult, RunStatus, RunSummary, ScoreRecord
from pilothouse.domain.money import Money
from pilothouse.store import tables as t
from pilothouse.store.evals import EvalStore
from pilothouse.store.rows import unpack
from pilothouse.store.sql import SqlStore


def test_runs_results_and_cache(store: SqlStore) -> None:
    evals = EvalStore(store)
    long_text = "x" * 5000  # packed on SQLite
    items = [DatasetItem(str(n), {"q": long_text if n == 0 else f"q{n}"}, expected=[n]) for n in range(3)]
    version, created = evals.import_items("p", "ds", items, source="test")
    assert created and [i for _, i in evals.iter_items(version.id)] == items
    run = evals.create_run(
        "p",
        name="r",
        spec={"dataset": "ds"},
        dataset="ds",
        dataset_version_id=version.id,
        dataset_version=version.version,
        target="t",
        epochs=2,
        items_total=3,
        scorers=["exact"],
    )
    results = [
        EvalResult(
            run.id,
            str(n),
            epoch,
            n + 1,
            long_text if n == 0 else "out",
            error="boom" if (n, epoch) == (2, 1) else None,
            cost_usd=Money.from_usd("0.001"),
            created_ns=1,
            scores=(ScoreRecord("exact", None if (n, epoch) == (2, 1) else float(n % 2), n % 2 == 1),),
        )
        for n in range(3)
        for epoch in range(2)
    ]
    evals.write_results(results[:4])
    evals.write_results(results)  # the first four again: skipped
    assert evals.completed_keys(run.id) == {(str(n), e) for n in range(3) for e in range(2)}
    assert list(evals.iter_results(run.id, page=4)) == results
    by_item, unmeasured, unmeasured_items = evals.metric_values(run.id, "exact")
    assert by_item == {"0": [0.0, 0.0], "1": [1.0, 1.0], "2": [0.0]} and unmeasured == 1
    assert unmeasured_items == {"2"}  # the items the unmeasured values belong to
    evals.set_run_status(run.id, RunStatus.COMPLETED, RunSummary(results=6))
    stored = evals.find_run(run.id[:8])
    assert evals.find_run("%" * 8) is None and evals.find_run("_" * 8) is None  # a prefix, not a pattern
    assert (
        stored is not None
        and stored.status is RunStatus.COMPLETED
        and stored.summary == RunSummary(results=6)
    )
    assert stored.scorers == ("exact",) and stored.spec == {"dataset": "ds"}
    assert [r.id for r in evals.list_runs("p")] == [run.id]
    evals.cache_put([("k1", CachedResponse(long_text, 3, 4, None, 1.5))])
    evals.cache_put([("k1", CachedResponse("other")), ("k2", CachedResponse("two"))])  # k1 kept
    assert evals.cache_get_many(["k1", "k2", "k3"]) == {
        "k1": CachedResponse(long_text, 3, 4, None, 1.5),
        "k2": CachedResponse("two"),
    }


def test_scores_keep_their_details_bounded(store: SqlStore) -> None:
    """Each score's details come back from every reader of a run's results, on both databases; large
    ones cut to 64 KiB with a marker, secret-named keys redacted, none stored as none."""
    from pilothouse.domain.score_details import DETAILS_LIMIT, TRUNCATED_KEY
    from pilothouse.store.analytics import AnalyticsQueries

    evals = EvalStore(store)
    run = evals.create_run(
        "p",
        name=None,
        spec={},
        dataset=None,
        dataset_version_id=None,
        dataset_version=None,
        target="t",
        epochs=1,
        items_total=3,
        scorers=["faithful", "quality"],
    )
    span = {"start": 0, "end": 5, "text": "Paris", "reason": "low support", "score": 0.91}
    faithful = {"label": "unsupported", "spans": [span], "source": "judge", "judge_called": True}
    huge = {"spans": [span] * 2000, "note": "ü" * 100_000, "api_key": "sk-secret"}
    results = [
        EvalResult(
            run.id,
            f"i{n}",
            0,
            n,
            "Paris is large.",
            scores=(
                ScoreRecord("faithful", 0.1, False, reason="unsupported", details=[faithful, huge, None][n]),
                ScoreRecord("quality", 1.0, True, details={"score": 5, "weighted_score": 4.8}),
            ),
        )
        for n in range(3)
    ]
    evals.write_results(results)
    read = {r.item_id: r for r in evals.iter_results(run.id)}
    assert read["i0"].score("faithful") == ScoreRecord("faithful", 0.1, False, None, "unsupported", faithful)
    assert read["i0"].score("quality").details == {"score": 5, "weighted_score": 4.8}  # type: ignore[union-attr]
    cut = read["i1"].score("faithful").details  # type: ignore[union-attr]
    assert cut is not None and cut[TRUNCATED_KEY]["bytes"] > DETAILS_LIMIT and cut["api_key"] == "<redacted>"
    assert cut["spans"][0] == span and len(orjson.dumps(cut)) <= DETAILS_LIMIT
    assert read["i2"].score("faithful").details is None  # type: ignore[union-attr]
    assert evals.get_results(run.id, ["i0"])[0].scores == read["i0"].scores
    assert AnalyticsQueries(store).run_results(run.id)[0].scores == read["i0"].scores
    with store.engine.connect() as conn:
        stored = conn.execute(
            select(t.eval_scores.c.details).where(t.eval_scores.c.item_id == "i1")
        ).scalars()
        assert all(b"sk-secret" not in (unpack(v) or "").encode() for v in stored)


def test_a_scores_error_is_cut_as_its_reason_is(store: SqlStore) -> None:
    """A plugin scorer's exception text can be any size: stored, like a reason, at most 2,000 characters."""
    evals = EvalStore(store)
    run = evals.create_run(
        "p", name=None, spec={}, dataset=None, dataset_version_id=None, dataset_version=None,
        target="t", epochs=1, items_total=1, scorers=["plugin"],
    )  # fmt: skip
    score = ScoreRecord("plugin", None, None, "ValueError: " + "x" * 1_000_000, "y" * 1_000_000)
    evals.write_results([EvalResult(run.id, "i", 0, 1, "out", scores=(score,))])
    (read,) = evals.iter_results(run.id)
    stored = read.score("plugin")
    assert stored is not None and stored.error is not None and stored.reason is not None
    assert stored.error.startswith("ValueError: xxx") and len(stored.error) == len(stored.reason) == 2000


def test_secrets_in_a_scores_free_text_are_not_stored(store: SqlStore) -> None:
    """A plugin's reason, error and details' text values can quote what it was given: a URL's password,
    an API key, a bearer token. Stored, they are redacted; the rest of the text is kept."""
    evals = EvalStore(store)
    run = evals.create_run(
        "p", name=None, spec={}, dataset=None, dataset_version_id=None, dataset_version=None,
        target="t", epochs=1, items_total=1, scorers=["plugin"],
    )  # fmt: skip
    key = "sk-proj-" + "A1b2" * 8
    score = ScoreRecord(
        "plugin", 0.5, False,
        "HTTPError: POST https://bob:HUNTER2@judge.internal/v1?api_key=QKEY123 failed",
        f"judge said no (Authorization: Bearer {key})",
        {"spans": [{"text": f"the key is {key}", "start": 0, "end": 5}], "note": "password=hunter22"},
    )  # fmt: skip
    evals.write_results([EvalResult(run.id, "i", 0, 1, "out", scores=(score,), error="via http://u:PW99@h/")])
    (read,) = evals.iter_results(run.id)
    stored = read.score("plugin")
    assert stored is not None and stored.error is not None and stored.reason is not None
    everything = orjson.dumps([stored.error, stored.reason, stored.details, read.error]).decode()
    for secret in ("HUNTER2", "QKEY123", key, "hunter22", "PW99"):
        assert secret not in everything
    shown = "HTTPError: POST https://bob:<redacted>@judge.internal/v1?api_key=<redacted> failed"
    assert stored.error == shown
    assert stored.reason == "judge said no (Authorization: Bearer <redacted>)"
    assert stored.details == {
        "spans": [{"text": "the key is <redacted>", "start": 0, "end": 5}],
        "note": "password=<redacted>",
    }
    assert read.error == "via http://u:<redacted>@h/"


def test_an_items_results_are_read_a_page_at_a_time(store: SqlStore) -> None:
    """One item of many epochs: ``get_results`` reads only the epochs asked for (the first ones, or
    those after a cursor, at most a limit), each with its own scores."""
    evals = EvalStore(store)
    run = evals.create_run(
        "p", name=None, spec={}, dataset=None, dataset_version_id=None, dataset_version=None,
        target="t", epochs=30, items_total=2, scorers=["s"],
    )  # fmt: skip
    evals.write_results(
        [
            EvalResult(run.id, item, e, position, f"{item}{e}", scores=(ScoreRecord("s", e / 30),))
            for position, item in ((1, "a"), (2, "b"))
            for e in range(30)
        ]
    )

    def epochs(results: list[EvalResult]) -> list[tuple[str, int, float | None]]:
        return [(r.item_id, r.epoch, r.scores[0].value) for r in results]

    assert epochs(evals.get_results(run.id, ["b"], epochs=3)) == [("b", e, e / 30) for e in range(3)]
    page = evals.get_results(run.id, ["b"], after=(2, 9), limit=4)
    assert epochs(page) == [("b", e, e / 30) for e in range(10, 14)]
    assert epochs(evals.get_results(run.id, ["b"], after=(1, 999), limit=2)) == [
        ("b", 0, 0.0),
        ("b", 1, 1 / 30),
    ]
    assert (
        evals.get_results(run.id, ["b"], after=(2, 29))
        == []
        == evals.get_results(run.id, ["b"], after=(3, 0))
    )
    assert len(evals.get_results(run.id, ["a", "b"])) == 60

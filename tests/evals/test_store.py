"""The eval store on both databases: datasets, runs, results with their scores, the cache."""

from __future__ import annotations

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import CachedResponse, EvalResult, RunStatus, RunSummary, ScoreRecord
from pilothouse.domain.money import Money
from pilothouse.store.evals import EvalStore
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

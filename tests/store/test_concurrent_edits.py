"""Concurrent edits that raced into a 500 (issue 24, attacker's pass): twelve simultaneous edits of one
online evaluator (SQLite read the same version in each and stored version N + 1 twice), and reviewers
sending corrections to one new dataset at the same moment (both created it, or numbered the same
version). Every edit lands, one after the other, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.keys import Scope
from pilothouse.quality.online import OnlineEvaluators
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore

pytestmark = pytest.mark.slow  # threads against real databases


def _at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """``work(i)`` for each i in its own thread, released together; the results (or exceptions)."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # the test reports what each thread met
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_simultaneous_edits_of_an_evaluator_each_make_a_version(store: SqlStore) -> None:
    service = OnlineEvaluators(store)
    service.create("default", "polite", {"scorer": {"type": "contains", "value": "please"}})
    results = _at_once(
        8,
        lambda i: service.update(
            "default", "polite", {"scorer": {"type": "contains", "value": f"v{i}"}}, None
        ),
    )
    assert [r for r in results if isinstance(r, Exception)] == []
    row = service.online.get_evaluator("default", "polite")
    assert row is not None and row.version == 9
    deleted = _at_once(4, lambda _i: service.delete("default", "polite"))
    assert sorted(deleted) == [False, False, False, True]  # one request deleted it


def test_simultaneous_imports_of_a_new_dataset_number_their_versions(store: SqlStore) -> None:
    evals = EvalStore(store)
    results = _at_once(
        6,
        lambda i: evals.import_items(
            "default", "fixes", [DatasetItem(id=f"t{i}", input={"q": i})], source="review"
        ),
    )
    assert [r for r in results if isinstance(r, Exception)] == []
    assert sorted(version.version for version, _created in results) == [1, 2, 3, 4, 5, 6]


def test_servers_started_together_make_one_first_key(store: SqlStore) -> None:
    """``serve`` makes the owner's first key when the store has none; servers started at once on a new
    database (docs/deploy.md's two ports) made one each. One of them makes it; the others none."""
    scopes = frozenset({Scope.ADMIN, Scope.READ})
    results = _at_once(6, lambda _i: store.create_first_key("default", "first key", scopes))
    assert [r for r in results if isinstance(r, Exception)] == []
    (secret,) = [r for r in results if r is not None]
    (key,) = store.list_api_keys()
    assert store.find_api_key(secret) == key and key.scopes == scopes
    assert store.create_first_key("default", "first key", scopes) is None  # the next start: none

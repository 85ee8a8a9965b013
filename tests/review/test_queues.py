"""Review queues on SQLite and PostgreSQL: filling (by hand, from filters, from other parts), leases
that keep two reviewers off one item, reviews with reviewer identity, agreement, corrected outputs sent
to a dataset, and calibration labels."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from pilothouse.domain.queries import TraceQuery
from pilothouse.domain.traces import Score, ScoreDataType, ScoreSource
from pilothouse.evals import Evaluations
from pilothouse.quality.review import ItemStatus, ReviewError, ReviewNotFound, ReviewService
from pilothouse.store.sql import SqlStore
from tests.review.stored import write_trace

# PostgreSQL, and scrypt hashing (deliberately slow): more than the fast tier's 0.3 s a test
pytestmark = pytest.mark.slow


def _service(store: SqlStore) -> tuple[ReviewService, list[str]]:
    service = ReviewService(store)
    traces = [
        write_trace(store, "p1", f"Capital of France? ({i})", f"Lyon is the capital ({i}).", at=i)
        for i in range(4)
    ]
    service.create_config("p1", "correct", "boolean", description="Is the answer right?")
    service.create_config("p1", "tone", "categorical", categories=["rude", "neutral", "kind"])
    return service, traces


def test_leases_keep_two_reviewers_off_one_item(store: SqlStore) -> None:
    service, traces = _service(store)
    service.create_queue("p1", "triage", ["correct", "tone"], lease_seconds=60)
    assert service.add_traces("p1", "triage", [*traces[:3], "nope"], "picked by hand") == (3, ["nope"])
    assert service.enqueue(
        traces[3], "triage", "detector unsure", project_id="p1", spans=[(0, 4)], source="detector"
    )
    assert not service.enqueue(traces[3], "triage", "again", project_id="p1")  # once per queue
    with pytest.raises(ReviewNotFound):
        service.enqueue(traces[0], "triage", "other tenant", project_id="p2")

    first = service.next_item("p1", "triage", "alice")
    second = service.next_item("p1", "triage", "bob")
    assert first is not None and second is not None and first.item.id != second.item.id
    assert first.item.lease_owner == "alice" and first.context == ("Paris is the capital of France.",)
    assert service.next_item("p1", "triage", "alice").item.id == first.item.id  # type: ignore[union-attr]
    with pytest.raises(ReviewError, match=r"another reviewer \(alice\) holds"):
        service.submit("p1", first.item.id, "bob", {"correct": False, "tone": "neutral"})
    with pytest.raises(ReviewError, match="tone: give one of"):
        service.submit("p1", first.item.id, "alice", {"correct": "false", "tone": "grumpy"})

    done = service.submit(
        "p1", first.item.id, "alice", {"correct": "false", "tone": "neutral"}, corrected_output="Paris."
    )
    assert done.item.status is ItemStatus.COMPLETED and done.item.lease_owner is None
    (review,) = done.reviews
    assert review.reviewer == "alice" and review.corrected_output == "Paris."
    trace = store.get_trace("p1", first.item.trace_id)
    assert trace is not None
    human = {s.name: (s.string_value, s.source, s.comment) for s in trace.scores}
    assert human["correct"] == ("false", ScoreSource.HUMAN, "review by alice")
    with pytest.raises(ReviewError, match="a skip would discard your review"):
        service.skip("p1", first.item.id, "alice")  # a stray skip keeps alice's review and correction
    assert [r.corrected_output for r in service.item("p1", first.item.id).reviews] == ["Paris."]

    service.skip("p1", second.item.id, "bob")  # bob passes; carol still gets it, bob never again
    seen_by_bob = set()
    while (view := service.next_item("p1", "triage", "bob")) is not None:
        seen_by_bob.add(view.item.id)
        service.submit("p1", view.item.id, "bob", {"correct": True, "tone": "kind"})
    assert second.item.id not in seen_by_bob and len(seen_by_bob) == 2
    last = service.next_item("p1", "triage", "carol")
    assert last is not None and last.item.id == second.item.id
    # an expired lease frees the item for someone else
    store_items = service.store
    queue = service.queue("p1", "triage")
    assert store_items.claim(queue, "dave", now_ns=last.item.lease_until_ns + 1).id == second.item.id  # type: ignore[operator, union-attr]


def test_agreement_datasets_and_calibration_labels(store: SqlStore) -> None:
    service, traces = _service(store)
    service.create_queue("p1", "double", ["correct"], reviews_per_item=2)
    assert service.fill_from_filter("p1", "double", TraceQuery(name="qa"), limit=3) == 3
    verdicts = {"alice": [True, True, False], "bob": [True, False, False]}
    for reviewer, answers in verdicts.items():
        for answer in answers:
            view = service.next_item("p1", "double", reviewer)
            assert view is not None
            service.submit(
                "p1",
                view.item.id,
                reviewer,
                {"correct": answer},
                corrected_output="Paris." if not answer else None,
            )
        assert service.next_item("p1", "double", reviewer) is None
    counts = dict(service.queues("p1"))
    assert list(counts.values()) == [{"pending": 0, "completed": 3}]
    store.add_scores(
        "p1",
        [
            Score(f"j{i}", tid, "correct", ScoreDataType.BOOLEAN, 1.0, "true", source=ScoreSource.JUDGE)
            for i, tid in enumerate(traces)
        ],
    )
    report = service.agreement("p1", "correct")
    assert report.pooled.n == 3 and report.pooled.observed == pytest.approx(2 / 3)
    (judge,) = report.automated
    assert (
        judge.rater_a == "judge" and judge.n == 6 and judge.kappa == pytest.approx(0.0)
    )  # a judge that always passes

    version, created, corrected = service.send_to_dataset("p1", "double", "corrections")
    assert created and corrected >= 1 and version.item_count == corrected
    items = {i.id: i for _, i in Evaluations.over(store).evals.iter_items(version.id)}
    assert all(i.expected == "Paris." for i in items.values())
    service.create_queue("p1", "more", ["correct"])
    assert service.add_traces("p1", "more", [traces[0]]) == (1, [])
    view = service.next_item("p1", "more", "alice")
    assert view is not None
    service.submit("p1", view.item.id, "alice", {"correct": False}, corrected_output="Paris, of course.")
    extended, _, _ = service.send_to_dataset("p1", "more", "corrections")
    assert extended.version == 2 and extended.item_count == version.item_count + 1

    labels, ties = service.calibration_labels("p1", "correct")
    assert len(labels) + ties == 4 and ties == 1  # alice and bob split on one trace
    assert {row["id"]: row["input"]["label"] for row in labels}[traces[0]] is False
    assert all(set(row["input"]) == {"input", "output", "label"} for row in labels)
    with pytest.raises(ReviewError, match="pass/fail"):
        service.calibration_labels("p1", "tone")


def test_reviewers_log_in_with_hashed_passwords(store: SqlStore) -> None:
    service = ReviewService(store)
    alice = service.add_user("p1", "alice", "correct horse battery", "Alice A.")
    with pytest.raises(ReviewError, match="already"):
        service.add_user("p1", "alice", "another password")
    with pytest.raises(ReviewError, match="10 to"):
        service.add_user("p1", "bob", "short")
    for taken in (
        "admin",
        "Admin",
    ):  # the admin secret reviews as "admin": a user of that name was one rater with it
        with pytest.raises(ReviewError, match="admin secret"):
            service.add_user("p1", taken, "correct horse battery")
    found = service.reviewers.user_with_hash("p1", "alice")
    assert found is not None and found[1].startswith("scrypt$") and "correct horse" not in found[1]
    assert service.authenticate("p1", "alice", "correct horse battery") == alice
    assert service.authenticate("p1", "alice", "wrong horse battery") is None
    assert service.authenticate("p2", "alice", "correct horse battery") is None  # another project
    assert service.reviewers.disable_user("p1", "alice")
    assert service.authenticate("p1", "alice", "correct horse battery") is None


def test_concurrent_claims_never_share_an_item(store: SqlStore) -> None:
    service = ReviewService(store)
    traces = [write_trace(store, "p1", f"q{i}", f"a{i}", at=i) for i in range(12)]
    service.create_config("p1", "ok", "boolean")
    queue = service.ensure_queue("p1", "busy", ["ok"])
    assert service.ensure_queue("p1", "busy") == queue  # the queue that is there
    service.add_traces("p1", "busy", traces)
    reviewers = [f"r{i}" for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        claimed = list(pool.map(lambda who: service.next_item("p1", "busy", who), reviewers))
    ids = [view.item.id for view in claimed if view is not None]
    assert len(ids) == 8 and len(set(ids)) == 8  # eight reviewers, eight different items
    owners = {item.id: item.lease_owner for item in service.store.list_items(queue)}
    assert sorted(owners[i] for i in ids) == reviewers  # type: ignore[type-var]


def test_a_trace_without_retrieval_spans_shows_the_context_in_its_metadata(store: SqlStore) -> None:
    """What an online faithfulness evaluator checked a response against (``metadata.context``, its
    default) is what the reviewer sees beside it when the trace has no retrieval or tool spans."""
    from tests.quality.online_traces import store_trace

    service = ReviewService(store)
    service.create_config("default", "correct", "boolean")
    service.create_queue("default", "faith", ["correct"])
    context = {"context": ["The zebra-41 run finished first.", "It rained."]}
    trace = store_trace(store, output="zebra-42 finished first.", metadata=context)
    assert service.enqueue(trace, "faith", "detector unsure", spans=[(0, 8)], source="detector")
    item = service.next_item("default", "faith", "alice")
    assert item is not None and item.context == ("The zebra-41 run finished first.", "It rained.")

"""Curation of traces into datasets: one item per input (corrections and preference pairs), near-
duplicates by embedding, leakage-safe stratified splits, and training-file exports."""

from __future__ import annotations

import io
import json
import math
import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from pilothouse.domain.curation import (
    CurationPlan,
    Split,
    assign_splits,
    group_of,
    merge_duplicates,
    parse_splits,
    scrub_item,
)
from pilothouse.domain.datasets import DatasetError, DatasetItem
from pilothouse.domain.traces import (
    Observation,
    ObservationKind,
    Score,
    ScoreDataType,
    SpanRecord,
    TraceAttributes,
)
from pilothouse.evals._curation import curate_items, drop_near_duplicates
from pilothouse.evals._finetune_formats import write_training_file
from pilothouse.store.sql import SqlStore
from tests.evals.test_cli import Cli, cli  # noqa: F401 (the fixture)


def item(n: int, question: str, answer: str | None, **metadata: object) -> DatasetItem:
    return DatasetItem(f"t{n}", input={"input": question}, expected=answer, metadata=metadata)


def test_parse_splits() -> None:
    assert parse_splits("80/10/10") == (Split("train", 0.8), Split("validation", 0.1), Split("test", 0.1))
    assert parse_splits("train=75,test=25") == (Split("train", 0.75), Split("test", 0.25))
    assert parse_splits("70/30") == (Split("train", 0.7), Split("test", 0.3))
    for bad, message in [
        ("80/10", "add up to 90"),
        ("a=0.5,a=0.5", "appears twice"),
        ("x/y", "not a number"),
        ("1/2/3/4", "2 or 3 shares"),
        ("100", "2 or 3 shares"),
        ("all=1", "between 2 and 5 parts"),
        ("train=nan,test=1", "above 0"),
        ("tr ain=0.5,test=0.5", "not a split name"),
    ]:
        with pytest.raises(DatasetError, match=message):
            parse_splits(bad)


def test_duplicates_keep_the_correction_or_the_best_answer_and_the_worst_as_rejected() -> None:
    items = [
        item(1, "Capital of France?", "Lyon", scores={"correct": 0.0}),
        item(2, "Capital of  France?", "Paris", scores={"correct": 1.0}),  # whitespace differs: same input
        item(3, "Capital of France?", "Marseille", scores={"correct": 0.5}),
        item(4, "2+2?", "5", correction="4"),
        item(5, "2+2?", "4"),
        item(6, "Alone?", "yes", scores={"correct": 1.0}),
    ]
    plain, dropped, corrected, pairs = merge_duplicates(items, CurationPlan())
    assert [i.id for i in plain] == ["t1", "t4", "t6"] and dropped == 3 and corrected == 1 and pairs == 0
    assert plain[1].expected == "4"  # the reviewer's correction, not the raw "5"
    preferred, _, _, pairs = merge_duplicates(items, CurationPlan(preference_score="correct"))
    france = preferred[0]
    assert france.expected == "Paris" and france.metadata["rejected"] == "Lyon" and pairs == 1
    assert "rejected" not in preferred[2].metadata  # one answer: no pair
    lower, _, _, _ = merge_duplicates(items, CurationPlan(preference_score="correct", lower_is_better=True))
    assert lower[0].expected == "Lyon" and lower[0].metadata["rejected"] == "Paris"
    kept, dropped, _, _ = merge_duplicates(items, CurationPlan(dedup=False))
    assert len(kept) == 6 and dropped == 0


def test_splits_never_share_a_group_and_keep_each_strata_share() -> None:
    rng = random.Random(7)
    items = []
    for n in range(3000):
        label = "spam" if rng.random() < 0.2 else "ham"
        items.append(item(n, f"message {n}", label, session_id=f"s{rng.randrange(600)}"))
    plan = CurationPlan(splits=parse_splits("80/10/10"), group_by="session", stratify_by="expected", seed=3)
    splits, groups = assign_splits(items, plan)
    assert sum(len(v) for v in splits.values()) == 3000
    sessions = {name: {group_of(i, "session") for i in members} for name, members in splits.items()}
    assert not sessions["train"] & sessions["test"] and not sessions["train"] & sessions["validation"]
    assert not sessions["validation"] & sessions["test"]
    assert groups == {name: len(found) for name, found in sessions.items()}
    for name, share in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
        members = splits[name]
        assert math.isclose(len(members) / 3000, share, abs_tol=0.02), (name, len(members))
        spam = sum(i.expected == "spam" for i in members) / len(members)
        assert math.isclose(spam, 0.2, abs_tol=0.05), (name, spam)
    again, _ = assign_splits(items, plan)
    assert {k: [i.id for i in v] for k, v in again.items()} == {
        k: [i.id for i in v] for k, v in splits.items()
    }
    other, _ = assign_splits(items, CurationPlan(**{**_fields(plan), "seed": 4}))
    assert [i.id for i in other["test"]] != [i.id for i in splits["test"]]


def test_strata_too_small_to_spread_are_pooled_and_an_empty_split_is_refused() -> None:
    # free-text answers: every session its own stratum, which alone could only ever fill "train"
    items = [item(n, f"q{n}", f"answer {n // 2}", session_id=f"s{n // 2}") for n in range(24)]
    plan = CurationPlan(splits=parse_splits("50/50"), group_by="session", stratify_by="expected")
    splits, groups = assign_splits(items, plan)
    assert groups == {"train": 6, "test": 6} and {k: len(v) for k, v in splits.items()} == {
        "train": 12,
        "test": 12,
    }
    few = CurationPlan(splits=parse_splits("80/10/10"), group_by="session", stratify_by="expected")
    with pytest.raises(DatasetError, match="split 'validation' would get no item: 2 groups"):
        assign_splits(items[:4], few)


def test_strata_that_round_alike_do_not_all_shrink_the_same_split() -> None:
    """An attacker's pass: 70/15/15 of two strata of 30 gave 42/10/8 (each stratum's tie between
    validation and test went to validation), and 50/25/25 of 12 sessions 30/20/10 items."""
    items = [item(n, f"q{n}", "pos" if n % 2 else "neg") for n in range(60)]
    splits, _ = assign_splits(items, CurationPlan(splits=parse_splits("70/15/15"), stratify_by="expected"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 42, "validation": 9, "test": 9}
    sessions = [item(n, f"q{n}", "pos" if n % 4 < 2 else "neg", session_id=f"s{n // 5}") for n in range(60)]
    plan = CurationPlan(splits=parse_splits("50/25/25"), group_by="session", stratify_by="expected")
    splits, groups = assign_splits(sessions, plan)
    assert groups == {"train": 6, "validation": 3, "test": 3}


def _fields(plan: CurationPlan) -> dict[str, object]:
    return {name: getattr(plan, name) for name in plan.__dataclass_fields__}


def _bag_of_words(texts: list[str]) -> list[list[float]]:
    """A real (if simple) embedding: counts of the 64 hashed word buckets."""
    vectors = []
    for text in texts:
        vector = [0.0] * 64
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            vector[sum(map(ord, word)) % 64] += 1.0
        vectors.append(vector)
    return vectors


def test_near_duplicates_by_embedding() -> None:
    items = [
        item(1, "how do I reset my password", "a"),
        item(2, "how do I reset my password please", "b"),
        item(3, "what is the refund policy", "c"),
        item(4, "", "d"),
    ]
    kept, dropped = drop_near_duplicates(items, _bag_of_words, 0.9)
    assert [i.id for i in kept] == ["t1", "t3", "t4"] and dropped == 1
    kept, dropped = drop_near_duplicates(items, _bag_of_words, 1.0)
    assert dropped == 0
    with pytest.raises(DatasetError, match="threshold"):
        drop_near_duplicates(items, _bag_of_words, 1.5)
    with pytest.raises(DatasetError, match="embedding model"):
        curate_items(items, CurationPlan(near_duplicate=0.9))


def test_near_duplicates_compare_the_variables_not_the_shared_template() -> None:
    """An attacker's pass: items curated from a prompt's traces hold the rendered chat, whose shared
    template made 59 of 60 different reviews "near-duplicates" of the first."""
    template = "You label movie reviews as positive or negative. Answer with one word, nothing else. Review: "
    reviews = ["a lovely warm film", "poor acting and a dull plot", "lovely but dull", "a warm plot"]
    items = [
        DatasetItem(f"t{n}", input={"text": r}, messages=({"role": "user", "content": template + r},))
        for n, r in enumerate(reviews)
    ]
    kept, dropped = drop_near_duplicates(items, _bag_of_words, 0.9)
    assert dropped == 0 and len(kept) == 4
    chats = [
        DatasetItem(i.id, messages=({"role": "system", "content": template * 5}, *i.messages)) for i in items
    ]
    kept, dropped = drop_near_duplicates(chats, _bag_of_words, 0.95)  # the user's turns, not the system's
    assert dropped == 0


def test_a_preference_score_no_trace_has_is_refused() -> None:
    items = [item(n, "same question", f"answer {n}", scores={"good": n}) for n in range(3)]
    _splits, report = curate_items(items, CurationPlan(preference_score="good"))
    assert report.preference_pairs == 1
    with pytest.raises(DatasetError, match="no matching trace has a score named 'goood'"):
        curate_items(items, CurationPlan(preference_score="goood"))


def test_scrubbing_reaches_every_string() -> None:
    original = DatasetItem(
        "t1",
        messages=({"role": "user", "content": "mail bob@example.com"},),
        expected="bob@example.com it is",
        metadata={"rejected": "no, bob@example.com", "scores": {"x": 1.0}},
    )
    clean, changed = scrub_item(original, lambda text: text.replace("bob@example.com", "[EMAIL]"))
    assert changed and "bob@example.com" not in json.dumps(
        [clean.messages, clean.expected, dict(clean.metadata)]
    )
    _, changed = scrub_item(clean, lambda text: text)
    assert not changed


def test_training_files() -> None:
    items = [
        DatasetItem(
            "a",
            messages=({"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}),
            expected="Hello",
            metadata={"rejected": "Greetings, dear human, how are you on this fine day?"},
        ),
        DatasetItem("b", input={"input": "2+2?"}, expected="4"),
        DatasetItem("c", input={"city": "Paris", "year": 2024}, expected=None),
    ]
    out = io.StringIO()
    assert write_training_file(items, out, "openai") == (2, 1)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["messages"][-1] == {"role": "assistant", "content": "Hello"}
    assert first["messages"][0]["role"] == "system"
    assert second == {
        "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    }
    out = io.StringIO()
    assert write_training_file(items, out, "hf-chat") == (2, 1)
    assert json.loads(out.getvalue().splitlines()[1]) == {
        "prompt": [{"role": "user", "content": "2+2?"}],
        "completion": [{"role": "assistant", "content": "4"}],
    }
    out = io.StringIO()
    assert write_training_file(items, out, "dpo") == (1, 2)
    pair = json.loads(out.getvalue())
    assert pair["chosen"] == [{"role": "assistant", "content": "Hello"}]
    assert pair["rejected"][0]["content"].startswith("Greetings")


def _store_traces(url: str) -> None:
    """Sixty traces from twelve sessions: six questions, each asked in several sessions with answers of
    different scores."""
    store = SqlStore.from_url(url)
    now = time.time_ns()
    records, scores = [], []
    for n in range(60):
        trace_id = f"{n + 1:032x}"
        question = f"question {n % 6}"
        take = (n // 6) % 4  # every question gets every take
        answer = f"answer {n % 6} take {take}"
        observation = Observation(
            trace_id=trace_id,
            id=f"{n + 1:016x}",
            name="chat",
            start_ns=now - n * 1000,
            end_ns=now - n * 1000 + 10,
            kind=ObservationKind.GENERATION,
            input=json.dumps([{"role": "user", "content": question}]),
            output=answer,
            model="sim-1",
        )
        attributes = TraceAttributes(name="qa", session_id=f"session-{n % 12}", user_id=f"user-{n % 5}")
        records.append(SpanRecord("default", observation, attributes))
        scores.append(Score(f"s{n}", trace_id, "quality", ScoreDataType.NUMERIC, float(take)))
    store.write_spans(records)
    store.add_scores("default", scores)
    store.close()


def test_cli_curates_splits_and_exports_training_files(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    _store_traces(cli.url)
    code, out, err = cli(
        "datasets",
        "from-traces",
        "--name",
        "qa",
        "--dedup",
        "--prefer-score",
        "quality",
        "--split",
        "train=0.5,test=0.5",
        "--group-by",
        "session",
    )
    assert code == 0, err
    assert "curated: 60 traces, 54 duplicate inputs merged, 6 preference pairs" in out
    stored = {
        m.group(1): int(m.group(2)) for m in re.finditer(r"dataset '(qa-\w+)' version 1: (\d+) items", out)
    }
    assert set(stored) == {"qa-train", "qa-test"} and sum(stored.values()) == 6
    code, out, err = cli("datasets", "export", "qa-train", "--format", "dpo", "-o", "train.dpo.jsonl")
    assert code == 0, err
    pairs = [json.loads(line) for line in (tmp_path / "train.dpo.jsonl").read_text().splitlines()]
    assert len(pairs) == stored["qa-train"]
    for pair in pairs:
        assert pair["chosen"][0]["content"].endswith("take 3")  # the best score
        assert pair["rejected"][0]["content"].endswith("take 0")
    code, out, _ = cli("datasets", "export", "qa-test", "--format", "openai")
    assert code == 0 and all("messages" in json.loads(line) for line in out.splitlines())
    # no preference pairs: an error, not an empty file
    cli("datasets", "from-traces", "--name", "plain", "--dedup")
    code, _, err = cli("datasets", "export", "plain", "--format", "dpo", "-o", "none.jsonl")
    assert code == 1 and "no item of plain@1 makes a dpo record" in err and "--prefer-score" in err
    # the same curation again stores nothing new
    code, out, _ = cli(
        "datasets", "from-traces", "--name", "qa", "--dedup", "--prefer-score", "quality",
        "--split", "train=0.5,test=0.5", "--group-by", "session",
    )  # fmt: skip
    assert out.count("(unchanged)") == 2
    for args, message in [
        (["--prefer-score", "quality"], "needs --dedup"),
        (["--group-by", "session"], "need --split"),
        (["--split", "80/10"], "add up to 90"),
    ]:
        code, _, err = cli("datasets", "from-traces", "--name", "bad", *args)
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_splits_group_by_user_in_the_store(cli: Cli) -> None:  # noqa: F811
    _store_traces(cli.url)
    code, out, err = cli("datasets", "from-traces", "--name", "u", "--split", "70/30", "--group-by", "user")
    assert code == 0, err
    assert "u-train" in out and "u-test" in out and "groups" in out
    counts = Counter(re.findall(r"in (\d+) groups?\b", out))
    assert sum(int(k) * v for k, v in counts.items()) == 5  # five users, each in one split
    code, out, err = cli(
        "datasets", "from-traces", "--name", "v", "--split", "70/30", "--group-by", "user", "--limit", "1"
    )
    assert code == 1 and "would get no item: 1 groups (by user)" in err and err.count("\n") == 1, err
    code, out, err = cli("datasets", "list")
    assert "v-" not in out  # nothing stored
    for bad, split, message in [
        ("../../x", "70/30", "invalid dataset name"),
        ("a b", "70/30", "invalid dataset name"),
        ("-x", "70/30", "invalid dataset name"),
        ("x" * 300, "70/30", "306 characters: at most 128"),
        ("x" * 125, "80/10/10", "-train' at its end) is 131 characters"),  # the name it would store
    ]:
        code, out, err = cli("datasets", "from-traces", "--name", bad, "--split", split)
        assert code == 2 and message in err and err.count("\n") == 1, (bad, err)
    for args, message in [
        (["--split", "70/30", "--group-by", ""], "need a key"),
        (["--split", "70/30", "--stratify-by", ""], "need a key"),
        (["--lower-is-better"], "give both"),
    ]:
        code, out, err = cli("datasets", "from-traces", "--name", "w", *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    code, out, err = cli(
        "datasets", "from-traces", "--name", "w", "--split", "70/30", "--stratify-by", "nokey"
    )
    assert code == 0 and "items have no 'nokey' in their metadata" in err, err


@pytest.mark.slow
def test_near_duplicates_with_the_local_embedding_model(cli: Cli) -> None:  # noqa: F811
    store = SqlStore.from_url(cli.url)
    now = time.time_ns()
    questions = [
        "How do I reset my password?",
        "How can I reset my password?",
        "What is your refund policy?",
        "Do you ship to Canada?",
    ]
    records = [
        SpanRecord(
            "default",
            Observation(
                trace_id=f"{n + 1:032x}",
                id=f"{n + 1:016x}",
                name="chat",
                start_ns=now - n,
                end_ns=now,
                kind=ObservationKind.GENERATION,
                input=json.dumps([{"role": "user", "content": q}]),
                output="ok",
                model="sim-1",
            ),
            TraceAttributes(name="qa"),
        )
        for n, q in enumerate(questions)
    ]
    store.write_spans(records)
    store.close()
    code, out, err = cli("datasets", "from-traces", "--name", "nd", "--dedup", "--near-duplicates", "0.9")
    assert code == 0, err
    assert "1 near-duplicates dropped" in out and "3 items" in out

"""The prompt registry over the real databases (SQLite and PostgreSQL): immutable versions, labels,
rollback, diff, the audit list, and the change feed other processes poll."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilothouse.domain.prompts import PromptError, PromptRef, parse_ref
from pilothouse.evals.spec import SpecError, parse_spec
from pilothouse.prompts import PromptNotFound, PromptRegistry
from pilothouse.store.sql import SqlStore

CHAT = {
    "prompt": [
        {"role": "system", "content": "You answer in a {{tone}} tone."},
        {"role": "user", "content": "{{question}}"},
    ],
    "model": "sim",
    "parameters": {"temperature": 0.2, "max_tokens": 64},
}


def test_versions_labels_rollback_and_history(store: SqlStore) -> None:
    registry = PromptRegistry(store)
    first = registry.create("p1", "support", CHAT, actor="alice", labels=["production"])
    second = registry.create(
        "p1", "support", {**CHAT, "parameters": {"temperature": 0.7}, "message": "warmer"}, actor="bob"
    )
    assert (first.version, second.version) == (1, 2)
    assert first.labels == ("latest", "production")
    assert registry.resolve("p1", parse_ref("support@production")).version == 1
    assert registry.resolve("p1", parse_ref("support@latest")).version == 2
    assert registry.resolve("p1", parse_ref("support@2")).parameters == {"temperature": 0.7}

    # promotion then rollback: both are label moves, each an event naming where the label was
    assert registry.set_label("p1", "support", "production", 2, actor="carol") == 1
    assert registry.resolve("p1", parse_ref("support@production")).version == 2
    assert registry.set_label("p1", "support", "production", 1, actor="carol") == 2
    assert registry.resolve("p1", parse_ref("support")).version == 1
    assert registry.set_label("p1", "support", "production", 1, actor="dave") == 1  # already there
    events = registry.history("p1", "support")  # ... so nothing moved and nothing is recorded
    assert [(e.action, e.version, e.label, e.previous, e.actor) for e in events] == [
        ("label", 1, "production", 2, "carol"),
        ("label", 2, "production", 1, "carol"),
        ("create", 2, None, None, "bob"),
        ("label", 1, "production", None, "alice"),
        ("create", 1, None, None, "alice"),
    ]
    # a version never changes: version 1 still has what it was created with
    assert registry.get("p1", "support", version=1).parameters == {"temperature": 0.2, "max_tokens": 64}
    diff = registry.diff("p1", "support", 1, 2)
    assert '-    "temperature": 0.2' in diff and '+    "temperature": 0.7' in diff
    [summary] = registry.list_prompts("p1")
    assert (summary.name, summary.latest, dict(summary.labels), summary.kind) == (
        "support",
        2,
        {"production": 1},
        "chat",
    )


def test_projects_do_not_see_each_other(sqlite_store: SqlStore) -> None:
    registry = PromptRegistry(sqlite_store)
    registry.create("p1", "shared-name", {"prompt": "one {{x}}"}, actor=None, labels=["production"])
    with pytest.raises(PromptNotFound):
        registry.resolve("p2", PromptRef("shared-name", label="production"))
    assert registry.list_prompts("p2") == []
    with pytest.raises(PromptNotFound):  # another project's version cannot be labelled either
        registry.set_label("p2", "shared-name", "production", 1, actor=None)


def test_the_cache_forgets_a_change_heard_from_elsewhere(sqlite_store: SqlStore) -> None:
    here, there = PromptRegistry(sqlite_store), PromptRegistry(sqlite_store)
    here.create("p1", "greet", {"prompt": "Hi {{name}}"}, actor=None, labels=["production"])
    here.create("p1", "greet", {"prompt": "Hello {{name}}"}, actor=None)
    ref = parse_ref("greet@production")
    assert here.resolve("p1", ref).version == 1
    seq = here.prompts.last_seq()
    there.set_label("p1", "greet", "production", 2, actor=None)
    assert here.resolve("p1", ref).version == 1  # cached until it hears of the change
    changes = here.prompts.changed_since(seq)
    assert [(project, name) for _, project, name in changes] == [("p1", "greet")]
    here.changed("p1", "greet", local=False)
    assert here.resolve("p1", ref).version == 2


BAD_VERSIONS = [
    ({"prompt": ""}, "non-empty string"),
    ({"prompt": [{"role": "wizard", "content": "x"}]}, "role"),
    ({"prompt": "x", "parameters": {"model": "gpt"}}, "'model'"),
    ({"prompt": "x", "extra": 1}, "unknown field"),
    ({"prompt": "x" * 300_000}, "at most"),
]


def test_bad_versions_names_and_labels_are_refused_with_a_reason(sqlite_store: SqlStore) -> None:
    registry = PromptRegistry(sqlite_store)
    for document, problem in BAD_VERSIONS:
        with pytest.raises(PromptError, match=problem):
            registry.create("p1", "bad", document, actor=None)
    registry.create("p1", "ok", {"prompt": "x"}, actor=None)
    for label in ("latest", "Prod", "12", "a b"):
        with pytest.raises(PromptError):
            registry.set_label("p1", "ok", label, 1, actor=None)
    for name in ("../etc", "", "a/b", "x" * 200):
        with pytest.raises(PromptError):
            registry.create("p1", name, {"prompt": "x"}, actor=None)


def test_eval_specs_take_a_registered_prompt(sqlite_store: SqlStore, tmp_path: Path) -> None:
    registry = PromptRegistry(sqlite_store)
    chat = {**CHAT, "model": "echo"}
    registry.create("default", "support", chat, actor=None, labels=["production"])
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  - {name: echo, provider: sim, model: echo-1, options: {echo: true}}\n")
    data = {
        "dataset": [{"tone": "calm", "question": "Why?"}],
        "target": {"prompt": "support@production", "config": str(config), "max_tokens": 9},
        "scorers": [{"type": "contains", "value": "Why"}],
    }
    spec = parse_spec(data, base_dir=tmp_path, prompts=registry.resolve)
    item = spec.dataset.items[0] if spec.dataset.items else None
    assert item is not None
    prepared = spec.target.prepare(item)
    assert prepared.request["messages"] == [
        {"role": "system", "content": "You answer in a calm tone."},
        {"role": "user", "content": "Why?"},
    ]
    # the version's parameters, under the target's own
    assert (prepared.request["model"], prepared.request["temperature"], prepared.request["max_tokens"]) == (
        "echo",
        0.2,
        9,
    )
    assert spec.target.identity()["prompt_version"] == "1"
    with pytest.raises(SpecError, match="loaded without"):
        parse_spec(data, base_dir=tmp_path)
    with pytest.raises(SpecError, match="no label 'staging'"):
        parse_spec(
            {**data, "target": {"prompt": "support@staging"}}, base_dir=tmp_path, prompts=registry.resolve
        )
    # a plain template is still a template, not a reference
    plain = {**data, "target": {"model": "echo", "config": str(config), "prompt": "Explain {{question}}"}}
    assert parse_spec(plain, base_dir=tmp_path).target.prepare(item).request["messages"] == [
        {"role": "user", "content": "Explain Why?"}
    ]


def test_a_canary_splits_a_label_sticky_per_user_until_the_label_moves(sqlite_store: SqlStore) -> None:
    registry = PromptRegistry(sqlite_store)
    for text in ("one", "two", "three"):
        registry.create(
            "p1", "greet", {"prompt": text}, actor=None, labels=["production"] if text == "one" else []
        )
    ref = parse_ref("greet@production")
    assert registry.set_canary("p1", "greet", "production", 2, 0.25, actor="ops") == 1
    users = [f"user-{n}" for n in range(4000)]
    arms = {user: registry.resolve("p1", ref, user).version for user in users}
    share = sum(1 for v in arms.values() if v == 2) / len(users)
    assert 0.22 < share < 0.28  # a hash of each user: the same split on every run
    assert all(registry.resolve("p1", ref, user).version == arms[user] for user in users[:200])  # sticky
    assert registry.resolve("p1", parse_ref("greet@1"), "user-1").version == 1  # a version is a version
    with pytest.raises(PromptError, match="already points"):
        registry.set_canary("p1", "greet", "production", 1, 0.5, actor=None)
    with pytest.raises(PromptError, match="between 0 and 1"):
        registry.set_canary("p1", "greet", "production", 3, 1.5, actor=None)
    with pytest.raises(PromptNotFound, match="no label 'staging'"):
        registry.set_canary("p1", "greet", "staging", 3, 0.5, actor=None)
    # promoting (moving the label) ends the canary: everyone gets the label's version
    registry.set_label("p1", "greet", "production", 3, actor="ops")
    assert {registry.resolve("p1", ref, user).version for user in users[:500]} == {3}
    assert registry.canary("p1", "greet", "production") is None
    events = [(e.action, e.version, dict(e.detail)) for e in registry.history("p1", "greet", 2)]
    assert events == [("label", 3, {}), ("canary", 2, {"share": 0.25})]


def test_parameters_are_checked_on_storing_not_on_reading(store: SqlStore) -> None:
    from pilothouse.domain.prompts import check_request_fields, prompt_from_document

    registry = PromptRegistry(store)
    odd = {**CHAT, "parameters": {"max_tokens": 64, "bogus_param": 1}}
    with pytest.raises(PromptError, match="Unrecognized request argument supplied: bogus_param"):
        registry.create("p1", "support", odd, actor="alice")
    with pytest.raises(PromptError, match="not finite"):
        registry.create("p1", "support", {**CHAT, "parameters": {"temperature": float("nan")}}, actor="a")
    assert registry.history("p1") == []  # nothing stored
    # a version read back (the SDK reads the server's answer) is not refused by a newer rule
    version = prompt_from_document("support", odd, version=3)
    assert version.parameters["bogus_param"] == 1
    with pytest.raises(PromptError):
        check_request_fields(version)

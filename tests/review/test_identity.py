"""Who wrote a review or a score cannot be forged (issue 24, section 5): a project's active keys have
distinct names, so ``key:NAME`` names one key (the store, the CLI and the keys page refuse a second
``ci``); a score sent to ``POST /api/scores`` carries its sender as ``author`` whatever its body says,
and review agreement and calibration labels never read such scores."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pilothouse.cli import cli
from pilothouse.cli.common import CliError
from pilothouse.domain.keys import DEFAULT_SCOPES, MAX_KEY_NAME, DuplicateKeyName, Scope, key_identity
from pilothouse.quality.review import ReviewService
from pilothouse.store import tables as t
from pilothouse.store.sql import SqlStore
from tests.review.stored import write_trace
from tests.server.conftest import Served, serve


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_identity_is_one_function() -> None:
    assert key_identity("ci") == "key:ci" and key_identity(None) == "admin"


def test_active_keys_of_a_project_have_distinct_names(store: SqlStore) -> None:
    first, _ = store.create_api_key("p1", "ci", frozenset(DEFAULT_SCOPES))
    with pytest.raises(DuplicateKeyName, match="already has an active key named 'ci'"):
        store.create_api_key("p1", "ci", frozenset({Scope.READ}))
    store.create_api_key("p2", "ci", frozenset(DEFAULT_SCOPES))  # another project's names are its own
    assert store.revoke_api_key(first.id)
    again, _ = store.create_api_key("p1", "ci", frozenset(DEFAULT_SCOPES))  # a rotation: same identity
    assert [k.id for k in store.list_api_keys("p1") if k.revoked_ns is None] == [again.id]
    # a name whose identity (key:NAME) would be cut to the reviewer column's 200 characters: refused,
    # on PostgreSQL too (its varchar(200) would have failed the insert)
    store.create_api_key("p1", "n" * MAX_KEY_NAME, frozenset(DEFAULT_SCOPES))
    for bad in ("n" * (MAX_KEY_NAME + 1), "a\x1b[31mred", ""):
        with pytest.raises(ValueError, match="key's name"):
            store.create_api_key("p1", bad, frozenset(DEFAULT_SCOPES))


def test_names_that_read_as_one_reviewer_are_one_name(store: SqlStore) -> None:
    """Case, Unicode form (full-width, decomposed accents) and invisible characters cannot make a
    second key that shows as the same reviewer: ``key:CI`` beside ``key:ci``."""
    store.create_api_key("p1", "ci", frozenset(DEFAULT_SCOPES))
    store.create_api_key("p1", "René", frozenset(DEFAULT_SCOPES))
    for twin in ("CI", "Ci", "\uff43\uff49", "Rene\u0301", "RENÉ"):
        with pytest.raises(DuplicateKeyName, match=r"already has an active key named '(ci|René)'"):
            store.create_api_key("p1", twin, frozenset(DEFAULT_SCOPES))
    for invisible in ("c\u200bi", "ci\u202e", "\ufeffci", "c\u2028i", " ci", "ci\u00a0", "ci\u3000"):
        with pytest.raises(ValueError, match="key's name must not"):
            store.create_api_key("p1", invisible, frozenset(DEFAULT_SCOPES))
    store.create_api_key("p1", "ci bot", frozenset(DEFAULT_SCOPES))  # a space inside is a name
    store.create_api_key("p1", "日本語 🚀", frozenset(DEFAULT_SCOPES))
    revoked = next(k for k in store.list_api_keys("p1") if k.name == "ci")
    assert store.revoke_api_key(revoked.id)
    store.create_api_key("p1", "CI", frozenset(DEFAULT_SCOPES))  # the other spelling, once ci is revoked


def test_a_store_that_already_holds_duplicate_names_still_works(store: SqlStore) -> None:
    """Keys made before names were unique: both keep working (and review as one rater, as before); no
    third key of that name can be made."""
    _, secret = store.create_api_key("p1", "ci", frozenset(DEFAULT_SCOPES))
    with store.engine.begin() as conn:  # what an older version could store
        conn.execute(
            t.api_keys.insert().values(
                id=uuid.uuid4().hex,
                project_id="p1",
                name="ci",
                prefix="ph-old0000",
                secret_hash="0" * 64,
                scopes="read",
                created_ns=time.time_ns(),
            )
        )
    assert [k.name for k in store.list_api_keys("p1")] == ["ci", "ci"]
    assert store.find_api_key(secret) is not None
    with pytest.raises(DuplicateKeyName):
        store.create_api_key("p1", "ci", frozenset(DEFAULT_SCOPES))


def test_the_cli_refuses_a_duplicate_key_name(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    run = CliRunner()
    base = ["keys", "create", "--project", "team", "--database-url", url]
    assert run.invoke(cli, [*base, "--name", "ci"]).exit_code == 0
    refused = run.invoke(cli, [*base, "--name", " ci "])  # the name is stripped first
    assert isinstance(refused.exception, CliError) and refused.exception.exit_code == 1
    assert str(refused.exception) == (
        "project 'team' already has an active key named 'ci': pick another name (or revoke that key first)"
    )
    too_long = run.invoke(cli, [*base, "--name", "n" * 300])
    assert isinstance(too_long.exception, CliError) and too_long.exception.exit_code == 2
    assert str(too_long.exception) == "--name: a key's name is 1 to 196 characters"


def test_the_keys_page_refuses_a_duplicate_name_and_scores_name_their_author(served: Served) -> None:
    store, client = served.store, served.client
    trace = write_trace(store, "p1", "Capital of France?", "Lyon.")
    _, admin = store.create_api_key("p1", "lead", frozenset({*DEFAULT_SCOPES, Scope.ADMIN}))
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token
    logged = client.post("/login", data={"login_token": token.group(1), "key": admin}, follow_redirects=False)
    assert logged.status_code == 303
    keys = client.get("/keys")
    csrf = re.search(r'name="csrf" value="([^"]+)"', keys.text)
    assert csrf
    refused = client.post("/keys", data={"csrf": csrf.group(1), "name": "test", "scopes": ["read"]})
    assert refused.status_code == 409
    assert "already has an active key named" in refused.text and "test" in refused.text
    assert [k.name for k in store.list_api_keys("p1")].count("test") == 1

    added = client.post(
        f"/traces/{trace}/scores",
        data={"csrf": csrf.group(1), "name": "tone", "data_type": "numeric", "value": "3"},
        follow_redirects=False,
    )
    assert added.status_code in (200, 303), added.text
    shown = client.get(f"/traces/{trace}")
    assert "<td>key:lead</td>" in shown.text
    scores = served.client.get(f"/api/traces/{trace}", headers=served.auth).json()["scores"]
    assert [(s["name"], s["source"], s["author"]) for s in scores] == [("tone", "human", "key:lead")]


def test_an_api_score_carries_its_sender_and_is_never_a_review(served: Served) -> None:
    store, http = served.store, served.client
    service = ReviewService(store)
    service.create_config("p1", "correct", "boolean")
    service.create_queue("p1", "triage", ["correct"])
    traces = [write_trace(store, "p1", f"Capital of France? {i}", "Lyon.", at=i) for i in range(3)]
    _, ingest = store.create_api_key("p1", "sdk", frozenset({Scope.INGEST}))
    forged = [
        {"trace_id": trace, "name": "correct", "value": True, "comment": "review by rita"} for trace in traces
    ]
    sent = http.post("/api/scores", json=forged, headers=_auth(ingest))
    assert sent.status_code == 201 and {s["author"] for s in sent.json()} == {"key:sdk"}
    also = {"trace_id": traces[0], "name": "correct", "value": False, "source": "human", "author": "rita"}
    refused = http.post("/api/scores", json=also, headers=_auth(ingest))
    assert refused.status_code == 400 and "unknown field 'author'" in refused.json()["error"]["message"]

    # nothing that counts reviewers reads them: agreement and labels come from reviews only
    agreement = http.get("/api/review/configs/correct/agreement", headers=served.auth).json()
    assert agreement["between_reviewers"]["n"] == 0 and agreement["reviewer_pairs"] == []
    assert agreement["automated_vs_reviewers"] == []
    assert http.get("/api/review/configs/correct/labels", headers=served.auth).text == ""

    http.post("/api/review/queues/triage/items", json={"trace_ids": [traces[0]]}, headers=served.auth)
    item = http.post("/api/review/queues/triage/next", headers=served.auth).json()["item"]
    done = http.post(
        f"/api/review/items/{item['id']}/scores", json={"scores": {"correct": False}}, headers=served.auth
    )
    assert done.status_code == 200
    scores = http.get(f"/api/traces/{traces[0]}", headers=served.auth).json()["scores"]
    by_author = {(s["author"], s["comment"]) for s in scores}
    assert by_author == {("key:sdk", "review by rita"), ("key:test", "review by key:test")}
    labels = http.get("/api/review/configs/correct/labels", headers=served.auth).text.splitlines()
    assert len(labels) == 1 and '"label":false' in labels[0]  # the review's answer, not the forged true


def test_concurrent_creates_of_one_name_make_one_key(store: SqlStore) -> None:
    store.ensure_project("p1")
    outcomes: list[str] = []

    def create() -> None:
        try:
            store.create_api_key("p1", "race", frozenset(DEFAULT_SCOPES))
            outcomes.append("made")
        except DuplicateKeyName:
            outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["made"] + ["refused"] * 5
    assert [k.name for k in store.list_api_keys("p1")] == ["race"]

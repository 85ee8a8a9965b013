"""Specs: every mistake is one message that names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pilothouse.evals.spec import EvalSpec, SpecError, load_spec, parse_spec
from tests.evals.conftest import explain_spec, write_jsonl, write_yaml


def error_of(tmp_path: Path, data: object) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(data, base_dir=tmp_path, source="spec.yaml")
    return str(caught.value)


def test_the_smallest_spec_parses(tmp_path: Path) -> None:
    spec = parse_spec(explain_spec(tmp_path, repeats=3, concurrency=4), base_dir=tmp_path)
    assert spec.dataset.path == tmp_path / "items.jsonl"
    assert [s.name for s in spec.scorers] == ["contains"]
    assert (spec.repeats, spec.concurrency, spec.cache) == (3, 4, True)
    assert spec.target.kind == "model"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scorer": []}, "spec.yaml: unknown key 'scorer'; did you mean 'scorers'?"),
        ({"scorers": [{"type": "containz"}]}, "scorers[0]: unknown scorer type 'containz'"),
        ({"scorers": [{"type": "contains", "valu": "x"}]}, "unknown option(s) valu"),
        ({"scorers": []}, "scorers: must be a non-empty list"),
        ({"repeats": 0}, "repeats: must be an integer >= 1, not 0"),
        ({"concurrency": "many"}, "concurrency: must be an integer >= 1"),
        ({"dataset": "missing.jsonl"}, "dataset: the file 'missing.jsonl' does not exist"),
        ({"assert": {"contain": 0.9}}, "assert: unknown key 'contain'; did you mean 'contains'?"),
        ({"scorers": [{"type": "rubric", "criteria": "good?"}]}, "add a top-level 'judge: {model: ...}'"),
        ({"cache": "yes"}, "cache: must be true or false"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: dict[str, object], message: str) -> None:
    assert message in error_of(tmp_path, {**explain_spec(tmp_path), **change})


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (
            {"model": "sim", "config": "models.yaml", "messages": [{"role": "robot", "content": "x"}]},
            "target.messages[0].role: must be system, user or assistant, not 'robot'",
        ),
        (
            {"model": "sim", "config": "models.yaml", "messages": [], "max_tokens": 5},
            "target.messages: must be a non-empty list",
        ),
        (
            {"model": "sim", "config": "models.yaml", "prompt": "x", "max_tokns": 5},
            "target.max_tokns: unknown key",
        ),
        (
            {"model": "gpt-9", "config": "models.yaml", "prompt": "x"},
            "target.model: 'gpt-9' is not served by the config",
        ),
        (
            {"model": "m", "base_url": "http://x/v1", "api_key": "${NOT_SET_ANYWHERE}", "prompt": "x"},
            "target.api_key: environment variable NOT_SET_ANYWHERE is not set",
        ),
        ({"callable": "no_such_module_xyz:f"}, "target.callable: cannot import 'no_such_module_xyz'"),
        ({"callable": "json:nothing_here"}, "target.callable: 'json' has no 'nothing_here'"),
        ({"url": "http://x", "output": "$.choices[zero]"}, "target.output: cannot read the path"),
        ({"type": "grpc"}, "target.type: unknown 'grpc'"),
        ({"temperature": 1}, "target: needs 'model'"),
    ],
)
def test_target_errors_name_the_key(tmp_path: Path, target: dict[str, object], message: str) -> None:
    explain_spec(tmp_path)  # writes models.yaml and items.jsonl
    assert message in error_of(tmp_path, {**explain_spec(tmp_path), "target": target})


def test_a_model_with_no_gateway_config_anywhere_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./pilothouse.yaml here
    monkeypatch.delenv("PILOTHOUSE_CONFIG", raising=False)
    message = error_of(tmp_path, {**explain_spec(tmp_path), "target": {"model": "echo", "prompt": "x"}})
    assert "target.model: 'echo' has no gateway config to be served by (no config key, no" in message
    assert "not served by no gateway config" not in message


def test_bad_yaml_and_missing_spec_file(tmp_path: Path) -> None:
    bad = tmp_path / "spec.yaml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="cannot read the spec"):
        load_spec(tmp_path / "nope.yaml")


def test_dataset_forms(tmp_path: Path) -> None:
    base = explain_spec(tmp_path)
    assert parse_spec({**base, "dataset": "golden@3"}, base_dir=tmp_path).dataset.version == 3
    assert parse_spec({**base, "dataset": "golden"}, base_dir=tmp_path).dataset.name == "golden"
    inline = parse_spec(
        {**base, "dataset": [{"topic": "tides"}, {"id": "x", "topic": "moon"}]}, base_dir=tmp_path
    )
    assert [i.id for i in inline.dataset.items or ()] == ["1", "x"]
    write_jsonl(tmp_path / "other.jsonl", [{"topic": "a"}])
    assert parse_spec({**base, "dataset": {"file": "other.jsonl"}}, base_dir=tmp_path).dataset.path == (
        tmp_path / "other.jsonl"
    )


def test_literal_secrets_are_not_stored(tmp_path: Path) -> None:
    base = explain_spec(tmp_path)
    target = {
        "model": "m",
        "base_url": "http://127.0.0.1:1/v1",
        "api_key": "sk-secret",
        "prompt": "{{topic}}",
    }
    spec = parse_spec({**base, "target": target}, base_dir=tmp_path)
    assert spec.raw["target"]["api_key"] == "<redacted>"


def test_the_same_spec_in_python(tmp_path: Path) -> None:
    def answer(variables: dict[str, str]) -> str:
        return f"All about {variables['topic']}."

    spec = EvalSpec.create(
        dataset=[{"topic": "tides"}],
        target=answer,
        scorers=[{"type": "contains", "value": "{{topic}}"}],
        repeats=2,
        assertions={"contains": 0.5},
    )
    assert spec.target.kind == "callable" and spec.cache is False and spec.repeats == 2
    assert spec.raw["target"]["callable"].endswith("answer")
    assert spec.assertions == {"contains": 0.5}


def test_a_spec_file_with_relative_paths(tmp_path: Path) -> None:
    data = explain_spec(tmp_path)
    data["target"]["config"] = "models.yaml"
    path = write_yaml(tmp_path / "spec.yaml", data)
    assert load_spec(path).dataset.path == tmp_path / "items.jsonl"

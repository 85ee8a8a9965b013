"""Guardrail benchmark: what each guard adds to a gateway call, in this process.

    python benchmarks/guardrails.py [--calls 2000] [--checks 2000]

Two tables. (1) Each guard's check on a 2 KB user message (a realistic mix of words, an email, a
phone number, a card number and an IBAN; the answer-side guards check a 2 KB answer against 2 KB of
context): p50 and p95 in microseconds over --checks checks. (2) Calls through `gateway.Gateway` (the
`sim` provider, 0 ms, the span recorded to a list) with no guards (the baseline, measured in the same
run, calls interleaved so both see the same machine) and with guard sets on the route: the added p50
and p95 of a whole call, non-streamed and streamed. The load average is printed before and after:
every figure assumes a quiet machine. Target (issue 24): regex and PII guards <= 1 ms p95 on a 2 KB
message.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import text

from pilothouse.config import parse_config
from pilothouse.costs.catalogue import PriceCatalogue
from pilothouse.costs.pricing import Pricer
from pilothouse.domain.guards import GuardContext, GuardUse
from pilothouse.domain.traces import SpanRecord
from pilothouse.gateway import Caller, Gateway, GatewayConfig, Router
from pilothouse.quality.guardrails import build_guardrails

SCHEMA = {"type": "object", "required": ["items"], "properties": {"items": {"type": "array"}}}
GUARDS: dict[str, dict[str, Any]] = {
    "pii (all entities)": {"type": "pii", "action": "redact"},
    "pii email": {"type": "pii", "entities": ["email"], "action": "redact"},
    "pii phone": {"type": "pii", "entities": ["phone"], "action": "redact"},
    "pii card (Luhn)": {"type": "pii", "entities": ["card"], "action": "redact"},
    "pii iban (mod 97)": {"type": "pii", "entities": ["iban"], "action": "redact"},
    "pii ssn": {"type": "pii", "entities": ["ssn"], "action": "redact"},
    "pii secret": {"type": "pii", "entities": ["secret"], "action": "redact"},
    "regex (3 patterns)": {
        "type": "regex",
        "patterns": [r"\bproject \w+\b", r"(?i)internal only", r"\d{3}-\d{2}-\d{4}"],
    },
    "blocklist (100 words)": {"type": "blocklist", "words": [f"forbidden{i}" for i in range(100)]},
    "prompt_injection": {"type": "prompt_injection"},
    "json_schema": {"type": "json_schema", "schema": SCHEMA},
    "groundedness (lexical)": {"type": "groundedness", "action": "flag"},
    "scorer (contains)": {"type": "scorer", "scorer": {"type": "contains", "value": "paris"}},
}
ROUTES: dict[str, dict[str, Any]] = {
    "none (baseline)": {},
    "input pii redact": {"input": [{"type": "pii", "action": "redact"}]},
    "input pii + injection": {
        "input": [{"type": "pii", "action": "redact"}, {"type": "prompt_injection", "action": "block"}]
    },
    "input + output pii redact": {
        "input": [{"type": "pii", "action": "redact"}],
        "output": [{"type": "pii", "action": "redact"}],
    },
    "output groundedness flag": {"output": [{"type": "groundedness", "action": "flag"}]},
}


def message(rng: random.Random, size: int = 2048) -> str:
    """About ``size`` characters of words with personal data in it."""
    pieces = [
        text(rng, size // 5),
        "write to alice.doe@example.com",
        text(rng, size // 5),
        "or call +44 20 7946 0958",
        text(rng, size // 5),
        "card 4111 1111 1111 1111",
        text(rng, size // 5),
        "IBAN DE89 3704 0044 0532 0130 00",
    ]
    body = " ".join(pieces)
    return (body + " " + text(rng, max(0, size - len(body) - 1)))[:size]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build(uses: dict[str, Any]) -> tuple[GuardUse, ...]:
    config = parse_config(
        {"models": [{"name": "m", "provider": "sim"}], "guardrails": [{"models": "m", **uses}]}
    )
    guardrails = build_guardrails(config.guardrails)
    assert guardrails is not None
    route = guardrails.for_model("m")
    assert route is not None
    return route.input + route.output


async def time_checks(count: int) -> None:
    rng = random.Random(24)
    user = message(rng)
    context_text = message(rng)
    answer = " ".join(context_text.split()[: len(context_text.split()) // 2])
    json_answer = '{"items": [' + ", ".join(f'"{w}"' for w in answer.split()[:250]) + "]}"
    print(f"\n(1) one check, {len(user):,}-character text, {count:,} checks each")
    print(f"{'guard':<26} {'p50 us':>8} {'p95 us':>8} {'CPU p50':>8} {'CPU p95':>8}")
    for label, spec in GUARDS.items():
        stage = "output" if spec["type"] in ("groundedness", "json_schema") else "input"
        (use,) = build({stage: [spec]})
        checked = json_answer if spec["type"] == "json_schema" else answer if stage == "output" else user
        context = GuardContext({"messages": [{"role": "system", "content": context_text}]}, context_text)
        samples, cpu = [], []
        for _ in range(count):
            start, start_cpu = time.perf_counter(), time.thread_time()
            await use.check(checked, context)
            samples.append((time.perf_counter() - start) * 1e6)
            cpu.append((time.thread_time() - start_cpu) * 1e6)
        p95, cpu95 = percentile(samples, 0.95), percentile(cpu, 0.95)
        verdict = "ok (<= 1 ms)" if p95 <= 1000 else "OVER 1 ms" + (", CPU within" if cpu95 <= 1000 else "")
        flag = f"  {verdict}" if spec["type"] in ("pii", "regex") else ""
        print(
            f"{label:<26} {statistics.median(samples):>8.1f} {p95:>8.1f} "
            f"{statistics.median(cpu):>8.1f} {cpu95:>8.1f}{flag}"
        )


def gateway() -> Gateway:
    models = [
        {"name": name, "provider": "sim", "model": "sim-1", "options": {"echo": True}} for name in ROUTES
    ]
    rules = [{"models": name, **uses} for name, uses in ROUTES.items() if uses]
    config = parse_config({"models": models, "guardrails": rules})
    served = GatewayConfig.from_config(config)
    spans: list[SpanRecord] = []

    def record(span: SpanRecord) -> None:
        if len(spans) > 1000:
            spans.clear()
        spans.append(span)

    return Gateway(
        Router(served),
        Pricer(PriceCatalogue.packaged(served.prices)),
        record,
        guardrails=build_guardrails(config.guardrails),
    )


async def call(served: Gateway, model: str, content: str, stream: bool) -> tuple[float, float]:
    """A call's wall time and this thread's CPU time (the whole gateway runs on it), in microseconds."""
    caller = Caller("bench")
    request = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    start, start_cpu = time.perf_counter(), time.thread_time()
    handle = served.start("chat", caller)
    reply = await served.chat(handle, request, caller)
    if reply.chunks is not None:
        async for _chunk in reply.chunks:
            pass
    elif reply.after is not None:
        await reply.after()
    return (time.perf_counter() - start) * 1e6, (time.thread_time() - start_cpu) * 1e6


async def time_calls(count: int, stream_count: int) -> None:
    served = gateway()
    user = message(random.Random(7))
    print(
        "\n(2) a whole call through gateway.Gateway (sim provider, echo: the answer is the 2 KB message, "
        f"about 350 chunks when streamed), {count:,} calls each ({stream_count:,} streamed)"
    )
    print(
        f"{'route guards':<28} {'mode':<7} {'p50 us':>8} {'p95 us':>8} {'added p50':>10} {'added p95':>10} "
        f"{'CPU p50':>8} {'CPU p95':>8} {'added CPU p50':>14}"
    )
    for stream, calls in ((False, count), (True, stream_count)):
        wall: dict[str, list[float]] = {name: [] for name in ROUTES}
        cpu: dict[str, list[float]] = {name: [] for name in ROUTES}
        for _ in range(20):  # warm-up
            for name in ROUTES:
                await call(served, name, user, stream)
        for _ in range(calls):
            for name in ROUTES:  # interleaved: the baseline and each route see the same machine
                took, used = await call(served, name, user, stream)
                wall[name].append(took)
                cpu[name].append(used)
        base = "none (baseline)"
        base50, base95, base_cpu = (
            statistics.median(wall[base]),
            percentile(wall[base], 0.95),
            statistics.median(cpu[base]),
        )
        for name in ROUTES:
            p50, p95 = statistics.median(wall[name]), percentile(wall[name], 0.95)
            cpu50, cpu95 = statistics.median(cpu[name]), percentile(cpu[name], 0.95)
            print(
                f"{name:<28} {'stream' if stream else 'whole':<7} {p50:>8.1f} {p95:>8.1f} "
                f"{p50 - base50:>+10.1f} {p95 - base95:>+10.1f} {cpu50:>8.1f} {cpu95:>8.1f} "
                f"{cpu50 - base_cpu:>+14.1f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--stream-calls", type=int, default=300)
    args = parser.parse_args()
    gc.collect()
    gc.freeze()  # as the server does after start-up: what is loaded now is never garbage
    print(f"guardrails benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    asyncio.run(time_checks(args.checks))
    asyncio.run(time_calls(args.calls, args.stream_calls))
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

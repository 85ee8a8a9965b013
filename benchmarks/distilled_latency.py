"""Latency of one classification answer from the local model (the distilled model of the improvement
demonstration) through the gateway, at each serving precision, against the simulated teacher.

    .venv/bin/python benchmarks/distilled_latency.py [--adapter NAME|FOLDER] [--requests 50] [--threads 1]

One ``pilothouse serve`` (SQLite, loopback) with one ``local`` deployment per precision
(``float32``, the provider's default and the baseline; ``bfloat16``; ``int8``), each serving the same
model (SmolLM2-135M-Instruct, with ``--adapter`` merged in when given), and the demonstration's
teacher (a ``SimulatedUpstream`` that answers after 400 ms, for reference). Each request is the
demonstration's prompt (``spam-filter``'s template, one message, ``max_tokens`` 3, greedy), sent one at
a time; the deployments take turns request by request, so a busy machine slows them alike. Printed:
p50 and p95 per deployment, how many answers equal float32's (what a lower precision changes), and
the load average before and after (the figures are upper bounds on a busy machine: compare rows of
one run only). The messages are the first ``--requests`` of benchmarks/data/spam_messages: this
measures time, not accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import create_key

from pilothouse.testing import PilothouseServer, SimConfig, SimulatedUpstream

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / "data" / "spam_messages" / "messages.jsonl"
TEMPLATE = (
    "Is this e-mail spam or ham (a legitimate message)? Answer with one word: spam or ham."
    "\n\nSubject: {subject}\nIt begins: {opening}"
)  # the demonstration's prompt (benchmarks/improvement_demo.py)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--adapter", help="an adapter to merge (NAME in $PILOTHOUSE_HOME/adapters, or a folder)"
    )
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precisions", default="float32,bfloat16,int8")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".pilothouse" / "models")
    args = parser.parse_args(argv)
    precisions = args.precisions.split(",")
    shown = [
        TEMPLATE.format(subject=m["subject"], opening=m["opening"] or "(no text)")
        for m in map(json.loads, DATA.read_text().splitlines()[: args.requests])
    ]
    with (
        tempfile.TemporaryDirectory(prefix="distilled-latency-") as tmp,
        SimulatedUpstream(SimConfig(latency_ms=400.0, output_tokens=1)) as teacher,
    ):
        work = Path(tmp)
        models = [
            {
                "name": "teacher",
                "provider": "openai",
                "model": "gpt-4o",
                "base_url": teacher.base_url + "/v1",
                "api_key": "simulated",
            }
        ]
        for precision in precisions:
            options: dict[str, object] = {
                "cache_dir": str(args.cache_dir),
                "threads": args.threads,
                "precision": precision,
            }
            if args.adapter:
                options["adapter"] = args.adapter
            models.append(
                {"name": f"local-{precision}", "provider": "local", "model": "smollm2", "options": options}
            )
        config = work / "gateway.yaml"
        config.write_text(yaml.safe_dump({"models": models}))
        url = f"sqlite:///{work}/latency.db"
        key = create_key(url)
        names = [m["name"] for m in models]
        with (
            PilothouseServer(url, args=["--config", str(config)], capture_output=False) as server,
            httpx.Client(
                base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=300
            ) as client,
        ):

            def ask(model: str, content: str) -> tuple[float, str]:
                started = time.perf_counter()
                r = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": model,
                        "messages": [{"role": "user", "content": content}],
                        "max_tokens": 3,
                        "temperature": 0,
                    },
                )
                elapsed = 1000 * (time.perf_counter() - started)
                if r.status_code != 200:
                    raise SystemExit(f"{model}: the gateway answered {r.status_code}: {r.text}")
                return elapsed, str(r.json()["choices"][0]["message"]["content"] or "")

            for name in names:  # load (and warm) every model before timing
                ask(name, "warm-up")
            before = loadavg()
            times: dict[str, list[float]] = {n: [] for n in names}
            answers: dict[str, list[str]] = {n: [] for n in names}
            for index, content in enumerate(shown):
                turn = names[index % len(names) :] + names[: index % len(names)]
                for name in turn:
                    elapsed, answer = ask(name, content)
                    times[name].append(elapsed)
                    answers[name].append(answer.strip().lower())
            after = loadavg()
    print(
        f"{len(shown)} requests per deployment, one at a time, threads {args.threads}, adapter {args.adapter}"
    )
    print(f"load average before {before}, after {after}")
    print("| deployment | p50 ms | p95 ms | answers equal to float32's |")
    print("|---|---|---|---|")
    reference = answers.get("local-float32")
    for name in names:
        same = "-"
        if reference is not None and name.startswith("local-"):
            same = f"{sum(a == b for a, b in zip(answers[name], reference, strict=True))}/{len(reference)}"
        print(
            f"| {name} | {percentile(times[name], 0.5):.0f} | {percentile(times[name], 0.95):.0f} | {same} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

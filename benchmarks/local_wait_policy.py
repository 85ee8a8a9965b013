"""The local model on a busy CPU: OpenMP's default (spinning) wait policy against ``OMP_WAIT_POLICY=PASSIVE``
and one torch thread.

    python benchmarks/local_wait_policy.py [--rounds 4] [--max-tokens 16] [--model-dir DIR]

Each setting runs in its own child process (the wait policy is read once, when the OpenMP runtime
starts): the model SmolLM2-135M-Instruct as ``pilothouse serve`` converted it (``--model-dir``, default
``./.pilothouse/models/smollm2-135m-instruct.q4_1``: run ``make run`` and one smollm2 request first),
greedy ``generate`` of exactly ``--max-tokens`` tokens for one row and for a batch of two (what ``n=2``
greedy and ``max_batch`` do). The settings alternate round by round, so a noisy machine hurts them
alike; medians are compared. The baseline is the default: ``threads`` = the usable cores, OpenMP's
own wait policy, which is what the ``local`` provider runs with today.

Found by a walkthrough (2026-12-07, 2 shared cores, upper bounds): this script at load 1.8-2.2 gave
the default 2.41 s (one row) and 3.92 s (two rows) for 16 tokens, against 1.04 / 1.78 s with
``OMP_WAIT_POLICY=PASSIVE`` and 0.98 / 1.59 s with one thread; back-to-back runs at load 3.1-3.9 gave
the default up to 6.1 / 44.7 s. On a machine whose cores are free the default may be the fastest (its
quietest round here: 0.94 / 1.61 s): measure there before changing it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {  # name: (environment additions, torch threads; None: the usable cores)
    "default (baseline)": ({}, None),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, None),
    "1 thread": ({}, 1),
}


def child(model_dir: str, threads: int | None, max_tokens: int) -> None:
    """One round in this process: warm up, then time one row and two rows; print JSON."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads or len(os.sched_getaffinity(0)))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name a colour."}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def run(rows: int, tokens: int) -> float:
        x = torch.tensor([ids] * rows)
        started = time.perf_counter()
        with torch.inference_mode():
            model.generate(
                input_ids=x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
        return time.perf_counter() - started

    run(1, 2), run(2, 2)
    print(json.dumps({"one_row_s": run(1, max_tokens), "two_rows_s": run(2, max_tokens)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--model-dir", default=".pilothouse/models/smollm2-135m-instruct.q4_1")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model_dir, args.threads or None, args.max_tokens)
        return
    if not (Path(args.model_dir) / "config.json").exists():
        sys.exit(f"no converted model at {args.model_dir}: run `make run` and one smollm2 request first")
    results: dict[str, dict[str, list[float]]] = {
        name: {"one_row_s": [], "two_rows_s": []} for name in SETTINGS
    }
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name, (extra, threads) in SETTINGS.items():
            command = [sys.executable, __file__, "--child", "--model-dir", args.model_dir]
            command += ["--max-tokens", str(args.max_tokens), "--threads", str(threads or 0)]
            out = subprocess.run(
                command, env={**os.environ, **extra}, capture_output=True, text=True, check=True
            ).stdout
            for key, value in json.loads(out.strip().splitlines()[-1]).items():
                results[name][key].append(round(value, 2))
        loads.append(os.getloadavg()[0])
    cores = len(os.sched_getaffinity(0))
    print(f"{args.max_tokens} greedy tokens, {args.rounds} rounds alternating, {cores} cores")
    print(f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}: upper bounds, compare within this run")
    base = results["default (baseline)"]
    for name, series in results.items():
        one, two = statistics.median(series["one_row_s"]), statistics.median(series["two_rows_s"])
        ratio = statistics.median(base["one_row_s"]) / one
        print(
            f"  {name:26} one row {one:6.2f} s   two rows {two:6.2f} s   "
            f"(one row {ratio:.1f}x the baseline's speed)   runs {series}"
        )


if __name__ == "__main__":
    main()

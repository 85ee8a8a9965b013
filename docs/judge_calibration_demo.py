"""Calibrate a tiny judge against human labels: SmolLM2-135M grading SummEdits summaries.

    .venv/bin/python docs/judge_calibration_demo.py                # 40 items, ~10 minutes on 2 cores
    .venv/bin/python docs/judge_calibration_demo.py --items 8      # a quick look

SummEdits (github.com/salesforce/factualNLG, Apache-2.0) pairs a document with a summary that people
labelled consistent (1) or not (0). The script reads it at run time from ``--data`` (nothing is copied
into the repository), takes ``--items`` short documents from its ``evaluation`` split, half consistent,
half not (seeded), and writes into ``--out`` a labels file (the summary is the ``output``, the document
the ``expected`` reference), a gateway config serving the local SmolLM2 model (``provider: local,
model: smollm2``) and a spec with two judge scorers over it:

- ``consistency``: a ``rubric`` (1-5, a pass from 3) asking whether the reference (the document)
  supports every fact of the summary;
- ``facts``: ``factuality`` with the document as the reference answer (a consistent summary is a
  subset of it, choice A; an inconsistent one disagrees, D); asked a second time with the two swapped,
  which measures the judge's position bias;
- ``yes-man``: the same rubric graded by a simulated judge that answers "Score: 5" to everything, for
  comparison: it agrees with people half the time, and its kappa is 0.

Then it runs ``pilothouse judge calibrate`` on each (a database in ``--out``) and prints the wall time.
docs/judge-calibration.md records one run.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import yaml

DATA = Path("/work/shared/data/hallucination/summedits")
DOMAINS = ("samsum", "scitldr", "ectsum")  # the domains with short documents
MAX_DOC_CHARS = 1000  # a judge call reads ~300 tokens: a few seconds on two CPU cores

TASK = "Summarise the document in a few sentences."
CRITERIA = (
    "Is every fact in the response supported by the reference (the document it summarises)? A response "
    "that adds, changes or contradicts a detail is not."
)


def pick_items(data: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` labelled items from the evaluation split: half consistent, half not, domains mixed."""
    pools: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for domain in DOMAINS:
        for row in json.loads((data / f"summedits_{domain}.json").read_text(encoding="utf-8")):
            if row["split"] == "evaluation" and len(row["doc"]) <= MAX_DOC_CHARS:
                pools[int(row["label"])].append({**row, "domain": domain})
    rng = random.Random(seed)
    chosen = []
    for label, pool in pools.items():
        count = n // 2 if label == 1 else n - n // 2
        if len(pool) < count:
            raise SystemExit(f"only {len(pool)} items with label {label} in {data}")
        chosen += rng.sample(pool, count)
    rng.shuffle(chosen)
    return [
        {
            "id": row["id"],
            "output": row["summary"],
            "expected": row["doc"],  # the reference both judges compare the summary with
            "label": int(row["label"]),
            "metadata": {"domain": row["domain"], "edit_types": row.get("edit_types")},
        }
        for row in chosen
    ]


def write_files(out: Path, items: list[dict[str, Any]]) -> None:
    """The labels, the gateway config and the spec of the demo."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.jsonl").write_text("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in items))
    # the yes-man: a simulated model that answers every rubric prompt "Score: 5"
    yes = [{"question": "you are grading a response", "answer": "Score: 5 Reason: fine.", "difficulty": 0}]
    (out / "yes-man.jsonl").write_text("".join(json.dumps(line) + "\n" for line in yes))
    models = {
        "models": [
            {"name": "smollm2", "provider": "local", "model": "smollm2"},
            {
                "name": "yes-man",
                "provider": "sim",
                "model": "yes-man",
                "options": {"knowledge": str((out / "yes-man.jsonl").resolve())},
            },
        ]
    }
    (out / "models.yaml").write_text(yaml.safe_dump(models, sort_keys=False))
    spec = {
        "name": "summedits-consistency",
        "target": {"model": "smollm2", "config": "models.yaml", "prompt": TASK},  # what the judges see
        "judge": {"model": "smollm2", "config": "models.yaml"},
        "scorers": [
            {"type": "rubric", "name": "consistency", "criteria": CRITERIA, "max_tokens": 32},
            {"type": "factuality", "name": "facts", "max_tokens": 32},
            {"type": "rubric", "name": "yes-man", "criteria": CRITERIA, "judge": "yes-man"},
        ],
    }
    (out / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, width=100))


def pilothouse(*args: str) -> int:
    """Run a pilothouse command in this process; its exit status."""
    from pilothouse.cli import main

    sys.argv = ["pilothouse", *args]
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the summedits folder")
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path(".pilothouse/judge-calibration-demo"))
    args = parser.parse_args()
    items = pick_items(args.data, args.items, args.seed)
    write_files(args.out, items)
    database = f"sqlite:///{(args.out / 'demo.db').resolve()}"
    labels, spec = str(args.out / "labels.jsonl"), str(args.out / "spec.yaml")
    consistent = sum(i["label"] for i in items)
    print(
        f"{len(items)} SummEdits items ({consistent} consistent, {len(items) - consistent} not) -> {args.out}"
    )
    for scorer in ("consistency", "facts", "yes-man"):
        started = time.perf_counter()
        code = pilothouse(
            "judge", "calibrate", spec, "--labels", labels, "--scorer", scorer, "--concurrency", "1",
            "-q", "--database-url", database,
        )  # fmt: skip
        print(f"[{scorer}: exit {code}, wall time {time.perf_counter() - started:.1f} s]\n")
    pilothouse("judge", "list", "--database-url", database)


if __name__ == "__main__":
    main()

"""One trial of the distillation's fine-tuning settings, scored on the VALIDATION split as it trains
(how the improvement demonstration's settings were chosen; docs/improvement.md, "Choosing the settings").

    # the demonstration's splits (the production traffic and curation only), as JSONL
    .venv/bin/python benchmarks/improvement_demo.py --curate-only --workdir /tmp/curate
    for split in train validation; do  # never spam-test
        PILOTHOUSE_DATABASE_URL=sqlite:////tmp/curate/pilothouse.db \\
            .venv/bin/pilothouse datasets export spam-$split > /tmp/$split.jsonl
    done
    .venv/bin/python benchmarks/distill_sweep.py \\
        --train /tmp/train.jsonl --validation /tmp/validation.jsonl \\
        --lora-r 8 --targets q_proj,v_proj --learning-rate 1e-3 --epochs 2 --eval-every 69

(The curation is deterministic: the same data and ``--seed`` give a full run the same splits.)

The product's examples (``build_examples``: the chat template, the loss on the answer only) and its
batches (``_batch``: the same seeded order as ``pilothouse finetune``), AdamW at a constant rate, on
the CPU with one torch thread. Every ``--eval-every`` steps: the mean training loss since the last
report, the validation agreement (the share of items whose first greedy token, after the prompt, is a
non-empty start of the teacher's answer: one forward pass per item), the training tokens so far and
per second (evaluation not counted) and the load average. Never give it the test split.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path
from typing import Any

from pilothouse.domain.datasets import DatasetItem
from pilothouse.improve._finetune import FinetuneSettings, _batch, _tensors, build_examples, total_steps

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / ".pilothouse" / "models" / "smollm2-135m-instruct.q4_1"  # as the local provider converts it


def read_items(path: Path) -> list[DatasetItem]:
    items = []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            items.append(
                DatasetItem(
                    d["id"], input=d.get("input"), messages=d.get("messages"), expected=d.get("expected")
                )
            )
    return items


def agreement(torch: Any, model: Any, tokenizer: Any, items: list[DatasetItem], batch: int = 16) -> float:
    """The share of items whose first greedy token starts the expected answer (left-padded batches)."""
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    right = 0
    with torch.inference_mode():
        for start in range(0, len(items), batch):
            chunk = items[start : start + batch]
            ids = [
                list(
                    tokenizer.apply_chat_template(i.messages, add_generation_prompt=True, tokenize=True)[
                        "input_ids"
                    ]
                )
                for i in chunk
            ]
            width = max(map(len, ids))
            inputs = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
            logits = model(input_ids=inputs, attention_mask=mask, logits_to_keep=1).logits[:, -1]
            for item, token in zip(chunk, logits.argmax(-1).tolist(), strict=True):
                text = tokenizer.decode([token]).strip().lower()
                right += bool(text) and str(item.expected).lower().startswith(text)
    return right / len(items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--validation", type=Path, required=True)
    parser.add_argument("--base", type=Path, default=BASE)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--lora-alpha", type=int, default=None, help="default: twice the rank")
    parser.add_argument("--targets", default="q_proj,v_proj")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--eval-every", type=int, default=62)
    args = parser.parse_args(argv)
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    peft = importlib.import_module("peft")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.base, local_files_only=True)
    examples, _skipped = build_examples(read_items(args.train), tokenizer, 512)
    validation = read_items(args.validation)
    settings = FinetuneSettings(
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha or 2 * args.lora_r,
        target_modules=tuple(args.targets.split(",")),
        learning_rate=args.learning_rate,
        epochs=args.epochs,
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.base, dtype=torch.float32, local_files_only=True
    )
    config = peft.LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.target_modules),
    )
    model = peft.get_peft_model(model, config)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate
    )
    steps = total_steps(settings, len(examples))
    print(f"{len(examples)} examples, {steps} steps, {settings}", flush=True)
    training_s, tokens, losses = 0.0, 0, []
    for step in range(steps):
        started = time.perf_counter()
        model.train()
        inputs, mask, labels = _tensors(torch, _batch(examples, settings, step), 0, torch.device("cpu"))
        loss = model(input_ids=inputs, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        training_s += time.perf_counter() - started
        tokens += int(mask.sum())
        losses.append(float(loss.detach()))
        if (step + 1) % args.eval_every == 0 or step + 1 == steps:
            recent = losses[-args.eval_every :]
            score = agreement(torch, model, tokenizer, validation)
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(
                f"step {step + 1}/{steps} epoch {(step + 1) * settings.batch_size / len(examples):.2f} "
                f"loss {sum(recent) / len(recent):.3f} validation {score:.3f} "
                f"tokens {tokens} tokens/s {tokens / training_s:.0f} load {load}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Fine-tuning a local causal language model on a dataset's answers: LoRA (PEFT) by default, or every
weight. On the CPU here (SmolLM2-135M-Instruct), on a GPU where there is one (any Hugging Face causal
LM). Resumable: a checkpoint (adapter, optimizer, step) is written every ``checkpoint_every`` steps and
at the end, and a run started again with the same settings and data continues from it.

The loss counts only the answer's tokens (the prompt, rendered with the model's chat template, is
masked), so the model learns to answer, not to repeat questions."""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pilothouse.domain.datasets import DatasetItem
from pilothouse.evals._finetune_formats import prompt_messages

__all__ = [
    "FinetuneError",
    "FinetuneResult",
    "FinetuneSettings",
    "Progress",
    "TrainingExample",
    "build_examples",
    "finetune",
]

IGNORE = -100  # the label of a token the loss does not count
CHECKPOINT = "checkpoint"
ADAPTER = "adapter"
MODEL_CARD = "model.json"


class FinetuneError(ValueError):
    """A fine-tuning run that cannot start or continue; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class FinetuneSettings:
    """How to train. ``epochs`` may be fractional; ``max_steps`` (when set) wins over it."""

    method: Literal["lora", "full"] = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    learning_rate: float = 2e-4
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 4
    max_length: int = 512
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    checkpoint_every: int = 50

    def check(self) -> None:
        """FinetuneError on a value out of range."""
        problems = [
            (not 1 <= self.lora_r <= 1024, "lora_r must be in [1, 1024]"),
            (not 1 <= self.lora_alpha <= 65536, "lora_alpha must be in [1, 65536]"),
            (not 0 <= self.seed < 2**63, "seed must be in [0, 2**63)"),
            (not 0 <= self.lora_dropout < 1, "lora_dropout must be in [0, 1)"),
            (not self.target_modules, "target_modules must name at least one module"),
            (not 0 < self.learning_rate < 1, "learning_rate must be in (0, 1)"),
            (not 0 < self.epochs <= 1000, "epochs must be in (0, 1000]"),
            (self.max_steps is not None and self.max_steps < 1, "max_steps must be at least 1"),
            (not 1 <= self.batch_size <= 1024, "batch_size must be in [1, 1024]"),
            (not 16 <= self.max_length <= 32768, "max_length must be in [16, 32768]"),
            (self.checkpoint_every < 1, "checkpoint_every must be at least 1"),
            (
                not re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,3})?", self.device),
                f"device {self.device!r}: use auto, cpu, cuda or cuda:N",
            ),
        ]
        for failed, message in problems:
            if failed:
                raise FinetuneError(message)

    def identity(self) -> dict[str, Any]:
        """What must match for a checkpoint to be continued (everything that changes the result)."""
        values = asdict(self)
        values.pop("device")
        values.pop("checkpoint_every")
        return values


@dataclass(frozen=True, slots=True)
class TrainingExample:
    """Token ids of a prompt and its answer, and the labels (the prompt's masked)."""

    item_id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run is: ``step`` of ``total_steps``, the mean loss of the last step, tokens per second."""

    step: int
    total_steps: int
    loss: float
    tokens_per_s: float
    resumed_from: int


@dataclass(frozen=True, slots=True)
class FinetuneResult:
    """A finished run: where the adapter (or full model) is, and what the training did."""

    output_dir: Path
    weights_dir: Path
    card: dict[str, Any] = field(default_factory=dict)


def build_examples(
    items: Iterable[DatasetItem], tokenizer: Any, max_length: int
) -> tuple[list[TrainingExample], int]:
    """Training examples from items with an answer: the prompt through the tokenizer's chat template
    (with the generation prompt), then the answer and the end-of-turn tokens. Items with no answer, or
    longer than ``max_length`` tokens, are skipped; returns (examples, skipped)."""
    examples: list[TrainingExample] = []
    skipped = 0
    for item in items:
        prompt = prompt_messages(item)
        answer = item.expected if isinstance(item.expected, str) else None
        if answer is None and item.expected is not None:
            answer = json.dumps(item.expected, ensure_ascii=False, default=str)
        if not prompt or not answer:
            skipped += 1
            continue
        prompt_ids = _ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True))
        full_ids = _ids(
            tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=True)
        )
        if full_ids[: len(prompt_ids)] != prompt_ids:  # a template that renders the two differently
            eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            full_ids = prompt_ids + _ids(tokenizer(answer, add_special_tokens=False)["input_ids"]) + eos
        if len(full_ids) > max_length or len(full_ids) <= len(prompt_ids):
            skipped += 1
            continue
        labels = [IGNORE] * len(prompt_ids) + full_ids[len(prompt_ids) :]
        examples.append(TrainingExample(item.id, tuple(full_ids), tuple(labels)))
    return examples, skipped


def _ids(value: Any) -> list[int]:
    if isinstance(value, dict) or hasattr(value, "keys"):
        value = value["input_ids"]
    return [int(v) for v in value]


def data_fingerprint(examples: Sequence[TrainingExample]) -> str:
    """A digest of the examples in order: a checkpoint continues only on the same data."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.input_ids, example.labels]).encode())
    return digest.hexdigest()[:16]


def total_steps(settings: FinetuneSettings, examples: int) -> int:
    """Optimizer steps of a run: ``max_steps``, else ``epochs`` over the batches."""
    if settings.max_steps is not None:
        return settings.max_steps
    return max(1, math.ceil(settings.epochs * math.ceil(examples / settings.batch_size)))


def finetune(
    base_directory: Path,
    examples: Sequence[TrainingExample],
    settings: FinetuneSettings,
    output_dir: Path,
    *,
    card: dict[str, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FinetuneResult:
    """Train on ``examples`` from the Hugging Face model in ``base_directory`` and write the adapter (or
    the full model) to ``output_dir/adapter`` with ``model.json`` beside it. Continues from the
    checkpoint in ``output_dir`` when one of the same settings and data is there (FinetuneError when a
    different one is). ``should_stop`` is asked after each step: True writes a checkpoint and returns
    (a later call continues)."""
    settings.check()
    if not examples:
        raise FinetuneError("no training examples: every item lacked an answer or was too long")
    torch = importlib.import_module("torch")
    transformers = importlib.import_module("transformers")
    transformers.utils.logging.disable_progress_bar()
    device = torch_device(torch, settings.device)
    torch.manual_seed(settings.seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_directory, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        base_directory, dtype=torch.float32, local_files_only=True
    )
    if settings.method == "lora":
        peft = _peft()
        config = peft.LoraConfig(
            task_type="CAUSAL_LM",
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=list(settings.target_modules),
        )
        names = [f".{name}" for name, _ in model.named_modules()]
        unknown = [m for m in settings.target_modules if not any(n.endswith(f".{m}") for n in names)]
        if unknown:  # peft matches names by suffix and would train the others silently
            listed = ", ".join(map(repr, unknown))
            raise FinetuneError(f"target_modules: no module named {listed} in the model")
        try:
            with quiet_deprecations():
                model = peft.get_peft_model(model, config)
        except ValueError as exc:
            raise FinetuneError(f"target_modules: {exc}") from None
    model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate)
    steps = total_steps(settings, len(examples))
    identity = {
        "settings": settings.identity(),
        "data": data_fingerprint(examples),
        "base": str(base_directory),
    }
    identity = json.loads(json.dumps(identity))  # as stored (tuples become lists)
    step, history = _resume(torch, model, optimizer, output_dir, identity, settings.method)
    resumed_from = step
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    model.train()
    started = time.perf_counter()
    trained_tokens = 0
    load_before = os.getloadavg()
    while step < steps:
        batch = _batch(examples, settings, step)
        input_ids, attention, labels = _tensors(torch, batch, pad, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        trained_tokens += int(attention.sum())
        elapsed = time.perf_counter() - started
        value = float(loss.detach())
        history.append([step, round(value, 5)])
        if progress is not None:
            progress(Progress(step, steps, value, trained_tokens / elapsed if elapsed else 0.0, resumed_from))
        stopping = should_stop is not None and should_stop()
        if step % settings.checkpoint_every == 0 or step == steps or stopping:
            _checkpoint(torch, model, optimizer, output_dir, identity, step, history, settings.method)
        if stopping and step < steps:
            return FinetuneResult(output_dir, output_dir / CHECKPOINT, {"stopped_at": step, "steps": steps})
    elapsed = time.perf_counter() - started
    weights = output_dir / ADAPTER
    if weights.exists():
        shutil.rmtree(weights)
    model.save_pretrained(weights)
    tokenizer.save_pretrained(weights)
    final = {
        **(card or {}),
        "base_directory": str(base_directory),
        "method": settings.method,
        "settings": asdict(settings),
        "device": str(device),
        "examples": len(examples),
        "steps": steps,
        "resumed_from": resumed_from,
        "trained_tokens_this_run": trained_tokens,
        "tokens_per_s": round(trained_tokens / elapsed, 1) if elapsed else None,
        "seconds_this_run": round(elapsed, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "final_loss": history[-1][1] if history else None,
        "loss_history": history[:: max(1, len(history) // 200)],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (output_dir / MODEL_CARD).write_text(json.dumps(final, indent=2))
    # finished (the card says so, and a finished folder is never continued): the checkpoint, as large
    # as the adapter again and the optimizer's state besides, has no use left
    shutil.rmtree(output_dir / CHECKPOINT, ignore_errors=True)
    return FinetuneResult(output_dir, weights, final)


@contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Silence FutureWarnings while peft wraps a transformers model: peft reads the deprecated
    ``is_gradient_checkpointing`` (transformers 5), and the warning reached the CLI's output, where
    a user can do nothing about it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _peft() -> Any:
    try:
        return importlib.import_module("peft")
    except ImportError:
        raise FinetuneError("LoRA needs the peft package: pip install 'pilothouse[local]'") from None


def torch_device(torch: Any, wanted: str) -> Any:
    """The torch device ``wanted`` names (auto: CUDA when there is one); FinetuneError if none."""
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda") and not torch.cuda.is_available():
        raise FinetuneError(f"device {wanted!r}: no CUDA GPU is available here (use --device cpu)")
    try:
        return torch.device(wanted)
    except RuntimeError:
        raise FinetuneError(f"device {wanted!r}: use auto, cpu, cuda or cuda:N") from None


def _batch(
    examples: Sequence[TrainingExample], settings: FinetuneSettings, step: int
) -> list[TrainingExample]:
    """The examples of optimizer step ``step``: epochs of a seeded shuffle, batch after batch, so a
    resumed run sees exactly the batches the uninterrupted one would have."""
    import random

    per_epoch = math.ceil(len(examples) / settings.batch_size)
    epoch, position = divmod(step, per_epoch)
    order = list(range(len(examples)))
    random.Random(settings.seed * 1_000_003 + epoch).shuffle(order)
    chosen = order[position * settings.batch_size : (position + 1) * settings.batch_size]
    return [examples[i] for i in chosen]


def _tensors(torch: Any, batch: Sequence[TrainingExample], pad: int, device: Any) -> tuple[Any, Any, Any]:
    width = max(len(e.input_ids) for e in batch)
    ids = [list(e.input_ids) + [pad] * (width - len(e.input_ids)) for e in batch]
    mask = [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
    labels = [list(e.labels) + [IGNORE] * (width - len(e.labels)) for e in batch]
    as_tensor = torch.tensor
    return (
        as_tensor(ids, device=device),
        as_tensor(mask, device=device),
        as_tensor(labels, device=device),
    )


def _checkpoint(
    torch: Any,
    model: Any,
    optimizer: Any,
    output_dir: Path,
    identity: dict[str, Any],
    step: int,
    history: list[list[float]],
    method: str,
) -> None:
    """Write the checkpoint aside, then swap it in: a kill during the write leaves the last one whole."""
    output_dir.mkdir(parents=True, exist_ok=True)
    scratch = output_dir / f".{CHECKPOINT}.{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    weights = _trainable_state(model, method)
    state = {"weights": weights, "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()}
    torch.save(state, scratch / "state.pt")
    (scratch / "progress.json").write_text(
        json.dumps({"identity": identity, "step": step, "history": history})
    )
    target = output_dir / CHECKPOINT
    old = output_dir / f".{CHECKPOINT}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    scratch.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _trainable_state(model: Any, method: str) -> dict[str, Any]:
    if method == "lora":
        return {k: v.detach().cpu() for k, v in model.named_parameters() if v.requires_grad}
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def _resume(
    torch: Any, model: Any, optimizer: Any, output_dir: Path, identity: dict[str, Any], method: str
) -> tuple[int, list[list[float]]]:
    """The step to start from (0, or the checkpoint's), with the loss history so far."""
    if (output_dir / MODEL_CARD).is_file():
        raise FinetuneError(f"{output_dir} holds a finished model: choose another name or remove it")
    progress_file = output_dir / CHECKPOINT / "progress.json"
    if not progress_file.is_file():
        return 0, []
    saved = json.loads(progress_file.read_text())
    if saved.get("identity") != identity:
        before = saved.get("identity") or {}
        changed = sorted(
            [
                f"{k}"
                for k in identity["settings"]
                if before.get("settings", {}).get(k) != identity["settings"][k]
            ]
            + [k for k in ("data", "base") if before.get(k) != identity[k]]
        )
        raise FinetuneError(
            f"{output_dir} has a checkpoint of other settings or data ({', '.join(changed)} differ): "
            "continue it with the same ones, or start over with --restart"
        )
    state = torch.load(output_dir / CHECKPOINT / "state.pt", weights_only=True)
    if method == "lora":
        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in state["weights"].items():
                parameters[name].copy_(value)
    else:
        model.load_state_dict(state["weights"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])  # dropout draws go on as they would have
    return int(saved["step"]), [list(x) for x in saved.get("history", [])]

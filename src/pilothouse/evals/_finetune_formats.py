"""Dataset versions written as training files: OpenAI fine-tuning JSONL (``{"messages": [...]}``), the
Hugging Face TRL conversational prompt-completion format (``{"prompt": [...], "completion": [...]}``) and
TRL conversational preference pairs for DPO (``{"prompt", "chosen", "rejected"}``, from items that carry
``metadata.rejected``: curate with a preference score)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal, TextIO

from pilothouse.domain.curation import REJECTED_KEY
from pilothouse.domain.datasets import DatasetItem

__all__ = ["TRAINING_FORMATS", "TrainingFormat", "prompt_messages", "write_training_file"]

TrainingFormat = Literal["openai", "hf-chat", "dpo"]
TRAINING_FORMATS: tuple[TrainingFormat, ...] = ("openai", "hf-chat", "dpo")


def prompt_messages(item: DatasetItem) -> list[dict[str, Any]]:
    """The chat an item asks: its messages (without a trailing answer), or one user message with its
    ``input`` variable (or all its variables as JSON)."""
    if item.messages is not None:
        messages = [dict(m) for m in item.messages]
        while messages and messages[-1].get("role") == "assistant":
            messages.pop()
        return messages
    variables = dict(item.input)
    if set(variables) == {"input"} and isinstance(variables["input"], str):
        return [{"role": "user", "content": variables["input"]}]
    return [
        {"role": "user", "content": json.dumps(variables, ensure_ascii=False, sort_keys=True, default=str)}
    ]


def _answer(value: Any) -> dict[str, Any] | None:
    """An answer as one assistant message (an answer stored as the JSON of an assistant message, with
    tool calls, is kept as that message)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("role") == "assistant":
            return parsed
        return {"role": "assistant", "content": value}
    return {"role": "assistant", "content": json.dumps(value, ensure_ascii=False, default=str)}


def write_training_file(items: Iterable[DatasetItem], out: TextIO, fmt: TrainingFormat) -> tuple[int, int]:
    """Write items as JSONL records of ``fmt``; returns (written, skipped). An item is skipped when it
    has no expected answer (or, for ``dpo``, no rejected answer) or no prompt."""
    written = skipped = 0
    for item in items:
        prompt = prompt_messages(item)
        chosen = _answer(item.expected)
        record: dict[str, Any] | None = None
        if prompt and chosen is not None:
            if fmt == "openai":
                record = {"messages": [*prompt, chosen]}
            elif fmt == "hf-chat":
                record = {"prompt": prompt, "completion": [chosen]}
            else:
                rejected = _answer(item.metadata.get(REJECTED_KEY))
                if rejected is not None:
                    record = {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}
        if record is None:
            skipped += 1
            continue
        out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        written += 1
    return written, skipped

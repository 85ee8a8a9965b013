"""The improvement loop: curation and exports, prompt optimisation, fine-tuning and distillation, gated
promotion and canaries.

The fine-tuning names load on first use, so that the server (which imports ``improve.canary``) does
not load the training code."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pilothouse.improve._finetune import FinetuneError, FinetuneResult, FinetuneSettings, Progress
    from pilothouse.improve._training import export_adapter, train_adapter

__all__ = [
    "FinetuneError",
    "FinetuneResult",
    "FinetuneSettings",
    "Progress",
    "export_adapter",
    "train_adapter",
]

_HOMES = {
    "FinetuneError": "_finetune",
    "FinetuneResult": "_finetune",
    "FinetuneSettings": "_finetune",
    "Progress": "_finetune",
    "export_adapter": "_training",
    "train_adapter": "_training",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pilothouse.improve' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pilothouse.improve.{home}"), name)

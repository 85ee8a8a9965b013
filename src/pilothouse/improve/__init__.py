"""The improvement loop: curation and exports, prompt optimisation, fine-tuning and distillation, gated
promotion and canaries."""

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

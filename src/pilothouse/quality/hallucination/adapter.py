"""A low-rank adapter (LoRA) for the detector's language model: the module that adds ``B @ A`` to a
frozen linear layer, and the adapter file (safetensors: each target layer's ``lora_a`` and ``lora_b``,
with ``r``, ``alpha`` and the target names in its metadata).

The detector keeps the adapter beside the layer rather than merged into it: int8 quantises the base
layer, and a merged low-rank change smaller than the int8 step would be rounded away. Training
(:mod:`~pilothouse.quality.hallucination.contrastive`) and inference use the same module. torch is
imported by the caller and passed in (heavy, and Any to mypy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DEFAULT_TARGETS = ("q_proj", "v_proj")
SHIPPED_ADAPTER = Path(__file__).with_name("adapter.safetensors")


class AdapterError(ValueError):
    """An adapter file that cannot be read or does not fit the model."""


def lora_module(torch: Any) -> Any:
    """The LoRA module class: ``base(x) + (x @ A^T @ B^T) * alpha / r``; A starts small and random, B at
    zero (so a new adapter changes nothing); only A and B train."""

    class LoRALinear(torch.nn.Module):  # type: ignore[misc]
        def __init__(self, base: Any, r: int, alpha: float, seed: int = 0) -> None:
            super().__init__()
            self.base = base
            self.r, self.alpha = r, alpha
            self.scale = alpha / r
            generator = torch.Generator().manual_seed(seed)
            self.lora_a = torch.nn.Parameter(
                torch.randn(r, base.in_features, generator=generator) / base.in_features**0.5
            )
            self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, r))

        def forward(self, x: Any) -> Any:
            return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    return LoRALinear


def wrap(
    torch: Any, model: Any, r: int, alpha: float, targets: tuple[str, ...] = DEFAULT_TARGETS, seed: int = 0
) -> dict[str, Any]:
    """Put a fresh LoRA module around every linear layer whose name ends with one of ``targets``;
    the wrapped modules by name (the base model's weights are frozen)."""
    if r < 1 or alpha <= 0:
        raise AdapterError(f"LoRA rank must be at least 1 and alpha positive (r={r}, alpha={alpha})")
    LoRALinear = lora_module(torch)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    names = [
        name
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in targets and hasattr(module, "in_features")
    ]
    if not names:
        raise AdapterError(f"no layer of the model is named {', '.join(targets)}")
    wrapped: dict[str, Any] = {}
    for index, name in enumerate(sorted(names)):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        module = LoRALinear(getattr(parent, child), r, alpha, seed=seed * 1000 + index)
        setattr(parent, child, module)
        wrapped[name] = module
    return wrapped


def save(path: Path, wrapped: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Write the adapter's A and B matrices (float32) and ``metadata`` (JSON-encoded values)."""
    from safetensors.torch import save_file

    if not wrapped:
        raise AdapterError("nothing to save: no adapted layer")
    first = next(iter(wrapped.values()))
    tensors: dict[str, Any] = {}
    for name, module in wrapped.items():
        tensors[f"{name}.lora_a"] = module.lora_a.detach().float().contiguous()
        tensors[f"{name}.lora_b"] = module.lora_b.detach().float().contiguous()
    info = {"r": first.r, "alpha": first.alpha, **metadata}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in info.items()})


def read_metadata(path: Path) -> dict[str, Any]:
    """The adapter file's metadata (``r``, ``alpha``, how it was trained)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise AdapterError(f"cannot read the adapter {path}: {exc}") from None
    try:
        return {k: json.loads(v) for k, v in raw.items()}
    except ValueError:
        raise AdapterError(f"the adapter {path} has unreadable metadata") from None


def apply(torch: Any, model: Any, path: Path) -> dict[str, Any]:
    """Load the adapter at ``path`` onto ``model`` (frozen, for inference); the wrapped modules."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise AdapterError(f"no adapter file at {path}")
    info = read_metadata(path)
    try:
        tensors = load_file(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise AdapterError(f"cannot read the adapter {path}: {exc}") from None
    names = sorted({key.rsplit(".", 1)[0] for key in tensors})
    targets = tuple(sorted({name.rsplit(".", 1)[-1] for name in names}))
    try:
        r, alpha = int(info["r"]), float(info["alpha"])
    except (KeyError, TypeError, ValueError):
        raise AdapterError(f"the adapter {path} does not say its rank and alpha") from None
    wrapped = wrap(torch, model, r, alpha, targets)
    if sorted(wrapped) != names:
        raise AdapterError(f"the adapter {path} does not fit this model's layers")
    with torch.no_grad():
        for name, module in wrapped.items():
            a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
            if a.shape != module.lora_a.shape or b.shape != module.lora_b.shape:
                raise AdapterError(f"the adapter {path} does not fit this model ({name}: shape)")
            module.lora_a.copy_(a)
            module.lora_b.copy_(b)
    model.eval()
    return wrapped

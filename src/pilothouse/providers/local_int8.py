"""int8 for the local models: which linear layers are quantised, and quantising them in place with
little memory (the local provider's ``precision: int8`` and the hallucination detector share it)."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import warnings
from pathlib import Path
from typing import Any

# Linear layers that int8 leaves in float32. The MLP's down projection reads activations with outliers
# (the known weak spot of int8 activations in LLMs) and the output head makes the next token's
# probabilities: quantising every linear layer moved SmolLM2's mean log p of a text by 0.70 nats (as
# much as texts differ from each other) and took a distilled spam classifier from 97.9% to 17.0% on its
# validation split; with these two in float32, 0.076 nats (docs/hallucination.md, docs/improvement.md).
INT8_FLOAT_LAYERS = ("down_proj", "lm_head")


def int8_layer_names(torch: Any, model: Any) -> set[str]:
    """The names of the linear layers int8 quantises: all but :data:`INT8_FLOAT_LAYERS`."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.endswith(INT8_FLOAT_LAYERS)
    }


def quantize_int8(torch: Any, model: Any, directory: Path) -> None:
    """int8 dynamic quantisation of the linear layers (but :data:`INT8_FLOAT_LAYERS`), a few at a time,
    keeping the resident set small.

    The loader maps the safetensors file into memory (a private file mapping it never unmaps): every
    float weight it holds becomes resident when read, and stays resident after its layer is replaced,
    since the mapping, not a tensor, owns those pages (with int8 this kept the whole 513 MiB float
    model resident next to its int8 copy). So after each group of layers the mapping's pages are
    dropped, and at the end the float parameters left (embeddings, norms, the float layers) are copied
    off it, the pages of each large one dropped after its copy (copying them all first held both, 200
    MiB more at the peak), and its pages dropped for good. Dropping is safe: a page touched again is
    read back from the file."""
    names = sorted(int8_layer_names(torch, model))
    with warnings.catch_warnings():  # torch marks torch.ao and its quantised tensors deprecated
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        for first in range(0, len(names), 8):
            torch.ao.quantization.quantize_dynamic(
                model, set(names[first : first + 8]), dtype=torch.qint8, inplace=True
            )
            _drop_mapped_pages(directory)
    with torch.no_grad():  # one large tensor at a time, its mapped pages dropped after each copy
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
            if tensor.numel() * tensor.element_size() >= 1 << 20:
                _drop_mapped_pages(directory)
    _release_freed_memory()
    _drop_mapped_pages(directory, written_too=True)  # no tensor points into it any more


def _drop_mapped_pages(directory: Path, *, written_too: bool = False) -> None:
    """madvise(MADV_DONTNEED) on the process's mappings of files in ``directory`` (Linux; elsewhere
    nothing): their pages leave the resident set and are read back from the file if touched again.
    A mapping with pages written since it was mapped (``Anonymous`` in smaps: dropping them would undo
    the writes) is left alone unless ``written_too`` (when nothing uses the mapping any more)."""
    prefix = str(directory.resolve()) + "/"
    with contextlib.suppress(OSError, AttributeError, ValueError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        regions: list[tuple[int, int, int]] = []  # start, end, anonymous kB
        for line in Path("/proc/self/smaps").read_text().splitlines():
            fields = line.split(maxsplit=5)
            if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header
                if len(fields) == 6 and fields[5].startswith(prefix):
                    start, end = (int(v, 16) for v in fields[0].split("-"))
                    regions.append((start, end, 0))
                else:
                    regions.append((0, 0, 0))
            elif fields and fields[0] == "Anonymous:" and regions and regions[-1][1]:
                regions[-1] = (regions[-1][0], regions[-1][1], int(fields[1]))
        for start, end, anonymous in regions:
            if end and (written_too or anonymous == 0):
                libc.madvise(start, end - start, 4)  # MADV_DONTNEED


def _release_freed_memory() -> None:
    """Collect, then hand the freed float weights back to the system (glibc keeps them otherwise)."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hand the heap's free memory back to the system (glibc ``malloc_trim``; elsewhere nothing). A
    forward pass over 1,000 tokens frees tens of MiB of activations of many sizes, which glibc keeps:
    over 20 checks the detector's resident set grew by ~250 MiB without this, ~80 with it."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the process reuses it instead
        ctypes.CDLL("libc.so.6").malloc_trim(0)

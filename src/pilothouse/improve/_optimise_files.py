"""Where an optimisation's state lives between steps and runs: a JSON file under
``$PILOTHOUSE_HOME/optimise/``, written atomically after every step (what ``--resume`` reads)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pilothouse.improve._optimise_core import OptimiseState

__all__ = ["OptimiseError", "load_state", "save_state", "state_file"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


class OptimiseError(ValueError):
    """An optimisation that cannot start or go on (an unknown prompt or dataset, nothing to resume)."""


def state_file(home: Path, project: str, name: str) -> Path:
    """Where the state of the optimisation of ``project``'s prompt ``name`` is kept."""
    return home / "optimise" / f"{_SAFE.sub('_', project)}--{_SAFE.sub('_', name)}.json"


def load_state(path: Path) -> OptimiseState:
    """The state saved at ``path``; :class:`OptimiseError` when there is none or it is damaged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OptimiseError(f"no optimisation to resume ({path} does not exist)") from None
    except (OSError, ValueError) as exc:
        raise OptimiseError(f"cannot read {path}: {exc}") from None
    try:
        return OptimiseState.from_document(data)
    except ValueError as exc:
        raise OptimiseError(f"{path}: {exc}") from None


def save_state(state: OptimiseState, path: Path) -> None:
    """Write the state atomically (an interrupted write leaves the previous state whole), readable
    by its owner only: it quotes train items, which may be production data."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    data = json.dumps(state.document(), indent=1, ensure_ascii=False).encode("utf-8")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(partial, path)

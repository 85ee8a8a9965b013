"""Where fine-tuned adapters live: ``$PILOTHOUSE_HOME/adapters/<name>/v<N>/`` with the weights in
``adapter/`` (PEFT's format: ``adapter_config.json`` and ``adapter_model.safetensors``, or a full model
for full fine-tuning) and what the run did in ``model.json``. A version without ``model.json`` is a run
still in progress (its checkpoint is there). The local provider serves ``NAME`` (the newest finished
version), ``NAME@N`` or a folder, merged into its base model."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilothouse.providers.base import ProviderError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
CARD = "model.json"
WEIGHTS = "adapter"


@dataclass(frozen=True, slots=True)
class AdapterVersion:
    """One trained version: its name, number, folder and ``model.json`` (empty while in progress)."""

    name: str
    version: int
    directory: Path
    card: dict[str, Any]

    @property
    def finished(self) -> bool:
        """Whether its training finished (``model.json`` written)."""
        return bool(self.card)

    @property
    def weights(self) -> Path:
        """The folder the local provider loads."""
        return self.directory / WEIGHTS

    @property
    def label(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


def adapters_home() -> Path:
    """``$PILOTHOUSE_HOME/adapters``."""
    from pilothouse.config import environment_settings

    return environment_settings().home / "adapters"


def check_name(name: str) -> str:
    """The name, or ValueError when it cannot be a folder name of ours."""
    if not NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"adapter name {name!r}: 1-64 letters, digits, '_', '.' or '-', starting with one")
    return name


def versions(name: str, home: Path | None = None) -> list[AdapterVersion]:
    """The versions of one adapter, oldest first."""
    folder = (home or adapters_home()) / check_name(name)
    found: list[AdapterVersion] = []
    for child in folder.glob("v*") if folder.is_dir() else ():
        if child.is_dir() and child.name[1:].isdigit():
            card_file = child / CARD
            card = json.loads(card_file.read_text()) if card_file.is_file() else {}
            found.append(AdapterVersion(name, int(child.name[1:]), child, card))
    return sorted(found, key=lambda v: v.version)


def all_versions(home: Path | None = None) -> list[AdapterVersion]:
    """Every version of every adapter, by name then version."""
    root = home or adapters_home()
    names = (
        sorted(p.name for p in root.iterdir() if p.is_dir() and NAME.fullmatch(p.name))
        if root.is_dir()
        else []
    )
    return [v for name in names for v in versions(name, root)]


def run_directory(name: str, home: Path | None = None, *, restart: bool = False) -> Path:
    """Where a new training run of ``name`` writes: the newest version when it is unfinished (so the
    run continues it, unless ``restart``), else the next version number."""
    found = versions(name, home)
    if found and not found[-1].finished and not restart:
        return found[-1].directory
    number = found[-1].version + 1 if found else 1
    if found and not found[-1].finished and restart:
        number = found[-1].version
        import shutil

        shutil.rmtree(found[-1].directory)
    return (home or adapters_home()) / name / f"v{number}"


def resolve(reference: str, home: Path | None = None) -> Path:
    """The weights folder of ``NAME`` (newest finished version), ``NAME@N`` or a folder path."""
    path = Path(reference).expanduser()
    if path.is_dir() and ((path / "adapter_config.json").is_file() or (path / "config.json").is_file()):
        return path
    name, _, number = reference.partition("@")
    try:
        found = [v for v in versions(name, home) if v.finished]
    except ValueError:
        found = []
    if number:
        found = [v for v in found if str(v.version) == number.lstrip("v")]
    if not found:
        raise ProviderError(
            500,
            f"adapter {reference!r} is neither a trained adapter (see 'pilothouse finetune list') "
            "nor a folder with adapter_config.json",
        )
    return found[-1].weights

"""The fine-tuning use case: a stored dataset version's answers -> a trained adapter version of a local
model, registered under ``$PILOTHOUSE_HOME/adapters`` and servable by the local provider
(``options: {adapter: NAME}``); and the export of a version for other servers (vLLM, TGI)."""

from __future__ import annotations

import importlib
import shutil
from collections.abc import Callable
from pathlib import Path

from pilothouse.domain.datasets import DatasetError
from pilothouse.improve._finetune import (
    FinetuneError,
    FinetuneResult,
    FinetuneSettings,
    Progress,
    build_examples,
    finetune,
    quiet_deprecations,
    torch_device,
)
from pilothouse.providers import local_adapters
from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.local import LocalProvider
from pilothouse.store.evals import EvalStore


def train_adapter(
    evals: EvalStore,
    project_id: str,
    dataset: str,
    name: str,
    *,
    base: str = "smollm2",
    settings: FinetuneSettings | None = None,
    restart: bool = False,
    home: Path | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FinetuneResult:
    """Fine-tune ``base`` (a local model: ``smollm2``, a GGUF file or a Hugging Face folder) on the
    answers of the dataset version ``dataset`` (``name`` or ``name@N``) as the adapter ``name``: the
    newest unfinished version of it is continued (unless ``restart``), else a new version is made."""
    settings = settings or FinetuneSettings()
    settings.check()  # every setting, the device's name too, before the model and the data are read
    try:
        local_adapters.check_name(name)
    except ValueError as exc:
        raise FinetuneError(str(exc)) from None
    dataset_name, _, number = dataset.partition("@")
    version = evals.get_version(project_id, dataset_name, int(number) if number.isdigit() else None)
    if version is None or (number and not number.isdigit()):
        raise DatasetError(f"no dataset {dataset!r} in project {project_id!r}")
    torch_device(importlib.import_module("torch"), settings.device)  # a GPU asked for is there
    provider = LocalProvider(Deployment(name=base, provider="local", model=base, options={"warmup": False}))
    try:
        base_directory = provider.base_directory()
    except ProviderError as exc:
        raise FinetuneError(str(exc)) from None
    transformers = importlib.import_module("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(base_directory, local_files_only=True)
    items = (item for _, item in evals.iter_items(version.id))
    examples, skipped = build_examples(items, tokenizer, settings.max_length)
    output = local_adapters.run_directory(name, home, restart=restart)
    card = {
        "name": name,
        "version": int(output.name[1:]),
        "base": base,
        "dataset": version.label,
        "project": project_id,
        "skipped_items": skipped,
    }
    return finetune(
        base_directory, examples, settings, output, card=card, progress=progress, should_stop=should_stop
    )


def export_adapter(reference: str, target: Path, *, merged: bool = False, home: Path | None = None) -> Path:
    """Write a trained version to ``target``: the PEFT adapter as it is (vLLM ``--lora-modules``,
    TGI ``LORA_ADAPTERS``), or ``merged`` into its base as a full Hugging Face model folder."""
    try:
        source = local_adapters.resolve(reference, home)
    except ProviderError as exc:
        raise FinetuneError(exc.message) from None
    if target.exists() and any(target.iterdir()):
        raise FinetuneError(f"{target} exists and is not empty")
    if not merged or not (source / "adapter_config.json").is_file():
        shutil.copytree(source, target, dirs_exist_ok=True)
        return target
    card = local_adapters.versions(reference.partition("@")[0], home)
    base = next((v.card.get("base_directory") for v in card if v.weights == source), None)
    if base is None:
        raise FinetuneError(f"{reference}: its model.json does not name the base model it was trained on")
    transformers = importlib.import_module("transformers")
    torch = importlib.import_module("torch")
    peft = importlib.import_module("peft")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.float32, local_files_only=True
    )
    with quiet_deprecations():
        model = peft.PeftModel.from_pretrained(model, source).merge_and_unload()
    model.save_pretrained(target)
    transformers.AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(target)
    return target

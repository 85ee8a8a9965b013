"""Contrastive training of the detector's model: the pairs it learns from, the LoRA adapter file, and
the training command on a tiny input (SmolLM2, two steps)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pilothouse.quality.hallucination import adapter as lora
from pilothouse.quality.hallucination.contrastive import (
    Settings,
    auroc,
    build_pairs,
    pairwise,
    split_documents,
)

DOC_A = (
    "The museum opened in 1921 in Lyon. It holds 4,000 paintings, most of them donated by the Berthier "
    "family. Entry is free on Sundays. The museum was closed for repairs in 2019 after a storm damaged "
    "its roof and its west wing."
)
DOC_B = (
    "Sales rose 12 percent in the third quarter, the company said on Monday. Its chief executive, Dana "
    "Reyes, said demand was strong in Asia. The company will open two new factories in Ohio next year "
    "and expects profits to increase."
)
ROWS: list[dict[str, Any]] = [
    {
        "id": "a1",
        "doc": DOC_A,
        "summary": "The museum opened in 1921 in Lyon.",
        "label": 1,
        "original_summary": "The museum opened in 1921 in Lyon.",
    },
    {
        "id": "a2",
        "doc": DOC_A,
        "summary": "The museum opened in 1931 in Lyon.",
        "label": 0,
        "original_summary": "The museum opened in 1921 in Lyon.",
    },
    {
        "id": "b1",
        "doc": DOC_B,
        "summary": "Sales rose 12 percent, and Dana Reyes said demand was strong.",
        "label": 1,
        "original_summary": "Sales rose 12 percent, and Dana Reyes said demand was strong.",
    },
    {
        "id": "b2",
        "doc": DOC_B,
        "summary": "Sales fell 12 percent, and Dana Reyes said demand was weak.",
        "label": 0,
        "original_summary": "Sales rose 12 percent, and Dana Reyes said demand was strong.",
    },
]


def words(text: str) -> int:
    return len(text.split())


def test_pairs_hold_the_labelled_edits_and_synthetic_ones_with_one_context_per_pair() -> None:
    pairs = build_pairs(ROWS, words, Settings(context_tokens=30, sentences_per_document=2))
    labelled = [p for p in pairs if p.source == "labelled"]
    assert {(p.good, p.bad) for p in labelled} == {
        (ROWS[0]["summary"], ROWS[1]["summary"]),
        (ROWS[2]["summary"], ROWS[3]["summary"]),
    }
    synthetic = [p for p in pairs if p.source != "labelled"]
    assert synthetic and all(p.good != p.bad for p in synthetic)
    assert {p.source.split(":")[0] for p in synthetic} == {"synthetic", "sentence"}
    assert all(words(p.context) <= 30 for p in pairs)  # cut to the budget around the faithful text
    assert build_pairs(ROWS, words, Settings(context_tokens=30)) == build_pairs(
        ROWS, words, Settings(context_tokens=30)
    )


def test_held_out_documents_are_never_trained_on() -> None:
    train, held = split_documents(ROWS, 1, seed=7)
    assert {r["doc"] for r in train}.isdisjoint({r["doc"] for r in held}) and len(train) + len(held) == 4


def test_ranking_measures() -> None:
    assert auroc([0.9, 0.1, 0.5], [1, 0, 0]) == 1.0
    assert auroc([0.1, 0.1], [1, 0]) == 0.5
    assert math.isnan(auroc([0.1], [1]))
    assert pairwise(ROWS, [0.9, 0.1, 0.2, 0.3]) == 0.5


def tiny_llama() -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.mark.slow
def test_an_adapter_round_trips_through_its_file_and_changes_the_model_only_once_trained(
    tmp_path: Path,
) -> None:
    import torch

    ids = torch.tensor([[1, 5, 7, 9, 3]])
    model = tiny_llama()
    with torch.no_grad():
        before = model(ids).logits
    wrapped = lora.wrap(torch, model, 4, 8.0)
    assert sorted(wrapped) == [
        f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "v_proj")
    ]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)  # B starts at zero
        for module in wrapped.values():
            module.lora_b.normal_()
        after = model(ids).logits
    assert not torch.allclose(after, before)
    path = tmp_path / "adapter.safetensors"
    lora.save(path, wrapped, {"steps": 2})
    assert lora.read_metadata(path) == {"r": 4, "alpha": 8.0, "steps": 2}
    fresh = tiny_llama()
    lora.apply(torch, fresh, path)
    with torch.no_grad():
        assert torch.allclose(fresh(ids).logits, after)
    with pytest.raises(lora.AdapterError, match="no adapter file"):
        lora.apply(torch, tiny_llama(), tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not an adapter")
    with pytest.raises(lora.AdapterError, match="cannot read"):
        lora.apply(torch, tiny_llama(), tmp_path / "bad.safetensors")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pilothouse.quality.hallucination.contrastive", *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)


@pytest.mark.slow
def test_the_training_command_fits_an_adapter_the_detector_loads(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "summedits").mkdir(parents=True)
    rows = [{**r, "split": "evaluation", "edit_types": []} for r in ROWS]
    rows.append({**ROWS[0], "id": "t1", "split": "test"})  # never read
    (data / "summedits" / "summedits_tiny.json").write_text(json.dumps(rows))
    out = tmp_path / "adapter.safetensors"
    done = run(
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        "2",
        "--batch",
        "1",
        "--sentences-per-document",
        "1",
        "--context-tokens",
        "48",
        "--threads",
        "1",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 rows of 2 documents" in done.stdout and "trained: 2 steps" in done.stdout
    meta = lora.read_metadata(out)
    assert meta["steps"] == 2 and meta["r"] == 8 and meta["settings"]["context_tokens"] == 48

    from pilothouse.quality.hallucination.lm import LanguageModelEvidence

    tokens = LanguageModelEvidence(threads=1, adapter=out).evidence(ROWS[0]["summary"], DOC_A).tokens
    assert tokens and all(t.logprob <= 0 for t in tokens)


@pytest.mark.slow
def test_the_training_command_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    done = run("--data", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "cannot read SummEdits' evaluation split" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    (tmp_path / "summedits").mkdir()
    (tmp_path / "summedits" / "summedits_x.json").write_text("[]")
    done = run("--data", str(tmp_path), "--steps", "0")
    assert done.returncode == 2 and done.stderr.strip().startswith("bad setting:")


@pytest.mark.slow
def test_no_adapter_is_shipped_or_put_on_a_model_by_default(tmp_path: Path) -> None:
    """The trained adapter did not help on the held-out sets (docs/hallucination.md): the default
    model is SmolLM2 as shipped; an adapter is opt-in."""
    from pilothouse.quality.hallucination.lm import LanguageModelEvidence, default_adapter

    assert default_adapter() is None and not lora.SHIPPED_ADAPTER.exists()
    assert LanguageModelEvidence().adapter is None
    assert LanguageModelEvidence(adapter=tmp_path / "a.safetensors").adapter == tmp_path / "a.safetensors"

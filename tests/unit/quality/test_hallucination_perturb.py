"""Synthetic unfaithful edits: each kind changes what the sentence claims, and only that."""

from __future__ import annotations

import random

import pytest

from pilothouse.quality.hallucination.perturb import KINDS, edits

DOCUMENT = (
    "The museum opened in 1921 in Lyon. It holds 4,000 paintings, most of them donated by the Berthier "
    "family. Entry is free on Sundays. Paris has 12 museums. Profits increased after he left."
)


def by_kind(text: str, seed: int = 0) -> dict[str, str]:
    return {e.kind: e.text for e in edits(text, DOCUMENT, random.Random(seed))}


def test_numbers_and_names_are_swapped_with_others_of_the_same_document() -> None:
    made = by_kind("The museum opened in 1921 in Lyon and holds 4,000 paintings.")
    assert made["number"] != "The museum opened in 1921 in Lyon and holds 4,000 paintings."
    assert any(n in made["number"] for n in ("12 paintings", "1921 paintings", "opened in 12", "in 4,000"))
    assert "Lyon" not in made["entity"] and ("Paris" in made["entity"] or "Berthier" in made["entity"])


def test_negation_antonym_pronoun_and_clause() -> None:
    made = by_kind("Profits increased after he left, and entry is free on Sundays.")
    assert made["negation"] == "Profits increased after he left, and entry is not free on Sundays."
    assert made["antonym"] in (
        "Profits decreased after he left, and entry is free on Sundays.",
        "Profits increased before he left, and entry is free on Sundays.",
    )
    assert made["pronoun"] == "Profits increased after she left, and entry is free on Sundays."
    assert made["clause"].startswith("Profits increased after he left, and entry is free on Sundays ")
    assert made["clause"].endswith(".")
    assert by_kind("Entry is not free on Sundays.")["negation"] == "Entry is free on Sundays."


def test_every_edit_differs_a_kind_that_does_not_apply_is_left_out_and_the_seed_decides() -> None:
    text = "It rained."
    made = edits(text, DOCUMENT, random.Random(1))
    assert {e.kind for e in made} <= set(KINDS) and "pronoun" not in {e.kind for e in made}
    assert all(e.text != text for e in made)
    sentence = "The museum opened in 1921 in Lyon and holds 4,000 paintings."
    assert edits(sentence, DOCUMENT, random.Random(3)) == edits(sentence, DOCUMENT, random.Random(3))


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown edit kinds: typo"):
        edits("It rained.", DOCUMENT, random.Random(0), kinds=("typo",))

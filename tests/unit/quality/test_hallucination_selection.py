"""Context selection: which passages of a long context the detector's language model reads."""

from __future__ import annotations

import pytest

from pilothouse.quality.hallucination.selection import GAP, bm25, pieces, select_context, terms

ARTICLE = (
    "The city council of Arden met on Tuesday to vote on the new budget. "
    "The meeting lasted four hours and was broadcast on local radio. "
    "Council members argued at length about road repairs in the northern districts. "
    "A local bakery won a regional prize for its rye bread last spring. "
    "The budget sets aside 12 million dollars for the public library, which will reopen in 2026. "
    "Several residents spoke against the closure of the swimming pool on Elm Street. "
    "The weather on Tuesday was cold, with light snow in the afternoon. "
    "Mayor Lena Ortiz said the library had been closed since a fire damaged its roof. "
    "The school board will hold its own vote next month. "
    "Parking near the town hall remains free on weekends."
)
RESPONSE = "Arden's budget gives the library 12 million dollars. The mayor said a fire had damaged its roof."


def words(text: str) -> int:
    """A token counter for the tests: one token per whitespace-separated word."""
    return len(text.split())


def test_terms_are_content_words_and_numbers() -> None:
    assert terms("The libraries got 1,200 dollars in 2026.") == ["librarie", "got", "1200", "dollar", "2026"]


def test_bm25_ranks_the_passage_sharing_rare_terms_first() -> None:
    docs = [terms("the budget for roads"), terms("the library budget of 12 million"), terms("snow")]
    scores = bm25(terms("library 12 million"), docs)
    assert scores[1] > scores[0] == scores[2] == 0.0


def test_selection_keeps_the_lead_and_the_sentences_the_response_draws_on_in_order() -> None:
    chosen = select_context(ARTICLE, RESPONSE, 50, words)
    kept = [ARTICLE[p.start : p.end] for p in (chosen.pieces[i] for i in chosen.kept)]
    assert not chosen.whole
    assert kept[0].startswith("The city council of Arden met")  # the lead, always
    assert any(s.startswith("The budget sets aside 12 million dollars") for s in kept)
    assert any(s.startswith("Mayor Lena Ortiz said the library") for s in kept)
    assert not any("rye bread" in s or "light snow" in s for s in kept)  # unrelated: left out
    assert list(chosen.kept) == sorted(chosen.kept)  # original order
    assert words(chosen.text) <= 50 + len(chosen.kept)  # within the budget (the gap marks aside)
    assert GAP in chosen.text and chosen.text.startswith("The city council of Arden met")


def test_a_context_within_the_budget_is_read_whole() -> None:
    chosen = select_context(ARTICLE, RESPONSE, 500, words)
    assert chosen.whole and chosen.text == ARTICLE
    short = "Entry is free on Sundays."
    assert select_context(short, "It is free.", 10, words).text == short


def test_an_overlong_sentence_is_cut_into_pieces_and_a_bad_budget_is_refused() -> None:
    transcript = " ".join(f"word{i}" for i in range(120))  # no punctuation at all
    assert [words(transcript[p.start : p.end]) for p in pieces(transcript)] == [48, 48, 24]
    chosen = select_context(transcript, "word100 and word101", 30, words)
    assert "word100" in chosen.text and words(chosen.text) <= 30
    with pytest.raises(ValueError, match="budget"):
        select_context(ARTICLE, RESPONSE, 0, words)

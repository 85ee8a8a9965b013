"""The detector's word-level spans: words and their offsets, the evidence per word, the rule and the
spans it makes (pure: token evidence written by hand)."""

from __future__ import annotations

from pilothouse.quality.hallucination.features import TokenEvidence
from pilothouse.quality.hallucination.spans import WordRule, word_evidence, word_spans, words

CONTEXT = "The Musée Lumière opened in 1987 in Lyon. It holds 4,000 paintings and costs $12 to enter."


def tokens_for(
    text: str, logprob: dict[str, float] | None = None, prior: float = -9.0
) -> list[TokenEvidence]:
    """One token per word (and one per punctuation run), log p -0.5 unless ``logprob`` says."""
    found = []
    for word in words(text):
        found.append(TokenEvidence(word.start, word.end, (logprob or {}).get(word.text, -0.5), prior))
    return found


def test_words_keep_offsets_numbers_and_inner_punctuation() -> None:
    text = "It's 4,000 paintings (3.5% more) in Saint-Étienne's museum."
    found = words(text)
    assert [w.text for w in found] == [
        "It's",
        "4,000",
        "paintings",
        "3.5",
        "more",
        "in",
        "Saint-Étienne's",
        "museum",
    ]
    assert all(text[w.start : w.end] == w.text for w in found)


def test_word_evidence_takes_the_least_likely_token_and_compares_numbers_without_separators() -> None:
    response = "It holds 4000 paintings by Monet."
    tokens = [
        TokenEvidence(0, 2, -0.1, -1.0),
        TokenEvidence(3, 8, -0.2, -3.0),
        TokenEvidence(9, 11, -0.3, -8.0),  # "4000" in two tokens: the worse one counts
        TokenEvidence(11, 13, -7.5, -8.0),
        TokenEvidence(14, 23, -0.4, -6.0),
        TokenEvidence(27, 32, -9.0, -9.5),
    ]
    found = {w.text: w for w in word_evidence(response, CONTEXT, tokens)}
    assert found["4000"].logprob == -7.5 and found["4000"].pmi == 0.5
    assert not found["4000"].novel  # 4,000 in the context
    assert found["Monet"].novel and found["Monet"].content
    assert found["by"].logprob == 0.0 and not found["by"].content  # no token covers it; a function word
    assert not found["It"].novel and not found["It"].content


def test_the_rule_flags_novel_words_and_unlikely_words_the_context_did_not_raise() -> None:
    response = "It opened in 1987 in Paris and holds 4,000 paintings."
    tokens = [
        TokenEvidence(t.start, t.end, *{"holds": (-8.0, -20.0), "paintings": (-8.0, -8.5)}.get(
            response[t.start : t.end], (t.logprob, t.prior)
        ))
        for t in tokens_for(response)
    ]  # fmt: skip
    spans = word_spans(response, CONTEXT, tokens, WordRule(max_logprob=-6.0, max_pmi=1.0))
    # "Paris" is not in the context; "paintings" is unlikely and the context hardly raised it (PMI
    # 0.5); "holds" is as unlikely, but the context raised it (PMI 12): supported
    assert [(s.text, s.reason) for s in spans] == [
        ("Paris", "not in the context"),
        ("paintings", "unlikely given the context (log p -8.0)"),
    ]
    assert all(response[s.start : s.end] == s.text for s in spans)
    assert spans[0].score == 1.0 and 0.5 <= spans[1].score <= 1.0
    assert word_spans(response, CONTEXT, tokens, WordRule(max_logprob=-9.0, max_pmi=1.0))[-1].text == "Paris"


def test_flagged_words_next_to_each_other_make_one_span() -> None:
    response = "It opened in Marseille, France in 1990."
    spans = word_spans(response, CONTEXT, tokens_for(response))
    assert [s.text for s in spans] == ["Marseille, France", "1990"]
    assert spans[0].reason == "not in the context"

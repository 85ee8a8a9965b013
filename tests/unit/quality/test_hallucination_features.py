"""The detector's pure parts: sentences, lexical novelty, spans from token evidence, the logistic
combination and the training fit."""

from __future__ import annotations

import pytest

from pilothouse.domain.faithfulness import UnsupportedSpan, Verdict
from pilothouse.quality.hallucination.features import (
    FEATURES,
    LogisticModel,
    TokenEvidence,
    confidence,
    merge_spans,
    novelty,
    sentences,
    token_features,
)
from pilothouse.quality.hallucination.train import (
    CANDIDATES,
    balanced_accuracy,
    cross_validate,
    fit_logistic,
    fit_pairwise,
    select,
)


def test_sentences_keep_offsets_and_join_short_fragments() -> None:
    text = "  Revenue rose 3.5% in Q2. The U.S. unit grew fast!\nNew CEO named today."
    found = sentences(text)
    assert [s.text for s in found] == [
        "Revenue rose 3.5% in Q2.",
        "The U.S. unit grew fast!",
        "New CEO named today.",
    ]
    assert all(text[s.start : s.end] == s.text for s in found)


def test_novelty_flags_numbers_and_names_absent_from_the_context() -> None:
    context = "Mary Keefe, 19, posed for the cover on May 29, 1943 in Vermont."
    response = "Mary Keefe posed on June 14, 1946 in Boston. She was 19."
    found = novelty(response, context)
    assert [s.text for s in found.spans] == ["June", "14", "1946", "Boston"]
    assert all(response[s.start : s.end] == s.text for s in found.spans)
    assert found.numbers == pytest.approx(2 / 3)  # 14 and 1946 absent, 19 present
    assert found.names == pytest.approx(
        2 / 3
    )  # June and Boston absent, Keefe present ("Mary" starts a sentence)
    assert novelty("They agreed.", context).numbers == 0.0


def _tokens(text: str, logprobs: list[float], priors: list[float]) -> list[TokenEvidence]:
    tokens, position = [], 0
    for word, lp, pr in zip(text.split(" "), logprobs, priors, strict=True):
        tokens.append(TokenEvidence(position, position + len(word), lp, pr))
        position += len(word) + 1
    return tokens


def test_token_features_normalise_by_the_prior_and_find_the_worst_sentence() -> None:
    text = "The deal closed at 40 million dollars. It was in Paris yesterday"
    lps = [-1.0, -2.0, -1.5, -0.5, -9.0, -7.0, -1.0, -0.5, -1.0, -1.0, -6.5, -1.0]
    priors = [-1.0, -3.0, -2.0, -1.0, -9.5, -7.5, -1.5, -1.0, -1.0, -1.0, -9.0, -1.0]  # Paris: raised
    features = token_features(_tokens(text, lps, priors), text)
    assert features["mean_logprob"] == pytest.approx(sum(lps) / len(lps))
    assert features["mean_pmi"] == pytest.approx(
        sum(a - b for a, b in zip(lps, priors, strict=True)) / len(lps)
    )
    assert features["p10_logprob"] == -7.0  # the second lowest of 12 (10th percentile), not the minimum
    assert features["min_sentence_logprob"] == pytest.approx(sum(lps[:7]) / 7)  # the first sentence
    assert features["low_token_share"] == pytest.approx(2 / 12)  # 40 and million; Paris was raised
    assert set(features) | {"novel_numbers", "novel_names", "novel_words"} == set(FEATURES)
    assert token_features([], "")["mean_pmi"] == 0.0


def test_merge_spans_joins_overlaps_and_keeps_the_worst_score() -> None:
    text = "abc def ghi"
    merged = merge_spans(
        [UnsupportedSpan(4, 7, "def", "x", 0.2), UnsupportedSpan(0, 5, "abc d", "y", 0.9)], text
    )
    assert merged == (UnsupportedSpan(0, 7, "abc def", "y", 0.9),)


def test_logistic_model_scores_round_trips_and_rejects_malformed_json() -> None:
    model = LogisticModel(("a", "b"), (0.0, 1.0), (1.0, 2.0), (2.0, -1.0), 0.5, 0.6)
    assert model.score({"a": 0.0, "b": 1.0}) == pytest.approx(0.6224593)  # only the bias
    assert model.score({"a": 1.0}) > model.score({"a": -1.0})
    assert LogisticModel.from_dict(model.to_dict()) == model
    with pytest.raises(ValueError, match="malformed"):
        LogisticModel.from_dict({"features": ["a"], "means": [], "scales": [1], "weights": [1], "bias": 0})
    assert confidence(0.8, 0.6) == pytest.approx(0.5) and confidence(0.3, 0.6) == pytest.approx(0.5)


def test_fit_separates_a_feature_that_predicts_the_label() -> None:
    x = [[float(i), float(i % 3)] for i in range(40)]
    y = [int(i >= 20) for i in range(40)]
    model = fit_logistic(x, y, ["signal", "noise"])
    assert model.weights[0] > 1.0 and abs(model.weights[1]) < model.weights[0]
    scores = [model.score({"signal": r[0], "noise": r[1]}) for r in x]
    assert balanced_accuracy(scores, y, model.threshold) == 1.0


def test_verdict_checks_its_values() -> None:
    with pytest.raises(ValueError):
        Verdict(1.5, "supported")
    with pytest.raises(ValueError):
        Verdict(0.5, "maybe")
    assert Verdict(0.2, "unsupported").to_dict()["label"] == "unsupported"


def test_pairwise_fit_learns_within_seed_differences_not_between_seed_levels() -> None:
    # Two seeds: within each, the consistent summary has the higher "support"; across seeds the levels
    # differ (seed b is higher everywhere), which a pointwise fit would confuse with support.
    rows, features = [], {}
    for seed, level in (("a", 0.0), ("b", 5.0)):
        for i in range(6):
            for label, bump in ((1, 1.0), (0, 0.0)):
                row_id = f"{seed}{i}{label}"
                rows.append({"id": row_id, "doc": seed, "original_summary": seed, "label": label})
                features[row_id] = {"support": level + bump + 0.1 * i, "level": level}
    model = fit_pairwise(rows, features, ["support", "level"])
    assert model.weights[0] > 0
    scores = [model.score(features[r["id"]]) for r in rows]
    assert 0.0 < model.threshold < 1.0 and len(set(scores)) > 1
    with pytest.raises(ValueError, match="pair"):
        fit_pairwise([r for r in rows if r["label"] == 1], features, ["support"])


def _summedits_like(seed_count: int = 12) -> tuple[list[dict[str, object]], dict[str, dict[str, float]]]:
    """Rows in SummEdits' shape: per document one seed, a consistent and an inconsistent edit of it;
    "mean_pmi" carries the label (higher when consistent), "log_tokens" is noise."""
    import random

    rng = random.Random(3)
    rows: list[dict[str, object]] = []
    features: dict[str, dict[str, float]] = {}
    for doc in range(seed_count):
        level = rng.uniform(-0.5, 0.5)
        for i, label in enumerate((1, 0, 1, 0)):
            row_id = f"d{doc}-{i}"
            rows.append(
                {"id": row_id, "doc": f"doc {doc}", "original_summary": f"seed {doc}", "label": label}
            )
            values = {name: rng.gauss(0, 1) for name in FEATURES}
            values["mean_pmi"] = level + 1.5 * label + rng.gauss(0, 0.3)
            features[row_id] = values
    return rows, features


def test_grouped_cross_validation_and_selection_prefer_the_informative_feature() -> None:
    rows, features = _summedits_like()
    informative = cross_validate("pairwise", rows, features, CANDIDATES["pmi"])
    noise = cross_validate("pointwise", rows, features, CANDIDATES["lexical"])
    assert informative > 0.8 and noise < informative
    candidate, _, table = select(rows, features)
    assert "mean_pmi" in CANDIDATES[candidate]
    assert len(table) == 2 * len(CANDIDATES) and all(m in ("pointwise", "pairwise") for _, m, _ in table)

"""Judge calibration's numbers (agreement, kappa, TPR, TNR, flip rate) on hand-checkable counts, labels
parsing, the judge fingerprint, and the position-swap checks of pairwise and factuality judges."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from pilothouse.domain.calibrations import Confusion, Judgement
from pilothouse.domain.datasets import DatasetError, DatasetItem
from pilothouse.evals.calibration import (
    LabelledItem,
    agreement,
    calibration_metrics,
    cohens_kappa,
    confusion,
    flip_rate,
    human_label,
    judge_fingerprint,
    judge_labelled,
    judged_metrics,
    kappa_interval,
    kappa_strength,
    labelled_items,
    true_negative_rate,
    true_positive_rate,
)
from pilothouse.evals.judges import JudgeReply
from pilothouse.evals.scoring import Sample, build_scorer, is_model_graded


class PromptJudge:
    """A judge model whose reply is a function of the prompt."""

    def __init__(self, answer: Callable[[str], str]) -> None:
        self.answer = answer
        self.prompts: list[str] = []

    async def complete(self, messages: list[dict[str, Any]], **options: Any) -> JudgeReply:
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        return JudgeReply(self.answer(prompt), input_tokens=10, output_tokens=2)


def pairs(tp: int, fn: int, fp: int, tn: int) -> list[tuple[bool, bool]]:
    return [(True, True)] * tp + [(True, False)] * fn + [(False, True)] * fp + [(False, False)] * tn


# -- the numbers -------------------------------------------------------------------------------------


def test_the_rates_of_a_confusion_table() -> None:
    # 50 items: people pass 25, the judge passes 30, they agree on 35.
    c = confusion(pairs(tp=20, fn=5, fp=10, tn=15))
    assert c == Confusion(tp=20, fn=5, fp=10, tn=15) and c.n == 50
    assert agreement(c) == pytest.approx(0.7)
    # chance agreement: 0.5 * 0.6 + 0.5 * 0.4 = 0.5, so kappa = (0.7 - 0.5) / (1 - 0.5)
    assert cohens_kappa(c) == pytest.approx(0.4)
    assert true_positive_rate(c) == pytest.approx(0.8)
    assert true_negative_rate(c) == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("counts", "kappa"),
    [
        ((10, 0, 0, 10), 1.0),  # perfect
        ((0, 5, 5, 0), -1.0),  # always the opposite
        ((6, 0, 4, 0), 0.0),  # a judge that passes everything agrees 60% by chance alone
        ((4, 1, 2, 3), 0.4),  # po .7, pe .5
    ],
)
def test_kappa(counts: tuple[int, int, int, int], kappa: float) -> None:
    assert cohens_kappa(confusion(pairs(*counts))) == pytest.approx(kappa)


def test_undefined_numbers_are_none_not_zero() -> None:
    assert cohens_kappa(confusion(pairs(5, 0, 0, 0))) is None  # both raters always say pass
    empty = Confusion()
    assert (agreement(empty), cohens_kappa(empty), true_positive_rate(empty)) == (None, None, None)
    only_fails = confusion(pairs(0, 0, 1, 3))
    assert true_positive_rate(only_fails) is None and true_negative_rate(only_fails) == 0.75


def test_kappa_strength_words() -> None:
    words = [kappa_strength(k) for k in (-0.1, 0.0, 0.2, 0.21, 0.5, 0.8, 0.81, None)]
    assert words == [
        "none beyond chance",
        "none beyond chance",
        "slight",
        "fair",
        "moderate",
        "substantial",
        "almost perfect",
        "undefined",
    ]


def test_kappa_interval_brackets_kappa_and_is_reproducible() -> None:
    data = pairs(20, 5, 10, 15)
    low, high = kappa_interval(data) or (9.0, 9.0)
    assert low < 0.4 < high and high - low < 0.6
    assert kappa_interval(data) == (low, high)
    assert kappa_interval(data[:1]) is None


def test_flip_rate_leaves_out_checks_that_could_not_tell() -> None:
    assert flip_rate([True, False, False, None, False]) == (0.25, 1, 4)
    assert flip_rate([None]) == (None, 0, 0)


def test_calibration_metrics_counts_unmeasured_apart() -> None:
    judgements = [
        Judgement("1", True, 1.0, True, flipped=False),
        Judgement("2", True, 0.0, False, flipped=True),
        Judgement("3", False, 0.0, False, flipped=False),
        Judgement("4", False, None, None, error="could not find a score"),
    ]
    m = calibration_metrics(judgements, threshold=0.5, position_swap="both orders", scorer_type="pairwise")
    assert (m.n, m.measured, m.unmeasured) == (4, 3, 1)
    assert m.agreement == pytest.approx(2 / 3) and (m.tpr, m.tnr) == (0.5, 1.0)
    assert m.flip_rate == pytest.approx(1 / 3) and (m.flips, m.swap_checked) == (1, 3)
    assert m.swap_note == "1 of 3 flipped; both orders"
    assert type(m).from_dict(m.as_dict()) == m
    rubric = calibration_metrics(judgements, scorer_type="rubric")
    assert rubric.flip_rate is None and rubric.swap_note.startswith(
        "not applicable: rubric judges one answer"
    )


# -- labels ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "threshold", "passed"),
    [(True, None, True), ("FAIL", None, False), ("yes", None, True), ("0", None, False), (1, None, True)],
)
def test_human_labels(value: Any, threshold: float | None, passed: bool) -> None:
    assert human_label(value, threshold) is passed


def test_numeric_labels_need_a_threshold() -> None:
    assert human_label(4, 4) is True and human_label("3.5", 4) is False
    with pytest.raises(ValueError, match="--label-threshold"):
        human_label(4)
    with pytest.raises(ValueError, match="neither"):
        human_label("maybe")


def test_labelled_items_hide_the_label_from_the_judge() -> None:
    items = [
        DatasetItem(
            "a", {"topic": "tides", "output": "The Moon.", "label": "pass", "context": "Moon"}, "Moon"
        ),
        DatasetItem(
            "b", {"topic": "rain", "output": "Clouds."}, metadata={"label": 0, "baseline_output": "x"}
        ),
    ]
    prompt = [{"role": "user", "content": "Explain {{topic}}."}]
    first, second = labelled_items(items, prompt=prompt)
    assert first.label is True and second.label is False
    assert first.sample.input == {"topic": "tides", "context": "Moon"} and first.sample.output == "The Moon."
    assert first.sample.context == "Moon" and first.sample.expected == "Moon"
    assert first.sample.messages == ({"role": "user", "content": "Explain tides."},)
    assert second.sample.metadata == {"baseline_output": "x"}
    with pytest.raises(DatasetError, match="labels item 'a': no human label 'verdict'"):
        labelled_items(items, label_field="verdict")
    with pytest.raises(DatasetError, match="no 'output'"):
        labelled_items([DatasetItem("c", {"label": True})])


# -- identity ----------------------------------------------------------------------------------------


def test_the_fingerprint_ignores_names_and_thresholds_but_not_criteria_or_the_model() -> None:
    entry = {"type": "rubric", "criteria": "Correct?", "name": "quality", "threshold": 0.6, "weight": 2}
    judge = {"model": "gpt-4o-mini", "base_url": "http://x/v1", "api_key": "secret", "timeout_s": 30}
    base = judge_fingerprint(entry, judge)
    assert base == judge_fingerprint({"type": "rubric", "criteria": "Correct?", "timeout_s": 5}, judge)
    assert base == judge_fingerprint(entry, {**judge, "api_key": "other", "config": "elsewhere.yaml"})
    assert base != judge_fingerprint({**entry, "criteria": "Polite?"}, judge)
    assert base != judge_fingerprint(entry, {**judge, "model": "gpt-4o"})
    assert base != judge_fingerprint({**entry, "judge": "gpt-4o"}, judge)  # the scorer's own judge


def test_judged_metrics_asks_the_registry() -> None:
    assert is_model_graded("pairwise") and is_model_graded("faithfulness") and not is_model_graded("contains")
    spec = {
        "judge": {"model": "j"},
        "scorers": [
            {"type": "contains", "value": "x"},
            {"type": "rubric", "criteria": "ok?", "name": "quality"},
            {"type": "factuality"},
            {"type": "hallucination", "name": "local"},  # the detector alone: no judge
            {"type": "hallucination", "name": "cascade", "escalate": 0.25},  # escalates to the judge
            {"type": "hallucination", "name": "never", "judge": "j", "escalate": 0},  # never asks it
            "<SomeScorerObject>",
        ],
    }
    found = judged_metrics(spec)
    assert sorted(found) == ["cascade", "factuality", "quality"]
    # what the gate asks a calibration for is what `pilothouse judge calibrate` can calibrate
    from pilothouse.cli.judge import _choose_scorer
    from pilothouse.evals.scoring import build_scorer

    entries = [e for e in spec["scorers"] if isinstance(e, dict) and e["type"] == "hallucination"]
    built = [build_scorer({k: v for k, v in e.items() if k not in ("judge", "escalate")}) for e in entries]
    entry, _ = _choose_scorer({"scorers": entries}, built, None, "spec.yaml")
    assert entry["name"] == "cascade"
    assert found["quality"].judge_model == "j" and found["quality"].scorer_type == "rubric"
    assert judged_metrics({}) == {}


# -- running the judge, with the order checks --------------------------------------------------------


def _pairwise_items() -> list[LabelledItem]:
    return [
        LabelledItem(
            Sample(str(n), {"q": "which?"}, output=f"good {n}", metadata={"baseline_output": "bad"}), True
        )
        for n in range(4)
    ]


async def test_a_judge_that_always_picks_the_first_answer_flips_every_pair() -> None:
    scorer = build_scorer({"type": "pairwise"}, PromptJudge(lambda _prompt: "Verdict: A"))
    judgements = await judge_labelled(scorer, _pairwise_items())
    assert [j.flipped for j in judgements] == [True] * 4
    assert all(j.value == 0.5 and j.passed for j in judgements)  # inconsistent pairs count as ties
    m = calibration_metrics(judgements, position_swap=getattr(scorer, "position_swap", None))
    assert m.flip_rate == 1.0 and m.tpr == 1.0


async def test_a_fair_pairwise_judge_does_not_flip() -> None:
    def fair(prompt: str) -> str:
        first = re.search(r"\[Response A\]\n(.*)\n\[/Response A\]", prompt)
        assert first is not None
        return "Verdict: A" if first.group(1).startswith("good") else "Verdict: B"

    judge = PromptJudge(fair)
    judgements = await judge_labelled(build_scorer({"type": "pairwise"}, judge), _pairwise_items())
    assert [j.flipped for j in judgements] == [False] * 4 and len(judge.prompts) == 8  # no extra calls


def _fact_items() -> list[LabelledItem]:
    return [
        LabelledItem(Sample("1", {"q": "tides?"}, output="Moon", expected="Moon and Sun"), True),
        LabelledItem(
            Sample("2", {"q": "sky?"}, output="Blue, by Rayleigh scattering", expected="Blue"), True
        ),
    ]


def _by_length(prompt: str) -> str:
    expert = re.search(r"\[Expert answer\]\n(.*)\n\[/Expert answer\]", prompt)
    submitted = re.search(r"\[Submitted answer\]\n(.*)\n\[/Submitted answer\]", prompt)
    assert expert is not None and submitted is not None
    shorter = len(submitted.group(1)) < len(expert.group(1))
    return "Choice: A" if shorter else "Choice: B"


async def test_factuality_swaps_output_and_reference() -> None:
    judge = PromptJudge(_by_length)  # subset when shorter, superset when longer: consistent under a swap
    judgements = await judge_labelled(build_scorer({"type": "factuality"}, judge), _fact_items())
    assert [j.flipped for j in judgements] == [False, False] and len(judge.prompts) == 4
    assert any("[Expert answer]\nMoon\n" in prompt for prompt in judge.prompts)  # the swapped call

    biased = PromptJudge(lambda _prompt: "Choice: A")  # always "subset": contradicts itself when swapped
    judgements = await judge_labelled(build_scorer({"type": "factuality"}, biased), _fact_items())
    assert [j.flipped for j in judgements] == [True, True]
    skipped = await judge_labelled(build_scorer({"type": "factuality"}, biased), _fact_items(), swap=False)
    assert [j.flipped for j in skipped] == [None, None] and len(biased.prompts) == 6
    note = calibration_metrics(skipped, position_swap="swapped", swap_skipped=True).swap_note
    assert note == "skipped: the order check was not asked for; swapped"


async def test_rubric_unmeasured_replies_are_reported_not_scored() -> None:
    judge = PromptJudge(lambda prompt: "Score: 5" if "fine" in prompt else "I cannot tell.")
    items = [
        LabelledItem(Sample("1", {"q": "a"}, output="fine"), True),
        LabelledItem(Sample("2", {"q": "b"}, output="odd"), False),
    ]
    scorer = build_scorer({"type": "rubric", "criteria": "Good?", "logprobs": False}, judge)
    judgements = await judge_labelled(scorer, items)
    assert judgements[0].passed is True and judgements[1].passed is None
    assert judgements[1].error is not None and "could not find a score" in judgements[1].error
    m = calibration_metrics(
        judgements, position_swap=getattr(scorer, "position_swap", None), scorer_type="rubric"
    )
    assert (m.unmeasured, m.measured, m.flip_rate) == (1, 1, None) and len(judge.prompts) == 2

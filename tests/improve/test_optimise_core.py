"""The optimiser's pure core: what it tries next, what wins, what the proposer sees, what a proposal
may contain, and that its state survives a save and a load exactly (money included)."""

from __future__ import annotations

import json

from pilothouse.domain.money import Money
from pilothouse.improve._optimise_core import (
    Demo,
    Failure,
    OptimiseSettings,
    OptimiseState,
    candidate_messages,
    demo_sets,
    meta_prompt,
    minibatch,
    parse_proposal,
    split_template,
)


def _state(few_shot: int = 2, budget: str | None = None) -> OptimiseState:
    settings = OptimiseSettings(
        project="default", name="p", from_label="production", base_version=1, train="d-train",
        validation="d-validation", scorers=({"type": "exact"},), proposer="m", trials=5,
        few_shot=few_shot, budget_usd=budget, label="candidate",
    )  # fmt: skip
    return OptimiseState(settings)


def test_the_search_alternates_proposals_and_few_shot_sets_and_the_full_score_decides() -> None:
    state = _state(few_shot=2)
    state.instructions = ["", "Be brief."]
    state.demo_sets = [[], [0, 1], [1, 2]]
    baseline = state.add_candidate(0, 0, 0)
    baseline.full_score = 0.4
    proposed = state.add_candidate(1, 0, 1)
    proposed.minibatch_scores = {"a": 1.0, "b": 1.0}
    assert state.next_pairing(1) == ("propose", 0)
    assert state.next_pairing(2) == ("pair", 1)  # the leader's instruction with an untried few-shot set
    assert state.add_candidate(1, 0, 3) is proposed  # a pairing is scored once
    assert state.best() is baseline  # a minibatch estimate never wins without a full evaluation
    assert state.unconfirmed_leaders(3) == [proposed]
    proposed.full_score = 0.9
    assert state.best() is proposed and state.ranked()[0] is proposed
    state.instructions.append("Pending.")
    assert state.unpaired_instruction() == 2
    zero_shot = _state(few_shot=0)
    zero_shot.instructions, zero_shot.demo_sets = [""], [[]]
    zero_shot.add_candidate(0, 0, 0).full_score = 0.1
    assert zero_shot.next_pairing(2) == ("propose", 0)  # no few-shot sets: every trial proposes


def test_minibatches_and_few_shot_sets_are_reproducible() -> None:
    ids = [f"i{n}" for n in range(50)]
    assert minibatch(ids, 10, 3, 0) == minibatch(ids, 10, 3, 0) != minibatch(ids, 10, 4, 0)
    assert len(set(minibatch(ids, 10, 3, 0))) == 10 and minibatch(ids, 99, 1, 0) == ids
    sets = demo_sets(6, 2, 4, seed=1)
    assert sets[0] == [] and len(sets) == 5 and all(len(s) == 2 for s in sets[1:])
    assert len({tuple(s) for s in sets}) == 5 and sets == demo_sets(6, 2, 4, seed=1)
    assert demo_sets(0, 2, 4, 0) == [[]] and demo_sets(1, 3, 4, 0) == [[], [0]]


def test_the_proposer_sees_scores_ascending_and_failures_and_cannot_smuggle_placeholders() -> None:
    state = _state()
    state.instructions = ["", "Answer in one word.", "Answer."]
    for index, score in ((0, 0.2), (1, 0.9), (2, 0.5)):
        state.add_candidate(index, 0, index).full_score = score
    state.failures = [Failure("Text: not good", "The sentiment is positive.", "negative")]
    text = meta_prompt(state, [{"role": "user", "content": "Text: {{text}}"}])[0]["content"]
    shown = [line for line in text.splitlines() if line.startswith("instruction: ")]
    assert shown == [
        'instruction: "(no instruction)"',
        'instruction: "Answer."',
        'instruction: "Answer in one word."',
    ]
    assert "expected: negative" in text and "Text: {{text}}" in text
    assert parse_proposal("Sure! <instruction> Say {{expected}}. </instruction>") == "Say { {expected} }."
    assert (
        parse_proposal("  Just this.  ") == "Just this."
        and parse_proposal("<instruction></instruction>") is None
    )


def test_candidate_prompts_keep_the_variables_and_quote_the_demonstrations() -> None:
    instruction, rest = split_template(
        [{"role": "system", "content": "Old."}, {"role": "user", "content": "{{q}}"}]
    )
    assert (instruction, rest) == ("Old.", [{"role": "user", "content": "{{q}}"}])
    assert split_template("Q: {{q}}") == ("", [{"role": "user", "content": "Q: {{q}}"}])
    messages = candidate_messages("New.", [Demo("1", "Q: {{x}}", "A")], rest)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "Q: { {x} }" and messages[-1]["content"] == "{{q}}"


def test_state_round_trips_exactly_and_the_budget_counts_what_comes_next() -> None:
    state = _state(budget="0.01")
    state.instructions = [""]
    state.add_candidate(0, 0, 0).minibatch_scores = {"a": 1.0}
    state.add_eval_cost(Money.from_usd("0.003"), items=3, unpriced=1)
    state.add_proposer_cost(Money.from_usd("0.0001"))
    state.add_proposer_cost(None)
    assert state.spent == Money.from_usd("0.0031") and state.unpriced_calls == 2
    assert state.cost_of(5, 1) == Money.from_usd(
        "0.00505"
    )  # $0.001 an item; $0.00005 a proposer call on average
    assert not state.over_budget(state.cost_of(6)) and state.over_budget(state.cost_of(7))
    loaded = OptimiseState.from_document(json.loads(json.dumps(state.document())))
    assert loaded == state

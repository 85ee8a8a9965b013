"""The pure core of prompt optimisation: the search's state (instructions, few-shot sets, candidates
and their scores, what was spent), the choices it makes (which pairing to try next, which minibatch,
which candidates earn a full evaluation, which one wins), the proposer's meta-prompt and the candidate
prompt's messages. No I/O: :mod:`pilothouse.improve.optimise` runs the evaluations and calls.

The method borrows from three papers. OPRO: a proposer model sees earlier instructions with their
scores (ascending, best last) and writes a new one. GEPA: it also sees failing training examples (the
input, what the prompt answered, what was expected) to reflect on. MIPROv2: instructions and few-shot
sets are searched jointly, candidates are scored on validation minibatches, and only the best few get
a full validation evaluation, which decides.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pilothouse.domain.money import Money

__all__ = [
    "STATE_FORMAT",
    "Candidate",
    "Demo",
    "Failure",
    "OptimiseSettings",
    "OptimiseState",
    "candidate_messages",
    "demo_sets",
    "meta_prompt",
    "minibatch",
    "parse_proposal",
    "split_template",
]

STATE_FORMAT = 1
MAX_INSTRUCTION_CHARS = 4000  # a proposal longer than this is cut (a proposer that rambles)
_SHOWN_FAILURES = 5  # failing train examples the proposer sees
_SHOWN_HISTORY = 10  # earlier instructions the proposer sees (the best ones)
_FIELD_CHARS = 500  # each example's input/output/expected, as the proposer sees it


@dataclass(frozen=True, slots=True)
class OptimiseSettings:
    """What a run searches with; fixed for its life (a resumed run keeps them)."""

    project: str
    name: str
    from_label: str
    base_version: int
    train: str
    validation: str
    scorers: tuple[Any, ...]
    proposer: str
    trials: int
    few_shot: int
    budget_usd: str | None  # a decimal string (Money is not a float)
    label: str
    minibatch_size: int = 20
    full_every: int = 5  # a full validation evaluation of the best unconfirmed candidate this often
    finalists: int = 3  # candidates that get a full evaluation at the end
    seed: int = 0

    @property
    def budget(self) -> Money | None:
        """The cap on what the run may spend, or None."""
        return None if self.budget_usd is None else Money.from_usd(self.budget_usd)


@dataclass(frozen=True, slots=True)
class Demo:
    """A few-shot demonstration: the rendered user turn and the answer to show."""

    item_id: str
    user: str
    assistant: str


@dataclass(frozen=True, slots=True)
class Failure:
    """A train item the current prompt gets wrong, as the proposer sees it."""

    input: str
    output: str
    expected: str


@dataclass(slots=True)
class Candidate:
    """An instruction paired with a few-shot set, and what it scored: per validation item on the
    minibatches it met, and the full validation mean once it had a full evaluation."""

    id: int
    instruction: int  # index into OptimiseState.instructions
    demos: int  # index into OptimiseState.demo_sets
    trial: int  # 0: the starting prompt
    minibatch_scores: dict[str, float] = field(default_factory=dict)
    full_score: float | None = None
    full_run: str | None = None

    @property
    def minibatch_mean(self) -> float | None:
        """The mean over the validation items it was scored on (None: not scored yet)."""
        values = list(self.minibatch_scores.values())
        return sum(values) / len(values) if values else None

    @property
    def estimate(self) -> float:
        """The best estimate of its validation score: the full mean when known, else the minibatch
        mean (-1 when unscored, so it ranks last)."""
        if self.full_score is not None:
            return self.full_score
        mean = self.minibatch_mean
        return -1.0 if mean is None else mean


@dataclass(slots=True)
class OptimiseState:
    """Everything a run knows, saved after every step so that ``--resume`` continues where it
    stopped. ``status``: running, finished, budget (stopped by the cap) or failed."""

    settings: OptimiseSettings
    instructions: list[str] = field(default_factory=list)
    demo_pool: list[Demo] = field(default_factory=list)
    demo_sets: list[list[int]] = field(default_factory=list)  # indexes into demo_pool; set 0 is empty
    failures: list[Failure] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    trials_done: int = 0
    eval_spent_usd: str = "0"  # decimal strings (Money is not a float)
    proposer_spent_usd: str = "0"
    unpriced_calls: int = 0  # calls whose cost is unknown (a model without a price)
    proposer_calls: int = 0
    eval_runs: list[str] = field(default_factory=list)
    items_evaluated: int = 0
    prepared: bool = False
    status: str = "running"
    stopped_because: str | None = None
    stored_version: int | None = None
    stored_candidate: int | None = None  # the candidate stored as stored_version

    # -- money ----------------------------------------------------------------------------------------

    @property
    def spent(self) -> Money:
        """What the run's calls cost so far (evaluations and proposals)."""
        return Money.from_usd(self.eval_spent_usd) + Money.from_usd(self.proposer_spent_usd)

    def add_eval_cost(self, cost: Money, items: int, unpriced: int) -> None:
        """Count an evaluation of ``items`` items: what it cost, and its calls of unknown cost."""
        self.eval_spent_usd = str(Money.from_usd(self.eval_spent_usd) + cost)
        self.items_evaluated += items
        self.unpriced_calls += unpriced

    def add_proposer_cost(self, cost: Money | None) -> None:
        """Count a proposer call; None is an unknown cost, counted apart, never as free."""
        self.proposer_calls += 1
        if cost is None:
            self.unpriced_calls += 1
        else:
            self.proposer_spent_usd = str(Money.from_usd(self.proposer_spent_usd) + cost)

    def cost_of(self, items: int, proposals: int = 0) -> Money:
        """What evaluating ``items`` items and making ``proposals`` proposer calls will likely cost,
        at the averages so far (nothing known yet: zero)."""
        per_item = (
            Money.from_usd(self.eval_spent_usd) / self.items_evaluated if self.items_evaluated else Money.ZERO
        )
        per_call = (
            Money.from_usd(self.proposer_spent_usd) / self.proposer_calls
            if self.proposer_calls
            else Money.ZERO
        )
        return per_item * items + per_call * proposals

    def over_budget(self, upcoming: Money = Money.ZERO) -> bool:
        """Whether spending ``upcoming`` more would pass the cap."""
        budget = self.settings.budget
        return budget is not None and self.spent + upcoming > budget

    # -- candidates -----------------------------------------------------------------------------------

    @property
    def baseline(self) -> Candidate:
        """The starting prompt (candidate 0)."""
        return self.candidates[0]

    def add_candidate(self, instruction: int, demos: int, trial: int) -> Candidate:
        """A new candidate (or the existing one of the same pairing: each pairing is scored once)."""
        for candidate in self.candidates:
            if (candidate.instruction, candidate.demos) == (instruction, demos):
                return candidate
        candidate = Candidate(len(self.candidates), instruction, demos, trial)
        self.candidates.append(candidate)
        return candidate

    def ranked(self) -> list[Candidate]:
        """Candidates, best estimate first (earlier candidates first among equals)."""
        return sorted(self.candidates, key=lambda c: (-c.estimate, c.id))

    def best(self) -> Candidate:
        """The winner: the best full validation mean (the starting prompt's is always known)."""
        confirmed = [c for c in self.candidates if c.full_score is not None]
        return min(confirmed, key=lambda c: (-(c.full_score or 0.0), c.id))

    def unconfirmed_leaders(self, count: int) -> list[Candidate]:
        """Up to ``count`` of the best candidates by minibatch mean that have no full evaluation."""
        return [c for c in self.ranked() if c.full_score is None and c.minibatch_scores][:count]

    def unpaired_instruction(self) -> int | None:
        """An instruction proposed but never scored (the run stopped right after the proposal):
        the next proposing trial uses it instead of paying for another."""
        paired = {c.instruction for c in self.candidates}
        return next((i for i in range(len(self.instructions)) if i not in paired), None)

    def next_pairing(self, trial: int) -> tuple[str, int]:
        """What trial ``trial`` tries: ``("propose", demos)`` asks the proposer for a new instruction
        to pair with few-shot set ``demos`` (the best so far); every other trial, while few-shot sets
        are left untried with the best instruction, ``("pair", demos)`` tries one of those instead."""
        leader = self.ranked()[0]
        if self.settings.few_shot > 0 and trial % 2 == 0:
            tried = {c.demos for c in self.candidates if c.instruction == leader.instruction}
            for index in range(len(self.demo_sets)):
                if index not in tried:
                    return ("pair", index)
        return ("propose", leader.demos)

    # -- persistence ----------------------------------------------------------------------------------

    def document(self) -> dict[str, Any]:
        """As JSON (what the state file holds)."""
        data = asdict(self)
        data["format"] = STATE_FORMAT
        data["settings"]["scorers"] = list(self.settings.scorers)
        return data

    @classmethod
    def from_document(cls, data: Mapping[str, Any]) -> OptimiseState:
        """The state a :meth:`document` saved; ValueError when it is not one."""
        if not isinstance(data, Mapping) or data.get("format") != STATE_FORMAT:
            raise ValueError("not an optimisation state file of this version")
        try:
            raw = dict(data["settings"])
            raw["scorers"] = tuple(raw["scorers"])
            state = cls(settings=OptimiseSettings(**raw))
            state.instructions = [str(i) for i in data["instructions"]]
            state.demo_pool = [Demo(**d) for d in data["demo_pool"]]
            state.demo_sets = [[int(i) for i in s] for s in data["demo_sets"]]
            state.failures = [Failure(**f) for f in data["failures"]]
            state.candidates = [Candidate(**c) for c in data["candidates"]]
            for key in ("trials_done", "unpriced_calls", "proposer_calls", "items_evaluated"):
                setattr(state, key, int(data[key]))
            state.eval_spent_usd = str(data["eval_spent_usd"])
            state.proposer_spent_usd = str(data["proposer_spent_usd"])
            state.eval_runs = [str(r) for r in data["eval_runs"]]
            state.prepared = bool(data["prepared"])
            state.status = str(data["status"])
            state.stopped_because = data.get("stopped_because")
            state.stored_version = data.get("stored_version")
            state.stored_candidate = data.get("stored_candidate")
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a damaged optimisation state file ({exc})") from None
        return state


# -- prompts ----------------------------------------------------------------------------------------


def split_template(template: str | Sequence[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """A prompt version's template as (its instruction: the first system message's text, "" when it
    has none; the other messages, kept as they are). A text prompt is one user message."""
    if isinstance(template, str):
        return "", [{"role": "user", "content": template}]
    messages = [dict(m) for m in template]
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        return str(messages[0]["content"]), messages[1:]
    return "", messages


def _literal(text: str) -> str:
    """Text shown as it is in a template (a demonstration's ``{{`` is not a placeholder)."""
    return text.replace("{{", "{ {").replace("}}", "} }")


def candidate_messages(
    instruction: str, demos: Sequence[Demo], rest: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """A candidate prompt: the instruction as the system message, then each demonstration as a user
    and an assistant turn, then the prompt's own messages (the ones with the variables)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instruction}] if instruction else []
    for demo in demos:
        messages.append({"role": "user", "content": _literal(demo.user)})
        messages.append({"role": "assistant", "content": _literal(demo.assistant)})
    messages.extend(dict(m) for m in rest)
    return messages


def demo_sets(pool_size: int, size: int, count: int, seed: int) -> list[list[int]]:
    """Few-shot sets: the empty set first, then up to ``count`` different samples of ``size`` demos
    from a pool of ``pool_size`` (seeded, so a run is reproducible)."""
    sets: list[list[int]] = [[]]
    if size <= 0 or pool_size <= 0:
        return sets
    rng = random.Random(seed)
    take = min(size, pool_size)
    seen: set[tuple[int, ...]] = set()
    for _ in range(count * 4):  # a small pool has fewer distinct sets than asked for
        chosen = tuple(sorted(rng.sample(range(pool_size), take)))
        if chosen not in seen:
            seen.add(chosen)
            sets.append(list(chosen))
        if len(sets) > count:
            break
    return sets


def minibatch(item_ids: Sequence[str], size: int, trial: int, seed: int) -> list[str]:
    """The validation items trial ``trial`` is scored on: a sample of ``size`` (all when fewer), the
    same for the same trial and seed (a resumed trial sees the same items)."""
    if size >= len(item_ids):
        return list(item_ids)
    digest = hashlib.sha256(f"{seed}:{trial}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).sample(list(item_ids), size)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _FIELD_CHARS else text[: _FIELD_CHARS - 3] + "..."


def meta_prompt(state: OptimiseState, prompt_messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The proposer's request (OPRO's meta-prompt with GEPA's reflection on failures): the task's
    messages, earlier instructions with their scores in ascending order (best last), failing train
    examples, and the ask: one new instruction between <instruction> tags."""
    shown = sorted(
        (c for c in state.candidates if c.minibatch_scores or c.full_score is not None),
        key=lambda c: (c.estimate, -c.id),
    )
    history, seen = [], set()
    for candidate in reversed(shown):  # each instruction once, at its best pairing
        if candidate.instruction not in seen:
            seen.add(candidate.instruction)
            history.append(candidate)
    history = list(reversed(history[:_SHOWN_HISTORY]))
    lines = [
        "You improve the system instruction of a prompt for a language model.",
        "The prompt's messages (placeholders in {{ }} are filled per request):",
        json.dumps(list(prompt_messages), ensure_ascii=False),
        "",
        "Earlier instructions and their scores (0 to 1, higher is better), in ascending order:",
    ]
    for candidate in history:
        text = state.instructions[candidate.instruction] or "(no instruction)"
        lines.append(f"instruction: {json.dumps(text, ensure_ascii=False)}")
        lines.append(f"score: {candidate.estimate:.3f}")
    if state.failures:
        lines += ["", "Examples the current prompt gets wrong:"]
        for failure in state.failures[:_SHOWN_FAILURES]:
            lines.append(f"input: {_clip(failure.input)}")
            lines.append(f"output: {_clip(failure.output)}")
            lines.append(f"expected: {_clip(failure.expected)}")
    lines += [
        "",
        "Write a new instruction, different from the earlier ones, that scores as high as possible. "
        "Reply with the instruction only, between <instruction> and </instruction>.",
    ]
    return [{"role": "user", "content": "\n".join(lines)}]


_TAGGED = re.compile(r"<instruction>(.*?)(?:</instruction>|$)", re.DOTALL | re.IGNORECASE)


def parse_proposal(text: str) -> str | None:
    """The instruction in a proposer's reply (between the tags when they are there, else the whole
    reply), stripped and cut to a sane length, its placeholders made plain text; None when empty."""
    match = _TAGGED.search(text)
    found = (match.group(1) if match else text).strip().strip('"').strip()
    # a proposed instruction is text, never a template: "{{expected}}" must not leak the answer
    return _literal(found[:MAX_INSTRUCTION_CHARS]) or None

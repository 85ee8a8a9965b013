"""Prompt optimisation, the use case: search instructions (written by a proposer model) and few-shot
sets for a registered prompt, score candidates on a validation split through
:meth:`pilothouse.evals.Evaluations.run` (minibatches, then full evaluations of the best few), and
store the winner as a NEW version under a label such as ``candidate``. It never moves ``production``:
that is :func:`pilothouse.improve.promotion.promote_prompt`, gated on the held-out test split.

The search itself (what to try, what wins) is the pure core in :mod:`pilothouse.improve._optimise_core`;
this module runs its evaluations and proposer calls, counts what they cost, stops at the budget, and
saves the state after every step so that a run can be resumed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pilothouse.domain.chat import CallContext, ChatModel, ModelCallError
from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.ids import new_trace_id
from pilothouse.domain.money import Money
from pilothouse.domain.prompts import PromptVersion, check_label
from pilothouse.domain.templating import TemplateError, lookup_variable, render, to_text
from pilothouse.domain.traces import SpanRecord, TraceAttributes
from pilothouse.evals import Evaluations
from pilothouse.evals.spec import parse_spec
from pilothouse.improve._optimise_core import (
    Candidate,
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
from pilothouse.improve._optimise_files import OptimiseError, load_state, save_state, state_file
from pilothouse.prompts import PromptNotFound, PromptRegistry

__all__ = ["OptimiseError", "Optimiser", "load_state", "state_file"]

TRAIN_ITEMS = 100  # train items the starting prompt is run on (for failures and demonstrations)
DEMO_SETS = 4  # few-shot sets sampled besides the empty one
MAX_ITEMS = 5000  # items read from a split at most


class Optimiser:
    """One optimisation run of a registered prompt. ``target`` holds the eval target's options besides
    the messages (``config``, ``model``, ...); ``proposer`` writes the instructions; ``progress``
    hears a line per step."""

    def __init__(
        self,
        evaluations: Evaluations,
        registry: PromptRegistry,
        state: OptimiseState,
        *,
        path: Path,
        proposer: ChatModel,
        target: Mapping[str, Any],
        base_dir: Path,
        actor: str | None,
        progress: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.evaluations = evaluations
        self.registry = registry
        self.state = state
        self.path = path
        self.proposer = proposer
        self.target = dict(target)
        self.base_dir = base_dir
        self.actor = actor
        self.progress = progress
        settings = state.settings
        self.version = self._version(settings)
        self.instruction, self.rest = split_template(self.version.template)
        self.train = self._items(settings.train)
        self.validation = self._items(settings.validation)
        if not self.validation:
            raise OptimiseError(f"the validation dataset {settings.validation!r} has no items")
        for dataset, items in ((settings.train, self.train), (settings.validation, self.validation)):
            self._check_variables(dataset, items)

    def _check_variables(self, dataset: str, items: Sequence[DatasetItem]) -> None:
        """Every item must give every variable the prompt uses (before anything is called)."""
        for name in self.version.variables:
            missing = [item for item in items if not _has(name, item.variables())]
            if missing:
                given = ", ".join(sorted(missing[0].input)) or "none"
                raise OptimiseError(
                    f"prompt {self.version.name!r} v{self.version.version} uses {{{{{name}}}}}, which "
                    f"{len(missing)} of the {len(items)} items of dataset {dataset!r} lack (item "
                    f"{missing[0].id!r} has input variables: {given}); use a dataset whose items "
                    "hold the prompt's variables"
                )

    @classmethod
    def check_settings(cls, settings: OptimiseSettings) -> None:
        """Refuse labels the optimiser must not move (before anything is called)."""
        check_label(settings.label)
        if settings.label in ("production", settings.from_label):
            raise OptimiseError(
                f"the optimiser stores its winner under a label of its own, not {settings.label!r}; "
                "promote it with 'pilothouse prompts promote ... --dataset TEST'"
            )

    def _version(self, settings: OptimiseSettings) -> PromptVersion:
        try:
            return self.registry.get(settings.project, settings.name, version=settings.base_version)
        except PromptNotFound as exc:
            raise OptimiseError(str(exc)) from None

    def _items(self, dataset: str) -> list[DatasetItem]:
        project = self.state.settings.project
        version = self.evaluations.evals.get_version(project, dataset)
        if version is None:
            raise OptimiseError(f"no dataset {dataset!r} in project {project!r}")
        items = []
        for _position, item in self.evaluations.evals.iter_items(version.id):
            items.append(item)
            if len(items) >= MAX_ITEMS:
                break
        return items

    # -- steps ------------------------------------------------------------------------------------------

    async def run(self) -> OptimiseState:
        """Go on from where the state is to the end (or the budget); the state is saved after each
        step. Errors of calls and evaluations propagate, the state saved up to the last step."""
        state = self.state
        if state.status == "finished":
            return state
        state.status, state.stopped_because = "running", None
        if state.prepared:
            self.progress(f"resuming after trial {state.trials_done} of {state.settings.trials}")
        await self.proposer.start(self._write_span)
        try:
            if not state.prepared:
                await self._prepare()
            while state.trials_done < state.settings.trials and state.status == "running":
                await self._trial(state.trials_done + 1)
            await self._finish()
        finally:
            await self.proposer.close()
        return state

    def _stop_for_budget(self, upcoming: Money, what: str) -> bool:
        if not self.state.over_budget(upcoming):
            return False
        state = self.state
        state.status = "budget"
        state.stopped_because = (
            f"the budget ${state.settings.budget_usd} would be passed by {what} "
            f"(spent {state.spent.display()}, next about {upcoming.display()})"
        )
        self.progress(f"stopping: {state.stopped_because}")
        save_state(state, self.path)
        return True

    async def _prepare(self) -> None:
        """Score the starting prompt on all of validation, then on train for failures and demos;
        each step is skipped when done already (a budget stop between them resumes at the second)."""
        state = self.state
        state.instructions = state.instructions or [self.instruction]
        baseline = state.add_candidate(0, 0, 0)
        state.demo_sets = state.demo_sets or [[]]
        if baseline.full_score is None:
            if self._stop_for_budget(Money.ZERO, "the starting prompt's evaluation"):
                return
            scores, _outputs, run_id = await self._evaluate(baseline, self.validation, "validation")
            baseline.full_score, baseline.full_run = _mean(scores), run_id
            baseline.minibatch_scores.update(scores)
            save_state(state, self.path)
            self.progress(
                f"starting prompt (version {self.version.version}): validation {baseline.full_score:.3f}"
            )
        train = self.train[:TRAIN_ITEMS]
        if train:
            if self._stop_for_budget(state.cost_of(len(train)), "the train evaluation"):
                return
            train_scores, outputs, _run = await self._evaluate(baseline, train, "train")
            self._learn_from_train(train, train_scores, outputs)
        state.demo_sets = demo_sets(
            len(state.demo_pool), state.settings.few_shot, DEMO_SETS, state.settings.seed
        )
        state.prepared = True
        save_state(state, self.path)

    def _user_text(self, item: DatasetItem) -> str | None:
        users = [m for m in self.rest if m.get("role") == "user" and isinstance(m.get("content"), str)]
        if not users:
            return None
        return render(str(users[-1]["content"]), item.variables())

    def _learn_from_train(
        self, items: Sequence[DatasetItem], scores: Mapping[str, float], outputs: Mapping[str, str]
    ) -> None:
        state = self.state
        for item in items:
            user = self._user_text(item)
            if user is None:
                continue
            output = outputs.get(item.id, "")
            if scores.get(item.id, 0.0) >= 1.0 and output:
                state.demo_pool.append(Demo(item.id, user, output))  # bootstrapped: the prompt got it right
            elif item.expected is not None:
                state.failures.append(Failure(user, output, to_text(item.expected)))
        used = {demo.item_id for demo in state.demo_pool}
        if len(state.demo_pool) < state.settings.few_shot:  # labelled demos: the dataset's answers
            for item in items:
                user = self._user_text(item)
                if item.id not in used and item.expected is not None and user is not None:
                    state.demo_pool.append(Demo(item.id, user, to_text(item.expected)))
                if len(state.demo_pool) >= state.settings.few_shot * 2:
                    break

    async def _trial(self, trial: int) -> None:
        state, settings = self.state, self.state.settings
        batch_ids = minibatch([i.id for i in self.validation], settings.minibatch_size, trial, settings.seed)
        kind, demos = state.next_pairing(trial)
        pending = state.unpaired_instruction() if kind == "propose" else None
        calls = 1 if kind == "propose" and pending is None else 0
        if self._stop_for_budget(state.cost_of(len(batch_ids), calls), f"trial {trial}"):
            return
        instruction = state.ranked()[0].instruction  # a pairing trial tries the leader's instruction
        if pending is not None:
            instruction = pending
        elif kind == "propose":
            proposed = await self._propose()
            if proposed in state.instructions:
                instruction = state.instructions.index(proposed)
            elif proposed is not None:
                state.instructions.append(proposed)
                instruction = len(state.instructions) - 1
        candidate = state.add_candidate(instruction, demos, trial)
        wanted = set(batch_ids) - set(candidate.minibatch_scores)
        items = [i for i in self.validation if i.id in wanted]
        if items:
            scores, _outputs, _run = await self._evaluate(candidate, items, f"trial {trial}")
            candidate.minibatch_scores.update(scores)
        state.trials_done = trial
        save_state(state, self.path)
        leader = state.ranked()[0]
        self.progress(
            f"trial {trial}/{settings.trials}: candidate {candidate.id} "
            f"({len(state.demo_sets[demos])} demos) "
            f"minibatch {candidate.minibatch_mean or 0:.3f}; best {leader.estimate:.3f}; "
            f"spent {state.spent.display()}"
        )
        if trial % settings.full_every == 0:
            await self._confirm(state.unconfirmed_leaders(1))

    async def _confirm(self, candidates: Sequence[Candidate]) -> None:
        """Full validation evaluations (each saved as it ends)."""
        state = self.state
        for candidate in candidates:
            upcoming = state.cost_of(len(self.validation))
            if self._stop_for_budget(upcoming, f"the full evaluation of candidate {candidate.id}"):
                return
            scores, _outputs, run_id = await self._evaluate(candidate, self.validation, "validation")
            candidate.full_score, candidate.full_run = _mean(scores), run_id
            candidate.minibatch_scores.update(scores)
            save_state(state, self.path)
            self.progress(f"candidate {candidate.id}: full validation {candidate.full_score:.3f}")

    async def _finish(self) -> None:
        state = self.state
        if state.status == "running":
            await self._confirm(state.unconfirmed_leaders(state.settings.finalists))
        if not state.candidates or state.baseline.full_score is None:
            save_state(state, self.path)
            return
        best, baseline = state.best(), state.baseline
        if best.id not in (baseline.id, state.stored_candidate):  # a budget-stopped run may find better
            assert best.full_score is not None and baseline.full_score is not None
            stored = self._store(best)
            state.stored_version, state.stored_candidate = stored.version, best.id
            self.progress(
                f"stored {stored.name}@{stored.version} as {state.settings.label!r}: validation "
                f"{baseline.full_score:.3f} -> {best.full_score:.3f}"
            )
        elif best.id == baseline.id and state.status == "running":
            self.progress("no candidate beat the starting prompt on validation; nothing stored")
        if state.status == "running":
            state.status = "finished"
        save_state(state, self.path)

    def _store(self, best: Candidate) -> PromptVersion:
        state, settings = self.state, self.state.settings
        document = self.version.document()
        messages = candidate_messages(
            state.instructions[best.instruction],
            [state.demo_pool[i] for i in state.demo_sets[best.demos]],
            self.rest,
        )
        document.update(type="chat", prompt=messages)
        document["message"] = (
            f"optimised from version {settings.base_version} ({settings.from_label}) "
            f"on {settings.validation}: "
            f"validation {state.baseline.full_score:.3f} -> {best.full_score:.3f}"
        )
        for key in ("name", "version", "labels", "created_by", "created_ns", "variables"):
            document.pop(key, None)
        return self.registry.create(
            settings.project, settings.name, document, actor=self.actor, labels=[settings.label]
        )

    # -- calls --------------------------------------------------------------------------------------------

    def _write_span(self, record: SpanRecord) -> None:
        self.evaluations.evals.write_spans([record])

    async def _propose(self) -> str | None:
        state = self.state
        context = CallContext(
            trace_id=new_trace_id(),
            project_id=state.settings.project,
            name="optimise propose",
            attributes={"optimise.prompt": state.settings.name, "optimise.trial": state.trials_done + 1},
            trace=TraceAttributes(
                name="optimise", tags=("optimise",), metadata={"prompt": state.settings.name}
            ),
        )
        request = {
            "model": self.proposer.model,
            "messages": meta_prompt(state, self.rest),
            "temperature": 1.0,
        }
        try:
            reply = await self.proposer.chat(request, context)
        except ModelCallError as exc:
            save_state(state, self.path)
            raise OptimiseError(f"the proposer {self.proposer.model!r} failed: {exc.message}") from None
        state.add_proposer_cost(reply.cost_usd)
        save_state(state, self.path)
        return parse_proposal(reply.text)

    def check(self) -> None:
        """Build the starting prompt's eval spec on one item (a bad scorer or target fails here,
        before any call)."""
        messages = candidate_messages(self.instruction, [], self.rest)
        self._spec(messages, self.validation, "check")

    def _candidate_spec(self, candidate: Candidate, items: Sequence[DatasetItem], tag: str) -> Any:
        state = self.state
        messages = candidate_messages(
            state.instructions[candidate.instruction],
            [state.demo_pool[i] for i in state.demo_sets[candidate.demos]],
            self.rest,
        )
        return self._spec(messages, items, f"candidate {candidate.id} {tag}")

    def _spec(self, messages: list[dict[str, Any]], items: Sequence[DatasetItem], tag: str) -> Any:
        """The eval spec of ``messages`` on ``items``: a whole split by its name (the run is linked
        to it, as the gate's runs are), a sample as a version of one dataset ``NAME-optimise``
        (the same sample is the same version; not a dataset per run)."""
        settings = self.state.settings
        ids = [i.id for i in items]
        dataset = ""
        for split, loaded in ((settings.validation, self.validation), (settings.train, self.train)):
            if len(loaded) < MAX_ITEMS and ids == [i.id for i in loaded]:
                dataset = split
                break
        if not dataset:
            sample, _ = self.evaluations.evals.import_items(
                settings.project, f"{settings.name}-optimise", items, source="optimiser sample"
            )
            dataset = f"{sample.name}@{sample.version}"
        params = dict(self.version.parameters)
        if self.version.tools is not None:
            params["tools"] = [dict(t) for t in self.version.tools]
        if self.version.response_format is not None:
            params["response_format"] = dict(self.version.response_format)
        target = {"model": self.version.model, **self.target, "messages": messages}
        target["params"] = {**params, **dict(target.get("params") or {})}
        data = {
            "name": f"optimise {settings.name} {tag}",
            "project": settings.project,
            "dataset": dataset,
            "target": target,
            "scorers": list(settings.scorers),
        }
        return parse_spec(data, base_dir=self.base_dir, source="optimiser")

    async def _evaluate(
        self, candidate: Candidate, items: Sequence[DatasetItem], tag: str
    ) -> tuple[dict[str, float], dict[str, str], str]:
        """Run the candidate on ``items`` through the evaluations service: the score of each item
        (the mean of its scorers; a failed call scores 0), the outputs, and the run's id."""
        run = await self.evaluations.run(self._candidate_spec(candidate, items, tag))
        state = self.state
        state.eval_runs.append(run.id)
        summary = run.summary
        if summary is not None:
            cost = summary.cost_usd + summary.judge_cost_usd
            state.add_eval_cost(cost, len(items), summary.unpriced + summary.judge_unpriced)
        scores: dict[str, float] = {}
        outputs: dict[str, str] = {}
        for result in self.evaluations.evals.iter_results(run.id):
            values = [s.value for s in result.scores if s.value is not None]
            scores[result.item_id] = sum(values) / len(values) if values and result.error is None else 0.0
            outputs[result.item_id] = result.output or ""
        for item in items:
            scores.setdefault(item.id, 0.0)
        return scores, outputs, run.id


def _mean(scores: Mapping[str, float]) -> float:
    return sum(scores.values()) / len(scores) if scores else 0.0


def _has(name: str, variables: Mapping[str, Any]) -> bool:
    try:
        lookup_variable(name, variables)
    except TemplateError:
        return False
    return True

"""Judge calibration: how far a model-graded scorer agrees with people, measured before its scores may
gate a release (``pilothouse judge calibrate``; ``pilothouse gate`` refuses an uncalibrated judge).

The judge grades items people labelled pass or fail; with the human label as the truth and *pass* as
the positive class:

- **agreement**: the share of items where the judge's pass/fail is the human's;
- **Cohen's kappa**: agreement beyond chance, ``(p_o - p_e) / (1 - p_e)``, where ``p_e`` is what two
  raters with these pass rates agree on by chance: 0 chance, 1 perfect, below 0 worse than chance (with
  a 95% bootstrap interval over items); undefined (None) when both raters give one label only;
- **TPR** (sensitivity): the share of human passes the judge passes; **TNR** (specificity): the share of
  human fails it fails. A lenient judge has a high TPR and a low TNR;
- **unmeasured**: judge replies that could not be read (errors, refusals, no score), left out of the
  numbers above and counted;
- **position-swap flip rate**: the share of items whose verdict changes when the answers the judge sees
  trade places (:meth:`pilothouse.evals.judges.JudgeScorer.swap_check`): ``pairwise`` judges both orders
  of every pair; ``factuality`` is asked again with the output and the reference swapped; the others
  judge one answer, so the rate is *not applicable* and said so.

The input is an eval spec: only its ``judge`` and ``scorers`` are read (a file with just those two keys
will do). Calibrating the spec a run uses, rather than describing the judge a second way, makes the
gate's look-up match by construction: a calibration is keyed by :func:`judge_fingerprint`, a digest of
the scorer's spec without ``name``, ``threshold``, ``weight``, ``negate`` and ``timeout_s`` and of the
judge's identity (model, ``base_url``, provider, structured, logprobs). Renaming a metric or moving
its threshold keeps the calibration; new criteria, a new scale or another judge model need a new one.
(A gateway alias re-pointed to another upstream model keeps its fingerprint: the endpoint seen at
calibration time is stored so that it can be checked.) When the spec's target has ``messages``, they
are rendered with each item's variables, so the judge sees the prompt it sees in a run.

A labels file (JSONL, CSV or YAML: :mod:`pilothouse.evals.datasets`) holds one item per line: the
variables, ``output`` (the answer to judge), ``expected``, ``context``, ``baseline_output`` (pairwise)
and the human label (``label``; ``--label-field`` names another): true/false, pass/fail, yes/no, 1/0,
or a number with a threshold (``--label-threshold 4``: scores from 4 up pass)::

    {"question": "What causes tides?", "output": "The Moon.", "expected": "Moon and Sun.", "label": true}

The metrics are pure functions of (human label, judge verdict) pairs; :func:`judge_labelled` runs the
judge over the items.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pilothouse.domain.calibrations import CalibrationMetrics, Confusion, Judgement
from pilothouse.domain.datasets import DatasetError, DatasetItem
from pilothouse.evals.scoring import (
    COMMON_KEYS,
    Sample,
    Scorer,
    ScoreResult,
    grades_with_judge,
)
from pilothouse.evals.templating import TemplateError, render_messages

__all__ = [
    "JudgedMetric",
    "LabelledItem",
    "agreement",
    "calibration_metrics",
    "cohens_kappa",
    "confusion",
    "flip_rate",
    "human_label",
    "judge_fingerprint",
    "judge_identity",
    "judge_labelled",
    "judged_metrics",
    "kappa_interval",
    "kappa_strength",
    "labelled_items",
    "true_negative_rate",
    "true_positive_rate",
]

_PASS_WORDS = frozenset({"pass", "passed", "true", "yes", "y", "good", "correct", "consistent", "1"})
_FAIL_WORDS = frozenset({"fail", "failed", "false", "no", "n", "bad", "incorrect", "inconsistent", "0"})
_NOT_IDENTITY = COMMON_KEYS | {"timeout_s"}  # what a scorer spec may change and keep its calibration


# -- the numbers (pure) --------------------------------------------------------------------------------


def confusion(pairs: Iterable[tuple[bool, bool]]) -> Confusion:
    """Count (human label, judge verdict) pairs."""
    tp = fn = fp = tn = 0
    for human, judge in pairs:
        if human and judge:
            tp += 1
        elif human:
            fn += 1
        elif judge:
            fp += 1
        else:
            tn += 1
    return Confusion(tp, fn, fp, tn)


def agreement(c: Confusion) -> float | None:
    """The share of items where judge and human agree (None without items)."""
    return (c.tp + c.tn) / c.n if c.n else None


def cohens_kappa(c: Confusion) -> float | None:
    """Cohen's kappa: ``(p_o - p_e) / (1 - p_e)``; None when undefined (no items, or both raters gave
    the same single label, so chance agreement is 1)."""
    if not c.n:
        return None
    observed = (c.tp + c.tn) / c.n
    human_pass, judge_pass = (c.tp + c.fn) / c.n, (c.tp + c.fp) / c.n
    chance = human_pass * judge_pass + (1 - human_pass) * (1 - judge_pass)
    if math.isclose(chance, 1.0):
        return None
    return (observed - chance) / (1 - chance)


def true_positive_rate(c: Confusion) -> float | None:
    """Of the items people pass, the share the judge passes (None when people pass none)."""
    return c.tp / (c.tp + c.fn) if c.tp + c.fn else None


def true_negative_rate(c: Confusion) -> float | None:
    """Of the items people fail, the share the judge fails (None when people fail none)."""
    return c.tn / (c.tn + c.fp) if c.tn + c.fp else None


def flip_rate(flips: Iterable[bool | None]) -> tuple[float | None, int, int]:
    """(share flipped, flipped, checked) over order checks; None entries (not told) are left out."""
    told = [f for f in flips if f is not None]
    flipped = sum(told)
    return (flipped / len(told) if told else None), flipped, len(told)


def kappa_strength(kappa: float | None) -> str:
    """Words for a kappa after Landis and Koch: none beyond chance (<= 0), slight (to 0.2), fair,
    moderate, substantial, almost perfect (above 0.8); "undefined" for None."""
    if kappa is None:
        return "undefined"
    if kappa <= 0:
        return "none beyond chance"
    for bound, words in ((0.2, "slight"), (0.4, "fair"), (0.6, "moderate"), (0.8, "substantial")):
        if kappa <= bound:
            return words
    return "almost perfect"


def kappa_interval(
    pairs: Sequence[tuple[bool, bool]], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """A percentile bootstrap interval for kappa, resampling items; None with fewer than 2 items or
    when kappa is undefined in most resamples."""
    import numpy as np  # here, not at the top: the evaluations service imports this module for every run

    if len(pairs) < 2:
        return None
    human = np.array([h for h, _ in pairs], dtype=bool)
    judge = np.array([j for _, j in pairs], dtype=bool)
    rng = np.random.default_rng(seed)
    n, chunk = len(pairs), max(1, 2_000_000 // len(pairs))  # bounded memory for large label sets
    kappas = []
    for start in range(0, resamples, chunk):
        rows = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        h, j = human[rows], judge[rows]
        observed = (h == j).mean(axis=1)
        hp, jp = h.mean(axis=1), j.mean(axis=1)
        chance = hp * jp + (1 - hp) * (1 - jp)
        defined = ~np.isclose(chance, 1.0)
        kappas.append((observed[defined] - chance[defined]) / (1 - chance[defined]))
    values = np.concatenate(kappas)
    if len(values) < resamples / 2:
        return None
    tail = (1 - confidence) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def calibration_metrics(
    judgements: Sequence[Judgement],
    *,
    threshold: float | None = None,
    position_swap: str | None = None,
    scorer_type: str = "this judge",
    swap_skipped: bool = False,
) -> CalibrationMetrics:
    """The metrics of a set of judgements (``position_swap``: how the scorer swaps orders, None when
    it cannot; ``swap_skipped``: it can, but the check was not asked for)."""
    pairs = [(j.label, j.passed) for j in judgements if j.passed is not None]
    c = confusion(pairs)
    interval = kappa_interval(pairs)
    rate, flips, checked = flip_rate(j.flipped for j in judgements) if position_swap else (None, 0, 0)
    if position_swap is None:
        note = f"not applicable: {scorer_type} judges one answer at a time, so there is no order to swap"
    elif swap_skipped and not checked:
        note = f"skipped: the order check was not asked for; {position_swap}"
    elif checked:
        note = f"{flips} of {checked} flipped; {position_swap}"
    else:
        note = f"not measured, no order check could be read; {position_swap}"
    return CalibrationMetrics(
        n=len(judgements),
        unmeasured=len(judgements) - len(pairs),
        confusion=c,
        agreement=agreement(c),
        kappa=cohens_kappa(c),
        kappa_low=interval[0] if interval else None,
        kappa_high=interval[1] if interval else None,
        tpr=true_positive_rate(c),
        tnr=true_negative_rate(c),
        threshold=threshold,
        position_swap=position_swap,
        flip_rate=rate,
        flips=flips,
        swap_checked=checked,
        swap_note=note,
    )


# -- labels ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelledItem:
    """A sample to judge and what people said about it."""

    sample: Sample
    label: bool


def human_label(value: Any, threshold: float | None = None) -> bool:
    """A human label as pass (True) or fail: a boolean, a word (pass/fail, yes/no, true/false, ...),
    0/1, or a number compared with ``threshold`` (``value >= threshold`` passes). ValueError otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        try:
            number = float(word)
        except ValueError:
            if word in _PASS_WORDS:
                return True
            if word in _FAIL_WORDS:
                return False
            raise ValueError(
                f"the label {value!r} is neither pass/fail, true/false, yes/no nor a number"
            ) from None
        return human_label(number, threshold)
    if isinstance(value, int | float) and math.isfinite(value):
        if threshold is not None:
            return value >= threshold
        if value in (0, 1):
            return value == 1
        raise ValueError(f"the label {value!r} is a score: give --label-threshold to say which scores pass")
    raise ValueError(f"the label {value!r} is neither pass/fail, true/false, yes/no nor a number")


def _context_of(variables: Mapping[str, Any], metadata: Mapping[str, Any]) -> str | None:
    # as the runner finds it (pilothouse.evals.runner), so the judge sees what it sees in a run
    for source in (variables, metadata):
        value = source.get("context")
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "\n\n".join(str(v) for v in value)
    return None


def labelled_items(
    items: Iterable[DatasetItem],
    *,
    label_field: str = "label",
    label_threshold: float | None = None,
    prompt: Sequence[Mapping[str, Any]] | None = None,
) -> list[LabelledItem]:
    """Samples from labels-file items: ``output``, the label and ``baseline_output`` are taken out of
    the variables (or the metadata), so the judge never sees the label. ``prompt``: the spec's target
    messages, rendered with each item's variables (as in a run, they win over an item's ``messages``).
    :class:`DatasetError` names the item that cannot be used."""
    out = []
    for item in items:
        where = f"labels item {item.id!r}"
        variables, metadata = dict(item.input), dict(item.metadata)
        if label_field in variables:
            raw_label = variables.pop(label_field)
        elif label_field in metadata:
            raw_label = metadata.pop(label_field)
        else:
            raise DatasetError(f"{where}: no human label {label_field!r} (--label-field names another key)")
        try:
            label = human_label(raw_label, label_threshold)
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        output = variables.pop("output", metadata.pop("output", None))
        if output is None:
            raise DatasetError(f"{where}: no 'output' (the answer the judge grades)")
        if "baseline_output" in variables:
            metadata["baseline_output"] = variables.pop("baseline_output")
        messages: Sequence[Mapping[str, Any]] = item.messages or ()
        if prompt:  # the target's template wins over the item's messages, as in a run
            try:
                messages = render_messages(prompt, item.variables())
            except TemplateError as exc:
                raise DatasetError(f"{where}: the spec's target messages: {exc}") from None
        sample = Sample(
            item_id=item.id,
            input=variables,
            messages=tuple(messages),
            output=output if isinstance(output, str) else json.dumps(output, ensure_ascii=False),
            expected=item.expected,
            context=_context_of(variables, metadata),
            metadata=metadata,
        )
        out.append(LabelledItem(sample, label))
    return out


# -- running the judge -----------------------------------------------------------------------------------


async def judge_labelled(
    scorer: Scorer,
    items: Sequence[LabelledItem],
    *,
    concurrency: int = 4,
    swap: bool = True,
    on_judged: Callable[[Judgement], None] | None = None,
) -> list[Judgement]:
    """The scorer's verdict on every item, at most ``concurrency`` at a time, in item order; with
    ``swap`` (and a scorer that can swap orders) the order check of each measured item too."""
    limit = asyncio.Semaphore(concurrency)
    check = getattr(scorer, "swap_check", None) if swap and getattr(scorer, "position_swap", None) else None

    async def one(item: LabelledItem) -> Judgement:
        async with limit:
            result = await _safe_score(scorer, item.sample)
            flipped = None
            if check is not None and result.passed is not None:
                swapped: ScoreResult = await check(item.sample, result)
                flipped = None if swapped.value is None else swapped.value >= 0.5
        judgement = Judgement(
            item.sample.item_id,
            item.label,
            result.value,
            result.passed,
            result.error or (result.reason if result.value is None else None),
            flipped,
        )
        if on_judged is not None:
            on_judged(judgement)
        return judgement

    return list(await asyncio.gather(*(one(item) for item in items)))


async def _safe_score(scorer: Scorer, sample: Sample) -> ScoreResult:
    try:
        return await scorer.score(sample)
    except Exception as exc:  # a plugin scorer's bug: unmeasured, as in the runner
        return ScoreResult.unmeasured(f"{type(exc).__name__}: {exc}")


# -- identity and the stored artifact --------------------------------------------------------------------


def judge_identity(entry: Mapping[str, Any], judge_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """What a judge's verdicts depend on, from a spec's scorer entry and its ``judge`` mapping: the
    scorer's type and options (not its name, threshold, weight, negate or timeout) and the judge model
    (the entry's ``judge`` key, else ``judge.model``), ``base_url``, provider, structured, logprobs."""
    judge = dict(judge_options or {})
    scorer = {str(k): v for k, v in entry.items() if k not in _NOT_IDENTITY}
    return {
        "scorer": scorer,
        "judge": {
            "model": entry.get("judge") or judge.get("model"),
            "base_url": judge.get("base_url"),
            "provider": judge.get("provider"),
            "structured": judge.get("structured", False),
            "logprobs": judge.get("logprobs", True),
        },
    }


def judge_fingerprint(entry: Mapping[str, Any], judge_options: Mapping[str, Any] | None) -> str:
    """sha256 of :func:`judge_identity`: the key calibrations are stored and found by."""
    identity = json.dumps(judge_identity(entry, judge_options), sort_keys=True, default=str)
    return hashlib.sha256(identity.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class JudgedMetric:
    """A metric of a run that a judge grades, and the judge's fingerprint."""

    metric: str
    scorer_type: str
    judge_model: str | None
    fingerprint: str


def judged_metrics(spec: Mapping[str, Any]) -> dict[str, JudgedMetric]:
    """The model-graded metrics of a stored run's spec, by name (scorers given as Python objects
    cannot be identified and are left out)."""
    judge_options = spec.get("judge")
    if not isinstance(judge_options, Mapping):
        judge_options = None
    entries = spec.get("scorers")
    found: dict[str, JudgedMetric] = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str):
            continue
        if not grades_with_judge(entry):
            continue
        name = str(entry.get("name") or entry["type"]).strip()
        identity = judge_identity(entry, judge_options)
        model = identity["judge"]["model"]
        found[name] = JudgedMetric(
            name,
            entry["type"],
            None if model is None else str(model),
            judge_fingerprint(entry, judge_options),
        )
    return found

"""Cascade routes served with eval scorers as their verifiers: a cascade (:mod:`pilothouse.gateway.cascade`)
accepts a cheap model's answer when the scorer passes it, and escalates to the next model otherwise.
A judge scorer grades with a model of the same gateway."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pilothouse.config import CascadeSettings
from pilothouse.evals.judges import Judge, JudgeModel
from pilothouse.evals.scoring import Sample, build_scorer
from pilothouse.gateway import Gateway, InProcessModel
from pilothouse.gateway.cascade import Verdict, Verifier

__all__ = ["add_cascades", "cascade_verifier"]


def _answer_text(response: Mapping[str, Any]) -> str:
    choices = response.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


def cascade_verifier(spec: Mapping[str, Any], judge: JudgeModel | None = None) -> Verifier:
    """A verifier from a scorer spec (``judge`` grades for judge scorers): an answer passes when the
    scorer passes it; an unmeasured result (the judge failed) escalates. ValueError for a bad spec."""
    scorer = build_scorer(dict(spec), judge)

    async def verify(request: dict[str, Any], response: dict[str, Any]) -> Verdict:
        messages = [m for m in request.get("messages") or [] if isinstance(m, dict)]
        question = next((str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        sample = Sample(
            item_id="cascade",
            input={"question": question},
            messages=messages,
            output=_answer_text(response),
        )
        result = await scorer.score(sample)
        return Verdict(bool(result.passed), result.value, result.reason or result.error)

    return verify


def add_cascades(gateway: Gateway, cascades: Iterable[CascadeSettings]) -> None:
    """Serve each cascade route on ``gateway``, its verifier built from its scorer spec (a judge
    scorer's judge is the cascade's ``judge`` model on the same gateway). ValueError, naming the
    cascade, for a verifier that cannot be built."""
    for cascade in cascades:
        judge = None
        if cascade.judge:
            model = InProcessModel(gateway, cascade.judge, description=f"the gateway's {cascade.judge}")
            judge = Judge(model)
        try:
            gateway.cascades[cascade.name] = (cascade, cascade_verifier(cascade.verifier, judge))
        except ValueError as exc:
            raise ValueError(f"cascades ({cascade.name}): verifier: {exc}") from None

"""The ``hallucination`` eval scorer: the local detector (or a Hugging Face detector folder) as a
scorer, the way a plugin adds one. ``evals`` may not import ``quality``: the scorer reaches the
registry through the ``pilothouse.scorers`` entry point in ``pyproject.toml`` (looked up lazily by
:func:`pilothouse.evals.scoring.build_scorer`), and importing this module registers it too.

Spec options: ``context`` (a template such as ``"{{ passages }}"``; default: the sample's context),
``model`` (a Hugging Face sequence-classification folder; default: the bundled local detector),
``supported_label`` and ``trust_remote_code`` (for ``model``). The value is P(supported) in [0, 1];
the threshold defaults to the detector's own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import ClassVar

from pilothouse.domain.faithfulness import Verdict
from pilothouse.evals.scoring import (
    BaseScorer,
    Sample,
    ScoreResult,
    ScorerSpec,
    ScoringError,
    register_scorer,
)
from pilothouse.evals.templating import to_text

_detectors: dict[tuple[str, str, bool], Callable[[str, str], Verdict]] = {}
_lock = threading.Lock()


def _detector(
    model: str | None, supported_label: str | None, trust: bool
) -> tuple[Callable[[str, str], Verdict], float]:
    key = (model or "", supported_label or "", trust)
    with _lock:
        found = _detectors.get(key)
        if found is None:
            if model:
                from pilothouse.quality.hallucination.hf import HuggingFaceDetector

                found = HuggingFaceDetector(
                    model, supported_label=supported_label, trust_remote_code=trust
                ).detect
            else:
                from pilothouse.quality.hallucination.detector import default_detector

                found = default_detector().detect
            _detectors[key] = found
    owner = getattr(found, "__self__", None)
    return found, float(getattr(owner, "threshold", 0.5))


@register_scorer("hallucination")
class HallucinationScorer(BaseScorer):
    """P(the output is supported by the context), from a local detector; unsupported spans in details."""

    default_threshold: ClassVar[float] = 0.5
    allowed_options = frozenset({"context", "model", "supported_label", "trust_remote_code"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.context = spec.text_option("context")
        self.model = spec.text_option("model")
        self.supported_label = spec.text_option("supported_label")
        self.trust_remote_code = spec.bool_option("trust_remote_code", False)
        if self.model:
            from pathlib import Path

            if not (Path(self.model).expanduser() / "config.json").is_file():
                raise spec.error(f"option 'model' must be a Hugging Face model folder, not {self.model!r}")
        self._explicit_threshold = spec.threshold is not None

    async def measure(self, sample: Sample) -> ScoreResult:
        context = (
            sample.context if self.context is None else to_text(self.render_option(self.context, sample))
        )
        if not context or not context.strip():
            raise ScoringError(
                f"scorer '{self.name}' needs a context (sample.context or the 'context' option)"
            )
        detect, threshold = _detector(self.model, self.supported_label, self.trust_remote_code)
        if not self._explicit_threshold:
            self.threshold = threshold
        try:
            verdict = await asyncio.to_thread(detect, sample.output, context)
        except ValueError as exc:
            raise ScoringError(f"scorer '{self.name}': {exc}") from exc
        spans = [s.to_dict() for s in verdict.spans]
        return ScoreResult(
            verdict.score,
            reason=f"{verdict.label}: {verdict.reason}",
            details={
                "label": verdict.label,
                "spans": spans,
                "source": verdict.source,
                "features": dict(verdict.features),
            },
        )

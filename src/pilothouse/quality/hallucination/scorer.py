"""The ``hallucination`` eval scorer: the local detector (or a Hugging Face detector folder) as a
scorer, the way a plugin adds one. ``evals`` may not import ``quality``: the scorer reaches the
registry through the ``pilothouse.scorers`` entry point in ``pyproject.toml`` (looked up lazily by
:func:`pilothouse.evals.scoring.build_scorer`), and importing this module registers it too.

Spec options: ``context`` (a template such as ``"{{ passages }}"``; default: the sample's context),
``model`` (a Hugging Face sequence- or token-classification folder; default: the bundled local
detector), ``supported_label``, ``trust_remote_code`` and ``template`` (for ``model``: what a token
classifier reads before the response, ``{context}`` standing for the context). The value is P(supported)
in [0, 1]; the threshold defaults to the detector's own. With the common key ``judge`` (a model), it is
a cascade: about ``escalate`` (default 0.25) of the checks, those whose local score ranks nearest the
threshold among the scorer's recent ones, go to the judge, whose verdict (1 or 0) is the value and whose
tokens and cost are the result's."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, ClassVar

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

_detectors: dict[tuple[str, str, bool, str], Callable[[str, str], Verdict]] = {}
_lock = threading.Lock()
# Detectors run one check at a time (each holds a lock); they run on a thread of their own, so that
# checks waiting their turn never fill the event loop's default thread pool, which the server needs.
_EXECUTOR = ThreadPoolExecutor(1, thread_name_prefix="pilothouse-hallucination")


def uses_judge(spec: ScorerSpec) -> bool:
    """Whether a ``hallucination`` spec is a cascade: it names a ``judge`` or sets ``escalate``. (An
    eval spec's top-level judge is given to every scorer; that alone does not make this one pay.)"""
    return spec.judge_name is not None or "escalate" in spec.options


def _detector(
    model: str | None, supported_label: str | None, trust: bool, template: str = "{context}"
) -> tuple[Callable[[str, str], Verdict], float]:
    key = (model or "", supported_label or "", trust, template)
    with _lock:
        found = _detectors.get(key)
        if found is None:
            if model:
                from pilothouse.quality.hallucination.hf import HuggingFaceDetector

                found = HuggingFaceDetector(
                    model, supported_label=supported_label, trust_remote_code=trust, template=template
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
    judge_optional: ClassVar[bool] = True  # what pilothouse.evals.scoring.accepts_judge asks
    allowed_options = frozenset(
        {"context", "model", "supported_label", "trust_remote_code", "template", "escalate"}
    )

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.context = spec.text_option("context")
        self.model = spec.text_option("model")
        self.supported_label = spec.text_option("supported_label")
        self.trust_remote_code = spec.bool_option("trust_remote_code", False)
        template = spec.text_option("template")  # "" is a template without {context}, not the default
        self.template = "{context}" if template is None else template
        if "{context}" not in self.template:
            raise spec.error("option 'template' must hold {context}, where the context goes")
        if "template" in spec.options and not self.model:
            raise spec.error("option 'template' is for a 'model' folder (the bundled detector has its own)")
        if self.model:
            from pathlib import Path

            config = Path(self.model).expanduser() / "config.json"
            if not config.is_file():
                raise spec.error(f"option 'model' must be a Hugging Face model folder, not {self.model!r}")
            try:  # read now, not at each sample's load: a broken folder fails the spec, once
                fields = json.loads(config.read_bytes())
            except (OSError, ValueError) as exc:
                raise spec.error(f"option 'model': {config} cannot be read as JSON ({exc})") from None
            if not isinstance(fields, dict):
                raise spec.error(f"option 'model': {config} is not a model's config (a JSON object)")
        self._explicit_threshold = spec.threshold is not None
        self.escalate = spec.number_option("escalate", 0.25, minimum=0.0, maximum=1.0)
        if "escalate" in spec.options and spec.judge is None and spec.judge_name is None:
            raise spec.error("option 'escalate' needs a 'judge' (the model the uncertain checks go to)")
        if spec.judge_name is not None and spec.judge is None:
            raise spec.error(f"'judge' ({spec.judge_name}) cannot be reached from here: no judge model")
        self.judge = spec.judge if uses_judge(spec) else None
        self._cascade: Any = None
        self._cascade_lock = threading.Lock()

    def without_judge(self) -> HallucinationScorer:
        """The same scorer with no judge (the local detector alone), e.g. once a judge's budget is spent."""
        options = {k: v for k, v in self.spec.options.items() if k != "escalate"}
        return HallucinationScorer(replace(self.spec, options=options, judge=None, judge_name=None))

    async def measure(self, sample: Sample) -> ScoreResult:
        context = (
            sample.context if self.context is None else to_text(self.render_option(self.context, sample))
        )
        if not context or not context.strip():  # the sample's own: scoring it again cannot help
            return ScoreResult.unmeasured(
                f"scorer '{self.name}' needs a context (sample.context or the 'context' option)",
                details={"retryable": False},
            )
        detect, threshold = _detector(self.model, self.supported_label, self.trust_remote_code, self.template)
        if not self._explicit_threshold:
            self.threshold = threshold
        reply = None
        try:
            if self.judge is None:
                loop = asyncio.get_running_loop()
                verdict = await loop.run_in_executor(_EXECUTOR, detect, sample.output, context)
            else:
                result = await self._cascade_for(detect, threshold).run(sample.output, context)
                verdict, reply = result.verdict, result.reply
        except ValueError as exc:
            raise ScoringError(f"scorer '{self.name}': {exc}") from exc
        spans = [s.to_dict() for s in verdict.spans]
        details: dict[str, Any] = {
            "label": verdict.label,
            "spans": spans,
            "source": verdict.source,
            "features": dict(verdict.features),
        }
        if reply is not None:
            details["judge_called"] = True  # what online evaluators link a judge's trace by
        return ScoreResult(
            verdict.score,
            reason=f"{verdict.label}: {verdict.reason}",
            judge_input_tokens=reply.input_tokens if reply else None,
            judge_output_tokens=reply.output_tokens if reply else None,
            judge_cost_usd=reply.cost_usd if reply else None,
            details=details,
        )

    def _cascade_for(self, detect: Callable[[str, str], Verdict], threshold: float) -> Any:
        """This scorer's cascade (one budget window for all its checks), made on first use."""
        from pilothouse.quality.hallucination.cascade import Cascade, EscalationBudget

        with self._cascade_lock:
            if self._cascade is None:
                # around the detector's own threshold (the scorer's may be set apart for passing)
                budget = EscalationBudget(self.escalate, min(max(threshold, 1e-6), 1 - 1e-6))
                judge = self.judge
                assert judge is not None  # only cascades get here
                self._cascade = Cascade(detect, judge, budget=budget, executor=_EXECUTOR)
            return self._cascade

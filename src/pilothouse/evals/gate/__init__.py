"""The quality gate: a non-inferiority decision per metric (:func:`decide`, pure, no I/O), the
planning of the items a next look needs, and the reports that explain it.

Loading runs, counting looks and checking judges is the evaluations service's
(:class:`pilothouse.evals.Evaluations`); writing files and the exit code of usage errors (2) the CLI's.
The sequential form (:func:`sequential_compare`, a canary against its control on live traffic) is
the same decision made always-valid. The method is explained for users in docs/gate.md.
"""

from __future__ import annotations

from pilothouse.evals.gate._decision import (
    DEFAULT_ALPHA,
    DEFAULT_BINARY_MARGIN,
    DEFAULT_RELATIVE_MARGIN,
    PLANNING_POWER,
    GateDecision,
    GateVerdict,
    Margin,
    MetricInput,
    MetricKind,
    MetricResult,
    MetricSpec,
    MetricValues,
    compare_metric,
    decide,
    default_margin,
    overall_verdict,
)
from pilothouse.evals.gate._inference import holm, look_alpha
from pilothouse.evals.gate._margins import parse_margin, parse_margins
from pilothouse.evals.gate._reports import (
    JudgeCalibrations,
    explain,
    gate_document,
    judge_calibration_text,
    look_text,
    render_json,
    render_junit,
    render_markdown,
)
from pilothouse.evals.gate._sequential import (
    DEFAULT_MIXTURE_EFFECT,
    ArmSummary,
    SequentialResult,
    fixed_horizon_n,
    mixture_boundary,
    sequential_compare,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BINARY_MARGIN",
    "DEFAULT_MIXTURE_EFFECT",
    "DEFAULT_RELATIVE_MARGIN",
    "PLANNING_POWER",
    "ArmSummary",
    "GateDecision",
    "GateVerdict",
    "JudgeCalibrations",
    "Margin",
    "MetricInput",
    "MetricKind",
    "MetricResult",
    "MetricSpec",
    "MetricValues",
    "SequentialResult",
    "compare_metric",
    "decide",
    "default_margin",
    "explain",
    "fixed_horizon_n",
    "gate_document",
    "holm",
    "judge_calibration_text",
    "look_alpha",
    "look_text",
    "mixture_boundary",
    "overall_verdict",
    "parse_margin",
    "parse_margins",
    "render_json",
    "render_junit",
    "render_markdown",
    "sequential_compare",
]

"""Online evaluators: rules that pick live traces (filters, a deterministic sample) and score them in a
background worker with any eval scorer, an LLM judge or the local hallucination detector; the results
are scores on the trace (source ``online``). See docs/online-evals.md."""

from __future__ import annotations

from pilothouse.quality.online._rules import (
    JUDGE_TRACE_PREFIX,
    EvaluatorDefinition,
    ReviewRule,
    RuleError,
    ScoreFilter,
    TraceFilters,
    check_name,
    parse_definition,
    sampled,
)
from pilothouse.quality.online._service import BackfillResult, EvaluatorStatus, OnlineEvaluators
from pilothouse.quality.online._worker import OnlineWorker, WorkerOptions, online_score_id
from pilothouse.store.online import DuplicateEvaluator

__all__ = [
    "JUDGE_TRACE_PREFIX",
    "BackfillResult",
    "DuplicateEvaluator",
    "EvaluatorDefinition",
    "EvaluatorStatus",
    "OnlineEvaluators",
    "OnlineWorker",
    "ReviewRule",
    "RuleError",
    "ScoreFilter",
    "TraceFilters",
    "WorkerOptions",
    "check_name",
    "online_score_id",
    "parse_definition",
    "sampled",
]

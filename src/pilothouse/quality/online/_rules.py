"""An online evaluator's rules, pure: which live traces it picks (filters), how many of them
(sampling, the same verdict in every process), and what scores them (a scorer spec of the eval
scorer registry, with the judge model for model-graded scorers).

A definition is a JSON object (the API's body, the CLI's file, the stored row)::

    {"filters": {"model": ["gpt-4o-mini"], "name": ["chat"], "span_name": ["retrieve"],
                 "tags": ["prod"], "metadata": {"tier": "free"}, "score": {"name": "thumbs", "max": 0}},
     "sampling": 0.05,
     "scorer": {"type": "rubric", "rubric": "Is the answer polite?"},
     "judge": "gpt-4o-mini",
     "daily_cost_cap_usd": 2.0,
     "context": "metadata.context",
     "review": {"queue": "triage", "when": "uncertain", "band": 0.1}}

``review`` sends some scored traces to a human review queue: those the scorer ``failed``, those it was
``uncertain`` about (the value within ``band`` of the scorer's threshold: a detector's low-confidence
verdicts), or those where it ``disagrees`` with another evaluator's score on the same trace (``with``).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "JUDGE_TRACE_PREFIX",
    "EvaluatorDefinition",
    "ReviewRule",
    "RuleError",
    "ScoreFilter",
    "TraceFilters",
    "parse_definition",
    "sampled",
]

# The trace name of an online judge's own calls: never picked by a rule (a judge would judge itself).
JUDGE_TRACE_PREFIX = "online-eval "
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_MAX_VALUES = 50  # values per filter list, keys of the metadata filter
_MAX_TEXT = 500  # characters of one filter value
_KEYS = frozenset({"filters", "sampling", "scorer", "judge", "daily_cost_cap_usd", "context", "review"})
_REVIEW_WHEN = ("failed", "uncertain", "disagrees")
_FILTER_KEYS = frozenset({"model", "name", "span_name", "tags", "metadata", "score"})
_CONTEXT_SOURCES = ("metadata.", "input", "none")


class RuleError(ValueError):
    """A definition that cannot be used; the message names the field."""


@dataclass(frozen=True, slots=True)
class ScoreFilter:
    """The trace has a score of this name (with a value in [min, max] when they are given)."""

    name: str
    min: float | None = None
    max: float | None = None

    def matches(self, scores: Sequence[tuple[str, float | None, str | None]]) -> bool:
        """True when one of the trace's (name, value, string value) scores qualifies."""
        for name, value, _text in scores:
            if name != self.name:
                continue
            if self.min is None and self.max is None:
                return True
            if value is None:
                continue
            if (self.min is None or value >= self.min) and (self.max is None or value <= self.max):
                return True
        return False


@dataclass(frozen=True, slots=True)
class ReviewRule:
    """Which scored traces go to the review queue ``queue`` (see the module's docstring)."""

    queue: str
    when: str = "failed"
    band: float = 0.1
    with_: str | None = None

    def wants(self, value: float, passed: bool | None, threshold: float, other: float | None) -> str | None:
        """Why a trace scored ``value`` goes to review (None: it does not). ``other``: the value of the
        ``with`` evaluator's score on the trace, when it has one."""
        if self.when == "failed":
            return f"failed ({value:.2f})" if passed is False else None
        if self.when == "uncertain":
            near = abs(value - threshold) <= self.band
            return f"uncertain ({value:.2f}, threshold {threshold:.2f})" if near else None
        if other is None or passed is None or (other >= 0.5) == passed:
            return None
        return f"disagrees with {self.with_} ({value:.2f} vs {other:.2f})"

    def document(self) -> dict[str, Any]:
        found: dict[str, Any] = {"queue": self.queue, "when": self.when}
        if self.when == "uncertain":
            found["band"] = self.band
        if self.with_ is not None:
            found["with"] = self.with_
        return found


@dataclass(frozen=True, slots=True)
class TraceFilters:
    """Every given filter must hold; within a list, any value does (tags: all of them)."""

    models: frozenset[str] = frozenset()
    names: frozenset[str] = frozenset()
    span_names: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    metadata: Mapping[str, str] = field(default_factory=dict)
    score: ScoreFilter | None = None

    @property
    def needs_spans(self) -> bool:
        """True when matching reads the trace's spans (span names, or models beyond the trace's)."""
        return bool(self.span_names or self.models)

    def matches_trace(self, name: str | None, tags: Sequence[str], metadata: Mapping[str, Any]) -> bool:
        """The filters the trace row alone answers (name, tags, metadata)."""
        if self.names and name not in self.names:
            return False
        if self.tags and not self.tags.issubset(tags):
            return False
        return all(key in metadata and _text(metadata[key]) == value for key, value in self.metadata.items())

    def matches_spans(self, trace_model: str | None, span_names: set[str], span_models: set[str]) -> bool:
        """The filters on models and span names."""
        if self.models and trace_model not in self.models and not (self.models & span_models):
            return False
        return not self.span_names or bool(self.span_names & span_names)


@dataclass(frozen=True, slots=True)
class EvaluatorDefinition:
    """A parsed definition (see the module's docstring)."""

    filters: TraceFilters
    sampling: float
    scorer: Mapping[str, Any]
    judge: str | None = None
    daily_cost_cap_usd: float | None = None
    context: str = "metadata.context"
    review: ReviewRule | None = None

    def scorer_spec(self, model_graded: bool) -> dict[str, Any]:
        """The scorer spec to build: for a scorer that only may use a judge (``hallucination``'s
        cascade), the evaluator's ``judge`` named in it, which is what turns the cascade on."""
        spec = {k: v for k, v in self.scorer.items() if k != "judge"}
        if self.judge is not None and not model_graded:
            spec["judge"] = self.judge
        return spec

    def document(self) -> dict[str, Any]:
        """The canonical JSON form (what is stored, and compared to tell an edit from a no-op)."""
        f = self.filters
        filters: dict[str, Any] = {
            key: sorted(values)
            for key, values in (
                ("model", f.models),
                ("name", f.names),
                ("span_name", f.span_names),
                ("tags", f.tags),
            )
            if values
        }
        if f.metadata:
            filters["metadata"] = dict(sorted(f.metadata.items()))
        if f.score is not None:
            bounds = {"min": f.score.min, "max": f.score.max}
            filters["score"] = {"name": f.score.name, **{k: v for k, v in bounds.items() if v is not None}}
        document: dict[str, Any] = {
            "filters": filters,
            "sampling": self.sampling,
            "scorer": dict(self.scorer),
        }
        if self.judge is not None:
            document["judge"] = self.judge
        if self.daily_cost_cap_usd is not None:
            document["daily_cost_cap_usd"] = self.daily_cost_cap_usd
        document["context"] = self.context
        if self.review is not None:
            document["review"] = self.review.document()
        return document


def sampled(trace_id: str, rate: float) -> bool:
    """Whether a trace is in a sample of ``rate``: a hash of its id, so every process (and a restart,
    and a backfill) agrees, and evaluators with the same rate pick the same traces (comparable)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(trace_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _strings(value: Any, where: str) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and 0 < len(v) <= _MAX_TEXT for v in value):
        raise RuleError(
            f"'{where}' must be a string or a list of non-empty strings of at most {_MAX_TEXT} characters"
        )
    if len(value) > _MAX_VALUES:
        raise RuleError(f"'{where}' has more than {_MAX_VALUES} values")
    return frozenset(value)


def _number(value: Any, where: str, *, minimum: float = -math.inf, maximum: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RuleError(f"'{where}' must be a number")
    if not minimum <= value <= maximum:
        if maximum == math.inf:
            raise RuleError(f"'{where}' must be at least {minimum:g}")
        if minimum == -math.inf:
            raise RuleError(f"'{where}' must be at most {maximum:g}")
        raise RuleError(f"'{where}' must be between {minimum:g} and {maximum:g}")
    return float(value)


def _score_filter(value: Any) -> ScoreFilter:
    if not isinstance(value, Mapping) or set(value) - {"name", "min", "max"}:
        raise RuleError("'filters.score' must be an object with 'name' and optional 'min' and 'max'")
    name = value.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= _MAX_TEXT:
        raise RuleError("'filters.score.name' must be a non-empty string")
    bounds = {
        k: None if value.get(k) is None else _number(value[k], f"filters.score.{k}") for k in ("min", "max")
    }
    return ScoreFilter(name, bounds["min"], bounds["max"])


def _filters(value: Any) -> TraceFilters:
    if value is None:
        return TraceFilters()
    if not isinstance(value, Mapping):
        raise RuleError("'filters' must be an object")
    if unknown := sorted(set(value) - _FILTER_KEYS):
        raise RuleError(f"unknown filter '{unknown[0]}' (filters: {', '.join(sorted(_FILTER_KEYS))})")
    metadata = value.get("metadata") or {}
    if not isinstance(metadata, Mapping) or len(metadata) > _MAX_VALUES:
        raise RuleError(f"'filters.metadata' must be an object of at most {_MAX_VALUES} keys")
    for key, item in metadata.items():
        if (
            not isinstance(item, str | int | float | bool)
            or len(_text(item)) > _MAX_TEXT
            or len(key) > _MAX_TEXT
        ):
            raise RuleError(f"'filters.metadata.{key}' must be a string, number or boolean")
    return TraceFilters(
        models=_strings(value["model"], "filters.model") if "model" in value else frozenset(),
        names=_strings(value["name"], "filters.name") if "name" in value else frozenset(),
        span_names=_strings(value["span_name"], "filters.span_name") if "span_name" in value else frozenset(),
        tags=_strings(value["tags"], "filters.tags") if "tags" in value else frozenset(),
        metadata={str(k): _text(v) for k, v in metadata.items()},
        score=None if value.get("score") is None else _score_filter(value["score"]),
    )


_FILE_OPTIONS = frozenset({"schema", "model", "path", "file", "weights", "model_path", "knowledge"})


def _refuse_server_files(scorer: Mapping[str, Any]) -> None:
    """Rules come from any project's admin over the API: a scorer option may not name a file on the
    server (a JSON schema by path, model weights by folder), which would let a tenant probe or read
    the server's files. Inline values and model names are fine."""
    for key, value in scorer.items():
        if key == "type" or not isinstance(value, str):
            continue
        if (key == "schema" and scorer.get("type") == "json-schema") or (
            key in _FILE_OPTIONS
            and (value.startswith(("/", "~", ".")) or "\\" in value or value.count("/") > 1)
        ):
            raise RuleError(f"'scorer.{key}' may not name a file on the server; give the value inline")


def _review(value: Any) -> ReviewRule | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) - {"queue", "when", "band", "with"}:
        raise RuleError("'review' must be an object with 'queue' and optional 'when', 'band' and 'with'")
    queue = value.get("queue")
    if not isinstance(queue, str) or not _NAME.match(queue):
        raise RuleError("'review.queue' must be a queue's name (1-100 letters, digits, '_', '.', ':', '-')")
    when = value.get("when", "failed")
    if when not in _REVIEW_WHEN:
        raise RuleError(f"'review.when' must be one of {', '.join(_REVIEW_WHEN)}")
    other = value.get("with")
    if (when == "disagrees") != (other is not None):
        raise RuleError("'review.with' (another evaluator's name) goes with when: disagrees, and only there")
    if other is not None and (not isinstance(other, str) or not _NAME.match(other)):
        raise RuleError("'review.with' must be an evaluator's name")
    if "band" in value and when != "uncertain":
        raise RuleError("'review.band' goes with when: uncertain")
    band = _number(value.get("band", 0.1), "review.band", minimum=0.0, maximum=0.5)
    return ReviewRule(queue, when, band, other)


def check_name(name: Any) -> str:
    """An evaluator's name (also the name of its scores): 1-100 letters, digits, '_', '.', ':', '-'."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise RuleError("'name' must be 1-100 letters, digits, '_', '.', ':' or '-'")
    return name


def parse_definition(document: Any) -> EvaluatorDefinition:
    """A definition from its JSON object; :class:`RuleError` names the first bad field. The scorer's
    own options are checked when the scorer is built (``OnlineEvaluators`` does it on save)."""
    if not isinstance(document, Mapping):
        raise RuleError("an evaluator definition must be a JSON object")
    if unknown := sorted(set(document) - _KEYS):
        raise RuleError(f"unknown field '{unknown[0]}' (fields: {', '.join(sorted(_KEYS))})")
    scorer = document.get("scorer")
    if not isinstance(scorer, Mapping) or not isinstance(scorer.get("type"), str):
        raise RuleError(
            "'scorer' must be a scorer spec with a 'type' (any eval scorer: contains, rubric, ...)"
        )
    _refuse_server_files(scorer)
    judge = document.get("judge")
    if judge is not None and (not isinstance(judge, str) or not 0 < len(judge) <= 200):
        raise RuleError("'judge' must be the name of a model this server serves")
    cap = document.get("daily_cost_cap_usd")
    context = document.get("context", "metadata.context")
    if not isinstance(context, str) or not context.startswith(_CONTEXT_SOURCES) or len(context) > 200:
        raise RuleError("'context' must be 'metadata.KEY', 'input' or 'none'")
    return EvaluatorDefinition(
        filters=_filters(document.get("filters")),
        sampling=_number(document.get("sampling", 1.0), "sampling", minimum=0.0, maximum=1.0),
        scorer=dict(scorer),
        judge=judge,
        daily_cost_cap_usd=None if cap is None else _number(cap, "daily_cost_cap_usd", minimum=0.0),
        context=context,
        review=_review(document.get("review")),
    )

"""Scoring core: what a scorer sees (:class:`Sample`), what it says (:class:`ScoreResult`), and the
registry that turns a YAML-style spec into a scorer.

A spec is a mapping: ``type`` picks the scorer; ``name``, ``threshold``, ``weight``, ``negate`` and
``judge`` are common to all; every other key is an option of that scorer type. Option strings may hold
``{{ variable }}`` placeholders, rendered per sample with the item's variables plus ``expected``.

Built-in scorers register through the same :func:`register_scorer` a user plugin calls::

    @register_scorer("word-count")
    class WordCount(BaseScorer):
        default_threshold = 1.0
        allowed_options = frozenset({"max"})

        def __init__(self, spec: ScorerSpec) -> None:
            super().__init__(spec)
            self.max_words = spec.number_option("max", required=True)

        async def measure(self, sample: Sample) -> ScoreResult:
            words = len(sample.output.split())
            return ScoreResult(float(words <= self.max_words), reason=f"{words} words")
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, runtime_checkable

from pilothouse.domain.money import Money
from pilothouse.evals.templating import TemplateError, has_placeholders, render_value

if TYPE_CHECKING:
    from pilothouse.evals.judges import JudgeModel

__all__ = [
    "BaseScorer",
    "Sample",
    "ScoreResult",
    "Scorer",
    "ScorerConfigError",
    "ScorerFactory",
    "ScorerSpec",
    "ScoringError",
    "accepts_judge",
    "available_scorers",
    "build_scorer",
    "grades_with_judge",
    "is_model_graded",
    "parse_scorer_spec",
    "register_scorer",
]

COMMON_KEYS = frozenset({"type", "name", "threshold", "weight", "negate", "judge"})


@dataclass(frozen=True)
class Sample:
    """One dataset item after the model under test answered it: everything a scorer may look at."""

    item_id: str
    input: Mapping[str, Any] = field(default_factory=dict)  # the item's template variables
    messages: Sequence[Mapping[str, Any]] = ()  # the rendered prompt messages (may be empty)
    output: str = ""
    expected: Any = None
    context: str | None = None  # retrieved context, for faithfulness
    metadata: Mapping[str, Any] = field(default_factory=dict)
    latency_ms: float | None = None
    cost_usd: Money | None = None  # None: unknown (no price), never "free"

    def variables(self) -> dict[str, Any]:
        """The variables option templates are rendered with: the item's input plus ``expected``."""
        return {**self.input, "expected": self.expected}


@dataclass(frozen=True)
class ScoreResult:
    """A scorer's verdict on one sample.

    ``value`` None means UNMEASURED (the scorer could not tell; ``error`` or ``reason`` says why), which
    is different from a measured 0. ``passed`` is ``value >= threshold`` for measured values, else None.
    """

    value: float | None
    passed: bool | None = None
    reason: str | None = None
    error: str | None = None
    judge_input_tokens: int | None = None
    judge_output_tokens: int | None = None
    judge_cost_usd: Money | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # JSON-able extras (claims, verdicts, ...)

    @property
    def measured(self) -> bool:
        """True when the scorer produced a value."""
        return self.value is not None

    @classmethod
    def unmeasured(cls, error: str | None = None, *, reason: str | None = None, **extra: Any) -> ScoreResult:
        """A result without a value: ``error`` when something failed, ``reason`` when there was nothing
        to measure."""
        return cls(None, None, reason, error, **extra)


@runtime_checkable
class Scorer(Protocol):
    """Anything that scores samples. ``weight`` says how much it counts in an aggregate."""

    name: str
    weight: float

    async def score(self, sample: Sample) -> ScoreResult:
        """The verdict on one sample; failures come back as unmeasured results, not exceptions."""
        ...


class ScorerConfigError(ValueError):
    """A scorer spec that cannot be built (unknown type, missing or bad option)."""


class ScoringError(Exception):
    """Raised inside :meth:`BaseScorer.measure` when a sample cannot be scored (no reference, a
    reference of the wrong kind); :meth:`BaseScorer.score` turns it into an unmeasured result with this
    message as the error."""


@dataclass(frozen=True)
class ScorerSpec:
    """A parsed scorer spec: the common keys, the type's own options, and the judge (for judge scorers).

    The typed option readers raise :class:`ScorerConfigError` naming the scorer and the option."""

    type: str
    name: str
    threshold: float | None = None
    weight: float = 1.0
    negate: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    judge: JudgeModel | None = None
    judge_name: str | None = None  # the spec's ``judge`` key: which model the caller should judge with
    base_dir: Path | None = None  # where relative file paths in options are resolved

    def error(self, message: str) -> ScorerConfigError:
        """A config error that says which scorer it is about."""
        label = f"'{self.name}'" if self.name == self.type else f"'{self.name}' ({self.type})"
        return ScorerConfigError(f"scorer {label}: {message}")

    def option(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        """An option as given (``default`` when absent)."""
        if key not in self.options:
            if required:
                raise self.error(f"option '{key}' is required")
            return default
        return self.options[key]

    def bool_option(self, key: str, default: bool = False) -> bool:
        """A true/false option."""
        value = self.option(key, default)
        if not isinstance(value, bool):
            raise self.error(f"option '{key}' must be true or false, not {value!r}")
        return value

    def number_option(
        self,
        key: str,
        default: float | None = None,
        *,
        required: bool = False,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """A finite number option, optionally bounded."""
        value = self.option(key, default, required=required)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.error(f"option '{key}' must be a number, not {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(f"option '{key}' must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise self.error(f"option '{key}' must be at most {maximum}, not {value}")
        return float(value)

    def text_option(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        """A string option (may hold placeholders)."""
        value = self.option(key, default, required=required)
        if value is not None and not isinstance(value, str):
            raise self.error(f"option '{key}' must be a string, not {value!r}")
        return value

    def choice_option(self, key: str, choices: Sequence[str], default: str) -> str:
        """A string option that must be one of ``choices``."""
        value = self.option(key, default)
        if value not in choices:
            raise self.error(f"option '{key}' must be one of {', '.join(choices)}, not {value!r}")
        return str(value)


ScorerFactory = Callable[[ScorerSpec], Scorer]
_registry: dict[str, ScorerFactory] = {}
FactoryT = TypeVar("FactoryT", bound=ScorerFactory)


def register_scorer(type_name: str, *, replace: bool = False) -> Callable[[FactoryT], FactoryT]:
    """Register a scorer type: decorate a class (or function) that takes a :class:`ScorerSpec` and
    returns a :class:`Scorer`. Registering a taken name is an error unless ``replace`` is true."""
    if not type_name or not isinstance(type_name, str):
        raise ValueError("a scorer type name must be a non-empty string")

    def decorate(factory: FactoryT) -> FactoryT:
        taken = _registry.get(type_name)
        if taken is not None and not replace and taken is not factory and not isinstance(taken, _LazyFactory):
            raise ValueError(f"scorer type '{type_name}' is already registered")
        _registry[type_name] = factory
        return factory

    return decorate


ENTRY_POINT_GROUP = "pilothouse.scorers"  # plugins (and quality's ``hallucination``) register here
_plugins_loaded = False


def _load_builtin_scorers() -> None:
    # Imported here, not at the top: those modules register themselves through this one.
    _load_plugin_scorers()


def _load_plugin_scorers() -> None:
    """Register the scorers of installed packages, once: each entry point of the group
    ``pilothouse.scorers`` names a factory (``name = "package.module:Factory"``), registered under the
    entry point's name unless that name is taken. Loaded lazily, so a plugin package (and our own
    ``pilothouse.quality``, which evals may not import) is only imported when scorers are looked up."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _registry:
            _registry[entry.name] = _LazyFactory(entry)


class _LazyFactory:
    """An entry point's factory, imported on first use (listing scorers imports nothing)."""

    def __init__(self, entry: Any) -> None:
        self.entry = entry
        self._factory: ScorerFactory | None = None

    @property
    def model_graded(self) -> bool:
        return bool(getattr(self.load(), "model_graded", False))

    @property
    def judge_optional(self) -> bool:
        return bool(getattr(self.load(), "judge_optional", False))

    def load(self) -> ScorerFactory:
        if self._factory is None:
            self._factory = self.entry.load()
        return self._factory

    def __call__(self, spec: ScorerSpec) -> Scorer:
        return self.load()(spec)


def available_scorers() -> list[str]:
    """The registered scorer type names, sorted."""
    _load_builtin_scorers()
    return sorted(_registry)


def is_model_graded(type_name: str) -> bool:
    """True when the scorer type grades with a judge model, as its factory says (``model_graded =
    True``: every :class:`pilothouse.evals.judges.JudgeScorer`, and any plugin that sets it)."""
    _load_builtin_scorers()
    return bool(getattr(_registry.get(type_name), "model_graded", False))


def accepts_judge(type_name: str) -> bool:
    """True when the scorer type can use a judge model: every model-graded one, and those that may
    use one (``judge_optional = True``: the ``hallucination`` scorer escalates its uncertain checks)."""
    _load_builtin_scorers()
    factory = _registry.get(type_name)
    return bool(getattr(factory, "model_graded", False) or getattr(factory, "judge_optional", False))


def grades_with_judge(entry: Mapping[str, Any]) -> bool:
    """Whether a scorer spec's verdicts come (at least in part) from a judge model: a model-graded
    type, or one that may use a judge and is given one of its own that it can escalate to (the
    ``hallucination`` cascade: ``judge`` or ``escalate``, not ``escalate: 0``). What the gate asks a
    calibration for, and what ``pilothouse judge calibrate`` calibrates."""
    kind = str(entry.get("type"))
    if is_model_graded(kind):
        return True
    escalate = entry.get("escalate", 0.25)
    share = escalate if isinstance(escalate, int | float) and not isinstance(escalate, bool) else 0.25
    return accepts_judge(kind) and ("judge" in entry or "escalate" in entry) and share > 0


def parse_scorer_spec(
    spec: Mapping[str, Any], judge: JudgeModel | None = None, *, base_dir: Path | None = None
) -> ScorerSpec:
    """Check a spec's common keys and split off the type's options."""
    if not isinstance(spec, Mapping):
        raise ScorerConfigError(f"a scorer spec must be a mapping, not {type(spec).__name__}")
    kind = spec.get("type")
    if not isinstance(kind, str) or not kind:
        raise ScorerConfigError(f"a scorer spec needs a 'type' (one of: {', '.join(available_scorers())})")
    name = spec.get("name", kind)
    if not isinstance(name, str) or not name.strip():
        raise ScorerConfigError(f"scorer '{kind}': 'name' must be a non-empty string")
    common = ScorerSpec(type=kind, name=name.strip(), options=dict(spec))  # reads the common keys
    threshold = None if spec.get("threshold") is None else common.number_option("threshold")
    judge_name = spec.get("judge")
    if judge_name is not None and not isinstance(judge_name, str):
        raise common.error("'judge' must be a model name")
    return ScorerSpec(
        type=kind,
        name=common.name,
        threshold=threshold,
        weight=common.number_option("weight", 1.0, minimum=0),
        negate=common.bool_option("negate", False),
        options={key: value for key, value in spec.items() if key not in COMMON_KEYS},
        judge=judge,
        judge_name=judge_name,
        base_dir=base_dir,
    )


def build_scorer(
    spec: Mapping[str, Any], judge: JudgeModel | None = None, *, base_dir: Path | None = None
) -> Scorer:
    """A scorer from a YAML-style spec, e.g. ``{"type": "contains", "value": "{{topic}}"}``.

    ``judge`` is the model judge scorers grade with; ``base_dir`` resolves relative file paths (a
    JSON schema file). Raises :class:`ScorerConfigError` for an unknown type or bad options."""
    _load_builtin_scorers()
    parsed = parse_scorer_spec(spec, judge, base_dir=base_dir)
    factory = _registry.get(parsed.type)
    if factory is None:
        raise ScorerConfigError(
            f"unknown scorer type '{parsed.type}' (known: {', '.join(sorted(_registry))})"
        )
    return factory(parsed)


class BaseScorer(ABC):
    """The usual way to write a scorer: declare the options, implement :meth:`measure`.

    :meth:`score` wraps it: exceptions become unmeasured results (a missing template variable, a sample
    without a reference, a bug), ``negate`` is applied and ``passed`` set from the threshold."""

    default_threshold: ClassVar[float] = 1.0
    allowed_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, spec: ScorerSpec) -> None:
        unknown = sorted(set(spec.options) - self.allowed_options)
        if unknown:
            takes = ", ".join(sorted(self.allowed_options)) or "no options"
            raise spec.error(f"unknown option(s) {', '.join(unknown)} (it takes: {takes})")
        self.spec = spec
        self.name = spec.name
        self.weight = spec.weight
        self.threshold = self.default_threshold if spec.threshold is None else spec.threshold

    @abstractmethod
    async def measure(self, sample: Sample) -> ScoreResult:
        """The raw verdict (``passed`` may be left None: :meth:`score` fills it from the threshold)."""

    def render_option(self, value: Any, sample: Sample) -> Any:
        """An option value with its placeholders rendered for this sample."""
        return render_value(value, sample.variables())

    async def score(self, sample: Sample) -> ScoreResult:
        """Measure one sample; never raises for a problem with the sample or the judge."""
        try:
            result = await self.measure(sample)
        except (TemplateError, ScoringError) as exc:
            return ScoreResult.unmeasured(str(exc))
        except Exception as exc:  # a scorer's bug must not end the whole run (CancelledError passes)
            return ScoreResult.unmeasured(f"{type(exc).__name__}: {exc}")
        if result.value is None:
            return replace(result, passed=None)
        value = result.value
        if not math.isfinite(value):
            return replace(result, value=None, passed=None, error=f"the scorer produced {value}")
        if self.spec.negate:
            value = 1.0 - value
        passed = value >= self.threshold if result.passed is None or self.spec.negate else result.passed
        return replace(result, value=value, passed=passed)


def needs_template(value: Any) -> bool:
    """True when an option value holds a placeholder somewhere (so it can only be checked per sample)."""
    if isinstance(value, str):
        return has_placeholders(value)
    if isinstance(value, Mapping):
        return any(needs_template(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(needs_template(item) for item in value)
    return False

"""Deterministic scorers: string checks, JSON, numbers, text similarity, embeddings, latency and cost.

Every scorer's value lies in [0, 1] and ``passed`` is ``value >= threshold``. Binary checks give 1 or
0 (default threshold 1.0). Options that take a reference (``value``) default to the item's
``expected`` and may hold ``{{ variable }}`` placeholders; a template that is exactly one placeholder
keeps the variable's type (``value: "{{keywords}}"`` can be a list).

========================  ===========================================================  =========
type                      options                                                      threshold
========================  ===========================================================  =========
exact                     value, ignore_case, ignore_whitespace                        1.0
contains / icontains      value, ignore_case                                           1.0
contains-any / icontains  value (list), ignore_case                                    1.0
contains-all / icontains  value (list), ignore_case; value = share of needles found    1.0
regex                     value (pattern), ignore_case, multiline, dotall, full_match  1.0
starts-with               value, ignore_case (leading whitespace of the output ignored) 1.0
is-json                   (none; one ```json fence around the whole output tolerated)  1.0
json-schema               schema (inline mapping, or a .json/.yaml file path)          1.0
numeric                   value, tolerance (absolute), relative_tolerance, extract     1.0
levenshtein               value, ignore_case; normalised similarity                    0.8
bleu                      value (or list of references), lowercase; sentence BLEU/100  0.5
chrf                      value (or list), word_order (0: chrF, 2: chrF++); chrF/100   0.5
rouge                     value (or list), variant rouge-1 | rouge-2 | rouge-l (F1)    0.5
embedding-similarity      value, model (default all-minilm-l6-v2); cosine, floor 0     0.75
latency                   max_ms (required); unmeasured when latency is unknown         1.0
cost                      max_usd (required); unmeasured when cost is unknown           1.0
========================  ===========================================================  =========
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import yaml

from pilothouse.config import load_yaml
from pilothouse.domain.money import Money
from pilothouse.evals.patterns import (
    PatternError,
    PatternTimeout,
    compile_pattern,
    schema_validator,
    search,
    validation_deadline,
)
from pilothouse.evals.scoring import (
    BaseScorer,
    Sample,
    ScoreResult,
    ScorerSpec,
    ScoringError,
    needs_template,
    register_scorer,
)
from pilothouse.evals.templating import to_text

__all__ = [
    "extract_numbers",
    "parse_json_output",
    "rouge_f1",
    "strip_code_fence",
]

_WHOLE_FENCE = re.compile(r"\A\s*```[\w-]*[ \t]*\r?\n(.*?)\r?\n?[ \t]*```\s*\Z", re.DOTALL)
_NUMBER = re.compile(
    r"(?<![\w.])[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\d])"
    r"|(?<![\w.])[-+\u2212]?\.\d+(?:[eE][-+]?\d+)?"
)
_WORD = re.compile(r"[^\W_]+")
PATTERN_TIMEOUT_S = 1.0  # a regex scorer's pattern on one output (patterns.py: why there is a limit)


def strip_code_fence(text: str) -> str:
    """The inside of a Markdown code fence that wraps the whole text (```json ... ```), else the text."""
    match = _WHOLE_FENCE.match(text)
    return match.group(1) if match else text


def parse_json_output(text: str) -> Any:
    """The JSON value of a model output (one wrapping code fence allowed); raises ValueError."""
    return json.loads(strip_code_fence(text).strip())


def extract_numbers(text: str) -> list[float]:
    """The numbers written in a text, in order (``-1,234.5``, ``3e8``, ``.5``; a hyphen between digits
    is a range, not a sign)."""
    return [float(m.group().replace(",", "").replace("\u2212", "-")) for m in _NUMBER.finditer(text)]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """The longest common subsequence of two word lists, by rapidfuzz's bit-parallel algorithm: the
    textbook table in Python took hours on a long answer against a long reference (16,000 x 250,000
    words), and an online evaluator's reference and the traces it reads come from users."""
    from rapidfuzz.distance import LCSseq

    return int(LCSseq.similarity(a, b))


def _f1(overlap: int, candidate_total: int, reference_total: int) -> float:
    if overlap == 0 or candidate_total == 0 or reference_total == 0:
        return 0.0
    precision, recall = overlap / candidate_total, overlap / reference_total
    return 2 * precision * recall / (precision + recall)


def rouge_f1(candidate: str, reference: str, variant: str = "rouge-l") -> float:
    """ROUGE F1 of a candidate against one reference on lowercased word tokens (no stemming):
    ``rouge-1`` and ``rouge-2`` count clipped n-gram overlap, ``rouge-l`` the longest common
    subsequence."""
    cand, ref = _words(candidate), _words(reference)
    if variant == "rouge-l":
        return _f1(_lcs_length(cand, ref), len(cand), len(ref))
    n = {"rouge-1": 1, "rouge-2": 2}[variant]
    cand_grams, ref_grams = _ngrams(cand, n), _ngrams(ref, n)
    overlap = sum((cand_grams & ref_grams).values())
    return _f1(overlap, sum(cand_grams.values()), sum(ref_grams.values()))


class ReferenceScorer(BaseScorer):
    """A scorer that compares the output with a reference: option ``value``, default ``expected``."""

    def reference(self, sample: Sample) -> Any:
        """The reference for this sample (rendered), or a :class:`ScoringError` when there is none."""
        if "value" in self.spec.options:
            value = self.render_option(self.spec.options["value"], sample)
        else:
            value = sample.expected
        if value is None:
            raise ScoringError(f"scorer '{self.name}' has no 'value' and the item has no expected value")
        return value

    def reference_texts(self, sample: Sample) -> list[str]:
        """The reference as a list of texts (a single value becomes a one-element list)."""
        value = self.reference(sample)
        texts = [to_text(v) for v in value] if isinstance(value, list | tuple) else [to_text(value)]
        if not any(text.strip() for text in texts):
            raise ScoringError(f"scorer '{self.name}': the reference is empty")
        return texts


def _fold(text: str, ignore_case: bool) -> str:
    return text.casefold() if ignore_case else text


@register_scorer("exact")
class ExactMatch(ReferenceScorer):
    """1 when the output equals the reference (optionally ignoring case, and runs of whitespace)."""

    allowed_options = frozenset({"value", "ignore_case", "ignore_whitespace"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.ignore_case = spec.bool_option("ignore_case")
        self.ignore_whitespace = spec.bool_option("ignore_whitespace")

    def _normalise(self, text: str) -> str:
        if self.ignore_whitespace:
            text = " ".join(text.split())
        return _fold(text, self.ignore_case)

    async def measure(self, sample: Sample) -> ScoreResult:
        reference = to_text(self.reference(sample))
        same = self._normalise(sample.output) == self._normalise(reference)
        return ScoreResult(float(same), reason=None if same else f"expected {reference[:200]!r}")


@register_scorer("contains")
class Contains(ReferenceScorer):
    """1 when the output contains the text ``value``."""

    allowed_options = frozenset({"value", "ignore_case"})
    ignore_case_default: ClassVar[bool] = False

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.ignore_case = spec.bool_option("ignore_case", self.ignore_case_default)

    def needles(self, sample: Sample) -> list[str]:
        """The texts to look for."""
        value = self.reference(sample)
        needles = [to_text(v) for v in value] if isinstance(value, list | tuple) else [to_text(value)]
        if not needles or not all(needles):
            raise ScoringError(f"scorer '{self.name}': the texts to look for must not be empty")
        return needles

    def found(self, sample: Sample) -> tuple[list[str], list[str]]:
        """The needles present in the output, and those missing."""
        haystack = _fold(sample.output, self.ignore_case)
        present: list[str] = []
        missing: list[str] = []
        for needle in self.needles(sample):
            (present if _fold(needle, self.ignore_case) in haystack else missing).append(needle)
        return present, missing

    async def measure(self, sample: Sample) -> ScoreResult:
        _, missing = self.found(sample)
        return ScoreResult(float(not missing), reason=f"missing {missing!r}" if missing else None)


@register_scorer("icontains")
class IContains(Contains):
    """``contains`` ignoring case."""

    ignore_case_default = True


@register_scorer("contains-any")
class ContainsAny(Contains):
    """1 when the output contains at least one of the texts in ``value``."""

    async def measure(self, sample: Sample) -> ScoreResult:
        present, missing = self.found(sample)
        return ScoreResult(float(bool(present)), reason=None if present else f"none of {missing!r}")


@register_scorer("icontains-any")
class IContainsAny(ContainsAny):
    """``contains-any`` ignoring case."""

    ignore_case_default = True


@register_scorer("contains-all")
class ContainsAll(Contains):
    """The share of the texts in ``value`` that the output contains (passes at 1.0: all of them)."""

    async def measure(self, sample: Sample) -> ScoreResult:
        present, missing = self.found(sample)
        value = len(present) / (len(present) + len(missing))
        return ScoreResult(value, reason=f"missing {missing!r}" if missing else None)


@register_scorer("icontains-all")
class IContainsAll(ContainsAll):
    """``contains-all`` ignoring case."""

    ignore_case_default = True


@register_scorer("regex")
class RegexMatch(ReferenceScorer):
    """1 when the pattern ``value`` matches somewhere in the output (``full_match``: the whole output)."""

    allowed_options = frozenset({"value", "ignore_case", "multiline", "dotall", "full_match"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        pattern = spec.option("value", required=True)
        if not isinstance(pattern, str):
            raise spec.error("option 'value' must be a regular expression string")
        self.flags = (
            (re.IGNORECASE if spec.bool_option("ignore_case") else 0)
            | (re.MULTILINE if spec.bool_option("multiline") else 0)
            | (re.DOTALL if spec.bool_option("dotall") else 0)
        )
        self.full_match = spec.bool_option("full_match")
        if not needs_template(pattern):
            try:
                compile_pattern(pattern, self.flags)
            except PatternError as exc:
                raise spec.error(f"invalid regular expression {pattern[:200]!r}: {exc}") from None

    async def measure(self, sample: Sample) -> ScoreResult:
        pattern = to_text(self.reference(sample))
        try:
            compiled = compile_pattern(pattern, self.flags)
        except PatternError as exc:
            raise ScoringError(f"invalid regular expression {pattern[:200]!r}: {exc}") from None
        try:
            match = search(compiled, sample.output, PATTERN_TIMEOUT_S, whole=self.full_match)
        except PatternTimeout as exc:  # the same output would take as long again: not worth a retry
            error = f"regular expression {pattern[:200]!r}: {exc}"
            return ScoreResult.unmeasured(error, details={"retryable": False})
        return ScoreResult(float(match is not None), reason=None if match else f"no match for {pattern!r}")


@register_scorer("starts-with")
class StartsWith(ReferenceScorer):
    """1 when the output (leading whitespace ignored) starts with ``value``."""

    allowed_options = frozenset({"value", "ignore_case"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.ignore_case = spec.bool_option("ignore_case")

    async def measure(self, sample: Sample) -> ScoreResult:
        prefix = to_text(self.reference(sample))
        ok = _fold(sample.output.lstrip(), self.ignore_case).startswith(_fold(prefix, self.ignore_case))
        return ScoreResult(float(ok), reason=None if ok else f"does not start with {prefix!r}")


@register_scorer("is-json")
class IsJson(BaseScorer):
    """1 when the output is valid JSON (a code fence around the whole output is allowed)."""

    async def measure(self, sample: Sample) -> ScoreResult:
        try:
            parse_json_output(sample.output)
        except ValueError as exc:
            return ScoreResult(0.0, reason=f"not valid JSON: {exc}")
        return ScoreResult(1.0)


@register_scorer("json-schema")
class JsonSchemaMatch(BaseScorer):
    """1 when the output is JSON that validates against ``schema`` (inline, or a JSON/YAML file path
    resolved against the spec's base directory)."""

    allowed_options = frozenset({"schema"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        import jsonschema  # type: ignore[import-untyped]  # ships without type information

        schema = spec.option("schema", required=True)
        if isinstance(schema, str):
            schema = self._load_schema(spec, schema)
        if not isinstance(schema, Mapping | bool):
            raise spec.error("option 'schema' must be a JSON schema (a mapping) or a path to one")
        validator_class = jsonschema.validators.validator_for(schema)
        try:
            validator_class.check_schema(schema)
            self.validator = schema_validator(schema)
        except jsonschema.SchemaError as exc:
            raise spec.error(f"invalid JSON schema: {exc.message}") from None
        except PatternError as exc:
            raise spec.error(f"invalid JSON schema: {exc}") from None

    @staticmethod
    def _load_schema(spec: ScorerSpec, location: str) -> Any:
        path = Path(location).expanduser()
        if not path.is_absolute() and spec.base_dir is not None:
            path = spec.base_dir / path
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise spec.error(f"cannot read the schema file {str(path)!r}: {exc.strerror}") from None
        try:
            return json.loads(text) if path.suffix == ".json" else load_yaml(text, str(path))
        except (ValueError, yaml.YAMLError) as exc:
            raise spec.error(f"the schema file {str(path)!r} is not valid JSON/YAML: {exc}") from None

    async def measure(self, sample: Sample) -> ScoreResult:
        try:
            document = parse_json_output(sample.output)
        except ValueError as exc:
            return ScoreResult(0.0, reason=f"not valid JSON: {exc}")
        try:
            with validation_deadline():
                found = list(self.validator.iter_errors(document))
        except PatternTimeout as exc:  # the same output would take as long again: not worth a retry
            return ScoreResult.unmeasured(str(exc), details={"retryable": False})
        errors = sorted(found, key=lambda e: list(map(str, e.path)))
        if not errors:
            return ScoreResult(1.0)
        shown = "; ".join(f"{e.json_path}: {e.message}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return ScoreResult(0.0, reason=f"schema violations: {shown}{more}")


@register_scorer("numeric")
class NumericMatch(ReferenceScorer):
    """1 when the number in the output (the ``last`` one by default, or the ``first``) is within
    ``tolerance`` (absolute) or ``relative_tolerance`` (a fraction of the reference) of ``value``."""

    allowed_options = frozenset({"value", "tolerance", "relative_tolerance", "extract"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.tolerance = spec.number_option("tolerance", 0.0, minimum=0)
        self.relative_tolerance = spec.number_option("relative_tolerance", 0.0, minimum=0)
        self.extract = spec.choice_option("extract", ("first", "last"), "last")

    def _reference_number(self, sample: Sample) -> float:
        value = self.reference(sample)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        numbers = extract_numbers(to_text(value)) if isinstance(value, str) else []
        if len(numbers) != 1:
            raise ScoringError(f"scorer '{self.name}': the reference {value!r} is not a number")
        return numbers[0]

    async def measure(self, sample: Sample) -> ScoreResult:
        target = self._reference_number(sample)
        numbers = extract_numbers(sample.output)
        if not numbers:
            return ScoreResult(0.0, reason="no number in the output")
        found = numbers[0] if self.extract == "first" else numbers[-1]
        allowed = max(self.tolerance, self.relative_tolerance * abs(target), 1e-9 * max(1.0, abs(target)))
        ok = abs(found - target) <= allowed
        return ScoreResult(
            float(ok), reason=f"found {found:g}, expected {target:g}", details={"found": found}
        )


@register_scorer("levenshtein")
class LevenshteinSimilarity(ReferenceScorer):
    """Normalised Levenshtein similarity to the reference: 1 - distance / max(len); best of several."""

    default_threshold = 0.8
    allowed_options = frozenset({"value", "ignore_case"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.ignore_case = spec.bool_option("ignore_case")

    async def measure(self, sample: Sample) -> ScoreResult:
        from rapidfuzz.distance import Levenshtein

        output = _fold(sample.output, self.ignore_case)
        value = max(
            Levenshtein.normalized_similarity(output, _fold(reference, self.ignore_case))
            for reference in self.reference_texts(sample)
        )
        return ScoreResult(value)


@register_scorer("bleu")
class BleuScore(ReferenceScorer):
    """Sentence-level BLEU (sacrebleu, effective order) against one or more references, divided by 100."""

    default_threshold = 0.5
    allowed_options = frozenset({"value", "lowercase"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        from sacrebleu.metrics.bleu import BLEU

        self.metric = BLEU(effective_order=True, lowercase=spec.bool_option("lowercase"))

    async def measure(self, sample: Sample) -> ScoreResult:
        result = self.metric.sentence_score(sample.output, self.reference_texts(sample))
        return ScoreResult(result.score / 100, reason=str(result))


@register_scorer("chrf")
class ChrfScore(ReferenceScorer):
    """Sentence-level chrF (``word_order: 2`` for chrF++) against one or more references, divided by 100."""

    default_threshold = 0.5
    allowed_options = frozenset({"value", "word_order"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        from sacrebleu.metrics.chrf import CHRF

        word_order = spec.number_option("word_order", 0, minimum=0, maximum=2)
        if word_order != int(word_order):
            raise spec.error("option 'word_order' must be 0, 1 or 2")
        self.metric = CHRF(word_order=int(word_order))

    async def measure(self, sample: Sample) -> ScoreResult:
        result = self.metric.sentence_score(sample.output, self.reference_texts(sample))
        return ScoreResult(result.score / 100, reason=str(result))


@register_scorer("rouge")
class RougeScore(ReferenceScorer):
    """ROUGE F1 (``variant``: rouge-1, rouge-2 or rouge-l) on lowercased words; best of several
    references."""

    default_threshold = 0.5
    allowed_options = frozenset({"value", "variant"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.variant = spec.choice_option("variant", ("rouge-1", "rouge-2", "rouge-l"), "rouge-l")

    async def measure(self, sample: Sample) -> ScoreResult:
        references = self.reference_texts(sample)
        if not any(_words(reference) for reference in references):
            raise ScoringError(f"scorer '{self.name}': the reference has no words")
        return ScoreResult(max(rouge_f1(sample.output, ref, self.variant) for ref in references))


@functools.lru_cache(maxsize=4)
def _local_embedder(model: str) -> Any:
    # One provider (and so one loaded model) per model name for the whole process: loading takes seconds.
    from pilothouse.providers.base import Deployment
    from pilothouse.providers.local_embedding import LocalEmbeddingProvider

    return LocalEmbeddingProvider(Deployment(f"eval-{model}", "local", model))


@register_scorer("embedding-similarity")
class EmbeddingSimilarity(ReferenceScorer):
    """Cosine similarity of the output's and the reference's embeddings from a local sentence model
    (loaded on first use, in a worker thread); negative cosines count as 0. Best of several references."""

    default_threshold = 0.75
    allowed_options = frozenset({"value", "model"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        import importlib.util

        missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
        if missing:
            raise spec.error(f"needs {', '.join(missing)}: pip install 'pilothouse[local]'")
        self.model = spec.text_option("model", "all-minilm-l6-v2") or "all-minilm-l6-v2"

    async def measure(self, sample: Sample) -> ScoreResult:
        references = self.reference_texts(sample)
        response = await _local_embedder(self.model).embed({"input": [sample.output, *references]})
        vectors = [item["embedding"] for item in response["data"]]
        cosine = max(sum(a * b for a, b in zip(vectors[0], v, strict=True)) for v in vectors[1:])
        return ScoreResult(min(1.0, max(0.0, cosine)), details={"cosine": cosine})


@register_scorer("latency")
class LatencyLimit(BaseScorer):
    """1 when the call took at most ``max_ms`` milliseconds; unmeasured when latency is unknown."""

    allowed_options = frozenset({"max_ms"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.max_ms = spec.number_option("max_ms", required=True, minimum=0)

    async def measure(self, sample: Sample) -> ScoreResult:
        if sample.latency_ms is None:
            return ScoreResult.unmeasured(reason="latency was not measured")
        ok = sample.latency_ms <= self.max_ms
        sign = "<=" if ok else ">"
        return ScoreResult(float(ok), reason=f"{sample.latency_ms:.0f} ms {sign} {self.max_ms:g} ms")


@register_scorer("cost")
class CostLimit(BaseScorer):
    """1 when the call cost at most ``max_usd``; unmeasured (never 0) when the cost is unknown."""

    allowed_options = frozenset({"max_usd"})

    def __init__(self, spec: ScorerSpec) -> None:
        super().__init__(spec)
        self.max_usd = Money.from_usd(spec.number_option("max_usd", required=True, minimum=0))

    async def measure(self, sample: Sample) -> ScoreResult:
        if sample.cost_usd is None:
            return ScoreResult.unmeasured(reason="cost unknown (no price for the model)")
        ok = sample.cost_usd <= self.max_usd
        sign = "<=" if ok else ">"
        return ScoreResult(float(ok), reason=f"{sample.cost_usd.display()} {sign} {self.max_usd.display()}")

"""Eval specs: what to evaluate, with what, how often. Written in YAML, or built in Python.

```yaml
name: explain-v1                     # optional: the run's name
dataset: items.jsonl                 # a JSONL/CSV/YAML file (relative to the spec), a stored dataset's
                                     # name ("qa" or "qa@3" for version 3), or {items: [...]} inline
target:                              # see pilothouse.evals.targets: model | callable | http
  model: gpt-4o-mini
  base_url: http://127.0.0.1:4000/v1 # optional; default: the models of the local gateway config,
  api_key: ${PILOTHOUSE_API_KEY}     # called in-process
  max_tokens: 64
  messages:
    - {role: user, content: "Explain {{topic}} briefly."}
judge: {model: gpt-4o-mini}          # the model judge scorers grade with (same keys as a model target)
scorers:                             # see pilothouse.evals.deterministic_scorers and judges
  - {type: contains, value: "{{topic}}", weight: 2}
  - {type: rubric, criteria: "Is it correct?", threshold: 0.6}
repeats: 1                           # epochs: each item is run this many times
concurrency: 16                      # calls in flight at most (fewer while the target answers 429)
timeout_s: 120                       # per target call
retries: 4                           # per call, after 429, 5xx, timeouts (with backoff)
cache: true                          # reuse earlier answers to the same request (default: on for
                                     # model and http targets, off for callables)
assert: {contains: 0.9}              # optional: means a run must reach (eval run exits 1 when a
                                     # mean is significantly below, 3 when it cannot tell)
```

Every error names the file and the key: ``spec.yaml: target.messages[0].role: must be ...``.
In Python: ``EvalSpec.create(dataset=[{"topic": "tides"}], target=my_function, scorers=[...])``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pilothouse.config import FileTooLarge, load_yaml, read_small_text
from pilothouse.domain.datasets import DatasetError, DatasetItem
from pilothouse.domain.redaction import REDACTED, redact_headers, redact_url
from pilothouse.evals.calls import TargetConfigError
from pilothouse.evals.datasets import FORMATS, item_from_mapping
from pilothouse.evals.prompt_targets import PromptResolver, is_prompt_reference, resolve_prompt_target
from pilothouse.evals.scoring import Scorer, ScorerConfigError, build_scorer
from pilothouse.evals.targets import Target, build_target

__all__ = [
    "DatasetRef",
    "EvalSpec",
    "SpecError",
    "load_spec",
    "parse_scorers",
    "parse_spec",
    "read_spec_file",
]

MAX_SPEC_BYTES = 1024 * 1024  # a spec is a page of YAML; its dataset is a file of its own
TOP_KEYS = (
    "name",
    "description",
    "project",
    "dataset",
    "target",
    "judge",
    "scorers",
    "repeats",
    "concurrency",
    "timeout_s",
    "retries",
    "cache",
    "assert",
)
_DATASET_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".yaml", ".yml"}
_SECRET_KEYS = {"api_key"}
_SECRET_MAPPINGS = {"headers"}  # every value may be a secret (an Authorization header)


class SpecError(ValueError):
    """A spec that cannot be run; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetRef:
    """Where the items come from: a file, a stored dataset (by name, optionally a version), or items
    given inline."""

    path: Path | None = None
    name: str | None = None
    version: int | None = None
    items: tuple[DatasetItem, ...] | None = None

    def describe(self) -> str:
        """The dataset in words."""
        if self.path is not None:
            return str(self.path)
        if self.name is not None:
            return self.name + (f"@{self.version}" if self.version else "")
        return f"{len(self.items or ())} inline items"


@dataclass(frozen=True)
class EvalSpec:
    """A parsed spec, its target and scorers built (so every mistake shows before the first call).

    ``raw`` is the spec as written, secrets redacted: what a run stores."""

    dataset: DatasetRef
    target: Target
    scorers: tuple[Scorer, ...]
    judges: tuple[Any, ...] = ()  # the judge clients to open and close (pilothouse.evals.clients)
    repeats: int = 1
    concurrency: int = 16
    timeout_s: float = 120.0
    retries: int = 4
    cache: bool = True
    name: str | None = None
    project: str = "default"
    assertions: Mapping[str, float] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    source: str = "spec"

    @classmethod
    def create(
        cls,
        *,
        dataset: str | Path | Sequence[Mapping[str, Any] | DatasetItem],
        target: Mapping[str, Any] | Target | Callable[..., Any],
        scorers: Sequence[Mapping[str, Any] | Scorer],
        base_dir: Path | None = None,
        **options: Any,
    ) -> EvalSpec:
        """A spec from Python values: ``target`` may be a function (a callable target) or a
        :class:`Target`, ``scorers`` may be scorer objects, ``dataset`` a list of items; ``options``
        are the other spec keys (``repeats``, ``concurrency``, ``judge``, ``assertions`` for
        ``assert``, ...)."""
        data: dict[str, Any] = dict(options)
        if "assertions" in data:
            data["assert"] = data.pop("assertions")
        data["dataset"] = str(dataset) if isinstance(dataset, Path) else dataset
        data["target"] = {"callable": target} if callable(target) and not _is_target(target) else target
        data["scorers"] = list(scorers)
        return parse_spec(data, base_dir=base_dir or Path.cwd(), source="spec")

    def with_overrides(self, **changes: Any) -> EvalSpec:
        """A copy with some settings changed (``repeats``, ``concurrency``, ``cache``, ``name``)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _is_target(value: Any) -> bool:
    return all(hasattr(value, name) for name in ("prepare", "call", "identity", "describe"))


def _unknown_key(source: str, where: str, key: str, known: Sequence[str]) -> SpecError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
    return SpecError(f"{source}: {where}unknown key {key!r}{hint}")


def read_spec_file(path: Path) -> Any:
    """A spec file's YAML, parsed but not checked."""
    try:
        text = read_small_text(path, MAX_SPEC_BYTES, "an eval spec")
    except OSError as exc:
        raise SpecError(f"cannot read the spec {path}: {exc.strerror}") from None
    except FileTooLarge as exc:
        raise SpecError(str(exc)) from None
    try:
        return load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


def load_spec(path: Path, *, prompts: PromptResolver | None = None) -> EvalSpec:
    """A spec from a YAML file (``prompts`` resolves a target's ``prompt: name@label``)."""
    return parse_spec(read_spec_file(path), base_dir=path.resolve().parent, source=str(path), prompts=prompts)


def parse_scorers(data: Any, *, base_dir: Path, source: str = "spec") -> tuple[list[Scorer], list[Any]]:
    """Only the ``judge`` and ``scorers`` of a spec, built as :func:`parse_spec` builds them (with the
    judge clients to open and close); ``dataset`` and ``target`` may be absent and are not checked.
    What judge calibration reads."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a spec is a mapping with judge and scorers")
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown_key(source, "", str(key), TOP_KEYS)
    if data.get("scorers") is None:
        raise SpecError(f"{source}: 'scorers' is required")
    judge_options = data.get("judge")
    if judge_options is not None and not isinstance(judge_options, Mapping):
        raise SpecError(f"{source}: judge: must be a mapping (model, base_url, api_key, ...)")
    return _scorers(data["scorers"], judge_options, base_dir, source)


def parse_spec(
    data: Any, *, base_dir: Path, source: str = "spec", prompts: PromptResolver | None = None
) -> EvalSpec:
    """A spec from a parsed mapping; :class:`SpecError` names the key that is wrong. ``prompts``
    resolves a target's ``prompt: name@label`` (a prompt of the registry: see
    :mod:`pilothouse.evals.prompt_targets`)."""
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a spec is a mapping with dataset, target and scorers")
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown_key(source, "", str(key), TOP_KEYS)
    for key in ("dataset", "target", "scorers"):
        if data.get(key) is None:
            raise SpecError(f"{source}: '{key}' is required")
    dataset = _dataset(data["dataset"], base_dir, source)
    if isinstance(data["target"], Mapping) and is_prompt_reference(data["target"].get("prompt")):
        project_of = data.get("project", "default")
        try:
            resolved = resolve_prompt_target(
                data["target"], prompts, project_of if isinstance(project_of, str) else ""
            )
        except ValueError as exc:
            raise SpecError(f"{source}: {exc}") from None
        data = {**data, "target": resolved}
    target = _target(data["target"], base_dir, source)
    judge_options = data.get("judge")
    if judge_options is not None and not isinstance(judge_options, Mapping):
        raise SpecError(f"{source}: judge: must be a mapping (model, base_url, api_key, ...)")
    scorers, judges = _scorers(data["scorers"], judge_options, base_dir, source)
    names = [s.name for s in scorers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SpecError(f"{source}: scorers: two scorers are named {duplicates[0]!r}; give one a 'name'")
    assertions = _assertions(data.get("assert"), names, source)
    name = data.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise SpecError(f"{source}: name: must be a non-empty string")
    project = data.get("project", "default")
    if not isinstance(project, str) or not project:
        raise SpecError(f"{source}: project: must be a non-empty string")
    cache = data.get("cache")
    if cache is not None and not isinstance(cache, bool):
        raise SpecError(f"{source}: cache: must be true or false")
    return EvalSpec(
        dataset=dataset,
        target=target,
        scorers=tuple(scorers),
        judges=tuple(judges),
        repeats=_integer(data, "repeats", 1, source),
        concurrency=_integer(data, "concurrency", 16, source),
        timeout_s=_number(data, "timeout_s", 120.0, source),
        retries=_integer(data, "retries", 4, source, minimum=0),
        cache=target.cache_default if cache is None else cache,
        name=name.strip() if isinstance(name, str) else None,
        project=project,
        assertions=assertions,
        raw=_redacted(data),
        source=source,
    )


def _integer(data: Mapping[str, Any], key: str, default: int, source: str, minimum: int = 1) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{source}: {key}: must be an integer >= {minimum}, not {value!r}")
    return value


def _number(data: Mapping[str, Any], key: str, default: float, source: str) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise SpecError(f"{source}: {key}: must be a positive number, not {value!r}")
    return float(value)


def _dataset(value: Any, base_dir: Path, source: str) -> DatasetRef:
    if isinstance(value, Mapping):
        known = ("file", "name", "version", "items")
        for key in value:
            if key not in known:
                raise _unknown_key(source, "dataset: ", str(key), known)
        if "items" in value:
            return _inline_items(value["items"], source)
        if "file" in value:
            return _dataset_file(str(value["file"]), base_dir, source)
        name = value.get("name")
        version = value.get("version")
        if not isinstance(name, str) or not name:
            raise SpecError(f"{source}: dataset: needs 'file', 'name' or 'items'")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
            raise SpecError(f"{source}: dataset.version: must be a version number (1, 2, ...)")
        return DatasetRef(name=name, version=version)
    if isinstance(value, list | tuple):
        return _inline_items(value, source)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{source}: dataset: must be a file, a stored dataset's name or a list of items")
    text = value.strip()
    candidate = Path(text).expanduser()
    candidate = candidate if candidate.is_absolute() else base_dir / candidate
    if candidate.suffix.lower() in _DATASET_SUFFIXES or candidate.is_file():
        return _dataset_file(text, base_dir, source)
    name, _, version = text.partition("@")
    if version and not version.isdigit():
        raise SpecError(f"{source}: dataset: {text!r} is not a file, nor 'name' or 'name@version'")
    return DatasetRef(name=name, version=int(version) if version else None)


def _dataset_file(text: str, base_dir: Path, source: str) -> DatasetRef:
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise SpecError(f"{source}: dataset: the file {text!r} does not exist (looked in {base_dir})")
    if path.suffix.lower() not in _DATASET_SUFFIXES:
        raise SpecError(f"{source}: dataset: {text!r} is not a dataset file ({', '.join(FORMATS)})")
    return DatasetRef(path=path)


def _inline_items(value: Any, source: str) -> DatasetRef:
    if not isinstance(value, list | tuple):
        raise SpecError(f"{source}: dataset.items: must be a list of items")
    items = []
    for position, record in enumerate(value, start=1):
        if isinstance(record, DatasetItem):
            items.append(record)
            continue
        try:
            items.append(item_from_mapping(record, position, f"dataset item {position}"))
        except DatasetError as exc:
            raise SpecError(f"{source}: {exc}") from None
    return DatasetRef(items=tuple(items))


def _target(value: Any, base_dir: Path, source: str) -> Target:
    if _is_target(value):
        return value  # type: ignore[no-any-return]  # a Target object built in Python
    if not isinstance(value, Mapping):
        raise SpecError(f"{source}: target: must be a mapping (model, callable or url)")
    try:
        return build_target(value, base_dir)
    except TargetConfigError as exc:
        raise SpecError(f"{source}: {exc}") from None


def _scorers(
    value: Any, judge_options: Mapping[str, Any] | None, base_dir: Path, source: str
) -> tuple[list[Scorer], list[Any]]:
    from pilothouse.evals.clients import build_judge

    if not isinstance(value, list) or not value:
        raise SpecError(f"{source}: scorers: must be a non-empty list")
    scorers: list[Scorer] = []
    judges: dict[str | None, Any] = {}
    for index, entry in enumerate(value):
        where = f"scorers[{index}]"
        if isinstance(entry, Scorer) and not isinstance(entry, Mapping):
            scorers.append(entry)
            continue
        if not isinstance(entry, Mapping):
            raise SpecError(f"{source}: {where}: must be a mapping with a 'type'")
        judge_name = entry.get("judge")
        judge = None
        if judge_options is not None or judge_name is not None:
            if judge_name is not None and not isinstance(judge_name, str):
                raise SpecError(f"{source}: {where}.judge: must be a model name")
            if judge_name not in judges:
                try:
                    judges[judge_name] = build_judge(judge_options or {}, base_dir, judge_name)
                except TargetConfigError as exc:
                    raise SpecError(f"{source}: {where}: {exc}") from None
            judge = judges[judge_name]
        try:
            scorers.append(build_scorer(entry, judge, base_dir=base_dir))
        except ScorerConfigError as exc:
            hint = ""
            if judge is None and "needs a judge" in str(exc):
                hint = "; add a top-level 'judge: {model: ...}' to the spec"
            raise SpecError(f"{source}: {where}: {exc}{hint}") from None
    return scorers, list(judges.values())


def _assertions(value: Any, names: Sequence[str], source: str) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{source}: assert: must map scorer names to the mean they must reach")
    out: dict[str, float] = {}
    for key, minimum in value.items():
        if key not in names:
            raise _unknown_key(source, "assert: ", str(key), list(names))
        if isinstance(minimum, bool) or not isinstance(minimum, int | float):
            raise SpecError(f"{source}: assert.{key}: must be a number (the mean to reach)")
        out[str(key)] = float(minimum)
    return out


def _redacted(value: Any) -> Any:
    """The spec as JSON-able data: secrets written literally are replaced (``${ENV}`` references are
    kept): ``api_key`` values, every value of a ``headers`` mapping (``target.headers``, a judge's),
    the password of any URL (``http://bob:<redacted>@host``); functions and objects named."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in _SECRET_KEYS and isinstance(item, str) and not item.startswith("${"):
                out[str(key)] = REDACTED
            elif key in _SECRET_MAPPINGS and isinstance(item, Mapping):
                out[str(key)] = redact_headers(item)
            else:
                out[str(key)] = _redacted(item)
        return out
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list | tuple):
        return [_redacted(v) for v in value]
    if isinstance(value, DatasetItem):
        from pilothouse.domain.datasets import item_to_mapping

        return _redacted(item_to_mapping(value))
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if callable(value) and hasattr(value, "__qualname__"):
        return f"{getattr(value, '__module__', '?')}:{value.__qualname__}"
    try:
        json.dumps(value)
    except TypeError:
        return f"<{type(value).__name__}>"
    return value

"""The guard registry: a guard type is a factory that reads its own settings and returns a
:class:`BuiltGuard`; built-in guards register through the same :func:`register_guard` a plugin calls::

    from pilothouse.quality.guardrails import BuiltGuard, GuardOptions, register_guard
    from pilothouse.domain.guards import GuardResult

    @register_guard("shouting")
    def shouting(options: GuardOptions) -> BuiltGuard:
        limit = options.number("max_upper_share", 0.5)

        async def check(text, context):
            letters = [c for c in text if c.isalpha()] or ["a"]
            share = sum(c.isupper() for c in letters) / len(letters)
            return GuardResult(share <= limit, 1 - share, None if share <= limit else "too much shouting")

        return BuiltGuard(check)

:func:`build_guardrails` turns the config's ``guardrails:`` rules into the gateway's
:class:`~pilothouse.domain.guards.Guardrails`; a bad setting is a ``ConfigError`` naming its key."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pilothouse.config import ConfigError, GuardrailRule, GuardSpec
from pilothouse.domain.guards import (
    Check,
    GuardAction,
    Guardrails,
    GuardStage,
    GuardUse,
    Locate,
    RouteGuards,
)

__all__ = [
    "BuiltGuard",
    "GuardConfigError",
    "GuardOptions",
    "build_guardrails",
    "guard_types",
    "register_guard",
]


class GuardConfigError(ValueError):
    """A guard setting that cannot be used; ``key`` names it (None: the guard as a whole)."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class BuiltGuard:
    """What a guard type makes: its ``check``; ``locate`` when it finds spans (then it can redact,
    also a stream chunk by chunk, holding back ``window`` characters that a match may still grow
    into); ``context_roles``, the roles of the messages whose text is its context."""

    check: Check
    locate: Locate | None = None
    window: int = 64
    context_roles: frozenset[str] | None = None


class GuardOptions:
    """A guard's own settings, read with checks that name the key; :meth:`finish` refuses keys that
    no read asked for (a typo must not be ignored)."""

    def __init__(self, values: Mapping[str, Any], stage: str) -> None:
        self.values = dict(values)
        self.stage = stage  # "input" or "output"
        self._read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value of ``key`` (``default`` when absent)."""
        self._read.add(key)
        return self.values.get(key, default)

    def number(self, key: str, default: float, low: float = 0.0, high: float = 1.0) -> float:
        """A number from ``low`` to ``high``."""
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            raise GuardConfigError(key, f"must be a number from {low:g} to {high:g} (got {value!r})")
        return float(value)

    def strings(self, key: str, default: list[str] | None = None, *, limit: int = 10_000) -> list[str]:
        """A list of non-empty strings (one string is a list of one)."""
        value = self.get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise GuardConfigError(key, "must be a list of non-empty strings")
        if len(value) > limit:
            raise GuardConfigError(key, f"at most {limit:,} entries")
        return list(value)

    def finish(self) -> None:
        """Refuse the keys no read asked for."""
        unknown = sorted(set(self.values) - self._read)
        if unknown:
            known = ", ".join(sorted(self._read)) or "none"
            raise GuardConfigError(unknown[0], f"unknown key (known: {known})")


GuardFactory = Callable[[GuardOptions], BuiltGuard]
FactoryT = TypeVar("FactoryT", bound=GuardFactory)
_REGISTRY: dict[str, GuardFactory] = {}


def register_guard(type_name: str, *, replace: bool = False) -> Callable[[FactoryT], FactoryT]:
    """Register a guard type (decorator); ``replace`` to override one already registered."""

    def decorate(factory: FactoryT) -> FactoryT:
        if type_name in _REGISTRY and not replace:
            raise ValueError(f"guard type {type_name!r} is already registered")
        _REGISTRY[type_name] = factory
        return factory

    return decorate


def _load_builtin_guards() -> None:
    from pilothouse.quality.guardrails import _builtin  # noqa: F401  (registers on import)


def guard_types() -> list[str]:
    """The registered guard types, sorted."""
    _load_builtin_guards()
    return sorted(_REGISTRY)


def _use(spec: GuardSpec, stage: GuardStage, where: str) -> GuardUse:
    _load_builtin_guards()
    factory = _REGISTRY.get(spec.type)
    if factory is None:
        raise ConfigError(
            f"{where}.type: unknown guard type {spec.type!r} (known: {', '.join(guard_types())})"
        )
    options = GuardOptions(spec.options, stage.value)
    try:
        built = factory(options)
        options.finish()
    except GuardConfigError as exc:
        raise ConfigError(
            f"{where}.{exc.key}: {exc.message}" if exc.key else f"{where}: {exc.message}"
        ) from None
    action = GuardAction(spec.action)
    if action is GuardAction.REDACT and built.locate is None:
        raise ConfigError(
            f"{where}.action: a {spec.type} guard cannot redact (it finds no spans): "
            "use block, flag or fallback"
        )
    extra: dict[str, Any] = {}
    if built.context_roles is not None:
        extra["context_roles"] = built.context_roles
    return GuardUse(
        name=spec.label,
        kind=spec.type,
        stage=stage,
        action=action,
        check=built.check,
        locate=built.locate,
        window=built.window,
        fallback=spec.fallback,
        roles=frozenset(spec.roles) if spec.roles is not None else None,
        **extra,
    )


def build_guardrails(rules: tuple[GuardrailRule, ...], source: str = "config") -> Guardrails | None:
    """The gateway's guards of the config's ``guardrails:`` rules (None when there are none); a
    :class:`ConfigError` naming the file and key for an unknown type or a bad setting."""
    routes: dict[str, RouteGuards] = {}
    for index, rule in enumerate(rules):
        stages = []
        for stage in GuardStage:
            specs: tuple[GuardSpec, ...] = getattr(rule, stage.value)
            stages.append(
                tuple(
                    _use(spec, stage, f"{source}: guardrails[{index}].{stage.value}[{position}]")
                    for position, spec in enumerate(specs)
                )
            )
        guards = RouteGuards(input=stages[0], output=stages[1], max_input_chars=rule.max_input_chars)
        for model in rule.models:
            routes[model] = guards
    return Guardrails(routes) if routes else None

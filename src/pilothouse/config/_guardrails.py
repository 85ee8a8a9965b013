"""The ``guardrails:`` section: input and output guards per route (model name).

```yaml
guardrails:
  - models: [gpt-4o-mini]          # model or cascade names; "*" for every route without its own rule
    input:
      - {type: pii, action: redact}                    # emails, phones, cards, IBANs, secrets
      - {type: prompt_injection, action: block}
    output:
      - {type: json_schema, schema: {type: object}, action: fallback, fallback: gpt-4o}
      - {type: groundedness, action: flag}
```

Each guard's own keys (``schema``, ``words``, ``entities``, ...) are checked by the guard registry
(``pilothouse.quality.guardrails``) when the server builds the guards; errors name the key."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["GuardSpec", "GuardrailRule"]


class GuardSpec(BaseModel):
    """One guard of a rule: its ``type`` (a registered guard), what a failed check does (``action``),
    an optional ``name`` (default: the type; it names the guard on the trace and in errors), the
    ``fallback`` model of the fallback action; any other key is the guard's own setting."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)

    type: str = Field(min_length=1, description="A registered guard type (pii, regex, json_schema, ...).")
    action: Literal["block", "redact", "flag", "fallback"] = "block"
    name: str | None = Field(default=None, min_length=1, max_length=64)
    fallback: str | None = Field(default=None, description="The model of the fallback action.")
    roles: tuple[Literal["system", "developer", "user", "assistant", "tool"], ...] | None = Field(
        default=None,
        min_length=1,
        description="Input guards: the roles of the messages checked (default all).",
    )

    @property
    def label(self) -> str:
        """The guard's name on traces and in errors."""
        return self.name or self.type

    @property
    def options(self) -> dict[str, Any]:
        """The guard's own settings (the keys besides type, action, name, fallback and roles)."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _fallback_with_its_action(self) -> GuardSpec:
        if self.action == "fallback" and not self.fallback:
            raise ValueError("action fallback needs a fallback model (fallback: MODEL)")
        if self.fallback and self.action != "fallback":
            raise ValueError(f"fallback is only used with action fallback (action is {self.action})")
        return self


class GuardrailRule(BaseModel):
    """``guardrails[]``: the guards of some routes, in the order they run."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    models: tuple[str, ...] = Field(default=("*",), min_length=1, description='Route names, or "*".')
    input: tuple[GuardSpec, ...] = ()
    output: tuple[GuardSpec, ...] = ()
    max_input_chars: int = Field(
        default=1_000_000,
        ge=1,
        le=100_000_000,
        description="A request whose messages hold more text is refused (413) on a route with input guards.",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


def check_guardrails(rules: tuple[GuardrailRule, ...], models: set[str], cascades: set[str]) -> None:
    """Each rule names served routes (or ``*``), each route is in one rule, every fallback is a
    served model, and no output guard is put on a cascade route by name (a cascade's answer is
    checked by its verifier; a ``*`` rule's output guards skip cascades); ValueError naming the key
    otherwise."""
    seen: dict[str, int] = {}
    routes = models | cascades
    for index, rule in enumerate(rules):
        for model in rule.models:
            if model != "*" and model not in routes:
                raise ValueError(f"guardrails[{index}].models: no model entry or cascade serves {model!r}")
            if model in cascades and rule.output:
                raise ValueError(
                    f"guardrails[{index}].output: {model!r} is a cascade route, whose answers its "
                    "verifier checks: output guards run on model routes only"
                )
            if model in seen:
                raise ValueError(
                    f"guardrails[{index}].models: {model!r} already has guardrails[{seen[model]}] "
                    "(one rule per route: put its guards together)"
                )
            seen[model] = index
        for position, spec in enumerate(rule.output):
            if spec.roles is not None:
                raise ValueError(
                    f"guardrails[{index}].output[{position}].roles: only input guards pick roles"
                )
        for stage in ("input", "output"):
            for position, spec in enumerate(getattr(rule, stage)):
                if spec.fallback is not None and spec.fallback not in models:
                    raise ValueError(
                        f"guardrails[{index}].{stage}[{position}].fallback: no model entry serves "
                        f"{spec.fallback!r}"
                    )

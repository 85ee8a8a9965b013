"""Cascade routes: a model name served by trying cheaper models first and escalating to the next one
when a verifier says the answer is not good enough.

```yaml
cascades:
  - name: smart                  # the model name clients ask for
    models: [cheap, strong]      # served model names, cheapest first
    verifier:                    # any eval scorer (pilothouse.evals): regex, is-json, rubric (a judge) ...
      type: regex
      value: "(?i)not sure|do not know"
      negate: true               # escalate when the answer hedges
    judge: strong                # the model judge scorers (rubric, ...) ask, when the verifier needs one
```

The last model's answer is always accepted. Every step is a real call (traced and priced on its own),
so the cost of a cascade is the sum of its steps. The verifier is built from an eval scorer by
:func:`pilothouse.evals.cascade_verifier` (the server's app factory does it), so this module needs
nothing of the evals.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pilothouse.config import CascadeSettings
from pilothouse.gateway._answers import check_chat_answer
from pilothouse.providers.base import Deployment

if TYPE_CHECKING:
    from pilothouse.gateway.router import Attempt, Router


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the verifier said about one answer."""

    accepted: bool
    score: float | None = None
    reason: str | None = None


Verifier = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Verdict]]


@dataclass(slots=True)
class CascadeStep:
    """One model tried by a cascade."""

    model: str
    response: dict[str, Any]
    deployment: Deployment
    verdict: Verdict | None  # None for the last model (accepted without asking)


async def run_cascade(
    router: Router,
    settings: CascadeSettings,
    verifier: Verifier,
    request: dict[str, Any],
    attempts: list[Attempt],
) -> list[CascadeStep]:
    """Try the cascade's models in order until one's answer is accepted; every step taken."""
    steps: list[CascadeStep] = []
    for position, model in enumerate(settings.models):
        step_request = {**request, "model": model, "stream": False}
        step_request.pop("stream_options", None)
        response, deployment = await router.chat(step_request, attempts)
        check_chat_answer(response)  # an unreadable step answer is the upstream's 502, not our 500
        last = position == len(settings.models) - 1
        verdict = None if last else await verifier(request, response)
        steps.append(CascadeStep(model, response, deployment, verdict))
        if verdict is None or verdict.accepted:
            break
    return steps

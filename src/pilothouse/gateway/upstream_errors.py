"""What the client is told when the upstream failed: never something it would take for its own
mistake (an upstream's 401 is the gateway's misconfigured deployment, not a bad client key), and
whether retrying can help (``x-should-retry``, which the official SDKs obey: the gateway has already
retried and failed over, so the SDK's own retries would multiply them)."""

from __future__ import annotations

from collections.abc import Sequence

from pilothouse.gateway.router import Attempt
from pilothouse.providers.base import ProviderError

SHOULD_RETRY = "x-should-retry"
NO_RETRY_CODES = frozenset({"budget_exceeded", "upstream_auth_failed", "model_not_allowed"})


def upstream_status(
    exc: ProviderError, model: str, attempts: Sequence[Attempt]
) -> tuple[int, str, str | None, str]:
    """Status, message, code and kind for the client of an upstream failure: a 401 or 403 of an
    upstream becomes a 502 naming the model and deployment (its credentials are the gateway's config)."""
    if exc.status in (401, 403):
        deployment = attempts[-1].deployment if attempts else "?"
        message = (
            f"The upstream of model '{model[:200]}' (deployment {deployment}) refused the gateway's "
            f"credentials ({exc.status}: {exc.message.rstrip('.')}). Your own key was accepted; the "
            "gateway's operator must fix the deployment's api_key."
        )
        return 502, message, "upstream_auth_failed", "server_error"
    tried = _models_tried(attempts)
    message = tried or exc.message
    return exc.status, message, exc.code, exc.kind


def _models_tried(attempts: Sequence[Attempt]) -> str:
    """When the call failed over to fallbacks, what each model did: the client asked for one model,
    and the last error alone (a fallback's) would name a provider it never chose."""
    runs: list[tuple[str, int, str | None]] = []  # (model, attempts, its last error), in order
    for attempt in attempts:
        if runs and runs[-1][0] == attempt.model:
            runs[-1] = (attempt.model, runs[-1][1] + 1, attempt.error or runs[-1][2])
        else:
            runs.append((attempt.model, 1, attempt.error))
    if len({model for model, _, _ in runs}) < 2:
        return ""
    parts = [
        f"{model[:100]} ({count} attempt{'' if count == 1 else 's'}: {(error or 'failed')[:200].rstrip('.')})"
        for model, count, error in runs
    ]
    return f"Every model failed, in order: {'; '.join(parts)}."


def retry_cannot_help(status: int, code: str | None, attempts: int = 0) -> bool:
    """Whether a client's retry of the same request cannot succeed: a refusal of the request itself
    (4xx other than a timeout, a conflict or a rate limit), a budget or credentials problem, or a
    server failure the gateway already retried."""
    if code in NO_RETRY_CODES:
        return True
    if 400 <= status < 500:
        return status not in (408, 409, 429)
    return status >= 500 and attempts > 1

"""The prompt registry: immutable versions, labels, rendering, the change watcher that keeps every
server process current, and the SDK's cached prompt client."""

from pilothouse.domain.prompts import (
    PromptError,
    PromptEvent,
    PromptRef,
    PromptSummary,
    PromptVersion,
    parse_ref,
)
from pilothouse.prompts._client import PromptClient, PromptUnavailable, configure_prompts, get_prompt
from pilothouse.prompts._registry import PromptNotFound, PromptRegistry
from pilothouse.prompts._watch import ChangeWatcher, publish_change

__all__ = [
    "ChangeWatcher",
    "PromptClient",
    "PromptError",
    "PromptEvent",
    "PromptNotFound",
    "PromptRef",
    "PromptRegistry",
    "PromptSummary",
    "PromptUnavailable",
    "PromptVersion",
    "configure_prompts",
    "get_prompt",
    "parse_ref",
    "publish_change",
]

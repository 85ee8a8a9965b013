"""What the review screen shows of an item, and the error of a queue, config or item that is not there."""

from __future__ import annotations

from dataclasses import dataclass

from pilothouse.domain.faithfulness import split_at_spans
from pilothouse.domain.review import Review, ReviewError, ReviewItem, ReviewQueue, ScoreConfig

__all__ = ["ItemView", "ReviewNotFound"]


class ReviewNotFound(ReviewError):
    """A queue, score config or item that this project does not have."""


@dataclass(frozen=True, slots=True)
class ItemView:
    """What the review screen shows: the item, its queue and score configs, the trace's input, its
    context (retrieval and tool outputs), its response, and the reviews so far."""

    item: ReviewItem
    queue: ReviewQueue
    configs: tuple[ScoreConfig, ...]
    input: str | None
    context: tuple[str, ...]
    output: str | None
    reviews: tuple[Review, ...]

    def output_parts(self) -> list[tuple[str, bool]]:
        """The response cut at the unsupported spans: (text, unsupported) pieces in order."""
        return split_at_spans(self.output or "", self.item.spans)

"""Human review: score configurations, annotation queues, their items and reviewers' scores (pure
values and the checks that keep them sound; the store keeps them, ``pilothouse.quality.review`` runs
the use cases)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MAX_CATEGORIES = 20
MAX_SCALE = 1e12  # a numeric config's bounds (1e308 made label means and kappa overflow)
MAX_CONFIGS_PER_QUEUE = 20
MAX_REASON_CHARS = 500
MAX_CORRECTION_CHARS = 100_000
MAX_SPANS = 200
MAX_REVIEWER_CHARS = 200  # a reviewer's recorded name ("key:" and a key's name are cut to this)


class ReviewError(ValueError):
    """A review request that cannot be done; the message says why (entry points show it as is)."""


class ScoreKind(StrEnum):
    """What a score configuration asks a reviewer for."""

    NUMERIC = "numeric"  # a number within [min_value, max_value]
    CATEGORICAL = "categorical"  # one of the labels
    BOOLEAN = "boolean"  # true or false


class ItemStatus(StrEnum):
    """Where an item of a queue stands: pending until it has the queue's number of reviews."""

    PENDING = "pending"
    COMPLETED = "completed"


def check_name(name: Any, what: str = "name") -> str:
    """A config or queue name: 1-100 letters, digits, '_', '.', ':' or '-', starting with a letter or
    digit."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ReviewError(
            f"{what} must be 1-100 letters, digits, '_', '.', ':' or '-' (got {str(name)[:40]!r})"
        )
    return name


def check_username(name: Any) -> str:
    """A reviewer's user name: 1-64 letters, digits, '_', '.', '@' or '-'."""
    if not isinstance(name, str) or not _USERNAME.match(name):
        raise ReviewError("a user name is 1-64 letters, digits, '_', '.', '@' or '-'")
    if name.lower() == "admin":  # the admin secret's reviews are recorded as "admin": one rater, not two
        raise ReviewError("'admin' is the name reviews by the admin secret are recorded under; pick another")
    return name


@dataclass(frozen=True, slots=True)
class ScoreConfig:
    """A question reviewers answer about each item: its name (also the name of the score it writes on
    the trace), its kind, the range or labels, and a description shown next to the control."""

    id: str
    project_id: str
    name: str
    kind: ScoreKind
    description: str = ""
    min_value: float | None = None
    max_value: float | None = None
    categories: tuple[str, ...] = ()
    created_ns: int = 0

    def check(self) -> None:
        """Raise :class:`ReviewError` unless the configuration is usable."""
        check_name(self.name, "a score config's name")
        if len(self.description) > 2000:
            raise ReviewError("a description is at most 2,000 characters")
        if self.kind is ScoreKind.NUMERIC:
            low, high = self.min_value, self.max_value
            if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)) or low >= high:
                raise ReviewError("a numeric score config needs finite min_value < max_value")
            if max(abs(low), abs(high)) > MAX_SCALE:  # means and kappa's (x - y) / (max - min) stay finite
                raise ReviewError(f"min_value and max_value must be within -{MAX_SCALE:g} to {MAX_SCALE:g}")
        elif self.kind is ScoreKind.CATEGORICAL:
            if not 2 <= len(self.categories) <= MAX_CATEGORIES:
                raise ReviewError(f"a categorical score config needs 2-{MAX_CATEGORIES} categories")
            if len(set(self.categories)) != len(self.categories):
                raise ReviewError("the categories of a score config must differ")
            for label in self.categories:
                if not label.strip() or len(label) > 100:
                    raise ReviewError("a category is 1-100 characters")

    def parse(self, value: Any) -> tuple[float | None, str | None]:
        """A reviewer's answer as (number, text) for storing; raises :class:`ReviewError` if it is not
        one this configuration accepts. Form text ("3", "true", "on") is accepted too."""
        if self.kind is ScoreKind.BOOLEAN:
            truth = _boolean(value)
            if truth is None:
                raise ReviewError(f"{self.name}: give true or false")
            return float(truth), "true" if truth else "false"
        if self.kind is ScoreKind.CATEGORICAL:
            if not isinstance(value, str) or value not in self.categories:
                raise ReviewError(f"{self.name}: give one of {', '.join(self.categories)}")
            return None, value
        number = _number(value)
        assert self.min_value is not None and self.max_value is not None
        if number is None or not self.min_value <= number <= self.max_value:
            raise ReviewError(f"{self.name}: give a number from {self.min_value:g} to {self.max_value:g}")
        return number, None

    def rating(self, value: float | None, text: str | None) -> str | float | None:
        """The value agreement compares: a label (categorical, boolean) or a number; None: no rating.
        A judge's number on a boolean config is a pass at 0.5 and above (the scorers' threshold)."""
        if self.kind is ScoreKind.NUMERIC:
            return value
        if self.kind is ScoreKind.BOOLEAN:
            if text in ("true", "false"):
                return text
            return None if value is None else ("true" if value >= 0.5 else "false")
        return text if text in self.categories else None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        return {
            "true": True,
            "on": True,
            "yes": True,
            "1": True,
            "false": False,
            "no": False,
            "0": False,
        }.get(value.strip().lower())
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class ReviewQueue:
    """An annotation queue: the score configs its items are reviewed with, how many reviewers each item
    needs (2 or more measures agreement between reviewers), and how long a claimed item stays a
    reviewer's (the lease)."""

    id: str
    project_id: str
    name: str
    description: str = ""
    config_names: tuple[str, ...] = ()
    reviews_per_item: int = 1
    lease_seconds: int = 600
    created_ns: int = 0

    def check(self) -> None:
        """Raise :class:`ReviewError` unless the queue is usable."""
        check_name(self.name, "a queue's name")
        if len(self.description) > 2000:
            raise ReviewError("a description is at most 2,000 characters")
        if len(self.config_names) > MAX_CONFIGS_PER_QUEUE:
            raise ReviewError(f"a queue has at most {MAX_CONFIGS_PER_QUEUE} score configs")
        if not 1 <= self.reviews_per_item <= 10:
            raise ReviewError("the reviews per item (reviews_per_item) are from 1 to 10")
        if not 10 <= self.lease_seconds <= 86_400:
            raise ReviewError("a lease (lease_seconds) is from 10 to 86400 seconds")


def check_spans(spans: Any) -> tuple[tuple[int, int], ...]:
    """Unsupported spans as (start, end) character offsets into the response, sorted; raises
    :class:`ReviewError` on anything else."""
    if spans is None:
        return ()
    if not isinstance(spans, Sequence) or isinstance(spans, str) or len(spans) > MAX_SPANS:
        raise ReviewError(f"spans is a list of at most {MAX_SPANS} [start, end] pairs")
    out = []
    for span in spans:
        pair = list(span.values()) if isinstance(span, Mapping) else span
        if (
            not isinstance(pair, Sequence)
            or len(pair) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
            or not 0 <= pair[0] < pair[1] <= 10_000_000
        ):
            raise ReviewError("each span is [start, end] with 0 <= start < end (character offsets)")
        out.append((int(pair[0]), int(pair[1])))
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class ReviewItem:
    """A trace in a queue: why it is there, who holds it now (the lease), what reviewers said."""

    id: str
    project_id: str
    queue_id: str
    trace_id: str
    reason: str = ""
    source: str = "manual"  # filter | manual | online | detector | api
    status: ItemStatus = ItemStatus.PENDING
    spans: tuple[tuple[int, int], ...] = ()
    lease_owner: str | None = None
    lease_until_ns: int | None = None
    reviews: int = 0
    created_ns: int = 0


@dataclass(frozen=True, slots=True)
class ReviewScore:
    """One reviewer's answer to one score config on one item."""

    item_id: str
    trace_id: str
    config_name: str
    reviewer: str
    value: float | None
    string_value: str | None
    created_ns: int = 0


@dataclass(frozen=True, slots=True)
class Review:
    """One reviewer's review of an item: skipped, or scored (with an optional corrected output)."""

    item_id: str
    trace_id: str
    reviewer: str
    skipped: bool
    corrected_output: str | None = None
    comment: str | None = None
    created_ns: int = 0
    scores: tuple[ReviewScore, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Reviewer:
    """A person who logs in to review (a user name and a password, stored as a scrypt hash)."""

    id: str
    project_id: str
    username: str
    display_name: str
    created_ns: int = 0
    disabled: bool = False

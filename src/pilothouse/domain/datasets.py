"""Datasets as values: an item to evaluate, a stored (immutable) dataset version, and the fingerprint
that says whether two sets of items are the same. Reading and writing dataset files lives in
:mod:`pilothouse.evals.datasets`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DatasetError",
    "DatasetItem",
    "DatasetVersion",
    "check_dataset_name",
    "fingerprint_item",
    "item_to_mapping",
    "items_fingerprint",
]


class DatasetError(ValueError):
    """A dataset file or item that cannot be read; the message names the file and the line."""


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def check_dataset_name(name: Any) -> str:
    """``name`` if a new dataset may be called so: 1-128 letters, digits, '.', '_', ':' or '-',
    starting with a letter or digit (it appears in URLs, file names and ``NAME@VERSION``)."""
    if isinstance(name, str) and len(name) > 128:
        raise DatasetError(
            f"dataset name {name[:40]!r}... ({name[-16:]!r} at its end) is {len(name)} characters: "
            "at most 128"
        )
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise DatasetError(
            f"invalid dataset name {str(name)[:80]!r}: use 1-128 letters, digits, '.', '_', ':' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class DatasetItem:
    """One thing to evaluate. ``input``: the template variables; ``messages``: a whole chat, when the
    item is a conversation; ``source_trace_id``: the trace it was curated from."""

    id: str
    input: Mapping[str, Any] = field(default_factory=dict)
    expected: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    messages: tuple[Mapping[str, Any], ...] | None = None
    source_trace_id: str | None = None

    def variables(self) -> dict[str, Any]:
        """What templates are rendered with: the input, ``expected``, ``metadata`` and ``messages``
        (input keys win over the last three)."""
        extra: dict[str, Any] = {"expected": self.expected, "metadata": dict(self.metadata)}
        if self.messages is not None:
            extra["messages"] = list(self.messages)
        return {**extra, **self.input}


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    """A stored dataset version: an immutable snapshot of items. Importing the same items again gives
    the same version back (matched by ``fingerprint``)."""

    id: str
    dataset_id: str
    name: str
    version: int
    item_count: int
    fingerprint: str
    source: str | None
    created_ns: int

    @property
    def label(self) -> str:
        """``name@version``."""
        return f"{self.name}@{self.version}"


def item_to_mapping(item: DatasetItem) -> dict[str, Any]:
    """The structured record of an item (what JSONL and YAML files hold); empty fields left out."""
    record: dict[str, Any] = {"id": item.id, "input": dict(item.input)}
    if item.messages is not None:
        record["messages"] = [dict(m) for m in item.messages]
    if item.expected is not None:
        record["expected"] = item.expected
    if item.metadata:
        record["metadata"] = dict(item.metadata)
    if item.source_trace_id:
        record["source_trace_id"] = item.source_trace_id
    return record


def items_fingerprint(items: Iterable[DatasetItem]) -> str:
    """A digest of items in order: the same items give the same digest, which is how an unchanged file
    maps to the dataset version already stored."""
    digest = hashlib.sha256()
    for item in items:
        fingerprint_item(digest, item)
    return digest.hexdigest()


def fingerprint_item(digest: hashlib._Hash, item: DatasetItem) -> None:
    """Add one item to a running fingerprint (``hashlib.sha256()``)."""
    digest.update(json.dumps(item_to_mapping(item), sort_keys=True, default=str).encode())
    digest.update(b"\n")

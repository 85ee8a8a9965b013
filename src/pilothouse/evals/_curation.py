"""Curation from stored traces into dataset versions: the pure steps of :mod:`pilothouse.domain.curation`
in order, plus near-duplicates by embedding (vectors from any embedding function; the CLI passes the
local all-MiniLM-L6-v2 model)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pilothouse.domain.curation import (
    CurationPlan,
    CurationReport,
    assign_splits,
    embedding_text,
    group_of,
    merge_duplicates,
    scrub_item,
)
from pilothouse.domain.datasets import DatasetError, DatasetItem, DatasetVersion

Embed = Callable[[list[str]], Sequence[Sequence[float]]]
Scrub = Callable[[str], str]
EMBED_BATCH = 256


@dataclass(frozen=True, slots=True)
class Curated:
    """A curation's outcome: per split, the stored version and whether it is new; and the report."""

    versions: dict[str, tuple[DatasetVersion, bool]]
    report: CurationReport


def drop_near_duplicates(
    items: Sequence[DatasetItem], embed: Embed, threshold: float
) -> tuple[list[DatasetItem], int]:
    """Items whose input is not a near-duplicate (cosine similarity >= ``threshold``) of one kept
    before it, in order; and how many were dropped. Inputs are embedded in batches; each kept vector is
    compared with every kept one (a matrix product per item: fine for tens of thousands of items)."""
    if not 0 < threshold <= 1:
        raise DatasetError(f"near-duplicate threshold must be in (0, 1], not {threshold}")
    if not items:
        return [], 0
    texts = [embedding_text(item) for item in items]
    vectors = np.vstack(
        [
            np.asarray(embed(texts[i : i + EMBED_BATCH]), dtype=np.float32)
            for i in range(0, len(texts), EMBED_BATCH)
        ]
    )
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)
    kept_vectors = np.empty_like(vectors)
    kept: list[DatasetItem] = []
    for item, vector in zip(items, vectors, strict=True):
        if kept and float(np.max(kept_vectors[: len(kept)] @ vector)) >= threshold:
            continue
        kept_vectors[len(kept)] = vector
        kept.append(item)
    return kept, len(items) - len(kept)


def curate_items(
    items: Iterable[DatasetItem],
    plan: CurationPlan,
    *,
    embed: Embed | None = None,
    scrub: Scrub | None = None,
) -> tuple[dict[str, list[DatasetItem]], CurationReport]:
    """The items of each split after de-duplication, near-duplicates, scrubbing and splitting, with
    the report of what each step did."""
    found = list(items)
    name = plan.preference_score
    if name is not None and found and not any(_has_score(item, name) for item in found):
        raise DatasetError(
            f"no matching trace has a score named {name!r} to prefer answers by: nothing stored"
        )
    merged, exact, corrected, pairs = merge_duplicates(found, plan)
    near = 0
    if plan.near_duplicate is not None:
        if embed is None:
            raise DatasetError("near-duplicate removal needs an embedding model")
        merged, near = drop_near_duplicates(merged, embed, plan.near_duplicate)
    scrubbed = 0
    if scrub is not None:
        cleaned: list[DatasetItem] = []
        for item in merged:
            clean, changed = scrub_item(item, scrub)
            cleaned.append(clean)
            scrubbed += changed
        merged = cleaned
    splits, groups = assign_splits(merged, plan)
    report = CurationReport(
        matched=len(found),
        exact_duplicates=exact,
        near_duplicates=near,
        corrected=corrected,
        preference_pairs=pairs,
        scrubbed=scrubbed,
        splits={name: len(members) for name, members in splits.items()},
        groups=groups,
        shared_groups=0,
        ungrouped=sum(group_of(item, plan.group_by).startswith("item=") for item in merged)
        if plan.group_by is not None
        else 0,
        unstratified=sum(plan.stratify_by not in item.metadata for item in merged)
        if plan.stratify_by not in (None, "expected")
        else 0,
    )
    return splits, report


def _has_score(item: DatasetItem, name: str) -> bool:
    scores = item.metadata.get("scores")
    return isinstance(scores, Mapping) and scores.get(name) is not None

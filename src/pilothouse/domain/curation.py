"""Curation of production data into datasets, as pure functions: one item per distinct input (the best
answer kept, a reviewed correction first, the worst kept as the rejected answer of a preference pair),
and train/validation/test splits that never share a group (a session or a user) and keep each stratum's
shares. Near-duplicates by embedding are found in :mod:`pilothouse.evals` (it needs vectors)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pilothouse.domain.datasets import DatasetError, DatasetItem

__all__ = [
    "CORRECTION_KEY",
    "REJECTED_KEY",
    "CurationPlan",
    "CurationReport",
    "Split",
    "assign_splits",
    "group_of",
    "input_text",
    "merge_duplicates",
    "parse_splits",
    "scrub_item",
]

CORRECTION_KEY = "correction"  # an item's metadata: the answer a reviewer wrote, preferred as expected
REJECTED_KEY = "rejected"  # an item's metadata: the worst answer seen for its input (preference pairs)
MAX_SPLITS = 5


@dataclass(frozen=True, slots=True)
class Split:
    """One part of a curated dataset: its name (the dataset is stored as ``NAME-<split>``) and share."""

    name: str
    share: float


@dataclass(frozen=True, slots=True)
class CurationPlan:
    """What to do to the matching traces before they become dataset versions.

    ``dedup``: one item per distinct input. ``near_duplicate``: also drop items whose input embedding
    has a cosine similarity of at least this with one kept before (None: off). ``preference_score``:
    of the answers to one input, keep the best by this score as ``expected`` and the worst as
    ``metadata.rejected`` (for DPO exports). ``splits``: e.g. train 0.8, validation 0.1, test 0.1 (none:
    one dataset). ``group_by``: ``session``, ``user`` or a metadata key, whose items all go to one split.
    ``stratify_by``: ``expected`` or a metadata key, whose values keep their shares in every split."""

    dedup: bool = True
    near_duplicate: float | None = None
    preference_score: str | None = None
    lower_is_better: bool = False
    splits: tuple[Split, ...] = ()
    group_by: str | None = None
    stratify_by: str | None = None
    seed: int = 0


@dataclass(frozen=True, slots=True)
class CurationReport:
    """What curation did: counts at each step, and the items of each split."""

    matched: int
    exact_duplicates: int = 0
    near_duplicates: int = 0
    corrected: int = 0
    preference_pairs: int = 0
    scrubbed: int = 0
    splits: Mapping[str, int] = field(default_factory=dict)
    groups: Mapping[str, int] = field(default_factory=dict)
    shared_groups: int = 0  # groups found in two splits (always 0: the splits are built so)
    ungrouped: int = 0  # items without the group_by key (each a group of its own)
    unstratified: int = 0  # items without the stratify_by metadata key


def parse_splits(text: str) -> tuple[Split, ...]:
    """``80/10/10`` (train/validation/test), ``70/30`` (train/test) or named parts,
    ``train=0.8,holdout=0.2``: 2 to 5 shares that add up to 1 (or 100). DatasetError otherwise."""
    text = text.strip()
    if "=" in text:
        pairs = [part.partition("=") for part in text.split(",")]
        named = [(name.strip(), value.strip()) for name, _, value in pairs]
    else:
        values = [v.strip() for v in text.split("/")]
        names = {2: ["train", "test"], 3: ["train", "validation", "test"]}.get(len(values))
        if names is None:
            raise DatasetError(f"split {text!r}: give 2 or 3 shares (80/20, 80/10/10) or name them")
        named = list(zip(names, values, strict=True))
    if not 2 <= len(named) <= MAX_SPLITS:
        raise DatasetError(f"split {text!r}: between 2 and {MAX_SPLITS} parts")
    shares: list[float] = []
    for name, value in named:
        if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 32:
            raise DatasetError(f"split {text!r}: {name!r} is not a split name (letters, digits, - and _)")
        try:
            share = float(value)
        except ValueError:
            raise DatasetError(f"split {text!r}: {value!r} is not a number") from None
        if not math.isfinite(share) or share <= 0:
            raise DatasetError(f"split {text!r}: each share must be above 0")
        shares.append(share)
    total = sum(shares)
    if not (math.isclose(total, 1.0, abs_tol=1e-6) or math.isclose(total, 100.0, abs_tol=1e-4)):
        raise DatasetError(f"split {text!r}: the shares add up to {total:g}, not 1 (or 100)")
    if len({name for name, _ in named}) != len(named):
        raise DatasetError(f"split {text!r}: a split name appears twice")
    return tuple(Split(name, share / total) for (name, _), share in zip(named, shares, strict=True))


def input_text(item: DatasetItem) -> str:
    """An item's input as one canonical string: what "the same input" means for de-duplication (the
    chat's messages, or the variables, as sorted JSON, with whitespace runs folded)."""
    if item.messages is not None:
        value: Any = [{"role": m.get("role"), "content": m.get("content")} for m in item.messages]
    else:
        value = dict(item.input)
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return " ".join(text.split())


def embedding_text(item: DatasetItem) -> str:
    """What near-duplicate removal compares: the variables' values when the item has them (the text
    a template shares across items would otherwise make every rendered input look alike), else the
    user's turns of the chat, else :func:`input_text`."""
    if item.input:
        return "\n".join(f"{key}: {_plain(item.input[key])}" for key in sorted(item.input))
    turns = [_plain(m.get("content")) for m in item.messages or () if m.get("role") == "user"]
    return "\n".join(turns) if any(turns) else input_text(item)


def _plain(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # content parts: their text
        return " ".join(p["text"] for p in value if isinstance(p, Mapping) and isinstance(p.get("text"), str))
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def _score(item: DatasetItem, name: str) -> float | None:
    scores = item.metadata.get("scores")
    value = scores.get(name) if isinstance(scores, Mapping) else None
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def merge_duplicates(
    items: Iterable[DatasetItem], plan: CurationPlan
) -> tuple[list[DatasetItem], int, int, int]:
    """One item per distinct input, in first-seen order (the store gives traces newest first).

    The kept answer: a reviewer's correction (``metadata.correction``) when there is one; else, with a
    ``preference_score``, the best-scored answer, and the worst-scored different answer becomes
    ``metadata.rejected``; else the first. Returns (items, duplicates dropped, items corrected,
    preference pairs)."""
    groups: dict[str, list[DatasetItem]] = {}
    for item in items:
        key = input_text(item) if plan.dedup else item.id
        groups.setdefault(key, []).append(item)
    kept: list[DatasetItem] = []
    corrected = pairs = 0
    for group in groups.values():
        item, was_corrected, paired = _best_of(group, plan)
        corrected += was_corrected
        pairs += paired
        kept.append(item)
    dropped = sum(len(group) - 1 for group in groups.values())
    return kept, dropped, corrected, pairs


def _best_of(group: Sequence[DatasetItem], plan: CurationPlan) -> tuple[DatasetItem, bool, bool]:
    first = group[0]
    for item in group:
        correction = item.metadata.get(CORRECTION_KEY)
        if isinstance(correction, str) and correction.strip():
            return replace(item, expected=correction), True, False
    if plan.preference_score is None:
        return first, False, False
    name = plan.preference_score
    scored = [(s, i) for i, item in enumerate(group) if (s := _score(item, name)) is not None]
    if not scored:
        return first, False, False
    sign = -1.0 if plan.lower_is_better else 1.0
    best_score, best_index = max(scored, key=lambda pair: (sign * pair[0], -pair[1]))
    best = group[best_index]
    worse = [
        (s, i)
        for s, i in scored
        if sign * s < sign * best_score and group[i].expected not in (None, best.expected)
    ]
    if not worse:
        return best, False, False
    worst = group[min(worse, key=lambda pair: (sign * pair[0], pair[1]))[1]]
    metadata = {**best.metadata, REJECTED_KEY: worst.expected}
    return replace(best, metadata=metadata), False, True


def scrub_item(item: DatasetItem, scrub: Callable[[str], str]) -> tuple[DatasetItem, bool]:
    """The item with ``scrub`` applied to every string of its input, messages and expected answer
    (and a rejected answer); and whether anything changed."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, Mapping):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    metadata = dict(item.metadata)
    if REJECTED_KEY in metadata:
        metadata[REJECTED_KEY] = clean(metadata[REJECTED_KEY])
    if CORRECTION_KEY in metadata:
        metadata[CORRECTION_KEY] = clean(metadata[CORRECTION_KEY])
    cleaned = replace(
        item,
        input=clean(dict(item.input)),
        expected=clean(item.expected),
        messages=tuple(clean(dict(m)) for m in item.messages) if item.messages is not None else None,
        metadata=metadata,
    )
    return cleaned, cleaned != item


def group_of(item: DatasetItem, group_by: str | None) -> str:
    """The group an item belongs to for splitting (its session, user or a metadata value); an item
    without one is a group of its own."""
    if group_by is not None:
        key = {"session": "session_id", "user": "user_id"}.get(group_by, group_by)
        value = item.metadata.get(key)
        if value is not None and value != "":
            return f"{key}={value}"
    return f"item={item.id}"


def _stratum(item: DatasetItem, stratify_by: str | None) -> str:
    if stratify_by is None:
        return ""
    value = item.expected if stratify_by == "expected" else item.metadata.get(stratify_by)
    return json.dumps(value, sort_keys=True, default=str)


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def assign_splits(
    items: Sequence[DatasetItem], plan: CurationPlan
) -> tuple[dict[str, list[DatasetItem]], dict[str, int]]:
    """The items of each split, and the groups in each.

    Whole groups go to one split, so no session (or user) is in two; within each stratum (the
    majority stratum of a group's items), groups are taken in a seeded pseudo-random order and each
    goes to the split furthest below its share of that stratum (ties: of all items), so the shares
    hold per stratum and overall, and the same plan on the same items gives the same splits. Strata
    of fewer groups than there are splits (free-text answers are each a stratum) are pooled into
    one. A split that would get no item is a DatasetError: too few groups for the shares."""
    splits = plan.splits or (Split("all", 1.0),)
    groups: dict[str, list[DatasetItem]] = {}
    for item in items:
        groups.setdefault(group_of(item, plan.group_by), []).append(item)
    by_stratum: dict[str, list[str]] = {}
    for key, members in groups.items():
        strata = [_stratum(member, plan.stratify_by) for member in members]
        majority = max(sorted(set(strata)), key=strata.count)
        by_stratum.setdefault(majority, []).append(key)
    small = [stratum for stratum, keys in by_stratum.items() if len(keys) < len(splits)]
    if len(small) > 1:
        by_stratum["\x00small strata"] = [key for stratum in small for key in by_stratum.pop(stratum)]
    out: dict[str, list[DatasetItem]] = {split.name: [] for split in splits}
    group_counts = dict.fromkeys(out, 0)
    everything = sum(len(members) for members in groups.values())
    overall = dict.fromkeys(out, 0)
    for stratum in sorted(by_stratum):
        keys = sorted(by_stratum[stratum], key=lambda k: _rank(plan.seed, k))
        total = sum(len(groups[k]) for k in keys)
        placed = dict.fromkeys(out, 0)
        for key in keys:
            # the split with the largest shortfall against its share once this group is placed: in
            # this stratum, then (ties) overall, so strata that round alike do not all favour one split
            size = len(groups[key])
            name = max(
                splits,
                key=lambda s: (
                    round(s.share * total - placed[s.name] - size / 2, 9),
                    round(s.share * everything - overall[s.name] - size / 2, 9),
                    s.share,
                ),
            ).name
            out[name].extend(groups[key])
            placed[name] += size
            overall[name] += size
            group_counts[name] += 1
    empty = [name for name, members in out.items() if not members]
    if groups and empty:
        unit = f"groups (by {plan.group_by})" if plan.group_by else "items"
        raise DatasetError(
            f"split {empty[0]!r} would get no item: {len(groups)} {unit} are too few for "
            f"{len(splits)} splits at these shares; nothing stored"
        )
    return out, group_counts

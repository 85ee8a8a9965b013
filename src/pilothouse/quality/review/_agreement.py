"""Agreement between raters: Cohen's kappa, unweighted for labels and quadratic-weighted for numbers
(pure functions; no I/O)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

__all__ = ["Agreement", "ConfigAgreement", "cohens_kappa", "config_agreement", "weighted_kappa"]


@dataclass(frozen=True, slots=True)
class Agreement:
    """How far two raters agree on the items both rated: ``kappa`` (None when undefined: fewer than
    two items, or chance agreement is already total), the raw share of exact agreement, and ``n``."""

    rater_a: str
    rater_b: str
    n: int
    observed: float | None
    kappa: float | None

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of the API."""
        return {
            "a": self.rater_a,
            "b": self.rater_b,
            "n": self.n,
            "agreement": self.observed,
            "kappa": self.kappa,
        }


def cohens_kappa(pairs: Sequence[tuple[Hashable, Hashable]]) -> float | None:
    """Cohen's kappa of paired labels: ``(p_o - p_e) / (1 - p_e)``, where ``p_o`` is the share of pairs
    that agree and ``p_e`` the agreement expected by chance from each rater's label frequencies. None
    with fewer than two pairs, or when ``p_e`` is 1 (both raters gave one and the same label)."""
    n = len(pairs)
    if n < 2:
        return None
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    observed = sum(1 for a, b in pairs if a == b) / n
    expected = sum(first[label] * second.get(label, 0) for label in first) / (n * n)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1.0 - expected)


def weighted_kappa(pairs: Sequence[tuple[float, float]], span: float | None = None) -> float | None:
    """Quadratic-weighted kappa of paired numbers: ``1 - sum(w * observed) / sum(w * expected)`` with
    the disagreement weight ``w = ((x - y) / span) ** 2`` (``span``: the scale's width; the spread of
    the values when not given). Exact agreement weighs 0, so near misses cost less than far ones. None
    with fewer than two pairs or when every value is the same."""
    n = len(pairs)
    if n < 2:
        return None
    values = [v for pair in pairs for v in pair]
    width = span if span is not None and span > 0 else max(values) - min(values)
    if width <= 0:
        return None
    first = Counter(a for a, _ in pairs)
    second = Counter(b for _, b in pairs)
    observed = sum(((a - b) / width) ** 2 for a, b in pairs) / n
    expected = sum(
        ca * cb * ((a - b) / width) ** 2 for a, ca in first.items() for b, cb in second.items()
    ) / (n * n)
    if expected <= 0:
        return None
    return 1.0 - observed / expected


@dataclass(frozen=True, slots=True)
class ConfigAgreement:
    """Agreement on one score config: between each pair of reviewers, all reviewer pairs pooled, and
    between each automated source (judge, code, online evaluator, detector) and the reviewers."""

    config: str
    weighted: bool  # numeric configs: quadratic-weighted kappa
    reviewers: tuple[Agreement, ...]
    pooled: Agreement
    automated: tuple[Agreement, ...]

    def as_dict(self) -> dict[str, object]:
        """The JSON shape of the API."""
        return {
            "config": self.config,
            "kappa_kind": "quadratic-weighted" if self.weighted else "cohen",
            "between_reviewers": self.pooled.as_dict(),
            "reviewer_pairs": [a.as_dict() for a in self.reviewers],
            "automated_vs_reviewers": [a.as_dict() for a in self.automated],
        }


Rating = tuple[str, str, object]  # (item, rater, value)


def _agreement(a: str, b: str, pairs: Sequence[tuple[object, object]], span: float | None) -> Agreement:
    n = len(pairs)
    observed = sum(1 for x, y in pairs if x == y) / n if n else None
    if span is not None:
        kappa = weighted_kappa([(float(x), float(y)) for x, y in pairs], span)  # type: ignore[arg-type]
    else:
        kappa = cohens_kappa([(x, y) for x, y in pairs])
    return Agreement(a, b, n, observed, kappa)


def config_agreement(
    config: str, human: Sequence[Rating], automated: Sequence[Rating], span: float | None = None
) -> ConfigAgreement:
    """Agreement on one config from people's ratings and automated ones, each (item, rater, value);
    ``span`` (the numeric scale's width) makes the kappas quadratic-weighted. An automated rater is
    paired with every reviewer who rated the same item."""
    by_item: dict[str, dict[str, object]] = {}
    for item, rater, value in human:
        by_item.setdefault(item, {})[rater] = value
    pair_ratings: dict[tuple[str, str], list[tuple[object, object]]] = {}
    pooled: list[tuple[object, object]] = []
    for raters in by_item.values():
        names = sorted(raters)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                pair_ratings.setdefault((a, b), []).append((raters[a], raters[b]))
                pooled.append((raters[a], raters[b]))
    machine: dict[str, list[tuple[object, object]]] = {}
    for item, rater, value in automated:
        for person_value in by_item.get(item, {}).values():
            machine.setdefault(rater, []).append((value, person_value))
    return ConfigAgreement(
        config=config,
        weighted=span is not None,
        reviewers=tuple(_agreement(a, b, p, span) for (a, b), p in sorted(pair_ratings.items())),
        pooled=_agreement("reviewers", "reviewers", pooled, span),
        automated=tuple(_agreement(rater, "reviewers", p, span) for rater, p in sorted(machine.items())),
    )

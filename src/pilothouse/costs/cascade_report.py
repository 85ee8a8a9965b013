"""What a cascade route saves and what it keeps: a dataset answered by the cascade and by its strongest
model alone, both scored against the expected answers. Pure arithmetic over the per-item outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pilothouse.domain.money import Money


@dataclass(frozen=True, slots=True)
class CascadeItem:
    """One dataset item answered both ways."""

    item_id: str
    steps: int  # models the cascade called (1: the cheapest answered)
    cascade_cost_usd: Money | None
    cascade_correct: bool | None  # None: the scorer could not tell
    strong_cost_usd: Money | None
    strong_correct: bool | None


@dataclass(frozen=True, slots=True)
class CascadeReport:
    """Savings against quality retention."""

    items: int
    kept_on_first: float  # share answered by the cheapest model
    cascade_cost_usd: Money | None
    strong_cost_usd: Money | None
    cascade_quality: float | None
    strong_quality: float | None

    @property
    def cost_saved(self) -> float | None:
        """Share of the strong model's cost the cascade did not spend."""
        if self.cascade_cost_usd is None or not self.strong_cost_usd:
            return None
        return 1.0 - self.cascade_cost_usd.ratio(self.strong_cost_usd)

    @property
    def quality_retained(self) -> float | None:
        """The cascade's quality as a share of the strong model's."""
        if self.cascade_quality is None or not self.strong_quality:
            return None
        return self.cascade_quality / self.strong_quality

    def lines(self) -> list[str]:
        """The report as text lines."""

        def money(value: Money | None) -> str:
            return "unknown" if value is None else value.display()

        def share(value: float | None) -> str:
            return "unknown" if value is None else f"{value:.1%}"

        return [
            f"items:                         {self.items}",
            f"kept on the cheapest model:    {share(self.kept_on_first)}",
            f"cost, cascade:                 {money(self.cascade_cost_usd)}",
            f"cost, strongest model alone:   {money(self.strong_cost_usd)}",
            f"cost saved:                    {share(self.cost_saved)}",
            f"quality, cascade:              {share(self.cascade_quality)}",
            f"quality, strongest model:      {share(self.strong_quality)}",
            f"quality retained:              {share(self.quality_retained)}",
        ]


def _total(values: Sequence[Money | None]) -> Money | None:
    return None if any(v is None for v in values) else Money.sum(v for v in values if v is not None)


def _rate(values: Sequence[bool | None]) -> float | None:
    measured = [v for v in values if v is not None]
    return sum(measured) / len(measured) if measured else None


def summarise(items: Sequence[CascadeItem]) -> CascadeReport:
    """The report over the items (costs unknown when any call had no price)."""
    count = len(items)
    return CascadeReport(
        items=count,
        kept_on_first=sum(i.steps == 1 for i in items) / count if count else 0.0,
        cascade_cost_usd=_total([i.cascade_cost_usd for i in items]),
        strong_cost_usd=_total([i.strong_cost_usd for i in items]),
        cascade_quality=_rate([i.cascade_correct for i in items]),
        strong_quality=_rate([i.strong_correct for i in items]),
    )

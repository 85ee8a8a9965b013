"""Cost reports: spend, tokens, requests, cost per request and cache savings grouped by model, key,
end user, tag or prompt, with a monthly run-rate. Pure aggregation over stored model calls."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from pilothouse.domain.money import Money
from pilothouse.domain.traces import Cost, Usage

REPORT_DIMENSIONS = ("model", "key", "user", "tag", "prompt", "project")
_MONTH_S = 30 * 86400


class ReportedCall(Protocol):
    """What a report reads of a stored call."""

    @property
    def project_id(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def request_model(self) -> str | None: ...
    @property
    def key_id(self) -> str | None: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def prompt(self) -> str | None: ...
    @property
    def usage(self) -> Usage: ...
    @property
    def cost(self) -> Cost | None: ...


@dataclass(slots=True)
class ReportRow:
    """Totals of one group."""

    group: str
    requests: int = 0
    unpriced: int = 0  # calls with no known price: their spend is missing from spend_usd
    spend_usd: Money = Money.ZERO
    saved_usd: Money = Money.ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    monthly_run_rate_usd: Money = Money.ZERO

    @property
    def cost_per_request_usd(self) -> Money | None:
        """Average spend of the priced calls (rounded to the pico-dollar)."""
        priced = self.requests - self.unpriced
        return self.spend_usd / priced if priced else None

    def as_dict(self) -> dict[str, object]:
        """The row as JSON values (amounts as Money: JSON numbers by its machine rule)."""
        return {
            "group": self.group,
            "requests": self.requests,
            "unpriced": self.unpriced,
            "spend_usd": self.spend_usd,
            "cost_per_request_usd": self.cost_per_request_usd,
            "saved_usd": self.saved_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "monthly_run_rate_usd": self.monthly_run_rate_usd,
        }


def _groups(call: ReportedCall, by: str) -> tuple[str, ...]:
    if by == "model":
        return (call.model or call.request_model or "(none)",)
    if by == "key":
        return (call.key_id or "(no key)",)
    if by == "user":
        return (call.user_id or "(no user)",)
    if by == "tag":
        return call.tags or ("(untagged)",)
    if by == "prompt":
        return (call.prompt or "(no prompt)",)
    return (call.project_id,)


def cost_report(calls: Iterable[ReportedCall], by: str, window_s: float) -> list[ReportRow]:
    """Totals per group, largest spend first. A call with several tags counts in each of them; the
    run-rate extrapolates the window's spend to 30 days."""
    if by not in REPORT_DIMENSIONS:
        raise ValueError(f"--by must be one of {', '.join(REPORT_DIMENSIONS)}, not {by!r}")
    rows: dict[str, ReportRow] = {}
    for call in calls:
        for group in _groups(call, by):
            row = rows.get(group)
            if row is None:
                row = rows[group] = ReportRow(group)
            row.requests += 1
            u = call.usage
            row.input_tokens += u.input_total
            row.output_tokens += u.output
            row.cache_read_tokens += u.cache_read
            if call.cost is None:
                row.unpriced += 1
            else:
                row.spend_usd += call.cost.total
                row.saved_usd += call.cost.saved
    for row in rows.values():
        row.monthly_run_rate_usd = row.spend_usd * (_MONTH_S / window_s) if window_s > 0 else Money.ZERO
    return sorted(rows.values(), key=lambda r: (-r.spend_usd.pico, r.group))

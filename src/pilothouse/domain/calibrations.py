"""Judge calibrations as values: the confusion of a judge's verdicts against human labels, the
metrics drawn from it, and a stored calibration with its judgements. The arithmetic and the runs that
produce them live in :mod:`pilothouse.evals.calibration`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Calibration", "CalibrationMetrics", "Confusion", "Judgement"]


@dataclass(frozen=True, slots=True)
class Confusion:
    """Judge verdicts against human labels: ``tp`` both pass, ``fn`` the human passes and the judge
    fails, ``fp`` the judge passes and the human fails, ``tn`` both fail."""

    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0

    @property
    def n(self) -> int:
        """Items counted."""
        return self.tp + self.fn + self.fp + self.tn


@dataclass(frozen=True, slots=True)
class Judgement:
    """The judge's verdict on one labelled item: ``passed`` None when unmeasured (``error`` says why);
    ``flipped`` None when no order check was made or it could not tell."""

    item_id: str
    label: bool
    value: float | None
    passed: bool | None
    error: str | None = None
    flipped: bool | None = None


@dataclass(frozen=True, slots=True)
class CalibrationMetrics:
    """What a calibration found. ``position_swap`` says how orders were swapped; None: not applicable
    (``flip_rate`` None, and ``swap_note`` says why)."""

    n: int  # labelled items
    unmeasured: int  # judge replies that could not be read: left out of every rate
    confusion: Confusion
    agreement: float | None
    kappa: float | None
    kappa_low: float | None
    kappa_high: float | None
    tpr: float | None
    tnr: float | None
    threshold: float | None  # the judge's pass mark (value >= threshold)
    position_swap: str | None
    flip_rate: float | None
    flips: int
    swap_checked: int
    swap_note: str

    @property
    def measured(self) -> int:
        """Items with a judge verdict."""
        return self.confusion.n

    def as_dict(self) -> dict[str, Any]:
        """JSON-able (what the store keeps)."""
        c = self.confusion
        return {
            "n": self.n,
            "measured": self.measured,
            "unmeasured": self.unmeasured,
            "tp": c.tp,
            "fn": c.fn,
            "fp": c.fp,
            "tn": c.tn,
            "agreement": self.agreement,
            "kappa": self.kappa,
            "kappa_low": self.kappa_low,
            "kappa_high": self.kappa_high,
            "tpr": self.tpr,
            "tnr": self.tnr,
            "threshold": self.threshold,
            "position_swap": self.position_swap,
            "flip_rate": self.flip_rate,
            "flips": self.flips,
            "swap_checked": self.swap_checked,
            "swap_note": self.swap_note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationMetrics:
        """The inverse of :meth:`as_dict`."""
        return cls(
            n=int(data["n"]),
            unmeasured=int(data["unmeasured"]),
            confusion=Confusion(int(data["tp"]), int(data["fn"]), int(data["fp"]), int(data["tn"])),
            agreement=data.get("agreement"),
            kappa=data.get("kappa"),
            kappa_low=data.get("kappa_low"),
            kappa_high=data.get("kappa_high"),
            tpr=data.get("tpr"),
            tnr=data.get("tnr"),
            threshold=data.get("threshold"),
            position_swap=data.get("position_swap"),
            flip_rate=data.get("flip_rate"),
            flips=int(data.get("flips", 0)),
            swap_checked=int(data.get("swap_checked", 0)),
            swap_note=str(data.get("swap_note", "")),
        )


@dataclass(frozen=True, slots=True)
class Calibration:
    """A stored calibration: version ``version`` of the judge ``fingerprint`` (1, 2, ... per
    fingerprint and project); ``judgements`` item by item."""

    id: str
    project_id: str
    fingerprint: str
    version: int
    scorer_name: str
    scorer_type: str
    judge_model: str | None
    identity: Mapping[str, Any]
    metrics: CalibrationMetrics
    labels_sha256: str
    labels_source: str | None
    judge_endpoint: str | None
    created_ns: int
    judgements: tuple[Judgement, ...] = field(default=())

    @property
    def label(self) -> str:
        """``fingerprint[:12] v<version>``."""
        return f"{self.fingerprint[:12]} v{self.version}"

    def summary(self) -> dict[str, Any]:
        """The calibration as the gate's JSON report gives it."""
        m = self.metrics
        return {
            "id": self.id,
            "version": self.version,
            "fingerprint": self.fingerprint,
            "judge_model": self.judge_model,
            "n": m.n,
            "unmeasured": m.unmeasured,
            "agreement": m.agreement,
            "kappa": m.kappa,
            "kappa_low": m.kappa_low,
            "kappa_high": m.kappa_high,
            "tpr": m.tpr,
            "tnr": m.tnr,
            "flip_rate": m.flip_rate,
            "created_ns": self.created_ns,
        }

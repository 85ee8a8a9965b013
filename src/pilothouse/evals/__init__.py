"""Evaluation: datasets, scorers, the runner, statistics and the quality gate.

The public face is the evaluations service, :class:`Evaluations` (run, compare two runs, curate), and
the values it returns. They are imported on first use: the service pulls in the store and numpy, and
importing a light module such as ``pilothouse.evals.templating`` (the gateway's cascades do) should
not pay for that.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pilothouse.evals._comparison import (
        ChangedItem,
        Comparison,
        ComparisonError,
        ItemTally,
        comparison_document,
        result_document,
        run_document,
    )
    from pilothouse.evals._service import DEFAULT_CHANGED_LIMIT, Evaluations

__all__ = [
    "BUILT_IN_METRICS",
    "DEFAULT_CHANGED_LIMIT",
    "ChangedItem",
    "Comparison",
    "ComparisonError",
    "Evaluations",
    "ItemTally",
    "comparison_document",
    "result_document",
    "run_document",
]

_HOME = {
    "BUILT_IN_METRICS": "_service",
    "DEFAULT_CHANGED_LIMIT": "_service",
    "Evaluations": "_service",
    "ChangedItem": "_comparison",
    "Comparison": "_comparison",
    "ComparisonError": "_comparison",
    "ItemTally": "_comparison",
    "comparison_document": "_comparison",
    "result_document": "_comparison",
    "run_document": "_comparison",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'pilothouse.evals' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pilothouse.evals.{home}"), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

"""The public surface is what the packages say it is, and the layers import one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pilothouse
import pilothouse.evals
import pilothouse.testing

SRC = Path(pilothouse.__file__).parent


def test_sdk_exports() -> None:
    assert sorted(pilothouse.__all__) == sorted(
        [
            "ObservationSpan",
            "__version__",
            "current_observation",
            "flush",
            "get_prompt",
            "init",
            "instrument_anthropic",
            "instrument_openai",
            "observe",
            "score",
            "shutdown",
            "span",
            "trace_headers",
            "uninstrument_anthropic",
            "uninstrument_openai",
            "update_current_trace",
        ]
    )
    for name in pilothouse.__all__:
        assert getattr(pilothouse, name) is not None
    assert sorted(pilothouse.testing.__all__) == [
        "InMemoryExporter",
        "PilothouseServer",
        "SimConfig",
        "SimulatedUpstream",
        "free_port",
    ]


def test_evals_exports_the_service() -> None:
    assert sorted(pilothouse.evals.__all__) == [
        "BUILT_IN_METRICS",
        "ChangedItem",
        "Comparison",
        "ComparisonError",
        "DEFAULT_CHANGED_LIMIT",
        "Evaluations",
        "ItemTally",
        "comparison_document",
        "result_document",
        "run_document",
    ]
    for name in pilothouse.evals.__all__:
        assert getattr(pilothouse.evals, name) is not None
    assert set(pilothouse.evals.__all__) <= set(dir(pilothouse.evals))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("pilothouse.")}


def test_layers_import_one_way() -> None:
    for path in SRC.rglob("*.py"):
        package = path.relative_to(SRC).parts[0]
        mods = _imports(path)
        if package == "domain":
            assert all(m.startswith("pilothouse.domain") for m in mods), path
        if package not in ("cli", "server", "ui"):
            assert not any(m.split(".")[1] in ("cli", "server", "ui") for m in mods), path

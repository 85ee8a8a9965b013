"""The package table of docs/architecture.md, enforced: which package of ours may import which, counting
imports inside functions and under ``TYPE_CHECKING`` too. A new arrow is a design decision: change the
table here and in docs/architecture.md together, with the reason."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pilothouse"

# package -> the packages of ours it may import (itself always). Entry points (cli, server, ui, the pytest
# plugin) sit on top; nothing below imports them.
ALLOWED: dict[str, set[str]] = {
    "domain": set(),
    "config": {"domain"},
    "store": {"domain", "_speedups"},  # _speedups: the search vector the PostgreSQL writer makes, in C
    "providers": {"domain", "config"},
    "costs": {"domain", "config"},
    "_speedups": {"config"},  # compiled accelerators: what they need is passed in
    "tracing": {"domain", "config", "_speedups"},
    "prompts": {"domain", "config", "store"},
    "gateway": {"domain", "config", "providers", "costs", "store", "prompts"},
    "evals": {"domain", "config", "gateway", "providers", "costs", "store", "prompts"},
    "quality": {"domain", "config", "gateway", "providers", "costs", "store", "evals"},
    "improve": {"domain", "config", "gateway", "providers", "costs", "store", "evals", "prompts", "quality"},
    "testing": {"domain", "providers"},
    "ui": {
        "domain",
        "config",
        "store",
        "costs",
        "evals",
        "gateway",
        "server",
        "prompts",
        "quality",
        "improve",
    },
    "server": {
        "domain",
        "config",
        "store",
        "providers",
        "costs",
        "tracing",
        "gateway",
        "evals",
        "prompts",
        "quality",
        "improve",
    },
    "cli": {
        "domain",
        "config",
        "store",
        "providers",
        "costs",
        "tracing",
        "gateway",
        "evals",
        "server",
        "prompts",
        "quality",
        "improve",
    },
    "pytest_plugin": {"domain", "config", "store", "evals"},
    "__init__": {"domain", "tracing", "prompts"},
}

# Single modules allowed one more arrow, with the reason.
EXCEPTIONS: dict[str, set[str]] = {
    "server/app.py": {"ui"},  # the app factory mounts the web UI: the one place server meets ui
}

# Arrows that exist today and are being removed (the architecture issue); this list only shrinks.
KNOWN: set[tuple[str, str]] = set()


def _package_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) == 1:
        return relative.stem
    return relative.parts[0]


def _is_ours(name: str) -> bool:
    """A package or module of ours (not a name such as ``__version__`` imported from the top)."""
    return (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file()


def _imported_packages(path: Path) -> set[str]:
    """The top-level packages of ours that a module imports, wherever the import statement is."""
    module = ".".join(("pilothouse", *path.relative_to(PACKAGE).with_suffix("").parts))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                names = [".".join([*base, *([node.module] if node.module else [])])]
            else:
                names = [node.module or ""]
            if names[0] == "pilothouse":  # from pilothouse import x: x is the package
                names = [f"pilothouse.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pilothouse" and len(parts) > 1 and _is_ours(parts[1]):
                found.add(parts[1])
    return found


def _arrows() -> dict[tuple[str, str], set[str]]:
    """(from package, module) -> the packages of ours it imports beyond its own."""
    arrows: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        package = _package_of(path)
        key = (package, path.relative_to(PACKAGE).as_posix())
        arrows[key] = _imported_packages(path) - {package}
    return arrows


def test_every_package_is_in_the_table() -> None:
    packages = {_package_of(path) for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}
    assert packages <= set(ALLOWED), f"packages missing from the table: {sorted(packages - set(ALLOWED))}"


def test_imports_follow_the_package_table() -> None:
    wrong = []
    for (package, module), imported in _arrows().items():
        allowed = ALLOWED[package] | EXCEPTIONS.get(module, set())
        if (package, module) in KNOWN:
            continue
        for target in sorted(imported - allowed):
            wrong.append(f"{module} imports pilothouse.{target} ({package} may import: {sorted(allowed)})")
    assert not wrong, "\n".join(wrong)


def test_known_exceptions_still_exist() -> None:
    """Each entry of KNOWN is a real arrow still to remove: a fixed one must leave the list."""
    arrows = _arrows()
    fixed = [
        module
        for package, module in KNOWN
        if not (arrows.get((package, module), set()) - ALLOWED[package] - EXCEPTIONS.get(module, set()))
    ]
    assert not fixed, f"no longer crossing the table, remove from KNOWN: {fixed}"


def test_the_table_is_documented() -> None:
    """docs/architecture.md lists every package of the table."""
    text = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    missing = [package for package in ALLOWED if f"`{package}" not in text]
    assert not missing, f"docs/architecture.md does not mention: {missing}"

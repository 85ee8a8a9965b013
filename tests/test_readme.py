"""The README's tour works as written: its Python example, run against a real server, produces the
trace, generation and score it promises. The examples of the pages in docs/ parse or run too, the
commands they show exist with the options they show, and their links resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.process import ServerProcess, cli

README = Path(__file__).parents[1] / "README.md"
DOCS = README.parent / "docs"


def blocks(path: Path, language: str) -> list[str]:
    """The fenced code blocks of one language in a Markdown file."""
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), re.S)


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make run", "make test", "make test-fast"]


@pytest.mark.slow  # a server and the example as processes, as the reader runs them
def test_readme_tour_example_runs(tmp_path: Path) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    script = tmp_path / "tour.py"
    script.write_text(code.group(1))
    url = f"sqlite:///{tmp_path / 'tour.db'}"
    key = cli("keys", "create", "--name", "tour", "--database-url", url).stdout.strip().splitlines()[-1]
    server = ServerProcess(url)
    try:
        env = {**os.environ, "PILOTHOUSE_API_KEY": key, "PILOTHOUSE_BASE_URL": server.base_url}
        run = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip()
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 15
        detail = None
        while time.monotonic() < deadline:
            data = httpx.get(f"{server.base_url}/api/traces", headers=headers).json()["data"]
            if data:
                detail = httpx.get(f"{server.base_url}/api/traces/{data[0]['id']}", headers=headers).json()
                if detail["scores"]:
                    break
            time.sleep(0.1)
        assert detail is not None
        assert detail["name"] == "answer" and detail["user_id"] == "alice" and detail["tags"] == ["tour"]
        kinds = {o["type"] for o in detail["observations"]}
        assert {"span", "retrieval", "generation"} <= kinds
        generation = next(o for o in detail["observations"] if o["type"] == "generation")
        assert generation["model"] == "gpt-4o-mini" and generation["usage"]["output"] > 0
        assert generation["ttft_ms"] is not None
        assert [s["name"] for s in detail["scores"]] == ["helpful"]
    finally:
        server.stop()


def test_docs_gateway_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from pilothouse.gateway.config import gateway_config as parse_config

    block = re.search(r"```yaml\n(# my-models.yaml.*?)```", (DOCS / "config.md").read_text(), re.S)
    assert block is not None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    config = parse_config(yaml.safe_load(block.group(1)))
    assert [d.name for d in config.deployments] == [
        "gpt-4o-mini",
        "gpt-4o-mini",
        "claude-haiku",
        "smollm2",
        "sim",
    ]
    assert config.fallbacks == {"gpt-4o-mini": ["claude-haiku"]}


def _served_cascades(config: Any) -> list[str]:
    """The cascade routes a gateway serves from ``config`` (each verifier built: a real scorer spec)."""
    from pilothouse.costs.catalogue import PriceCatalogue
    from pilothouse.costs.pricing import Pricer
    from pilothouse.evals.verifier import add_cascades
    from pilothouse.gateway import Gateway, Router

    gateway = Gateway(Router(config), Pricer(PriceCatalogue.packaged(config.prices)))
    add_cascades(gateway, config.cascades)
    return list(gateway.cascades)


def test_readme_and_docs_config_examples_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from pilothouse.gateway.config import gateway_config as parse_config

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    examples = blocks(README, "yaml") + blocks(DOCS / "config.md", "yaml")
    assert len(examples) >= 5
    for block in examples:
        config = parse_config(yaml.safe_load(block), "docs")
        assert config.deployments
        if config.cascades:  # its verifier is a real scorer spec
            assert set(_served_cascades(config)) == {c.name for c in config.cascades}
    (priced_block,) = [b for b in examples if "per_hour_usd" in b]
    priced = parse_config(yaml.safe_load(priced_block), "docs")
    (row,) = priced.prices
    assert row.output == pytest.approx(1.20 / (900 * 3600) * 1e6) and priced.cache.enabled


@pytest.mark.slow  # the shell block as the reader runs it
def test_readme_eval_and_gate_commands_run(tmp_path: Path) -> None:
    (block,) = [b for b in blocks(README, "sh") if "pilothouse gate" in b]
    (tmp_path / ".venv").symlink_to(README.parent / ".venv")
    (tmp_path / "pilothouse.yaml").write_text((README.parent / "pilothouse.yaml").read_text())
    env = {**os.environ, "PILOTHOUSE_HOME": str(tmp_path / "home")}
    env.pop("PILOTHOUSE_DATABASE_URL", None)
    run = subprocess.run(
        ["bash", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert "REGRESSION (exit 1)" in run.stdout, run.stdout + run.stderr
    assert run.returncode == 0, run.stderr  # the last command, eval compare, succeeds
    assert (tmp_path / "pilothouse-gate" / "gate.xml").is_file()


def test_docs_settings_server_section_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pilothouse.config import load_settings

    for name in ("PILOTHOUSE_PORT", "PILOTHOUSE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    (block,) = blocks(DOCS / "settings.md", "yaml")
    config = tmp_path / "pilothouse.yaml"
    config.write_text(block)
    settings = load_settings(config)
    assert settings.port == 4001 and settings.database_url is not None
    assert load_settings(config, port=4002).port == 4002  # an argument beats the file


def test_docs_eval_spec_and_items_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import yaml

    from pilothouse.evals.datasets import item_from_mapping
    from pilothouse.evals.spec import parse_spec

    page = DOCS / "evals.md"
    (items,) = blocks(page, "jsonl")
    parsed = [item_from_mapping(json.loads(line), n) for n, line in enumerate(items.splitlines(), 1)]
    assert [(dict(i.input), i.expected) for i in parsed] == [({"topic": "tides"}, "moon")] * 2
    (tmp_path / "items.jsonl").write_text(items)
    monkeypatch.setenv("PILOTHOUSE_API_KEY", "ph-test")
    (block,) = blocks(page, "yaml")
    spec = parse_spec(yaml.safe_load(block), base_dir=tmp_path, source="docs/evals.md")
    assert [s.name for s in spec.scorers] == ["contains", "rubric"] and spec.assertions == {"contains": 0.9}


@pytest.mark.slow  # a server and the example as processes, as the reader runs them
def test_docs_gateway_example_runs(tmp_path: Path) -> None:
    (code,) = blocks(DOCS / "gateway.md", "python")
    config = tmp_path / "models.yaml"
    config.write_text("models:\n  - {name: sim, provider: sim, model: sim-1}\n")
    url = f"sqlite:///{tmp_path / 'gateway.db'}"
    key = cli("keys", "create", "--name", "docs", "--database-url", url).stdout.strip().splitlines()[-1]
    server = ServerProcess(url, args=["--config", str(config)])
    try:
        script = tmp_path / "gateway_example.py"
        script.write_text(code.replace("http://127.0.0.1:4000", server.base_url))
        env = {**os.environ, "PILOTHOUSE_API_KEY": key}
        run = subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        answer, headers, claude_answer, follow_up = run.stdout.strip().splitlines()
        trace_id, cost = headers.split()
        assert answer and claude_answer and follow_up and len(trace_id) == 32 and cost == "unknown"
    finally:
        server.stop()


def _pilothouse_commands(text: str) -> list[str]:
    """Every `pilothouse ...` command written in shell blocks or inline code."""
    text = text.replace("\\\n", " ")
    shell = "\n".join(re.findall(r"```(?:sh|bash)\n(.*?)```", text, re.S))
    found = [m for line in shell.splitlines() for m in re.findall(r"(?<![\w./-])pilothouse\s[^|)#\n]*", line)]
    found += [m.replace("\\|", "|") for m in re.findall(r"`(pilothouse\s[^`]*)`", text)]
    return found


def test_docs_commands_exist() -> None:
    import click

    from pilothouse.cli import cli as root

    pages = [README, *sorted(DOCS.glob("*.md"))]
    checked = 0
    for page in pages:
        for command in _pilothouse_commands(page.read_text()):
            words = command.split()[1:]
            cmd: click.Command = root
            for word in words:
                if not isinstance(cmd, click.Group) or word.startswith("-"):
                    break
                names = word.split("|")
                if not all(name in cmd.commands for name in names):
                    break
                if len(names) > 1:  # `pilothouse eval run|list`: each exists, no options follow
                    cmd = cmd.commands[names[0]]
                    break
                cmd = cmd.commands[word]
            options = {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)}
            options |= {"--help", "-h"}
            used = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", command))
            assert used <= options, f"{page.name}: `{command}` uses {sorted(used - options)}"
            checked += 1
    assert checked > 50


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug, n = _slug(heading), 1
        while slug in anchors:
            slug, n = f"{_slug(heading)}-{n}", n + 1
        anchors.add(slug)
    return anchors


def test_docs_links_resolve() -> None:
    pages = [README, README.parent / "CHANGELOG.md", *sorted(DOCS.glob("*.md"))]
    checked = 0
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            assert linked.exists(), f"{page.name}: {target} does not exist"
            if anchor:
                assert anchor in _anchors(linked), f"{page.name}: {target}: no such heading"
            checked += 1
    assert checked > 30

"""The README's tour works as written: its Python example, run against a real server, produces the
trace, generation and score it promises."""

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
pytestmark = pytest.mark.slow


def test_readme_starts_with_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README.read_text(), re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make run", "make test"]


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


def test_readme_gateway_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from pilothouse.gateway.config import parse_config

    block = re.search(r"```yaml\n(# my-models.yaml.*?)```", README.read_text(), re.S)
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


def test_readme_config_examples_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from pilothouse.gateway.config import parse_config

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2
    for block in blocks:
        config = parse_config(yaml.safe_load(block), "README")
        assert config.deployments
        if config.cascades:  # its verifier is a real scorer spec
            assert set(_served_cascades(config)) == {c.name for c in config.cascades}
    priced = parse_config(yaml.safe_load(blocks[1]), "README")
    (row,) = priced.prices
    assert row.output == pytest.approx(1.20 / (900 * 3600) * 1e6) and priced.cache.enabled


def test_readme_eval_and_gate_commands_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "pilothouse gate" in b]
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

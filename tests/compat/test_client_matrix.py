"""The client x feature matrix of docs/compatibility.md: the real client packages (pinned; installed
once into a cached location) driven against one gateway on loopback, in front of simulated OpenAI and
Anthropic upstreams. Every cell is OK or n.a. (a client without the feature); a failing cell is a
gateway bug. The page must show what this run found (``PILOTHOUSE_COMPAT_WRITE=1`` rewrites it)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pilothouse.testing import SimConfig, SimulatedUpstream
from tests.compat.clients import matrix
from tests.conftest import FirstLoad
from tests.gateway.conftest import Gateway, start_gateway

pytestmark = pytest.mark.slow  # installs (once) and runs ten client packages in their own processes

HERE = Path(__file__).resolve().parent / "clients"
CACHE = Path(os.environ.get("PILOTHOUSE_COMPAT_CACHE", "~/.cache/pilothouse/compat")).expanduser()
# client -> its virtualenv's requirements: two sets, since llama-index-llms-openai needs openai<3
PYTHON_CLIENTS = {
    "openai": "sdks", "anthropic": "sdks", "pydantic-ai": "sdks",
    "langchain-openai": "frameworks", "langchain-anthropic": "frameworks", "llama-index": "frameworks",
    "litellm": "frameworks", "instructor": "frameworks",
}  # fmt: skip
NODE_CLIENTS = ["openai-node", "vercel-ai"]


def _digest(*files: Path) -> str:
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]


def _python_env(name: str) -> Path:
    """A virtualenv of clients (cached by its pins' hash): ``pip install --no-deps`` of a full freeze."""
    requirements = HERE / f"requirements-{name}.txt"
    venv = CACHE / f"venv-{name}-{_digest(requirements)}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", "-r", str(requirements)],
            check=True,
            timeout=900,
        )
        (venv / ".complete").touch()
    return python


def _node_env() -> Path | None:
    """The Node clients' folder (cached by the lock's hash, ``npm ci``); None without node and npm."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    lock = HERE / "package-lock.json"
    folder = CACHE / f"node-{_digest(HERE / 'package.json', lock)}"
    if not (folder / ".complete").exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shutil.copy(HERE / "package.json", folder)
        shutil.copy(lock, folder)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, check=True, timeout=900
        )
        (folder / ".complete").touch()
    shutil.copy(HERE / "drive.mjs", folder)  # resolved next to its node_modules
    return folder


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, model_cache: Path, smollm2_first_load: FirstLoad
) -> Iterator[tuple[Gateway, str]]:
    with SimulatedUpstream(SimConfig(cached_fraction=0.5, reasoning_tokens=2)) as upstream:
        openai = {"provider": "openai", "base_url": upstream.base_url + "/v1", "api_key": "sk-upstream"}
        models = [
            {"name": "gpt-4o-mini", "model": "gpt-4o-mini", **openai},
            {"name": "text-embedding-3-small", "model": "text-embedding-3-small", **openai},
            {
                "name": "claude-sonnet-4-5",
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "base_url": upstream.base_url,
                "api_key": "sk-ant-upstream",
            },
            # the local-json and local-n cells: the real model, in-process (converted once per session)
            {
                "name": "smollm2",
                "provider": "local",
                "model": "smollm2",
                "options": {"cache_dir": str(model_cache)},
            },
        ]
        gw = start_gateway(tmp_path_factory.mktemp("matrix"), upstream, models, router={"retries": 0})
        limited = gw.server.create_key("limited", rpm=1)
        yield gw, limited
        gw.server.stop()


def _drive(command: list[str], cwd: Path | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper() and not k.startswith("OPENAI_")}
    env.update(NO_PROXY="127.0.0.1", LITELLM_LOCAL_MODEL_COST_MAP="True", TOKENIZERS_PARALLELISM="false")
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert run.returncode == 0 and run.stdout.strip(), (command, run.stdout[-2000:], run.stderr[-4000:])
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    if any(cell.startswith("FAIL") for cell in result["cells"].values()):
        result["stderr"] = run.stderr[-6000:]
    return result


def test_every_client_does_every_feature_it_has(gateway: tuple[Gateway, str]) -> None:
    gw, limited = gateway
    where = ["--gateway", gw.server.base_url, "--key", gw.key, "--limited-key", limited]
    pythons = {venv: _python_env(venv) for venv in sorted(set(PYTHON_CLIENTS.values()))}
    node = _node_env()
    if node is None:
        pytest.skip("node and npm are needed for the Node clients")
    commands: dict[str, tuple[list[str], Path | None]] = {
        name: ([str(pythons[venv]), str(HERE / "drive.py"), name, *where], None)
        for name, venv in PYTHON_CLIENTS.items()
    }
    commands |= {name: (["node", "drive.mjs", name, *where], node) for name in NODE_CLIENTS}
    with ThreadPoolExecutor(max_workers=2) as pool:  # the machine has two cores
        futures = {name: pool.submit(_drive, *command) for name, command in commands.items()}
        results = {name: future.result() for name, future in futures.items()}
    failed = {
        f"{name}.{feature}": cell
        for name, result in results.items()
        for feature, cell in result["cells"].items()
        if not (cell == "OK" or cell.startswith("n.a.: "))
    }
    section = matrix.render(results)
    page = matrix.PAGE.read_text()
    if os.environ.get("PILOTHOUSE_COMPAT_WRITE") == "1" and not failed:
        matrix.PAGE.write_text(matrix.replaced(page, section))
        page = matrix.PAGE.read_text()
    assert not failed, (failed, {n: r.get("stderr") for n, r in results.items() if r.get("stderr")})
    assert matrix.current_section(page) == section, (
        "docs/compatibility.md is not what this run found: PILOTHOUSE_COMPAT_WRITE=1 .venv/bin/pytest "
        "-p no:cacheprovider tests/compat/test_client_matrix.py"
    )

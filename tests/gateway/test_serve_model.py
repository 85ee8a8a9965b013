"""``pilothouse serve-model``: a model as its own OpenAI-compatible server, and a gateway routing to it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from pilothouse.testing import SimulatedUpstream, free_port
from pilothouse.testing._server import PILOTHOUSE_BIN
from tests.gateway.conftest import start_gateway

pytestmark = pytest.mark.slow


def test_gateway_routes_to_a_serve_model_replica(tmp_path: Path, upstream: SimulatedUpstream) -> None:
    port = free_port()
    replica = subprocess.Popen(
        [
            str(PILOTHOUSE_BIN),
            "serve-model",
            "--provider",
            "sim",
            "--model",
            "sim-1",
            "--name",
            "tiny",
            "--option",
            "output_tokens=4",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 60  # a safety net against a replica that never starts
        while True:
            try:
                if httpx.get(base.removesuffix("/v1") + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and replica.poll() is None
            time.sleep(0.05)
        direct = openai.OpenAI(base_url=base, api_key="unused")
        assert direct.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}]
        ).usage
        with pytest.raises(openai.NotFoundError):
            direct.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
        gw = start_gateway(
            tmp_path, upstream, [{"name": "tiny", "provider": "openai", "model": "tiny", "base_url": base}]
        )
        try:
            client = openai.OpenAI(base_url=gw.base_url, api_key=gw.key)
            chunks = list(
                client.chat.completions.create(
                    model="tiny",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
            (trace,) = gw.traces(1)
            assert trace["observations"][0]["usage"]["output"] == 4
        finally:
            gw.server.stop()
    finally:
        replica.terminate()
        replica.wait(10)


def test_serve_model_refuses_bad_options() -> None:
    result = subprocess.run(
        [str(PILOTHOUSE_BIN), "serve-model", "--provider", "sim", "--model", "x", "--option", "colour=red"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "unknown sim option 'colour'" in result.stderr

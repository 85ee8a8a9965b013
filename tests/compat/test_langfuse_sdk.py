"""The real Langfuse SDK, unchanged, pointed at Pilothouse by ``LANGFUSE_BASE_URL`` alone: its OTLP
export reaches ``/api/public/otel/v1/traces`` with HTTP Basic auth (``public_key:secret_key``, the
secret a Pilothouse key), and its ``@observe`` trace (a parent and an OpenAI generation made through
the gateway) is stored with the model, the messages and the tokens."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.server.process import ServerProcess, cli

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "pilothouse.yaml"

APP = """
from langfuse import get_client, observe
from langfuse.openai import openai

client = openai.OpenAI(base_url=GATEWAY + "/v1", api_key=KEY, max_retries=0)

@observe(name="answer question")
def answer(question):
    reply = client.chat.completions.create(model="sim", messages=[{"role": "user", "content": question}])
    return reply.choices[0].message.content

print(answer("What is the capital of France?"))
get_client().flush()
get_client().shutdown()
"""


def _traces(base_url: str, key: str, wanted: int) -> list[dict[str, object]]:
    deadline = time.monotonic() + 20
    while True:
        r = httpx.get(base_url + "/api/traces", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        data: list[dict[str, object]] = r.json()["data"]
        if len(data) >= wanted or time.monotonic() > deadline:
            return data
        time.sleep(0.1)


def test_langfuse_sdk_exports_with_only_its_base_url_changed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'langfuse.db'}"
    made = cli("keys", "create", "--name", "langfuse", "--database-url", url)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    with ServerProcess(url, args=["--config", str(CONFIG)]) as server:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LANGFUSE_", "OTEL_")) and "PROXY" not in k
        }
        env.update(
            LANGFUSE_BASE_URL=server.base_url,
            LANGFUSE_PUBLIC_KEY="pk-lf-anything",
            LANGFUSE_SECRET_KEY=key,
            LANGFUSE_TELEMETRY_ENABLED="false",
            NO_PROXY="127.0.0.1",
        )
        run = subprocess.run(
            [sys.executable, "-c", f"GATEWAY = {server.base_url!r}\nKEY = {key!r}\n{APP}"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert run.returncode == 0, run.stderr
        assert "401" not in run.stderr and "Failed to export" not in run.stderr, run.stderr
        traces = _traces(server.base_url, key, wanted=2)  # the gateway's own span, and the SDK's trace
        named = [t for t in traces if t["name"] == "answer question"]
        assert len(named) == 1, traces
        trace = named[0]
        detail = httpx.get(
            f"{server.base_url}/api/traces/{trace['id']}", headers={"Authorization": f"Bearer {key}"}
        ).json()
        generations = [o for o in detail["observations"] if o.get("model")]
        assert len(generations) == 1, detail["observations"]
        generation = generations[0]
        assert str(generation["model"]).startswith("sim")
        assert generation["usage"]["input"] > 0 and generation["usage"]["output"] > 0
        assert "capital of France" in str(generation["input"])
        assert run.stdout.strip() and run.stdout.strip() in str(generation["output"])


def test_basic_auth_with_a_wrong_or_broken_secret_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'basic.db'}"
    assert cli("db", "upgrade", "--database-url", url).returncode == 0
    with ServerProcess(url) as server:
        for header in ("Basic !!!notbase64", "Basic cGstbGYtb25seQ==", "Basic cGs6c2stbm90LWEta2V5"):
            r = httpx.post(
                server.base_url + "/api/public/otel/v1/traces",
                content=b"",
                headers={"Authorization": header, "Content-Type": "application/x-protobuf"},
            )
            assert r.status_code == 401, (header, r.status_code, r.text)
            assert "Traceback" not in r.text

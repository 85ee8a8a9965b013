"""The real server process: OTel SDK export end to end, the CLI, and zero loss on SIGTERM under load."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from pilothouse.domain.queries import TraceQuery
from pilothouse.store.sql import SqlStore
from pilothouse.testing import free_port
from tests.server.process import ServerProcess, cli
from tests.spans import export_request, llm_attributes, otlp_span

pytestmark = pytest.mark.slow


def create_key(database_url: str) -> str:
    result = cli("keys", "create", "--name", "test", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_otel_sdk_span_appears_in_api_with_tokens(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    key = create_key(url)
    server = ServerProcess(url)
    try:
        provider = TracerProvider(resource=Resource.create({"service.name": "e2e"}))
        exporter = OTLPSpanExporter(
            endpoint=server.base_url + "/v1/traces", headers={"Authorization": f"Bearer {key}"}
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("e2e")
        with tracer.start_as_current_span("chat gpt-4o-mini") as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            span.set_attribute("gen_ai.usage.input_tokens", 42)
            span.set_attribute("gen_ai.usage.output_tokens", 7)
        provider.shutdown()
        deadline = time.monotonic() + 10
        data: list[dict[str, object]] = []
        while time.monotonic() < deadline and not data:
            r = httpx.get(server.base_url + "/api/traces", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
            data = r.json()["data"]
            time.sleep(0.05)
        assert data and data[0]["name"] == "chat gpt-4o-mini"
        assert data[0]["usage"] == {"input": 42, "output": 7, "total": 49}
        # the CLI reads the same store
        listing = cli("traces", "list", "--database-url", url)
        assert listing.returncode == 0 and "chat gpt-4o-mini" in listing.stdout
        shown = cli("traces", "show", str(data[0]["id"]), "--database-url", url)
        assert "gpt-4o-mini" in shown.stdout and "in=42 out=7" in shown.stdout
    finally:
        server.stop()


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    # a command that reads, run away from the data, says so instead of reading a new empty database
    r = cli("traces", "list", "--database-url", url)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"Error: no database at {tmp_path / 'cli.db'}")
    assert not (tmp_path / "cli.db").exists()
    for command in (["gate", "--baseline", "a", "--candidate", "b"], ["eval", "compare", "a", "b"]):
        r = cli(*command, "--database-url", url)
        assert r.returncode == 1 and r.stderr.startswith("Error: no database at"), r.stderr
    assert not (tmp_path / "cli.db").exists()
    assert cli("db", "upgrade", "--database-url", url).returncode == 0
    r = cli("traces", "show", "abc", "--database-url", url)
    assert r.returncode == 2 and r.stderr.strip() == "Error: no trace 'abc' in project 'default'"
    # serve on a port another process listens on: one line, before any banner
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        r = cli("serve", "--port", port, "--database-url", url)
    assert r.returncode == 1 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith(f"Error: cannot start: 127.0.0.1:{port} is taken")
    r = cli("keys", "create", "--name", "x", "--scopes", "write", "--database-url", url)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown scope 'write'" in r.stderr
    r = cli("traces", "list", "--database-url", "mysql://bob:HUNTER2@nope/db")
    assert r.returncode == 2 and r.stderr.startswith("Error: cannot open database mysql://bob:***@nope/db")
    r = cli("db", "upgrade", "--database-url", url)
    assert r.returncode == 0
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("models: [\n", "not valid YAML"),
        ("models:\n  - name: x\n    provider: nope\n", "provider must be one of"),
        (
            "models:\n  - name: x\n    provider: openai\n    api_key: ${PH_TEST_UNSET}\n",
            "PH_TEST_UNSET is not set",
        ),
    ]:
        bad.write_text(text)
        r = cli("serve", "--config", str(bad), "--database-url", url, "--port", str(free_port()))
        assert r.returncode in (1, 2) and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.stderr.strip().count("\n") == 0, r.stderr
    r = cli("serve-model", "--model", "/nonexistent/model")
    assert r.returncode == 2 and "existing path" in r.stderr
    # A port out of range is refused (it used to listen on the port modulo 65,536)
    r = cli("serve", "--port", "99999", "--database-url", url)
    assert r.returncode == 2 and "1<=x<=65535" in r.stderr
    for command in (("serve",), ("keys", "list")):  # every command that reads the settings
        r = cli(*command, "--database-url", url, env={"PILOTHOUSE_PORT": "70000"})
        assert r.returncode == 2 and "invalid settings: PILOTHOUSE_PORT: Input should be less" in r.stderr
        assert r.stderr.strip().count("\n") == 0, r.stderr


def test_sigterm_under_load_loses_no_accepted_span(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sigterm.db'}"
    key = create_key(url)
    server = ServerProcess(url)
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def sender() -> None:
        with httpx.Client(base_url=server.base_url, timeout=30) as http:
            while not stop.is_set():
                spans = [otlp_span("load", llm_attributes(), duration_ms=5) for _ in range(200)]
                try:
                    r = http.post(
                        "/v1/traces",
                        content=export_request(spans).SerializeToString(),
                        headers={"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"},
                    )
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        accepted.extend(s.trace_id.hex() for s in spans)
                elif r.status_code != 429:
                    return

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    code = server.terminate()
    stop.set()
    for t in threads:
        t.join(30)
    # uvicorn re-raises the signal after its graceful shutdown, so the exit status is -SIGTERM
    assert code in (0, -15), server.output()
    assert len(accepted) >= 1000
    store = SqlStore.from_url(url)
    try:
        stored = store.count_spans()
        assert stored == len(accepted)
        page = store.list_traces("default", TraceQuery(limit=500))
        assert {t.trace.id for t in page.data} <= set(accepted)
    finally:
        store.close()


def test_serve_takes_its_settings_from_the_server_section_of_its_config(tmp_path: Path) -> None:
    """``pilothouse serve --config FILE`` reads ``server:`` (it used to fail with "unknown section")."""
    import os
    import subprocess

    from pilothouse.testing._server import PILOTHOUSE_BIN

    port = free_port()
    database = tmp_path / "from-the-file.db"
    config = tmp_path / "pilothouse.yaml"
    config.write_text(
        f"server:\n  port: {port}\n  database_url: sqlite:///{database}\n  log_level: warning\n"
        "models:\n  - name: sim\n    provider: sim\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PILOTHOUSE_")}
    proc = subprocess.Popen(
        [str(PILOTHOUSE_BIN), "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for _ in range(600):  # the port and the database of the file: /health answers there
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not answer on the port of its config file")
        assert database.is_file()
    finally:
        proc.terminate()
        proc.communicate(timeout=60)

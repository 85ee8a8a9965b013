"""What the benchmarks share: a served Pilothouse process, its CPU time, OTLP payloads."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from pilothouse.testing import PilothouseServer

BIN = Path(sys.executable).parent / "pilothouse"
WORDS = (
    "model token latency answer question context retrieval prompt cost user system assistant tool call "
    "result document paris weather ocean tide planet energy market price london river mountain"
).split()
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def text(rng: random.Random, size: int) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        w = rng.choice(WORDS)
        out.append(w)
        length += len(w) + 1
    return " ".join(out)[:size]


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku", "llama-3.1-8b")


def openinference_span(rng: random.Random, start_ns: int, text_bytes: int = 1024) -> Span:
    """An LLM span as openinference-instrumentation-openai writes it, with ``text_bytes`` of prompt
    and answer text (input.value and the flattened messages, as the instrumentation sends both)."""
    prompt = text(rng, text_bytes * 7 // 10)
    answer = text(rng, text_bytes - len(prompt))
    model = rng.choice(MODELS)
    prompt_tokens, completion_tokens = len(prompt) // 4, len(answer) // 4
    duration = int(rng.lognormvariate(6.0, 0.6) * 1e6)  # ~400 ms median
    attrs = [
        kv("openinference.span.kind", "LLM"),
        kv("llm.system", "openai"),
        kv("llm.provider", "openai"),
        kv("llm.model_name", model),
        kv("llm.invocation_parameters", '{"temperature": 0.2, "max_tokens": 256}'),
        kv("input.value", prompt),
        kv("input.mime_type", "text/plain"),
        kv("output.value", answer),
        kv("output.mime_type", "text/plain"),
        kv("llm.input_messages.0.message.role", "user"),
        kv("llm.input_messages.0.message.content", prompt),
        kv("llm.output_messages.0.message.role", "assistant"),
        kv("llm.output_messages.0.message.content", answer),
        kv("llm.token_count.prompt", prompt_tokens),
        kv("llm.token_count.completion", completion_tokens),
        kv("llm.token_count.total", prompt_tokens + completion_tokens),
        kv("session.id", f"session-{rng.randrange(1000)}"),
        kv("user.id", f"user-{rng.randrange(200)}"),
    ]
    return Span(
        trace_id=rng.randbytes(16),
        span_id=rng.randbytes(8),
        name="ChatCompletion",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=start_ns + duration,
        attributes=attrs,
        status=Status(code=Status.STATUS_CODE_OK),
    )


def export_body(spans: list[Span]) -> bytes:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(kv("service.name", "bench"))
    ss = rs.scope_spans.add()
    ss.scope.name = "openinference.instrumentation.openai"
    ss.spans.extend(spans)
    return request.SerializeToString()


class Server(PilothouseServer):
    """``pilothouse serve`` for a benchmark: output discarded, optionally pinned to CPUs."""

    def __init__(self, database_url: str, cpus: str | None = None, env: dict[str, str] | None = None) -> None:
        prefix = ["taskset", "-c", cpus] if cpus else []
        super().__init__(database_url, env=env, command_prefix=prefix, capture_output=False)

    @property
    def cpu_seconds(self) -> float:
        """CPU time the server has used so far."""
        return cpu_seconds(self.pid)


def build_bodies(spans: int, batch: int, seed: int = 7, ago_s: int = 3600) -> list[bytes]:
    """OTLP protobuf export bodies of ``batch`` OpenInference LLM spans each, 1 ms apart, starting
    ``ago_s`` seconds ago."""
    rng = random.Random(seed)
    start = time.time_ns() - ago_s * 10**9
    return [
        export_body([openinference_span(rng, start + (b * batch + i) * 1_000_000) for i in range(batch)])
        for b in range(spans // batch)
    ]


def installed_version(python: Path, distribution: str) -> str | None:
    """Version of ``distribution`` in the virtualenv of ``python``, or None."""
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", f"from importlib.metadata import version; print(version({distribution!r}))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_venv(venv: Path, distribution: str, version: str, requirement: str, label: str) -> Path:
    """The ``python`` of ``venv`` with ``distribution==version`` (installed from ``requirement`` if
    missing); baselines run in venvs of their own so their pins never meet ours."""
    python = venv / "bin" / "python"
    if installed_version(python, distribution) == version:
        print(f"{label}: reusing {venv} ({distribution} {version})", flush=True)
        return python
    started = time.perf_counter()
    if not python.exists():
        print(f"{label}: creating virtualenv {venv}", flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    print(f"{label}: installing {requirement} from PyPI ...", flush=True)
    out = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            requirement,
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0 or installed_version(python, distribution) != version:
        tail = "\n".join((out.stdout + out.stderr).splitlines()[-30:])
        raise RuntimeError(f"installing {requirement} into {venv} failed:\n{tail}")
    print(f"{label}: installed in {time.perf_counter() - started:.0f} s", flush=True)
    return python


def send_all(
    base_url: str,
    bodies: list[bytes],
    senders: int,
    headers: dict[str, str] | None = None,
    retry_scale: float = 1.0,
) -> int:
    """POST every body to ``/v1/traces`` from ``senders`` threads, retrying 429/503 after
    ``retry_scale`` x Retry-After (at most 5 s); the number of retries."""
    queue = list(bodies)
    lock = threading.Lock()
    retries = 0
    errors: list[BaseException] = []

    def sender() -> None:
        nonlocal retries
        try:
            with httpx.Client(
                base_url=base_url,
                headers={"Content-Type": "application/x-protobuf", **(headers or {})},
                timeout=300,
            ) as http:
                while True:
                    with lock:
                        if not queue or errors:
                            return
                        body = queue.pop()
                    while True:
                        r = http.post("/v1/traces", content=body)
                        if r.status_code == 200:
                            break
                        if r.status_code not in (429, 503):
                            raise RuntimeError(f"export failed: {r.status_code} {r.text[:500]}")
                        with lock:
                            retries += 1
                        time.sleep(min(float(r.headers.get("retry-after", "0.5")) * retry_scale, 5.0))
        except BaseException as e:
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return retries


def create_key(database_url: str, env: dict[str, str] | None = None, project: str = "default") -> str:
    """A new key of ``project``, made by the CLI with ``env`` added to this process's environment (a
    baseline's ``PYTHONPATH``: the CLI migrates the database, which must stay at the server's revision)."""
    command = [str(BIN), "keys", "create", "--name", "bench", "--database-url", database_url]
    out = subprocess.run(
        [*command, "--project", project],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]

#!/usr/bin/env python3
"""Capture a corpus of REAL OTLP/HTTP protobuf trace payloads.

Real instrumentation packages drive the real ``openai`` Python client against a
simulated OpenAI-compatible upstream on 127.0.0.1; an OTLP receiver on
127.0.0.1 saves every export request body verbatim (gzip is undone, nothing
else is touched).  Nothing here talks to a host other than loopback.

Usage::

    python3 tests/corpus/capture.py --all          # create/reuse venvs, capture everything, write SUMMARY.md
    python3 tests/corpus/capture.py --all --only traceloop
    <venv>/bin/python tests/corpus/capture.py --run openinference   # one instrumentation, current interpreter
    <venv>/bin/python tests/corpus/capture.py --summary             # rebuild SUMMARY.md from payloads/

Each instrumentation lives in its own virtualenv under /tmp/corpus-venvs/<venv>
(override with CORPUS_VENV_ROOT) installed from tests/corpus/requirements-<venv>.txt,
because their pins conflict.  Only stdlib is used outside ``--run``/``--summary``.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import capture_more  # the Anthropic upstream and the instrumentations added later (stdlib only)

HERE = Path(__file__).resolve().parent
PAYLOADS = HERE / "payloads"
MANIFEST = PAYLOADS / "manifest.json"
SUMMARY = PAYLOADS / "SUMMARY.md"
VENV_ROOT = Path(os.environ.get("CORPUS_VENV_ROOT", "/tmp/corpus-venvs"))

# instrumentation name -> (venv / requirements name, distribution whose version is reported, description)
INSTRUMENTATIONS: dict[str, tuple[str, str, str]] = {
    "otel-genai": (
        "otel-genai",
        "opentelemetry-instrumentation-openai-v2",
        "OpenTelemetry contrib openai-v2 instrumentation (current release, chat goes through "
        "opentelemetry-util-genai), no OTEL_SEMCONV_STABILITY_OPT_IN, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
        "=true: util-genai only accepts span_only/event_only/span_and_event, so 'true' => NO content captured",
    ),
    "otel-genai-v1": (
        "otel-genai-v1",
        "opentelemetry-instrumentation-openai-v2",
        "OLDER OpenTelemetry contrib openai-v2 release (pre opentelemetry-util-genai): v1.28-v1.30 GenAI semconv "
        "(gen_ai.system, span name 'chat <model>'), OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true; "
        "message content is emitted as log events (gen_ai.user.message, gen_ai.choice, ...) -> *.logs.pb",
    ),
    "otel-genai-latest": (
        "otel-genai",
        "opentelemetry-instrumentation-openai-v2",
        "OpenTelemetry contrib openai-v2 instrumentation with OTEL_SEMCONV_STABILITY_OPT_IN="
        "gen_ai_latest_experimental and OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=span_and_event",
    ),
    "openinference": (
        "openinference",
        "openinference-instrumentation-openai",
        "Arize OpenInference OpenAIInstrumentor (openinference semantic conventions), parent = OITracer chain span",
    ),
    "traceloop": (
        "traceloop",
        "traceloop-sdk",
        "Traceloop OpenLLMetry SDK (Traceloop.init, disable_batch=True => one export request per span), "
        "parent = @workflow",
    ),
    "langfuse": (
        "langfuse",
        "langfuse",
        "Langfuse Python SDK (OTel based) openai drop-in `from langfuse.openai import openai`, parent = @observe; "
        "exported to /api/public/otel/v1/traces, gzip",
    ),
}

INSTRUMENTATIONS.update(capture_more.EXTRA_INSTRUMENTATIONS)

SCENARIOS: dict[str, str] = {
    "chat": "chat.completions.create, non-stream, system+user message, temperature/max_tokens set",
    "chat_stream": "chat.completions.create stream=True with stream_options.include_usage (final usage chunk)",
    "chat_tools": "two calls: request with tools -> tool_call answer (finish_reason=tool_calls); "
    "then the tool result is sent back -> final text answer",
    "embeddings": "embeddings.create with two input strings (client default encoding_format=base64)",
    "error": "chat.completions.create with model fail-model -> upstream HTTP 500 (OpenAI error JSON), "
    "openai.InternalServerError raised and caught inside the parent",
}

# Usage reported by the simulated upstream (so the corpus shows how each convention maps it).
CHAT_USAGE = {
    "prompt_tokens": 20,
    "completion_tokens": 12,
    "total_tokens": 32,
    "prompt_tokens_details": {"cached_tokens": 8, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 5,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
EMBED_USAGE = {"prompt_tokens": 6, "total_tokens": 6}
FIXED_CREATED = 1730000000


# --------------------------------------------------------------------------------------------
# Simulated OpenAI-compatible upstream
# --------------------------------------------------------------------------------------------
class UpstreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "corpus-upstream/1"

    def log_message(self, *args):  # keep stdout quiet
        pass

    def _json(self, status: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-request-id", "req_corpus_0001")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        req = json.loads(self.rfile.read(n) or b"{}")
        model = req.get("model", "")
        if self.path.split("?")[0].rstrip("/").endswith("/v1/messages"):
            return capture_more.anthropic_messages(self, req)
        if model == "fail-model":
            return self._json(
                500,
                {
                    "error": {
                        "message": "The server had an error while processing your request. (simulated)",
                        "type": "server_error",
                        "param": None,
                        "code": "internal_error",
                    }
                },
            )
        if self.path.rstrip("/").endswith("/chat/completions"):
            return self._chat(req)
        if self.path.rstrip("/").endswith("/embeddings"):
            return self._embeddings(req)
        return self._json(
            404,
            {
                "error": {
                    "message": f"unknown path {self.path}",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
        )

    # -- chat ---------------------------------------------------------------------------------
    def _chat(self, req: dict) -> None:
        model = req.get("model", "gpt-4o-mini")
        resp_model = model + "-2024-07-18"  # response model differs from request model, as real OpenAI does
        last = (req.get("messages") or [{}])[-1]
        want_tool = bool(req.get("tools")) and last.get("role") != "tool"
        if want_tool:
            message = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_corpus_weather_1",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city": "Paris", "unit": "celsius"}',
                        },
                    }
                ],
            }
            finish = "tool_calls"
        elif last.get("role") == "tool":
            message = {
                "role": "assistant",
                "content": "It is 18 degrees Celsius and sunny in Paris.",
                "refusal": None,
            }
            finish = "stop"
        else:
            message = {"role": "assistant", "content": "Hello from the simulated upstream!", "refusal": None}
            finish = "stop"

        if req.get("stream"):
            return self._chat_stream(req, resp_model, message, finish)
        self._json(
            200,
            {
                "id": "chatcmpl-corpus-0001",
                "object": "chat.completion",
                "created": FIXED_CREATED,
                "model": resp_model,
                "system_fingerprint": "fp_corpus",
                "service_tier": "default",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": CHAT_USAGE,
            },
        )

    def _chat_stream(self, req: dict, resp_model: str, message: dict, finish: str) -> None:
        include_usage = bool((req.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": "chatcmpl-corpus-stream-0001",
            "object": "chat.completion.chunk",
            "created": FIXED_CREATED,
            "model": resp_model,
            "system_fingerprint": "fp_corpus",
            "service_tier": "default",
        }
        chunks = [
            dict(
                base,
                choices=[
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            )
        ]
        if message.get("tool_calls"):
            tc = message["tool_calls"][0]
            chunks.append(
                dict(
                    base,
                    choices=[
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": tc["id"],
                                        "type": "function",
                                        "function": {"name": tc["function"]["name"], "arguments": ""},
                                    }
                                ]
                            },
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                )
            )
            chunks.append(
                dict(
                    base,
                    choices=[
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {"index": 0, "function": {"arguments": tc["function"]["arguments"]}}
                                ]
                            },
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                )
            )
        else:
            words = message["content"].split(" ")
            for i, w in enumerate(words):
                piece = w if i == 0 else " " + w
                chunks.append(
                    dict(
                        base,
                        choices=[
                            {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
                        ],
                    )
                )
        chunks.append(
            dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])
        )
        if include_usage:
            for c in chunks:
                c["usage"] = None
            chunks.append(dict(base, choices=[], usage=CHAT_USAGE))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", "req_corpus_stream_0001")
        self.end_headers()
        for c in chunks:
            self.wfile.write(b"data: " + json.dumps(c).encode() + b"\n\n")
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    # -- embeddings ---------------------------------------------------------------------------
    def _embeddings(self, req: dict) -> None:
        inputs = req.get("input")
        if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
            inputs = [inputs]
        fmt = req.get("encoding_format") or "float"
        data = []
        for i, _ in enumerate(inputs or []):
            vec = [round(0.01 * (i + 1) * (k + 1), 4) for k in range(8)]
            emb = base64.b64encode(struct.pack("<8f", *vec)).decode() if fmt == "base64" else vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        self._json(
            200,
            {
                "object": "list",
                "data": data,
                "model": req.get("model", "text-embedding-3-small"),
                "usage": EMBED_USAGE,
            },
        )


# --------------------------------------------------------------------------------------------
# OTLP/HTTP receiver
# --------------------------------------------------------------------------------------------
class Receiver:
    TRACE_PATHS = ("/v1/traces", "/api/public/otel/v1/traces")
    LOG_PATHS = ("/v1/logs",)

    def __init__(self) -> None:
        self.label = "setup"
        self.requests: list[dict] = []
        self.other: list[str] = []
        self.lock = threading.Lock()
        recv = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    out = b""
                    while True:
                        size = int(self.rfile.readline().strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            return out
                        out += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):
                raw = self._read_body()
                enc = (self.headers.get("Content-Encoding") or "").lower()
                body = raw
                if enc == "gzip":
                    body = gzip.decompress(raw)
                elif enc == "deflate":
                    body = zlib.decompress(raw)
                ctype = self.headers.get("Content-Type") or ""
                path = self.path.split("?")[0]
                with recv.lock:
                    if path in recv.TRACE_PATHS or path in recv.LOG_PATHS:
                        recv.requests.append(
                            {
                                "label": recv.label,
                                "signal": "traces" if path in recv.TRACE_PATHS else "logs",
                                "path": path,
                                "content_type": ctype,
                                "content_encoding": enc or "identity",
                                "user_agent": self.headers.get("User-Agent", ""),
                                "body": body,
                            }
                        )
                    else:
                        recv.other.append(f"POST {path} ({ctype}, {len(body)} bytes) during {recv.label}")
                if "json" in ctype:
                    out, rtype = b"{}", "application/json"
                else:
                    out, rtype = b"", "application/x-protobuf"  # empty Export*ServiceResponse
                self.send_response(200)
                self.send_header("Content-Type", rtype)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_GET(self):
                with recv.lock:
                    recv.other.append(f"GET {self.path} during {recv.label}")
                out = b"{}"
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def start_upstream() -> tuple[ThreadingHTTPServer, str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), UpstreamHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}/v1"


# --------------------------------------------------------------------------------------------
# Scenarios (the application code, identical for every instrumentation)
# --------------------------------------------------------------------------------------------
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}


def scenario_chat(client) -> str:
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello."},
        ],
        temperature=0.2,
        max_tokens=64,
    )
    return r.choices[0].message.content


def scenario_chat_stream(client) -> str:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Say hello, streaming."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


def scenario_chat_tools(client) -> str:
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r1 = client.chat.completions.create(
        model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto"
    )
    msg = r1.choices[0].message
    call = msg.tool_calls[0]
    messages.append(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        }
    )
    messages.append(
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 18, "sky": "sunny"}'}
    )
    r2 = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
    return r2.choices[0].message.content


def scenario_embeddings(client) -> int:
    r = client.embeddings.create(model="text-embedding-3-small", input=["hello world", "pilothouse corpus"])
    return len(r.data)


def scenario_error(client) -> str:
    import openai

    try:
        client.chat.completions.create(
            model="fail-model", messages=[{"role": "user", "content": "This will fail."}]
        )
    except openai.APIStatusError as e:  # InternalServerError
        return f"caught {type(e).__name__} {e.status_code}"
    raise AssertionError("fail-model did not fail")


SCENARIO_FUNCS = {
    "chat": scenario_chat,
    "chat_stream": scenario_chat_stream,
    "chat_tools": scenario_chat_tools,
    "embeddings": scenario_embeddings,
    "error": scenario_error,
}


# --------------------------------------------------------------------------------------------
# Per-instrumentation setup. Each returns (make_client, wrap_parent, flush, shutdown)
#   make_client() -> openai.OpenAI instance
#   wrap_parent(name, fn) -> zero-arg callable running fn inside the package's natural parent span
# --------------------------------------------------------------------------------------------
def _otel_sdk_provider(recv: Receiver, service: str, logs: bool = False):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": service})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=recv.url + "/v1/traces")))
    lp = None
    if logs:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        lp = LoggerProvider(resource=resource)
        lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=recv.url + "/v1/logs")))
    return tp, lp


def setup_otel_genai(recv: Receiver, upstream: str, latest: bool, service: str, legacy_events: bool = False):
    if latest:
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "gen_ai_latest_experimental"
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "span_and_event"
    else:
        os.environ.pop("OTEL_SEMCONV_STABILITY_OPT_IN", None)
        os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"
    import openai
    from opentelemetry import _logs, trace
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    tp, lp = _otel_sdk_provider(recv, service, logs=True)
    trace.set_tracer_provider(tp)
    _logs.set_logger_provider(lp)
    if legacy_events:  # 2.1b0 and older emit content through the (deprecated) Events API
        from opentelemetry._events import set_event_logger_provider
        from opentelemetry.sdk._events import EventLoggerProvider

        elp = EventLoggerProvider(lp)
        set_event_logger_provider(elp)
        OpenAIInstrumentor().instrument(tracer_provider=tp, event_logger_provider=elp)
    else:
        OpenAIInstrumentor().instrument(tracer_provider=tp, logger_provider=lp)
    tracer = tp.get_tracer("pilothouse.corpus")

    def wrap_parent(name, fn):
        def run():
            with tracer.start_as_current_span(f"scenario {name}"):
                return fn()

        return run

    def flush():
        tp.force_flush()
        lp.force_flush()

    def shutdown():
        tp.shutdown()
        lp.shutdown()

    return (
        (lambda: openai.OpenAI(base_url=upstream, api_key="sk-corpus-dummy", max_retries=0)),
        wrap_parent,
        flush,
        shutdown,
    )


def setup_openinference(recv: Receiver, upstream: str):
    import openai
    from openinference.instrumentation import TracerProvider as OITracerProvider
    from openinference.instrumentation.openai import OpenAIInstrumentor
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tp = OITracerProvider(resource=Resource.create({"service.name": "corpus-openinference"}))
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=recv.url + "/v1/traces")))
    trace.set_tracer_provider(tp)
    OpenAIInstrumentor().instrument(tracer_provider=tp)
    tracer = tp.get_tracer("pilothouse.corpus")

    def wrap_parent(name, fn):
        def run():
            with tracer.start_as_current_span(f"scenario {name}", openinference_span_kind="chain") as span:
                span.set_input(name)
                out = fn()
                span.set_output(str(out))
                return out

        return run

    return (
        (lambda: openai.OpenAI(base_url=upstream, api_key="sk-corpus-dummy", max_retries=0)),
        wrap_parent,
        tp.force_flush,
        tp.shutdown,
    )


def setup_traceloop(recv: Receiver, upstream: str):
    import openai
    from opentelemetry import trace
    from traceloop.sdk import Traceloop
    from traceloop.sdk.decorators import workflow
    from traceloop.sdk.instruments import Instruments

    Traceloop.init(
        app_name="corpus-traceloop",
        api_endpoint=recv.url,
        disable_batch=True,
        telemetry_enabled=False,
        instruments={Instruments.OPENAI},
    )

    def wrap_parent(name, fn):
        return workflow(name=f"scenario_{name}")(fn)

    tp = trace.get_tracer_provider()
    return (
        (lambda: openai.OpenAI(base_url=upstream, api_key="sk-corpus-dummy", max_retries=0)),
        wrap_parent,
        tp.force_flush,
        tp.shutdown,
    )


def setup_langfuse(recv: Receiver, upstream: str):
    from langfuse import Langfuse, observe
    from langfuse.openai import openai as lf_openai

    lf = Langfuse(
        public_key="pk-lf-corpus-dummy",
        secret_key="sk-lf-corpus-dummy",
        host=recv.url,
        environment="corpus",
        release="corpus-1",
    )

    def wrap_parent(name, fn):
        return observe(name=f"scenario {name}")(fn)

    return (
        (lambda: lf_openai.OpenAI(base_url=upstream, api_key="sk-corpus-dummy", max_retries=0)),
        wrap_parent,
        lf.flush,
        lf.shutdown,
    )


def isolate_env(recv: Receiver, upstream: str) -> None:
    """Make sure nothing can reach a real host (all endpoints -> loopback, telemetry off)."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": recv.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OPENAI_API_KEY": "sk-corpus-dummy",
        "OPENAI_BASE_URL": upstream,
        "TRACELOOP_TELEMETRY": "false",
        "TRACELOOP_METRICS_ENABLED": "false",
        "TRACELOOP_LOGGING_ENABLED": "false",
        "TRACELOOP_TRACE_CONTENT": "true",
        "TRACELOOP_BASE_URL": recv.url,
        "LANGFUSE_HOST": recv.url,
        "LANGFUSE_BASE_URL": recv.url,
        "LANGFUSE_PUBLIC_KEY": "pk-lf-corpus-dummy",
        "LANGFUSE_SECRET_KEY": "sk-lf-corpus-dummy",
        "LANGFUSE_TELEMETRY_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "ANONYMIZED_TELEMETRY": "false",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }
    for k in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "TRACELOOP_API_KEY",
        "TRACELOOP_HEADERS",
    ):
        os.environ.pop(k, None)
    os.environ.update(env)


# --------------------------------------------------------------------------------------------
# Inspecting payloads (needs opentelemetry-proto, present in every venv)
# --------------------------------------------------------------------------------------------
def parse_payload(body: bytes, signal: str):
    if signal == "logs":
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        msg = ExportLogsServiceRequest()
    else:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        msg = ExportTraceServiceRequest()
    msg.ParseFromString(body)
    return msg


def names_in(msg, signal: str) -> list[str]:
    out = []
    if signal == "logs":
        for rl in msg.resource_logs:
            for sl in rl.scope_logs:
                for lr in sl.log_records:
                    out.append(
                        getattr(lr, "event_name", "")
                        or next((a.value.string_value for a in lr.attributes if a.key == "event.name"), "")
                        or "(log record)"
                    )
        return out
    for rs in msg.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                out.append(sp.name)
    return out


# --------------------------------------------------------------------------------------------
# --run: one instrumentation in the current interpreter
# --------------------------------------------------------------------------------------------
def run_one(inst: str) -> None:
    from importlib.metadata import version

    venv_name, dist, inst_desc = INSTRUMENTATIONS[inst]
    recv = Receiver()
    upstream_srv, upstream = start_upstream()
    isolate_env(recv, upstream)

    if inst == "otel-genai":
        make_client, wrap_parent, flush, shutdown = setup_otel_genai(recv, upstream, False, "corpus-" + inst)
    elif inst == "otel-genai-v1":
        make_client, wrap_parent, flush, shutdown = setup_otel_genai(
            recv, upstream, False, "corpus-" + inst, legacy_events=True
        )
    elif inst == "otel-genai-latest":
        make_client, wrap_parent, flush, shutdown = setup_otel_genai(recv, upstream, True, "corpus-" + inst)
    elif inst == "openinference":
        make_client, wrap_parent, flush, shutdown = setup_openinference(recv, upstream)
    elif inst == "traceloop":
        make_client, wrap_parent, flush, shutdown = setup_traceloop(recv, upstream)
    elif inst == "langfuse":
        make_client, wrap_parent, flush, shutdown = setup_langfuse(recv, upstream)
    elif inst in capture_more.EXTRA_INSTRUMENTATIONS:
        make_client, wrap_parent, flush, shutdown, scenarios = capture_more.setup(inst, recv, upstream)
    else:
        raise SystemExit(f"unknown instrumentation {inst}")
    if inst not in capture_more.EXTRA_INSTRUMENTATIONS or scenarios is None:
        scenarios = SCENARIO_FUNCS

    client = make_client()
    flush()
    for scen, fn in scenarios.items():
        recv.label = scen
        result = wrap_parent(scen, lambda fn=fn: fn(client))()
        flush()
        time.sleep(0.2)  # let any in-flight export land before the label changes
        flush()
        print(f"[{inst}] {scen}: {result!r}", file=sys.stderr)
    recv.label = "shutdown"
    shutdown()
    time.sleep(0.2)

    outdir = PAYLOADS / inst
    outdir.mkdir(parents=True, exist_ok=True)
    for old in outdir.glob("*.pb"):
        old.unlink()

    by_key: dict[tuple[str, str], list[dict]] = {}
    for r in recv.requests:
        if not r["body"]:
            continue
        by_key.setdefault((r["label"], r["signal"]), []).append(r)

    if inst in capture_more.NODE_INSTRUMENTATIONS:
        version = capture_more.node_version  # noqa: F811 (npm packages, read from node_modules)
    packages = {
        d: version(d)
        for d in (
            dist,
            "openai" if inst not in capture_more.ANTHROPIC_CLIENT else "anthropic",
            "opentelemetry-sdk",
            "opentelemetry-api",
            "opentelemetry-exporter-otlp-proto-http",
            "protobuf",
        )
    }
    entries = []
    for (label, signal), reqs in sorted(by_key.items()):
        for i, r in enumerate(reqs, 1):
            stem = label + (".logs" if signal == "logs" else "")
            fname = f"{stem}-{i}.pb" if len(reqs) > 1 else f"{stem}.pb"
            (outdir / fname).write_bytes(r["body"])
            msg = parse_payload(r["body"], signal)  # raises if not a valid export request
            entries.append(
                {
                    "file": f"{inst}/{fname}",
                    "instrumentation": inst,
                    "signal": signal,
                    "package": dist,
                    "package_version": version(dist),
                    "packages": packages,
                    "scenario": label,
                    "request_path": r["path"],
                    "content_type": r["content_type"],
                    "content_encoding_on_wire": r["content_encoding"],
                    "user_agent": r["user_agent"],
                    "bytes": len(r["body"]),
                    "names": names_in(msg, signal),
                    "description": f"{SCENARIOS.get(label, label)} | {inst_desc}"
                    + (f" | export request {i} of {len(reqs)}" if len(reqs) > 1 else ""),
                }
            )
    if recv.other:
        print(f"[{inst}] non-OTLP requests seen by receiver: {recv.other}", file=sys.stderr)

    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"files": []}
    manifest["files"] = [e for e in manifest["files"] if e["instrumentation"] != inst] + entries
    manifest["files"].sort(key=lambda e: e["file"])
    manifest["simulated_upstream"] = {
        "chat_usage": CHAT_USAGE,
        "embeddings_usage": EMBED_USAGE,
        "anthropic_usage": capture_more.ANTHROPIC_USAGE,
        "scenarios": SCENARIOS,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    upstream_srv.shutdown()
    print(f"[{inst}] wrote {len(entries)} payload files to {outdir}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# --summary: human-readable SUMMARY.md of every payload
# --------------------------------------------------------------------------------------------
def _any_value(v, limit=80) -> str:
    kind = v.WhichOneof("value")
    if kind is None:
        s = "(empty)"
    elif kind == "string_value":
        s = json.dumps(v.string_value)
    elif kind == "bool_value":
        s = "true" if v.bool_value else "false"
    elif kind == "int_value":
        s = str(v.int_value)
    elif kind == "double_value":
        s = repr(v.double_value)
    elif kind == "bytes_value":
        s = f"bytes[{len(v.bytes_value)}]"
    elif kind == "array_value":
        s = "[" + ", ".join(_any_value(x, limit) for x in v.array_value.values) + "]"
    else:  # kvlist
        s = "{" + ", ".join(f"{kv.key}: {_any_value(kv.value, limit)}" for kv in v.kvlist_value.values) + "}"
    s = s.replace("|", "\\|").replace("\n", "\\n")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _type(v) -> str:
    return {
        "string_value": "string",
        "bool_value": "bool",
        "int_value": "int",
        "double_value": "double",
        "array_value": "array",
        "kvlist_value": "kvlist",
        "bytes_value": "bytes",
    }.get(v.WhichOneof("value"), "-")


def _attr_table(attrs, indent="") -> list[str]:
    if not attrs:
        return [f"{indent}_(no attributes)_", ""]
    lines = [f"{indent}| key | type | example value |", f"{indent}|---|---|---|"]
    for a in attrs:
        # token usage / cost blobs are shown whole: they are what a normaliser has to map
        limit = 400 if ("usage" in a.key or "cost_details" in a.key) else 80
        lines.append(f"{indent}| `{a.key}` | {_type(a.value)} | {_any_value(a.value, limit)} |")
    lines.append("")
    return lines


KIND = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def write_summary() -> None:
    manifest = json.loads(MANIFEST.read_text())
    files = manifest["files"]
    out = [
        "# OTLP corpus summary",
        "",
        "Generated by `tests/corpus/capture.py --summary` from the `.pb` files in this folder "
        "(do not edit by hand). Every file parsed as "
        "`opentelemetry.proto.collector.trace.v1.trace_service_pb2.ExportTraceServiceRequest` "
        "(`*.logs.pb`: `...logs.v1.logs_service_pb2.ExportLogsServiceRequest`).",
        "",
        "Simulated upstream usage for every chat completion: "
        f"`{json.dumps(CHAT_USAGE)}`; embeddings: `{json.dumps(EMBED_USAGE)}`. "
        "The upstream answers model `gpt-4o-mini` with response model `gpt-4o-mini-2024-07-18`.",
        "",
        "Values are truncated to 80 characters (usage / cost_details values: 400).",
        "",
        "## Files",
        "",
        "| file | package | scenario | content-type (wire encoding) | bytes | spans / log records |",
        "|---|---|---|---|---|---|",
    ]
    for e in files:
        out.append(
            f"| `{e['file']}` | {e['package']} {e['package_version']} | {e['scenario']} | "
            f"{e['content_type']} ({e['content_encoding_on_wire']}) | {e['bytes']} | "
            f"{', '.join('`%s`' % n for n in e['names'])} |"
        )
    out.append("")

    # Union of span attribute keys per instrumentation (quick reference)
    out += ["## Attribute keys per instrumentation (union over all spans)", ""]
    by_inst: dict[str, dict[str, str]] = {}
    for e in files:
        if e["signal"] != "traces":
            continue
        msg = parse_payload((PAYLOADS / e["file"]).read_bytes(), "traces")
        keys = by_inst.setdefault(e["instrumentation"], {})
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    for a in sp.attributes:
                        keys.setdefault(a.key, _any_value(a.value, 60))
    for inst, keys in by_inst.items():
        out.append(f"### {inst}")
        out.append("")
        out.append(", ".join(f"`{k}`" for k in sorted(keys)))
        out.append("")

    out += ["## Per file", ""]
    for e in files:
        body = (PAYLOADS / e["file"]).read_bytes()
        msg = parse_payload(body, e["signal"])
        out += [
            f"### `{e['file']}`",
            "",
            f"- package: {e['package']} {e['package_version']} (openai {e['packages'].get('openai', '-')}, "
            f"anthropic {e['packages'].get('anthropic', '-')}, "
            f"opentelemetry-sdk {e['packages'].get('opentelemetry-sdk')})",
            f"- scenario: {e['scenario']}: {e['description']}",
            f"- POST {e['request_path']}, Content-Type `{e['content_type']}`, wire Content-Encoding "
            f"`{e['content_encoding_on_wire']}`, {e['bytes']} bytes (decompressed)",
            "",
        ]
        if e["signal"] == "logs":
            for rl in msg.resource_logs:
                for sl in rl.scope_logs:
                    for lr in sl.log_records:
                        name = getattr(lr, "event_name", "") or next(
                            (a.value.string_value for a in lr.attributes if a.key == "event.name"),
                            "(no event_name)",
                        )
                        out += [
                            f"#### log record `{name}` (scope `{sl.scope.name}`)",
                            "",
                            f"- trace_id set: {bool(lr.trace_id)}, span_id set: {bool(lr.span_id)}",
                            f"- body: {_any_value(lr.body, 200) if lr.HasField('body') else '(none)'}",
                            "",
                        ]
                        out += _attr_table(lr.attributes)
            continue
        span_names = {}
        for rs in msg.resource_spans:
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    span_names[sp.span_id] = sp.name
        for rs in msg.resource_spans:
            out += ["Resource attributes:", ""] + _attr_table(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    if not sp.parent_span_id:
                        parent = "root"
                    else:
                        parent = (
                            f"child of `{span_names[sp.parent_span_id]}`"
                            if sp.parent_span_id in span_names
                            else "child of a span exported in another request"
                        )
                    dur_ms = (sp.end_time_unix_nano - sp.start_time_unix_nano) / 1e6
                    out += [
                        f"#### span `{sp.name}`",
                        "",
                        f"- scope: `{ss.scope.name}` {ss.scope.version}"
                        + (f" (schema {ss.schema_url})" if ss.schema_url else "")
                        + (
                            "; scope attributes: "
                            + ", ".join(f"`{a.key}`={_any_value(a.value)}" for a in ss.scope.attributes)
                            if ss.scope.attributes
                            else ""
                        ),
                        f"- kind: {KIND.get(sp.kind, sp.kind)}, status: {STATUS.get(sp.status.code)}"
                        + (f" `{sp.status.message[:80]}`" if sp.status.message else "")
                        + f", {parent}, duration {dur_ms:.1f} ms",
                        "",
                    ]
                    out += _attr_table(sp.attributes)
                    for ev in sp.events:
                        out += [f"- event `{ev.name}`:", ""] + _attr_table(ev.attributes, "  ")
                    if sp.links:
                        out += [f"- {len(sp.links)} link(s)", ""]
    SUMMARY.write_text("\n".join(out) + "\n")
    print(f"wrote {SUMMARY}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# --all: venvs + every instrumentation + summary
# --------------------------------------------------------------------------------------------
def ensure_venv(venv_name: str) -> Path:
    venv = VENV_ROOT / venv_name
    py = venv / "bin" / "python"
    if not py.exists():
        VENV_ROOT.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        req = HERE / f"requirements-{venv_name}.txt"
        # every transitive dependency is pinned in the file, so --no-deps keeps pip's resolver out of it
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "-r", str(req)], check=True)
    return py


def run_all(only: list[str] | None) -> int:
    PAYLOADS.mkdir(parents=True, exist_ok=True)
    failures = []
    for inst, (venv_name, _, _) in INSTRUMENTATIONS.items():
        if only and inst not in only:
            continue
        if inst in capture_more.NODE_INSTRUMENTATIONS:  # npm packages; any venv with the OTel proto runs it
            capture_more.ensure_node()
            venv_name = "anthropic"
        py = ensure_venv(venv_name)
        print(f"== {inst} ({py})", file=sys.stderr)
        rc = subprocess.run([str(py), str(Path(__file__).resolve()), "--run", inst], timeout=600).returncode
        if rc:
            failures.append(inst)
    py = ensure_venv("otel-genai")
    subprocess.run([str(py), str(Path(__file__).resolve()), "--summary"], check=True)
    if failures:
        print(f"FAILED: {failures}", file=sys.stderr)
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--all", action="store_true", help="create/use venvs and capture every instrumentation")
    g.add_argument(
        "--run", choices=sorted(INSTRUMENTATIONS), help="capture one instrumentation in this interpreter"
    )
    g.add_argument("--summary", action="store_true", help="(re)write payloads/SUMMARY.md")
    ap.add_argument("--only", nargs="*", help="with --all: restrict to these instrumentations")
    args = ap.parse_args()
    if args.run:
        run_one(args.run)
        return 0
    if args.summary:
        write_summary()
        return 0
    return run_all(args.only)


if __name__ == "__main__":
    sys.exit(main())

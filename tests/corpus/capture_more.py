"""More of the corpus (see capture.py): the Anthropic Messages API and agent frameworks.

A simulated Anthropic upstream (``POST /v1/messages``, stream and not) sits next to the simulated
OpenAI one, and these instrumentations drive it (each in its own venv, pinned in
``requirements-<venv>.txt``):

- ``anthropic-sdk``: the Anthropic SDK's own OpenTelemetry spans (``anthropic/_tracing.py``)
- ``openinference-anthropic``: OpenInference's AnthropicInstrumentor
- ``anthropic-dual``: both at once on the same calls (one call, two instrumentations)
- ``pydantic-ai``: pydantic-ai's own OTel instrumentation (an Agent over the OpenAI upstream)
- ``logfire``: Logfire's ``instrument_openai``, exported as OTLP to the receiver
- ``openlit`` / ``openlit-anthropic``: OpenLIT over the openai / anthropic client

Only stdlib is imported at module level: capture.py imports this module in every venv.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Anthropic usage as the API reports it: input_tokens EXCLUDES the cache reads and writes.
ANTHROPIC_USAGE = {
    "input_tokens": 20,
    "cache_read_input_tokens": 8,
    "cache_creation_input_tokens": 4,
    "output_tokens": 12,
}
ANTHROPIC_MODEL = "claude-sonnet-4-5"
ANTHROPIC_RESPONSE_MODEL = "claude-sonnet-4-5-20250929"
TOOL_INPUT = {"city": "Paris", "unit": "celsius"}

EXTRA_INSTRUMENTATIONS: dict[str, tuple[str, str, str]] = {
    "anthropic-sdk": (
        "anthropic",
        "anthropic",
        "Anthropic Python SDK's own OpenTelemetry instrumentation (anthropic/_tracing.py), parent = plain OTel span",
    ),
    "openinference-anthropic": (
        "anthropic",
        "openinference-instrumentation-anthropic",
        "Arize OpenInference AnthropicInstrumentor, parent = plain OTel span",
    ),
    "anthropic-dual": (
        "anthropic",
        "anthropic",
        "the Anthropic SDK's own spans AND OpenInference's AnthropicInstrumentor on the same calls "
        "(one model call described by two spans), parent = plain OTel span",
    ),
    "pydantic-ai": (
        "pydantic-ai",
        "pydantic-ai-slim",
        "pydantic-ai Agent (OpenAIChatModel over the simulated OpenAI upstream) with its own OTel "
        "instrumentation (InstrumentationSettings, include_content), parent = plain OTel span",
    ),
    "logfire": (
        "logfire",
        "logfire",
        "Logfire SDK, logfire.instrument_openai(client), send_to_logfire=False, exported with OTLP "
        "(additional_span_processors: BatchSpanProcessor(OTLPSpanExporter)) to the receiver, parent = logfire.span",
    ),
    "openinference-langchain": (
        "langchain",
        "openinference-instrumentation-langchain",
        "Arize OpenInference LangChainInstrumentor over langchain-openai ChatOpenAI / OpenAIEmbeddings "
        "(tools with bind_tools), parent = plain OTel span",
    ),
    "vercel-ai": (
        "node",
        "ai",
        "Vercel AI SDK (npm ai, @ai-sdk/openai, openai.chat model) with experimental_telemetry (its own OTel spans, "
        "metadata userId/sessionId/tags), Node.js, BatchSpanProcessor + OTLPTraceExporter (protobuf), parent = span",
    ),
    "openlit": (
        "openlit",
        "openlit",
        "OpenLIT (openlit.init(otlp_endpoint=receiver)) over the openai client, parent = plain OTel span",
    ),
    "openlit-anthropic": (
        "openlit",
        "openlit",
        "OpenLIT (openlit.init(otlp_endpoint=receiver)) over the anthropic client, parent = plain OTel span",
    ),
}
ANTHROPIC_CLIENT = {"anthropic-sdk", "openinference-anthropic", "anthropic-dual", "openlit-anthropic"}


# --------------------------------------------------------------------------------------------
# Simulated Anthropic upstream (called from capture.UpstreamHandler for /v1/messages)
# --------------------------------------------------------------------------------------------
def anthropic_messages(handler: Any, req: dict) -> None:
    """Answer one ``POST /v1/messages`` like the Anthropic API does."""
    if req.get("model") == "fail-model":
        return _send_json(
            handler,
            500,
            {"type": "error", "error": {"type": "api_error", "message": "Internal server error (simulated)"}},
        )
    messages = req.get("messages") or [{}]
    last = messages[-1]
    content = last.get("content")
    got_tool_result = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
    if req.get("tools") and not got_tool_result:
        blocks = [
            {"type": "tool_use", "id": "toolu_corpus_weather_1", "name": "get_weather", "input": TOOL_INPUT}
        ]
        stop = "tool_use"
    elif got_tool_result:
        blocks = [{"type": "text", "text": "It is 18 degrees Celsius and sunny in Paris."}]
        stop = "end_turn"
    else:
        blocks = [{"type": "text", "text": "Hello from the simulated upstream!"}]
        stop = "end_turn"
    message = {
        "id": "msg_corpus_0001" if not req.get("stream") else "msg_corpus_stream_0001",
        "type": "message",
        "role": "assistant",
        "model": ANTHROPIC_RESPONSE_MODEL,
        "content": blocks,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": dict(ANTHROPIC_USAGE, service_tier="standard"),
    }
    if not req.get("stream"):
        return _send_json(handler, 200, message)
    events: list[tuple[str, dict]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": dict(
                    message,
                    content=[],
                    stop_reason=None,
                    usage=dict(ANTHROPIC_USAGE, output_tokens=1, service_tier="standard"),
                ),
            },
        )
    ]
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            events.append(
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            words = block["text"].split(" ")
            for j, w in enumerate(words):
                delta = {"type": "text_delta", "text": w if j == 0 else " " + w}
                events.append(
                    ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
                )
        else:
            start = dict(block, input={})
            events.append(
                ("content_block_start", {"type": "content_block_start", "index": i, "content_block": start})
            )
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": dict(ANTHROPIC_USAGE),
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("request-id", "req_corpus_stream_0001")
    handler.end_headers()
    for name, data in events:
        handler.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        handler.wfile.flush()


def _send_json(handler: Any, status: int, obj: dict) -> None:
    body = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("request-id", "req_corpus_0001")
    handler.end_headers()
    handler.wfile.write(body)


# --------------------------------------------------------------------------------------------
# Scenarios with the anthropic client (chat / chat_stream / chat_tools / error)
# --------------------------------------------------------------------------------------------
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
}


def a_chat(client: Any) -> str:
    r = client.messages.create(
        model=ANTHROPIC_MODEL,
        system="You are a terse assistant.",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=64,
        metadata={"user_id": "user-corpus-1"},
    )
    return r.content[0].text


def a_chat_stream(client: Any) -> str:
    parts = []
    with client.messages.stream(
        model=ANTHROPIC_MODEL, max_tokens=64, messages=[{"role": "user", "content": "Say hello, streaming."}]
    ) as stream:
        for text in stream.text_stream:
            parts.append(text)
    return "".join(parts)


def a_chat_tools(client: Any) -> str:
    messages: list[dict] = [{"role": "user", "content": "What is the weather in Paris?"}]
    r1 = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=messages, tools=[WEATHER_TOOL])
    call = next(b for b in r1.content if b.type == "tool_use")
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r1.content]})
    messages.append(
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": call.id,
                    "content": '{"temperature": 18, "sky": "sunny"}',
                }
            ],
        }
    )
    r2 = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=messages, tools=[WEATHER_TOOL])
    return r2.content[0].text


def a_error(client: Any) -> str:
    import anthropic

    try:
        client.messages.create(
            model="fail-model", max_tokens=16, messages=[{"role": "user", "content": "This will fail."}]
        )
    except anthropic.APIStatusError as e:
        return f"caught {type(e).__name__} {e.status_code}"
    raise AssertionError("fail-model did not fail")


ANTHROPIC_SCENARIOS = {
    "chat": a_chat,
    "chat_stream": a_chat_stream,
    "chat_tools": a_chat_tools,
    "error": a_error,
}


def _anthropic_client(upstream: str, **kw: Any) -> Any:
    import anthropic

    base = upstream.removesuffix("/v1")
    return anthropic.Anthropic(base_url=base, api_key="sk-ant-corpus-dummy", max_retries=0, **kw)


# --------------------------------------------------------------------------------------------
# Per-instrumentation setup: returns (make_client, wrap_parent, flush, shutdown, scenarios)
# --------------------------------------------------------------------------------------------
def _plain_parent(tp: Any):
    tracer = tp.get_tracer("pilothouse.corpus")

    def wrap_parent(name, fn):
        def run():
            with tracer.start_as_current_span(f"scenario {name}"):
                return fn()

        return run

    return wrap_parent


def _provider(recv: Any, service: str) -> Any:
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tp = TracerProvider(resource=Resource.create({"service.name": service}))
    tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=recv.url + "/v1/traces")))
    trace.set_tracer_provider(tp)
    return tp


def setup_anthropic(inst: str, recv: Any, upstream: str):
    tp = _provider(recv, "corpus-" + inst)
    if inst in ("openinference-anthropic", "anthropic-dual"):
        from openinference.instrumentation.anthropic import AnthropicInstrumentor

        AnthropicInstrumentor().instrument(tracer_provider=tp)
    # The SDK's own spans: on by default when OpenTelemetry is installed; the option (not the
    # ANTHROPIC_OPEN_TELEMETRY* env) turns them on with content, or off for OpenInference alone.
    own = inst in ("anthropic-sdk", "anthropic-dual")
    option = {"tracer_provider": tp, "traces": {"enabled": own, "content_mode": "content"}}
    return (
        (lambda: _anthropic_client(upstream, open_telemetry=option)),
        _plain_parent(tp),
        tp.force_flush,
        tp.shutdown,
        ANTHROPIC_SCENARIOS,
    )


def setup_logfire(recv: Any, upstream: str):
    import logfire
    import openai

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporter = OTLPSpanExporter(endpoint=recv.url + "/v1/traces")
    logfire.configure(
        send_to_logfire=False,
        console=False,
        service_name="corpus-logfire",
        metrics=False,
        additional_span_processors=[BatchSpanProcessor(exporter)],
    )

    def make_client():
        client = openai.OpenAI(base_url=upstream, api_key="sk-corpus-dummy", max_retries=0)
        logfire.instrument_openai(client)
        return client

    def wrap_parent(name, fn):
        def run():
            with logfire.span("scenario {name}", name=name, _tags=["corpus"]):
                return fn()

        return run

    return make_client, wrap_parent, logfire.force_flush, logfire.shutdown, None


def setup_openlit(inst: str, recv: Any, upstream: str):
    import os
    import tempfile

    import openlit
    from opentelemetry import trace

    os.environ["OTEL_TRACES_EXPORTER"] = "otlp"  # isolate_env's "none" would turn OpenLIT's export off
    prices = Path(tempfile.mkdtemp()) / "pricing.json"  # a local file: no fetch of the price list
    prices.write_text('{"chat": {}, "embeddings": {}, "images": {}, "audio": {}}')
    openlit.init(
        pricing_json=str(prices),
        otlp_endpoint=recv.url,
        application_name="corpus-" + inst,
        environment="corpus",
        disable_metrics=True,
        collect_gpu_stats=False,
    )
    tp = trace.get_tracer_provider()
    if inst == "openlit-anthropic":
        return (
            (lambda: _anthropic_client(upstream)),
            _plain_parent(tp),
            tp.force_flush,
            tp.shutdown,
            ANTHROPIC_SCENARIOS,
        )
    import openai

    make = lambda: openai.OpenAI(base_url=upstream, api_key="sk-corpus-dummy", max_retries=0)  # noqa: E731
    return make, _plain_parent(tp), tp.force_flush, tp.shutdown, None


NODE_INSTRUMENTATIONS = {"vercel-ai"}


def ensure_node() -> None:
    """``npm ci`` the pinned Vercel AI SDK packages into CORPUS_NODE_DIR unless they are there."""
    import os
    import shutil
    import subprocess

    here = Path(__file__).resolve().parent
    node_dir = Path(os.environ.get("CORPUS_NODE_DIR", "/tmp/corpus-node/vercel"))
    if (node_dir / "node_modules" / "ai").exists():
        return
    node_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(here / "package-vercel.json", node_dir / "package.json")
    shutil.copy(here / "package-lock-vercel.json", node_dir / "package-lock.json")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=node_dir, check=True)


def node_version(package: str) -> str:
    """The installed version of an npm package (the OTel/protobuf names map to their JS packages)."""
    import os

    node_dir = Path(os.environ.get("CORPUS_NODE_DIR", "/tmp/corpus-node/vercel"))
    name = {
        "opentelemetry-sdk": "@opentelemetry/sdk-trace-base",
        "opentelemetry-api": "@opentelemetry/api",
        "opentelemetry-exporter-otlp-proto-http": "@opentelemetry/exporter-trace-otlp-proto",
        "openai": "@ai-sdk/openai",
        "protobuf": "protobufjs",
    }.get(package, package)
    meta = node_dir / "node_modules" / name / "package.json"
    return json.loads(meta.read_text())["version"] if meta.exists() else "-"


def setup_vercel(recv: Any, upstream: str):
    """Each scenario is one ``node capture_vercel.mjs <scenario>`` (deps: npm ci in NODE_DIR)."""
    import os
    import subprocess

    here = Path(__file__).resolve().parent
    node_dir = Path(os.environ.get("CORPUS_NODE_DIR", "/tmp/corpus-node/vercel"))
    env = dict(os.environ, CORPUS_RECEIVER=recv.url, CORPUS_UPSTREAM=upstream, NODE_PATH=str(node_dir / "node_modules"))
    script = node_dir / "capture_vercel.mjs"  # ESM resolves packages next to the script
    script.write_text((here / "capture_vercel.mjs").read_text())

    def run(name: str):
        def scenario(_: Any) -> str:
            done = subprocess.run(["node", str(script), name], env=env, capture_output=True, text=True, timeout=120)
            if done.returncode:
                raise RuntimeError(done.stderr[-2000:])
            return done.stderr.strip().splitlines()[-1]

        return scenario

    scenarios = {name: run(name) for name in ("chat", "chat_stream", "chat_tools", "error")}
    return (lambda: None), (lambda name, fn: fn), (lambda: None), (lambda: None), scenarios


def setup_langchain(recv: Any, upstream: str):
    """The same five scenarios as capture.py's, written with LangChain's ChatOpenAI."""
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings
    from openinference.instrumentation.langchain import LangChainInstrumentor

    tp = _provider(recv, "corpus-openinference-langchain")
    LangChainInstrumentor().instrument(tracer_provider=tp)

    def chat_model(model: str = "gpt-4o-mini", **kw: Any) -> Any:
        return ChatOpenAI(model=model, base_url=upstream, api_key="sk-corpus-dummy", max_retries=0, **kw)

    @tool
    def get_weather(city: str, unit: str = "celsius") -> str:
        """Get the current weather for a city."""
        return '{"temperature": 18, "sky": "sunny"}'

    def chat(_: Any) -> str:
        llm = chat_model(temperature=0.2, max_tokens=64)
        return llm.invoke([SystemMessage("You are a terse assistant."), HumanMessage("Say hello.")]).content

    def chat_stream(_: Any) -> str:
        llm = chat_model(stream_usage=True)
        return "".join(str(c.content) for c in llm.stream([HumanMessage("Say hello, streaming.")]))

    def chat_tools(_: Any) -> str:
        llm = chat_model().bind_tools([get_weather])
        messages: list[Any] = [HumanMessage("What is the weather in Paris?")]
        first = llm.invoke(messages)
        call = first.tool_calls[0]
        messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
        return llm.invoke(messages).content

    def embeddings(_: Any) -> int:
        emb = OpenAIEmbeddings(
            model="text-embedding-3-small", base_url=upstream, api_key="sk-corpus-dummy", max_retries=0,
            check_embedding_ctx_length=False,  # else tiktoken downloads its encoding
        )
        return len(emb.embed_documents(["hello world", "pilothouse corpus"]))

    def error(_: Any) -> str:
        import openai

        try:
            chat_model("fail-model").invoke([HumanMessage("This will fail.")])
        except openai.APIStatusError as e:
            return f"caught {type(e).__name__} {e.status_code}"
        raise AssertionError("fail-model did not fail")

    scenarios = {"chat": chat, "chat_stream": chat_stream, "chat_tools": chat_tools, "embeddings": embeddings, "error": error}
    return (lambda: None), _plain_parent(tp), tp.force_flush, tp.shutdown, scenarios


def setup(inst: str, recv: Any, upstream: str):
    """(make_client, wrap_parent, flush, shutdown, scenarios); scenarios None = capture.py's OpenAI ones."""
    if inst in ("anthropic-sdk", "openinference-anthropic", "anthropic-dual"):
        return setup_anthropic(inst, recv, upstream)
    if inst == "pydantic-ai":
        return setup_pydantic_ai(recv, upstream)
    if inst == "logfire":
        return setup_logfire(recv, upstream)
    if inst == "vercel-ai":
        return setup_vercel(recv, upstream)
    if inst == "openinference-langchain":
        return setup_langchain(recv, upstream)
    return setup_openlit(inst, recv, upstream)


def setup_pydantic_ai(recv: Any, upstream: str):
    import openai
    from pydantic_ai import Agent
    from pydantic_ai.exceptions import ModelHTTPError
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    tp = _provider(recv, "corpus-pydantic-ai")
    Agent.instrument_all(InstrumentationSettings(tracer_provider=tp, include_content=True))

    def model(name: str = "gpt-4o-mini") -> Any:
        client = openai.AsyncOpenAI(base_url=upstream, api_key="sk-corpus-dummy", max_retries=0)
        return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client))

    def get_weather(city: str, unit: str = "celsius") -> dict:
        """Get the current weather for a city."""
        return {"temperature": 18, "sky": "sunny"}

    def chat(_: Any) -> str:
        agent = Agent(model(), system_prompt="You are a terse assistant.")
        return agent.run_sync("Say hello.", model_settings={"temperature": 0.2, "max_tokens": 64}).output

    def chat_stream(_: Any) -> str:
        agent = Agent(model())
        result = agent.run_stream_sync("Say hello, streaming.")
        return "".join(result.stream_text(delta=True))

    def chat_tools(_: Any) -> str:
        agent = Agent(model(), tools=[get_weather])
        return agent.run_sync("What is the weather in Paris?").output

    def error(_: Any) -> str:
        agent = Agent(model("fail-model"))
        try:
            agent.run_sync("This will fail.")
        except ModelHTTPError as e:
            return f"caught {type(e).__name__} {e.status_code}"
        raise AssertionError("fail-model did not fail")

    scenarios = {"chat": chat, "chat_stream": chat_stream, "chat_tools": chat_tools, "error": error}
    return (lambda: None), _plain_parent(tp), tp.force_flush, tp.shutdown, scenarios

// The Vercel AI SDK's own OpenTelemetry spans (experimental_telemetry), for the corpus (see capture_more.py).
// Usage: node capture_vercel.mjs <scenario>, with CORPUS_RECEIVER (OTLP base URL) and CORPUS_UPSTREAM
// (the simulated OpenAI upstream, .../v1) in the environment. One scenario per process: it runs inside
// a parent span, then the provider is flushed and shut down (one OTLP/HTTP protobuf request).
import { context } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText, stepCountIs, tool } from "ai";
import { z } from "zod";

const scenario = process.argv[2];
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable()); // parent/child across awaits
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ "service.name": "corpus-vercel-ai" }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: process.env.CORPUS_RECEIVER + "/v1/traces" }))],
});
const tracer = provider.getTracer("pilothouse.corpus");
const openai = createOpenAI({ baseURL: process.env.CORPUS_UPSTREAM, apiKey: "sk-corpus-dummy" });
const telemetry = {
  isEnabled: true,
  tracer,
  functionId: `scenario-${scenario}`,
  metadata: { userId: "user-corpus-1", sessionId: "session-corpus-1", tags: ["corpus", "vercel"] },
};

const scenarios = {
  async chat() {
    const r = await generateText({
      model: openai.chat("gpt-4o-mini"), system: "You are a terse assistant.", prompt: "Say hello.",
      temperature: 0.2, maxOutputTokens: 64, maxRetries: 0, experimental_telemetry: telemetry,
    });
    return r.text;
  },
  async chat_stream() {
    const r = streamText({
      model: openai.chat("gpt-4o-mini"), prompt: "Say hello, streaming.", maxRetries: 0,
      experimental_telemetry: telemetry,
    });
    let text = "";
    for await (const part of r.textStream) text += part;
    return text;
  },
  async chat_tools() {
    const r = await generateText({
      model: openai.chat("gpt-4o-mini"), prompt: "What is the weather in Paris?", maxRetries: 0,
      tools: {
        get_weather: tool({
          description: "Get the current weather for a city",
          inputSchema: z.object({ city: z.string(), unit: z.enum(["celsius", "fahrenheit"]).optional() }),
          execute: async () => ({ temperature: 18, sky: "sunny" }),
        }),
      },
      stopWhen: stepCountIs(2), experimental_telemetry: telemetry,
    });
    return r.text;
  },
  async error() {
    try {
      await generateText({ model: openai.chat("fail-model"), prompt: "This will fail.", maxRetries: 0, experimental_telemetry: telemetry });
    } catch (e) {
      return `caught ${e.name} ${e.statusCode}`;
    }
    throw new Error("fail-model did not fail");
  },
};

const out = await tracer.startActiveSpan(`scenario ${scenario}`, async (span) => {
  try { return await scenarios[scenario](); } finally { span.end(); }
});
await provider.forceFlush();
await provider.shutdown();
console.error(JSON.stringify(out));

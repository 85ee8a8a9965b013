// Drive one real Node client package against the gateway on loopback and print what worked, as JSON
// (the Node half of drive.py; same features, models and keys):
//   node drive.mjs <openai-node|vercel-ai> --gateway http://127.0.0.1:PORT --key K --limited-key L
// It is copied next to the node_modules that `npm ci` made from package-lock.json (the suite's cache).
import { readFileSync } from "node:fs";
import OpenAI from "openai";
import { generateText, streamText, generateObject, embedMany, tool, APICallError, stepCountIs } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createAnthropic } from "@ai-sdk/anthropic";
import { z } from "zod";

const GPT = "gpt-4o-mini", CLAUDE = "claude-sonnet-4-5", EMBED = "text-embedding-3-small";
const LOCAL = "smollm2"; // the real local model (SmolLM2-135M-Instruct), in the gateway's process
const CITY_ASK = "Name the capital of France, as JSON.";
globalThis.AI_SDK_LOG_WARNINGS = false;
const HELLO = "Say hello to the compatibility suite.";
const WEATHER = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };

const args = process.argv.slice(2);
const client = args[0];
const opt = (name) => args[args.indexOf(name) + 1];
const gateway = opt("--gateway"), key = opt("--key"), limitedKey = opt("--limited-key");

class NA extends Error {}
const check = (ok, what) => { if (!ok) throw new Error(what); };
const version = (name) =>
  JSON.parse(readFileSync(new URL(`./node_modules/${name}/package.json`, import.meta.url))).version;

async function errorsRaised(calls, expected) {
  for (const [status, call] of Object.entries(calls)) {
    let raised = null;
    try {
      await call();
      if (status === "429") await call(); // the limited key's one request a minute may be left
    } catch (err) { raised = err; }
    if (raised === null) throw new Error(`${status}: no exception`);
    if (!expected[status](raised)) throw new Error(`${status} raised ${raised.constructor.name}: ${raised.message}`);
  }
}

function openaiNode() {
  const c = new OpenAI({ baseURL: gateway + "/v1", apiKey: key, maxRetries: 0 });
  const hello = [{ role: "user", content: HELLO }];
  return {
    chat: async () => {
      const r = await c.chat.completions.create({ model: GPT, messages: hello });
      check(r.choices[0].message.content && r.usage.total_tokens > 0, "text and usage");
    },
    stream: async () => {
      let text = "";
      for await (const chunk of await c.chat.completions.create({ model: GPT, messages: hello, stream: true }))
        text += chunk.choices[0]?.delta?.content ?? "";
      check(text, "streamed text");
    },
    tools: async () => {
      const r = await c.chat.completions.create({
        model: GPT, messages: [{ role: "user", content: "Weather in Paris?" }], tool_choice: "required",
        tools: [{ type: "function", function: { name: "get_weather", parameters: WEATHER } }],
      });
      const call = r.choices[0].message.tool_calls[0];
      check(call.function.name === "get_weather" && "city" in JSON.parse(call.function.arguments), "tool call");
    },
    json: async () => {
      const r = await c.chat.completions.create({
        model: GPT, messages: [{ role: "user", content: "Name a city." }],
        response_format: { type: "json_schema", json_schema: { name: "city", schema: WEATHER, strict: true } },
      });
      check("city" in JSON.parse(r.choices[0].message.content), "JSON with city");
    },
    embeddings: async () => {
      const r = await c.embeddings.create({ model: EMBED, input: ["one", "two"] });
      check(r.data.length === 2 && r.data[0].embedding.length > 0, "two vectors");
    },
    errors: async () => {
      const bad = new OpenAI({ baseURL: gateway + "/v1", apiKey: "sk-not-a-key", maxRetries: 0 });
      const limited = new OpenAI({ baseURL: gateway + "/v1", apiKey: limitedKey, maxRetries: 0 });
      await errorsRaised(
        {
          400: () => c.chat.completions.create({ model: GPT, messages: hello, temperature: 5 }),
          401: () => bad.chat.completions.create({ model: GPT, messages: hello }),
          429: () => limited.chat.completions.create({ model: GPT, messages: hello }),
        },
        {
          400: (e) => e instanceof OpenAI.BadRequestError,
          401: (e) => e instanceof OpenAI.AuthenticationError,
          429: (e) => e instanceof OpenAI.RateLimitError,
        },
      );
    },
    responses: async () => {
      const r = await c.responses.create({ model: GPT, input: HELLO });
      check(r.output_text && r.usage.output_tokens > 0, "output_text and usage");
      const kinds = [];
      for await (const e of await c.responses.create({ model: GPT, input: HELLO, stream: true })) kinds.push(e.type);
      check(kinds.includes("response.completed"), "response.completed event");
    },
    messages: async () => { throw new NA("the openai client has no Messages API"); },
    "local-json": async () => {
      const r = await c.chat.completions.create({
        model: LOCAL, messages: [{ role: "user", content: CITY_ASK }], max_tokens: 48,
        response_format: { type: "json_schema", json_schema: { name: "city", schema: WEATHER, strict: true } },
      });
      check(typeof JSON.parse(r.choices[0].message.content).city === "string", "JSON with city");
    },
    "local-n": async () => {
      const r = await c.chat.completions.create({ model: LOCAL, messages: hello, n: 2, max_tokens: 8 });
      check(r.choices.map((x) => x.index).join() === "0,1" && r.usage.completion_tokens > 0, "n=2");
    },
  };
}

function vercelAi() {
  const openai = createOpenAI({ baseURL: gateway + "/v1", apiKey: key });
  const anthropic = createAnthropic({ baseURL: gateway + "/v1", apiKey: key });
  const weather = tool({
    description: "The weather in a city.",
    inputSchema: z.object({ city: z.string() }),
    execute: async () => "sunny",
  });
  const apiStatus = (status) => (e) => APICallError.isInstance(e) && e.statusCode === status;
  return {
    chat: async () => {
      const r = await generateText({ model: openai.chat(GPT), prompt: HELLO, maxRetries: 0 });
      check(r.text && r.usage.outputTokens > 0, "text and usage");
    },
    stream: async () => {
      const r = streamText({ model: openai.chat(GPT), prompt: HELLO, maxRetries: 0, onError: () => {} });
      let text = "";
      for await (const t of r.textStream) text += t;
      check(text && (await r.usage).outputTokens > 0, "streamed text and usage");
    },
    tools: async () => {
      const r = await generateText({
        model: openai.chat(GPT), prompt: "Weather in Paris?", tools: { get_weather: weather },
        toolChoice: "required", maxRetries: 0,
      });
      check(r.toolCalls.length && r.toolCalls[0].toolName === "get_weather", "tool call");
    },
    json: async () => {
      const r = await generateObject({
        model: openai.chat(GPT), schema: z.object({ city: z.string() }), prompt: "Name a city.", maxRetries: 0,
      });
      check(typeof r.object.city === "string", "object with city");
    },
    embeddings: async () => {
      const r = await embedMany({ model: openai.textEmbeddingModel(EMBED), values: ["one", "two"], maxRetries: 0 });
      check(r.embeddings.length === 2, "two vectors");
    },
    errors: async () => {
      const bad = createOpenAI({ baseURL: gateway + "/v1", apiKey: "sk-not-a-key" });
      const limited = createOpenAI({ baseURL: gateway + "/v1", apiKey: limitedKey });
      await errorsRaised(
        {
          400: () => generateText({ model: openai.chat(GPT), prompt: HELLO, temperature: 5, maxRetries: 0 }),
          401: () => generateText({ model: bad.chat(GPT), prompt: HELLO, maxRetries: 0 }),
          429: () => generateText({ model: limited.chat(GPT), prompt: HELLO, maxRetries: 0 }),
        },
        { 400: apiStatus(400), 401: apiStatus(401), 429: apiStatus(429) },
      );
    },
    responses: async () => {
      // openai(model) is the Responses API in @ai-sdk/openai
      const r = await generateText({ model: openai(GPT), prompt: HELLO, maxRetries: 0 });
      check(r.text && r.usage.outputTokens > 0, "Responses API answer");
      const s = streamText({ model: openai(GPT), prompt: HELLO, maxRetries: 0, onError: () => {} });
      let text = "";
      for await (const t of s.textStream) text += t;
      check(text, "Responses API stream");
      const t = await generateText({
        model: openai(GPT), prompt: "Weather in Paris?", tools: { get_weather: weather },
        stopWhen: stepCountIs(2), maxRetries: 0,
      });
      check(t.steps.length === 2 && t.steps[0].toolCalls.length, "Responses API tool round trip");
    },
    messages: async () => {
      const r = await generateText({ model: anthropic(CLAUDE), prompt: HELLO, maxRetries: 0 });
      check(r.text && r.usage.outputTokens > 0, "@ai-sdk/anthropic over /v1/messages");
      const s = streamText({ model: anthropic(GPT), prompt: HELLO, maxRetries: 0, onError: () => {} });
      let text = "";
      for await (const t of s.textStream) text += t;
      check(text, "stream translated to an OpenAI deployment");
    },
    "local-json": async () => {
      const r = await generateObject({
        model: openai.chat(LOCAL), schema: z.object({ city: z.string() }), prompt: CITY_ASK,
        maxOutputTokens: 48, maxRetries: 0,
      });
      check(typeof r.object.city === "string", "object with city");
    },
    "local-n": async () => { throw new NA("the AI SDK asks for one answer per call (no n)"); },
  };
}

const CLIENTS = {
  "openai-node": [openaiNode, ["openai"]],
  "vercel-ai": [vercelAi, ["ai", "@ai-sdk/openai", "@ai-sdk/anthropic"]],
};
const [build, packages] = CLIENTS[client];
const versions = Object.fromEntries(packages.map((p) => [p, version(p)]));
const cells = {};
for (const [feature, run] of Object.entries(build())) {
  try {
    await run();
    cells[feature] = "OK";
  } catch (err) {
    if (err instanceof NA) cells[feature] = `n.a.: ${err.message}`;
    else {
      cells[feature] = `FAIL: ${err.constructor.name}: ${err.message}`.slice(0, 600);
      process.stderr.write(`--- ${client} ${feature}\n${err.stack}\n`);
    }
  }
}
process.stdout.write("\n" + JSON.stringify({ versions, cells }) + "\n");

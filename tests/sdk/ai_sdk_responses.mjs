// The Vercel AI SDK (ai@6 + @ai-sdk/openai@3) with its default OpenAI provider — which speaks
// the Responses API — against a running scira2api (chat mock upstream).
// Usage: node tests/sdk/ai_sdk_responses.mjs http://127.0.0.1:PORT/v1 API_KEY
//   (needs `npm install ai@6 @ai-sdk/openai@3 zod@4`)
// Prints '<N> passed, 0 failed' and exits 0 when every check holds.
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText, tool, stepCountIs } from "ai";
import { z } from "zod";

const [baseURL, apiKey] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey });
let passed = 0;
function check(cond, what) {
  if (!cond) {
    console.log(`FAILED: ${what}`);
    process.exit(1);
  }
  passed++;
}

// openai("…") is the Responses API model in AI SDK 5 and later.
const g = await generateText({ model: openai("gpt-4o"), prompt: "hello ai sdk" });
check(g.text.includes("hello ai sdk"), `generateText: ${g.text}`);
check(g.usage.inputTokens > 0 && g.usage.outputTokens > 0, `usage ${JSON.stringify(g.usage)}`);
check(g.response.modelId === "gpt-4o", `model ${g.response.modelId}`);

const s = streamText({ model: openai("gpt-4o"), prompt: "stream ai sdk" });
let text = "";
for await (const part of s.textStream) text += part;
check(text.includes("stream ai sdk"), `streamText: ${text}`);
check((await s.finishReason) === "stop", `finish ${await s.finishReason}`);

// A tool the SDK runs itself, then the answer (two steps, the second with the tool's output).
let ran = 0;
const t = await generateText({
  model: openai("gpt-4o"),
  prompt: "weather in Paris?",
  tools: {
    get_weather: tool({
      description: "Weather of a city",
      inputSchema: z.object({ city: z.string() }),
      execute: async ({ city }) => { ran++; return { city, degrees: 18 }; },
    }),
  },
  stopWhen: stepCountIs(3),
});
check(ran === 1, `tool ran ${ran} times`);
check(t.steps.length === 2 && t.text.length > 0, `steps ${t.steps.length}, text ${t.text}`);

console.log(`${passed} passed, 0 failed`);

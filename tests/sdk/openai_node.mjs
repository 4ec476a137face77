// The official OpenAI Node SDK against a running scira2api.
// Usage: node tests/sdk/openai_node.mjs http://127.0.0.1:PORT/v1 [API_KEY]   (needs `npm install openai`)
// Prints '<N> passed, 0 failed' and exits 0 when every check holds.
import OpenAI from "openai";

const [base, key = "unused"] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });
let passed = 0;
function check(cond, what) {
  if (!cond) {
    console.log(`FAILED: ${what}`);
    process.exit(1);
  }
  passed++;
}

const models = [];
for await (const m of client.models.list()) models.push(m.id);
check(models.includes("gpt-4o"), `models listed: ${models}`);

const r = await client.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "hello node" }] });
check(r.choices[0].message.content.includes("hello node"), "chat content");
check(r.model === "gpt-4o", "model name kept");

let text = "", usage = null, finish = null;
const stream = await client.chat.completions.create({
  model: "gpt-4o", stream: true, stream_options: { include_usage: true },
  messages: [{ role: "user", content: "stream node" }],
});
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    text += c.delta.content ?? "";
    finish = c.finish_reason ?? finish;
  }
}
check(text.includes("stream node"), `streamed text: ${text}`);
check(finish === "stop", "stream finish");
check(usage && usage.total_tokens > 0, "usage chunk");

if (process.argv.includes("--tools")) {
  const tools = [{ type: "function", function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } } } }];
  const runner = client.chat.completions.stream({ model: "gpt-4o", tools, messages: [{ role: "user", content: "weather?" }] });
  const final = await runner.finalChatCompletion();
  const call = final.choices[0].message.tool_calls[0];
  check(call.function.name === "get_weather" && JSON.parse(call.function.arguments).city === "Paris", "streamed tool call");
}

try {
  await client.chat.completions.create({ model: "gpt-4o", messages: [] });
  check(false, "empty messages must fail");
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.status === 400, "400 parsed by the SDK");
}
console.log(`${passed} passed, 0 failed`);

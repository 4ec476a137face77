// The official Anthropic Node SDK (@anthropic-ai/sdk) against a running scira2api whose upstream
// speaks chat completions (the mock).
// Usage: node tests/sdk/anthropic_node.mjs http://127.0.0.1:PORT API_KEY   (needs `npm install @anthropic-ai/sdk`)
// Prints '<N> passed, 0 failed' and exits 0 when every check holds.
import Anthropic from "@anthropic-ai/sdk";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new Anthropic({ baseURL, apiKey, maxRetries: 0 });
let passed = 0;
function check(cond, what) {
  if (!cond) {
    console.log(`FAILED: ${what}`);
    process.exit(1);
  }
  passed++;
}

const m = await client.messages.create({ model: "claude-sonnet-4-5", max_tokens: 100, messages: [{ role: "user", content: "hello node claude" }] });
check(m.content[0].type === "text" && m.content[0].text.includes("hello node claude"), `content ${JSON.stringify(m.content)}`);
check(m.stop_reason === "end_turn" && m.usage.output_tokens > 0, `stop ${m.stop_reason}`);

const stream = client.messages.stream({ model: "claude-sonnet-4-5", max_tokens: 100, messages: [{ role: "user", content: "stream node claude" }] });
let text = "";
stream.on("text", (t) => { text += t; });
const final = await stream.finalMessage();
check(text.includes("stream node claude") && final.stop_reason === "end_turn", `stream ${text}`);

const tools = [{ name: "get_weather", description: "Weather", input_schema: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }];
const q = [{ role: "user", content: "weather?" }];
const m1 = await client.messages.create({ model: "claude-sonnet-4-5", max_tokens: 100, tools, messages: q });
const use = m1.content.find((b) => b.type === "tool_use");
check(m1.stop_reason === "tool_use" && use.input.city === "Paris", `tool_use ${JSON.stringify(m1.content)}`);
const m2 = await client.messages.create({
  model: "claude-sonnet-4-5", max_tokens: 100, tools,
  messages: [...q, { role: "assistant", content: m1.content }, { role: "user", content: [{ type: "tool_result", tool_use_id: use.id, content: "18C" }] }],
});
check(m2.stop_reason === "end_turn", `after tool_result ${m2.stop_reason}`);

const n = await client.messages.countTokens({ model: "claude-sonnet-4-5", messages: q });
check(n.input_tokens > 0, `count_tokens ${JSON.stringify(n)}`);
try {
  await new Anthropic({ baseURL, apiKey: "wrong", maxRetries: 0 }).messages.create({ model: "m", max_tokens: 5, messages: q });
  check(false, "wrong key accepted");
} catch (e) {
  check(e instanceof Anthropic.AuthenticationError && e.error?.error?.type === "authentication_error", `401 ${e}`);
}
console.log(`${passed} passed, 0 failed`);

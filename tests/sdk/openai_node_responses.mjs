// The official OpenAI Node SDK's Responses API against a running scira2api (chat mock upstream).
// Usage: node tests/sdk/openai_node_responses.mjs http://127.0.0.1:PORT/v1 API_KEY   (needs `npm install openai`)
// Prints '<N> passed, 0 failed' and exits 0 when every check holds.
import OpenAI from "openai";

const [base, key] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });
let passed = 0;
function check(cond, what) {
  if (!cond) {
    console.log(`FAILED: ${what}`);
    process.exit(1);
  }
  passed++;
}

const r = await client.responses.create({ model: "gpt-4o", input: "hello node responses", instructions: "Be brief." });
check(r.status === "completed" && r.id.startsWith("resp_"), `status ${r.status}`);
check(r.output_text.includes("hello node responses"), `output_text ${r.output_text}`);
check(r.usage.input_tokens > 0 && r.usage.output_tokens > 0, "usage");

// Streamed: the SDK's helper assembles the final response from the events.
const stream = client.responses.stream({ model: "gpt-4o", input: "stream node responses" });
let text = "";
const kinds = [];
stream.on("response.output_text.delta", (e) => { text += e.delta; });
for await (const e of stream) kinds.push(e.type);
const final = await stream.finalResponse();
check(kinds[0] === "response.created" && kinds.at(-1) === "response.completed", `events ${kinds}`);
check(text.includes("stream node responses") && final.output_text === text, `streamed text ${text}`);

// A function tool round trip.
const tools = [{ type: "function", name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } } }, strict: false }];
const r1 = await client.responses.create({ model: "gpt-4o", input: "weather in Paris?", tools });
const call = r1.output.find((o) => o.type === "function_call");
check(call && call.name === "get_weather" && JSON.parse(call.arguments).city === "Paris", "function call");
const r2 = await client.responses.create({
  model: "gpt-4o", tools, previous_response_id: r1.id,
  input: [{ type: "function_call_output", call_id: call.call_id, output: "18C" }],
});
check(r2.output_text.length > 0 && !r2.output.some((o) => o.type === "function_call"), "answer after the tool output");

// Stored: retrieve and delete; a forced built-in tool is a 400 naming tool_choice.
const got = await client.responses.retrieve(r.id);
check(got.id === r.id && got.output_text === r.output_text, "retrieve");
await client.responses.delete(r.id);
try {
  await client.responses.retrieve(r.id);
  check(false, "deleted response still there");
} catch (e) {
  check(e.status === 404, `404 after delete: ${e}`);
}
try {
  await client.responses.create({ model: "gpt-4o", input: "x", tools: [{ type: "web_search" }], tool_choice: { type: "web_search" } });
  check(false, "forced built-in tool accepted");
} catch (e) {
  check(e.status === 400 && e.param === "tool_choice", `400 tool_choice: ${e.status} ${e.param}`);
}

console.log(`${passed} passed, 0 failed`);

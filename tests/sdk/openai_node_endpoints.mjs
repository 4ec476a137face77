// The official OpenAI Node SDK against scira2api's endpoints beside chat.
// Usage: node tests/sdk/openai_node_endpoints.mjs http://127.0.0.1:PORT/v1 API_KEY   (needs `npm install openai@5`)
// Embeddings (base64 by default, and floats), legacy completions (JSON and streamed),
// moderations, image generation and edits, speech, transcription and translation (Node puts the
// file before the model: the gateway must hold what precedes it), files and batches.
// Prints '<N> passed, 0 failed' and exits 0 when every check holds.
import OpenAI, { toFile } from "openai";

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

const e = await client.embeddings.create({ model: "text-embedding-3-small", input: ["alpha beta", "gamma"], dimensions: 16 });
check(e.data.length === 2 && e.data[0].embedding.length === 16, "embeddings decoded");
check(e.model === "text-embedding-3-small" && e.usage.prompt_tokens > 0, "embedding model and usage");
const f = await client.embeddings.create({ model: "text-embedding-3-small", input: "alpha beta", dimensions: 16, encoding_format: "float" });
check(f.data[0].embedding.every((v, i) => Math.abs(v - e.data[0].embedding[i]) < 1e-6), "float and base64 agree");

const c = await client.completions.create({ model: "gpt-3.5-turbo-instruct", prompt: "say hi" });
check(c.choices[0].text.includes("say hi") && c.usage.total_tokens > 0, "completion");
let text = "";
let usage = null;
const stream = await client.completions.create({ model: "gpt-3.5-turbo-instruct", prompt: "stream it", stream: true, stream_options: { include_usage: true } });
for await (const chunk of stream) {
  if (chunk.usage) usage = chunk.usage;
  for (const ch of chunk.choices) text += ch.text;
}
check(text.includes("stream it") && usage && usage.completion_tokens > 0, `streamed completion: ${text}`);

const m = await client.moderations.create({ input: ["a kind word", "kill it"] });
check(!m.results[0].flagged && m.results[1].flagged, "moderations");
const img = await client.images.generate({ model: "gpt-image-1", prompt: "a dot" });
check(img.data[0].b64_json.startsWith("iVBOR"), "image generation");
const edit = await client.images.edit({ image: await toFile(Buffer.from("\x89PNG fake"), "in.png", { type: "image/png" }), model: "gpt-image-1", prompt: "add a hat" });
check(edit.data[0].revised_prompt.startsWith("add a hat"), "image edit");

const speech = await client.audio.speech.create({ model: "tts-1", voice: "alloy", input: "hello there", response_format: "wav" });
const audio = Buffer.from(await speech.arrayBuffer());
check(audio.subarray(0, 4).toString() === "RIFF" && audio.length > 1000, `speech: ${audio.length} bytes`);
check(speech.headers.get("content-type") === "audio/wav", "speech content type");

const sound = Buffer.concat([Buffer.from("ID3"), Buffer.alloc(2 * 1024 * 1024, 7)]);
const tr = await client.audio.transcriptions.create({ file: await toFile(sound, "clip.mp3"), model: "whisper-1" });
check(tr.text.startsWith(`mock transcript by whisper-1 of clip.mp3 (${sound.length} bytes`), `transcription: ${tr.text}`);
const vtt = await client.audio.translations.create({ file: await toFile(Buffer.from("abc"), "c.mp3"), model: "whisper-1", response_format: "vtt" });
check(typeof vtt === "string" && vtt.startsWith("WEBVTT"), `vtt: ${vtt}`);

const up = await client.files.create({ file: await toFile(Buffer.from('{"custom_id":"1"}\n'), "in.jsonl"), purpose: "batch" });
check(up.id.startsWith("file-") && up.bytes === 18, "file uploaded");
const content = await client.files.content(up.id);
check((await content.text()) === '{"custom_id":"1"}\n', "file content");
const b = await client.batches.create({ input_file_id: up.id, endpoint: "/v1/chat/completions", completion_window: "24h" });
check(b.status === "validating", "batch created");
check((await client.batches.cancel(b.id)).status === "cancelling", "batch cancelled");
check((await client.files.delete(up.id)).deleted === true, "file deleted");
try {
  await client.files.retrieve(up.id);
  check(false, "a deleted file is gone");
} catch (err) {
  check(err instanceof OpenAI.NotFoundError, `404 for a deleted file: ${err}`);
}

console.log(`${passed} passed, 0 failed`);

"""The official OpenAI Python SDK against scira2api's endpoints beside chat.

Usage: python3 tests/sdk/openai_endpoints.py http://127.0.0.1:PORT/v1 API_KEY [--refused]
Against an OpenAI-compatible upstream: embeddings (the SDK's default base64, and floats),
legacy completions (JSON and streamed), moderations, image generation and edits, speech,
transcription and translation (multipart uploads, several response formats), files and
batches. With --refused (a Scira upstream): each endpoint is a 400 `unsupported_endpoint`.
Prints '<N> passed, 0 failed' and exits 0 when every check holds.
"""
import io
import sys

import openai
from openai import OpenAI

base = sys.argv[1]
key = sys.argv[2] if len(sys.argv) > 2 else "unused"
client = OpenAI(base_url=base, api_key=key, max_retries=0)
passed = 0


def check(cond, what):
    global passed
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    passed += 1


if "--refused" in sys.argv:
    calls = [
        ("embeddings", lambda: client.embeddings.create(model="gpt-4o", input="x")),
        ("completions", lambda: client.completions.create(model="gpt-4o", prompt="x")),
        ("speech", lambda: client.audio.speech.create(model="gpt-4o", voice="alloy", input="x").read()),
        ("transcriptions", lambda: client.audio.transcriptions.create(model="gpt-4o", file=("a.mp3", b"x"))),
    ]
    for name, call in calls:
        try:
            call()
            check(False, f"{name} refused")
        except openai.BadRequestError as e:
            check(e.code == "unsupported_endpoint", f"{name}: {e.code}")
            check("does not serve" in e.message, f"{name}: {e.message}")
    print(f"{passed} passed, 0 failed")
    sys.exit(0)

# Embeddings: the SDK asks for base64 by default and decodes it.
e = client.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"], dimensions=16)
check(len(e.data) == 2 and len(e.data[0].embedding) == 16, "embeddings decoded from base64")
check(e.model == "text-embedding-3-small" and e.usage.prompt_tokens > 0, f"embedding model/usage: {e.usage}")
f = client.embeddings.create(model="text-embedding-3-small", input="alpha beta", dimensions=16, encoding_format="float")
check(all(abs(a - b) < 1e-6 for a, b in zip(f.data[0].embedding, e.data[0].embedding)), "float and base64 agree")
t = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]], dimensions=4)
check(len(t.data[0].embedding) == 4, "token-array input")

# Legacy completions.
c = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="say hi", max_tokens=16)
check(c.object == "text_completion" and "say hi" in c.choices[0].text, f"completion: {c.choices[0].text!r}")
check(c.usage.total_tokens > 0, "completion usage")
text, usage = "", None
for chunk in client.completions.create(model="gpt-3.5-turbo-instruct", prompt="stream it", stream=True,
                                       stream_options={"include_usage": True}):
    if chunk.usage:
        usage = chunk.usage
    for ch in chunk.choices:
        text += ch.text
check("stream it" in text, f"streamed completion: {text!r}")
check(usage is not None and usage.completion_tokens > 0, "streamed completion usage")

# Moderations, images.
m = client.moderations.create(input=["a kind word", "kill it"])
check(not m.results[0].flagged and m.results[1].flagged, "moderations")
img = client.images.generate(model="gpt-image-1", prompt="a dot", n=2)
check(len(img.data) == 2 and img.data[0].b64_json.startswith("iVBOR"), "image generation")
edit = client.images.edit(model="gpt-image-1", image=("in.png", b"\x89PNG fake", "image/png"), prompt="add a hat")
check(edit.data[0].revised_prompt.startswith("add a hat"), f"image edit: {edit.data[0].revised_prompt}")

# Speech: binary audio with its content type.
speech = client.audio.speech.create(model="tts-1", voice="alloy", input="hello there", response_format="wav")
audio = speech.read()
check(audio.startswith(b"RIFF") and len(audio) > 1000, f"speech: {len(audio)} bytes")
check(speech.response.headers["content-type"] == "audio/wav", "speech content type")

# Transcription and translation (multipart, the model field rewritten by routing).
sound = io.BytesIO(b"ID3" + bytes(range(256)) * 64)
sound.name = "clip.mp3"
tr = client.audio.transcriptions.create(model="whisper-1", file=sound)
check(tr.text.startswith("mock transcript by whisper-1 of clip.mp3 (16387 bytes"), f"transcription: {tr.text}")
srt = client.audio.transcriptions.create(model="whisper-1", file=("c.mp3", b"abc"), response_format="srt")
check(isinstance(srt, str) and srt.startswith("1\n00:00:00,000"), f"srt: {srt!r}")
vtt = client.audio.translations.create(model="whisper-1", file=("c.mp3", b"abc"), response_format="vtt")
check(isinstance(vtt, str) and vtt.startswith("WEBVTT"), f"vtt: {vtt!r}")

# Files and batches.
up = client.files.create(file=("in.jsonl", b'{"custom_id":"1"}\n'), purpose="batch")
check(up.id.startswith("file-") and up.bytes == 18, f"file uploaded: {up}")
check(any(x.id == up.id for x in client.files.list()), "file listed")
check(client.files.retrieve(up.id).filename == "in.jsonl", "file retrieved")
check(client.files.content(up.id).read() == b'{"custom_id":"1"}\n', "file content")
b = client.batches.create(input_file_id=up.id, endpoint="/v1/chat/completions", completion_window="24h")
check(b.status == "validating", "batch created")
check(client.batches.cancel(b.id).status == "cancelling", "batch cancelled")
check(client.batches.retrieve(b.id).status == "cancelling", "batch retrieved")
check(client.files.delete(up.id).deleted, "file deleted")
try:
    client.files.retrieve(up.id)
    check(False, "a deleted file is gone")
except openai.NotFoundError:
    check(True, "404 for a deleted file")

print(f"{passed} passed, 0 failed")

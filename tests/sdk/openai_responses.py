"""The official OpenAI Python SDK's Responses API against a running scira2api (mock upstream
speaking chat completions), with every response object and stream event validated against
OpenAI's published schemas (tests/fixtures/openai/schemas.json, extracted from the OpenAPI
document).

Usage: python3 tests/sdk/openai_responses.py http://127.0.0.1:PORT/v1 API_KEY [--scira] [--native]
(--scira: a Scira upstream: no function tools or structured output, and web search is honoured
rather than dropped or refused; --native: the
gateway passes Responses through to an upstream that speaks them, which keeps its own state, so
the gateway's store and x-dropped-params are not checked.)
Needs the `openai`, `pydantic` (an openai dependency) and `jsonschema` packages. Prints
'<N> passed, 0 failed' and exits 0 when every check holds.
"""
import json
import os
import sys

import httpx
import jsonschema
import openai
from openai import OpenAI
from pydantic import BaseModel

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key=key, max_retries=0)
here = os.path.dirname(os.path.abspath(__file__))
defs = json.load(open(os.path.join(here, "..", "fixtures", "openai", "schemas.json")))["$defs"]
passed = 0


def check(cond, what):
    global passed
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    passed += 1


validators = {}


def validate(value, schema_name):
    # The document's own quirks (e.g. `$recursiveAnchor: true`) fail a meta-schema check, so
    # the validator is built without one.
    v = validators.setdefault(schema_name, jsonschema.Draft202012Validator({"$ref": f"#/$defs/{schema_name}", "$defs": defs}))
    try:
        v.validate(value)
    except jsonschema.ValidationError as e:
        print(f"FAILED: {schema_name} schema: {e.message} at {list(e.absolute_path)}\n{json.dumps(value)[:2000]}")
        sys.exit(1)
    global passed
    passed += 1


http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def raw_events(body):
    """The events of a raw Responses stream, each checked for its SSE `event:` line."""
    events = []
    with http.stream("POST", "/responses", json=body) as r:
        check(r.status_code == 200, f"stream status {r.status_code}")
        check(r.headers["content-type"].startswith("text/event-stream"), "stream content type")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                data = line[len("data: "):]
                check(data != "[DONE]", "no [DONE] in a Responses stream")
                ev = json.loads(data)
                check(ev["type"] == kind, f"event line {kind} matches data type {ev['type']}")
                events.append(ev)
    return events


# 1. Plain: the SDK's object, and the raw JSON against the schema.
r = client.responses.create(model="gpt-4o", input="hello responses", instructions="Be brief.")
check(r.object == "response" and r.status == "completed", f"status {r.status}")
check(r.id.startswith("resp_"), f"id {r.id}")
check("hello responses" in r.output_text, f"output_text {r.output_text!r}")
check(r.model == "gpt-4o", "client's model name")
check(r.usage.input_tokens > 0 and r.usage.output_tokens > 0, "usage")
check(r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens, "usage total")
raw = http.post("/responses", json={"model": "gpt-4o", "input": [{"role": "user", "content": [{"type": "input_text", "text": "raw"}]}]})
check(raw.status_code == 200, f"raw status {raw.status_code}")
validate(raw.json(), "Response")

# 2. Streamed through the SDK, then raw with every event validated.
kinds, text, final = [], "", None
for ev in client.responses.create(model="gpt-4o", input="stream me", stream=True):
    kinds.append(ev.type)
    if ev.type == "response.output_text.delta":
        text += ev.delta
    if ev.type == "response.completed":
        final = ev.response
check(kinds[:2] == ["response.created", "response.in_progress"], f"first events {kinds[:2]}")
check(kinds[-1] == "response.completed", f"last event {kinds[-1]}")
for k in ["response.output_item.added", "response.content_part.added", "response.output_text.done", "response.content_part.done", "response.output_item.done"]:
    check(k in kinds, f"{k} streamed")
check("stream me" in text and final.output_text == text, "streamed text is the final text")
check(final.usage.input_tokens > 0, "usage in response.completed")
events = raw_events({"model": "gpt-4o", "input": "validate", "stream": True})
check([e["sequence_number"] for e in events] == list(range(len(events))), "sequence numbers 0..n")
for ev in events:
    validate(ev, "ResponseStreamEvent")

scira = "--scira" in sys.argv
tools_ok = not scira
native = "--native" in sys.argv

# 3. A function tool round trip: a call, then its output.
tools = [{"type": "function", "name": "get_weather", "description": "Weather of a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}, "strict": False}]
if tools_ok:
    r1 = client.responses.create(model="gpt-4o", input="weather in Paris?", tools=tools)
    calls = [o for o in r1.output if o.type == "function_call"]
    check(len(calls) == 1 and calls[0].name == "get_weather", f"function call {r1.output}")
    check(json.loads(calls[0].arguments)["city"] == "Paris", "call arguments")
    follow = [{"role": "user", "content": "weather in Paris?"}, calls[0].model_dump(exclude_none=True),
              {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18C and sunny"}]
    r2 = client.responses.create(model="gpt-4o", input=follow, tools=tools)
    check(r2.output_text and not [o for o in r2.output if o.type == "function_call"], "answer after the tool output")
    events = raw_events({"model": "gpt-4o", "input": "weather?", "tools": tools, "stream": True})
    kinds = [e["type"] for e in events]
    check("response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds, f"streamed call {kinds}")
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"][0]
    check(json.loads(done["arguments"])["city"] == "Paris", "streamed arguments")
    for ev in events:
        validate(ev, "ResponseStreamEvent")

    # 4. Structured output through responses.parse.
    class Weather(BaseModel):
        city: str
        degrees: int

    parsed = client.responses.parse(model="gpt-4o", input="weather as JSON", text_format=Weather)
    check(isinstance(parsed.output_parsed, Weather), f"parsed {parsed.output_parsed!r}")

# 5. State: previous_response_id carries the conversation; GET and DELETE.
if not native:
    first = client.responses.create(model="gpt-4o", input="remember the word kiwi")
    second = client.responses.create(model="gpt-4o", input="what was the word?", previous_response_id=first.id)
    check(second.previous_response_id == first.id, "previous_response_id echoed")
    if tools_ok:  # the chat mock's usage counts the prompt it got (the Scira mock's does not)
        check(second.usage.input_tokens > first.usage.input_tokens, f"history sent upstream ({first.usage.input_tokens} -> {second.usage.input_tokens})")
    count = lambda **kw: http.post("/responses/input_tokens", json={"model": "gpt-4o", "input": "what was the word?"} | kw).json()["input_tokens"]
    check(count(previous_response_id=first.id) > count(), "history counted in input_tokens")
    got = client.responses.retrieve(first.id)
    check(got.id == first.id and got.output_text == first.output_text, "retrieve")
    validate(http.get(f"/responses/{first.id}").json(), "Response")
    client.responses.delete(first.id)
    try:
        client.responses.retrieve(first.id)
        check(False, "deleted response still there")
    except openai.NotFoundError as e:
        check(e.status_code == 404, "404 after delete")
        validate(e.response.json(), "ErrorResponse")
    try:
        client.responses.create(model="gpt-4o", input="x", previous_response_id="resp_unknown")
        check(False, "unknown previous_response_id accepted")
    except openai.NotFoundError as e:
        check(e.body["param"] == "previous_response_id", f"param {e.body}")
    unstored = client.responses.create(model="gpt-4o", input="forget me", store=False)
    try:
        client.responses.retrieve(unstored.id)
        check(False, "store: false kept the response")
    except openai.NotFoundError:
        check(True, "store: false")

# 6. What cannot be honoured is a 400 naming the param; what is only offered is dropped and named.
forced_search = {"tool_choice": {"type": "web_search"}, "tools": [{"type": "web_search"}]}
if scira:
    r = client.responses.create(model="gpt-4o", input="news?", **forced_search)
    check(r.status == "completed", "a forced web search is honoured on Scira")
    # Scira cites its sources: url_citation annotations on output_text, in the schema's shape.
    for item in r.output:
        if item.type == "message":
            validate(item.model_dump(mode="json", exclude_none=True), "OutputMessage")
    texts = [c for item in r.output if item.type == "message" for c in item.content if c.type == "output_text"]
    anns = [a for t in texts for a in t.annotations]
    check(anns and anns[0].type == "url_citation" and anns[0].url.startswith("https://"), f"citations {anns}")
    check(0 <= anns[0].start_index < anns[0].end_index <= len(texts[0].text), f"citation span {anns[0]}")
for kwargs, param in [
    *([] if scira else [(forced_search, "tool_choice")]),
    ({"background": True}, "background"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}, "input[0].content[0]"),
]:
    try:
        client.responses.create(model="gpt-4o", **({"input": "x"} | kwargs))
        check(False, f"{param} accepted")
    except openai.BadRequestError as e:
        check(e.body["param"] == param, f"param {e.body} for {param}")
        validate(e.response.json(), "ErrorResponse")
offered = http.post("/responses", json={"model": "gpt-4o", "input": "x", "tools": [{"type": "web_search"}], "include": ["reasoning.encrypted_content"]})
check(offered.status_code == 200, f"offered built-in tool: {offered.status_code} {offered.text}")
if native:
    check("x-dropped-params" not in offered.headers, "nothing dropped on the native path")
    check(offered.json()["id"].startswith("resp_mock"), "answered by the native upstream")
elif scira:
    check("web_search" not in offered.headers.get("x-dropped-params", ""), f"web search honoured {offered.headers}")
else:
    check("tools[0]:web_search" in offered.headers.get("x-dropped-params", ""), f"x-dropped-params {offered.headers}")

# 7. input_tokens.
n = http.post("/responses/input_tokens", json={"model": "gpt-4o", "input": "count these tokens please"})
check(n.status_code == 200 and n.json()["input_tokens"] > 3, f"input_tokens {n.text}")

print(f"{passed} passed, 0 failed")

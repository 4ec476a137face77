"""The official OpenAI Python SDK against a running scira2api (as a new user would try it).

Usage: python3 tests/sdk/openai_python.py http://127.0.0.1:PORT/v1 [API_KEY]
Exercises: list models, chat, stream (with usage), tools (streamed and not, and a tool result
round trip; --tools), citations as url_citation annotations (--citations; a Scira upstream),
and error mapping.
Prints '<N> passed, 0 failed' and exits 0 when every check holds.
"""
import json
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


models = [m.id for m in client.models.list()]
check(len(models) > 0 and "gpt-4o" in models, f"models listed: {models}")

r = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hello sdk"}])
check(r.choices[0].message.content and "hello sdk" in r.choices[0].message.content, "chat content")
check(r.model == "gpt-4o", "model name kept")
check(r.usage.total_tokens > 0, "usage")

text, usage, finish = "", None, None
for chunk in client.chat.completions.create(
    model="gpt-4o", stream=True, stream_options={"include_usage": True},
    messages=[{"role": "user", "content": "stream please"}],
):
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        text += c.delta.content or ""
        finish = c.finish_reason or finish
check("stream please" in text, f"streamed text: {text!r}")
check(finish == "stop", "stream finish")
check(usage is not None and usage.total_tokens > 0, "stream usage chunk")

if "--tools" in sys.argv:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    r = client.chat.completions.create(model="gpt-4o", tools=tools, messages=[{"role": "user", "content": "weather?"}])
    call = r.choices[0].message.tool_calls[0]
    check(call.function.name == "get_weather" and json.loads(call.function.arguments)["city"] == "Paris", "tool call")
    args, name = "", None
    for chunk in client.chat.completions.create(model="gpt-4o", tools=tools, stream=True, messages=[{"role": "user", "content": "weather?"}]):
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                name = tc.function.name or name
                args += tc.function.arguments or ""
    check(name == "get_weather" and json.loads(args)["city"] == "Paris", "streamed tool call")
    # The tool's result goes back; the model answers in text.
    r = client.chat.completions.create(model="gpt-4o", tools=tools, messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ])
    check(r.choices[0].finish_reason == "stop" and r.choices[0].message.content, "answer after the tool result")

if "--citations" in sys.argv:
    # A Scira upstream cites its web sources: url_citation annotations the SDK parses.
    r = client.chat.completions.create(model="gpt-4o", web_search_options={},
                                       messages=[{"role": "user", "content": "what is scira?"}])
    msg = r.choices[0].message
    anns = msg.annotations or []
    check(len(anns) > 0 and anns[0].type == "url_citation", f"annotations: {anns}")
    cite = anns[0].url_citation
    check(cite.url.startswith("https://") and cite.title, f"citation: {cite}")
    check(0 <= cite.start_index < cite.end_index <= len(msg.content), f"span: {cite}")
    streamed = []
    for chunk in client.chat.completions.create(model="gpt-4o", stream=True, web_search_options={},
                                                messages=[{"role": "user", "content": "what is scira?"}]):
        for c in chunk.choices:
            streamed.extend((c.delta.model_extra or {}).get("annotations") or [])
    check(len(streamed) > 0 and streamed[0]["url_citation"]["url"].startswith("https://"), f"streamed annotations: {streamed}")

try:
    client.chat.completions.create(model="gpt-4o", messages=[])
    check(False, "empty messages must fail")
except openai.BadRequestError as e:
    check(e.status_code == 400 and isinstance(e.body, dict) and "message" in e.body, "400 parsed by the SDK")

try:
    OpenAI(base_url=base, api_key="wrong-key", max_retries=0).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    check(key == "unused", "wrong key must fail when auth is on")
except openai.AuthenticationError as e:
    check(e.code == "invalid_api_key", "401 invalid_api_key")

print(f"{passed} passed, 0 failed")

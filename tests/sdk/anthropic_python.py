"""The official Anthropic Python SDK against a running scira2api whose upstream speaks chat
completions (the mock): the Messages API translated both ways; with `--native`, against an
Anthropic upstream (the mock's Messages API), passed through.

Usage: python3 tests/sdk/anthropic_python.py http://127.0.0.1:PORT API_KEY [--native]
Prints '<N> passed, 0 failed' and exits 0 when every check holds.
"""
import json
import sys

import anthropic

base, key = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
passed = 0


def check(cond, what):
    global passed
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    passed += 1


# Plain.
m = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, system="Be brief.",
                           messages=[{"role": "user", "content": "hello claude"}])
check(m.type == "message" and m.role == "assistant" and m.id.startswith("msg_"), f"message {m}")
check(m.model == "claude-sonnet-4-5", f"model {m.model}")
check(m.content[0].type == "text" and "hello claude" in m.content[0].text, f"content {m.content}")
check(m.stop_reason == "end_turn", f"stop_reason {m.stop_reason}")
check(m.usage.input_tokens > 0 and m.usage.output_tokens > 0, f"usage {m.usage}")
# The mock's own Messages ids start msg_mock; the gateway's translation makes its own.
native = "--native" in sys.argv
check(m.id.startswith("msg_mock") == native, f"{'native' if native else 'translated'} answer: {m.id}")

# Streamed, with the SDK's helper.
kinds, text = [], ""
with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100,
                            messages=[{"role": "user", "content": "stream claude"}]) as s:
    for ev in s:
        kinds.append(ev.type)
    final = s.get_final_message()
    text = s.get_final_text()
check(kinds[0] == "message_start", f"first event {kinds[:3]}")
check("content_block_start" in kinds and "content_block_delta" in kinds and "content_block_stop" in kinds, f"events {kinds}")
check(kinds[-1] == "message_stop", f"last event {kinds[-1]}")
check("stream claude" in text and final.stop_reason == "end_turn", f"final {final}")
check(final.usage.output_tokens > 0, "stream usage")

# A tool round trip with tool_result, not streamed and streamed.
tools = [{"name": "get_weather", "description": "Weather of a city",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
q = [{"role": "user", "content": "weather in Paris?"}]
m1 = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, tools=tools, messages=q)
uses = [b for b in m1.content if b.type == "tool_use"]
check(m1.stop_reason == "tool_use" and len(uses) == 1, f"tool_use {m1}")
check(uses[0].name == "get_weather" and uses[0].input["city"] == "Paris", f"input {uses[0]}")
q2 = q + [{"role": "assistant", "content": m1.content},
          {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18C"}]}]
m2 = client.messages.create(model="claude-sonnet-4-5", max_tokens=100, tools=tools, messages=q2)
check(m2.stop_reason == "end_turn" and m2.content[0].type == "text", f"after tool_result {m2}")
with client.messages.stream(model="claude-sonnet-4-5", max_tokens=100, tools=tools, messages=q) as s:
    deltas = [ev for ev in s if ev.type == "content_block_delta" and ev.delta.type == "input_json_delta"]
    final = s.get_final_message()
tool = [b for b in final.content if b.type == "tool_use"][0]
check(deltas and tool.input["city"] == "Paris" and final.stop_reason == "tool_use", f"streamed tool {final}")

# count_tokens.
n = client.messages.count_tokens(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "count these tokens please"}], tools=tools)
check(n.input_tokens > 5, f"count_tokens {n}")

# Errors in Anthropic's shape, as the SDK's exception types.
try:
    client.messages.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "x"}], max_tokens=0)
    check(False, "max_tokens 0 accepted")
except anthropic.BadRequestError as e:
    check(e.status_code == 400 and e.body["type"] == "error" and e.body["error"]["type"] == "invalid_request_error", f"400 {e.body}")
    check(e.response.headers.get("request-id"), "request-id header")
try:
    anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0).messages.create(
        model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    check(False, "wrong key accepted")
except anthropic.AuthenticationError as e:
    check(e.body["error"]["type"] == "authentication_error", f"401 {e.body}")
try:
    client.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}],
                           tools=[{"type": "web_search_20250305", "name": "web_search"}], tool_choice={"type": "tool", "name": "web_search"})
    check(False, "forced server tool accepted")
except anthropic.BadRequestError as e:
    check("web_search" in e.body["error"]["message"], f"forced server tool {e.body}")

print(f"{passed} passed, 0 failed")

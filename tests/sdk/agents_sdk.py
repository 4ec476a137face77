"""The OpenAI Agents SDK (pip `openai-agents`) with its default model — the Responses API — and
one function tool, against a running scira2api (chat mock upstream).

Usage: python3 tests/sdk/agents_sdk.py http://127.0.0.1:PORT/v1 API_KEY
Prints '<N> passed, 0 failed' and exits 0 when every check holds.
"""
import sys

from agents import Agent, Runner, function_tool, set_default_openai_client, set_tracing_disabled
from openai import AsyncOpenAI

base, key = sys.argv[1], sys.argv[2]
set_tracing_disabled(True)
set_default_openai_client(AsyncOpenAI(base_url=base, api_key=key, max_retries=0))
passed = 0


def check(cond, what):
    global passed
    if not cond:
        print(f"FAILED: {what}")
        sys.exit(1)
    passed += 1


calls = []


@function_tool
def get_weather(city: str) -> str:
    """The weather of a city."""
    calls.append(city)
    return f"18C and sunny in {city}"


plain = Runner.run_sync(Agent(name="plain", instructions="Be brief.", model="gpt-4o"), "hello agents")
check("hello agents" in plain.final_output, f"plain: {plain.final_output!r}")

agent = Agent(name="weather", instructions="Use the tool.", model="gpt-4o", tools=[get_weather])
result = Runner.run_sync(agent, "weather in Paris?")
check(calls == ["Paris"], f"tool calls {calls}")
check(isinstance(result.final_output, str) and result.final_output, f"final {result.final_output!r}")
kinds = [type(i).__name__ for i in result.new_items]
check("ToolCallItem" in kinds and "ToolCallOutputItem" in kinds, f"items {kinds}")

print(f"{passed} passed, 0 failed")

#!/usr/bin/env bash
# Claude Code (npm @anthropic-ai/claude-code) in print mode against a running scira2api whose
# upstream speaks chat completions (the mock): `ANTHROPIC_BASE_URL` at the gateway, the gateway
# key in `ANTHROPIC_API_KEY`, non-essential traffic off. The mock calls Claude Code's Bash tool
# with `echo scira2api-mock`; Claude Code runs it, sends the tool_result back, and prints the
# answer. With `--native` the gateway's upstream is Anthropic (the mock's Messages API) and the
# answers must be the upstream's own messages, passed through (their ids start msg_mock).
#
# Usage: tests/sdk/claude_code.sh CLAUDE_BIN http://127.0.0.1:PORT API_KEY [--native]
# Prints '<N> passed, 0 failed' and exits 0 when every check holds.
set -euo pipefail
claude=$(readlink -f "$1") base=$2 key=$3 native=${4:-}
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
mkdir -p "$home/work"
cd "$home/work"
out=$(HOME=$home ANTHROPIC_BASE_URL=$base ANTHROPIC_API_KEY=$key IS_SANDBOX=1 \
  CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 \
  timeout 180 "$claude" -p "Run echo, then tell me what it printed" --model claude-sonnet-4-5 \
  --dangerously-skip-permissions --max-turns 4 --output-format stream-json --verbose 2>"$home/stderr") || {
  echo "FAILED: claude exited $?"; cat "$home/stderr"; echo "$out"; exit 1; }
passed=0
check() { # description, grep pattern
  if grep -q -- "$2" <<<"$out"; then passed=$((passed + 1)); else echo "FAILED: $1"; echo "$out" | cut -c1-600; cat "$home/stderr"; exit 1; fi
}
check "it called its Bash tool" '"name":"Bash","type":"tool_use"\|"type":"tool_use","id":"[^"]*","name":"Bash"'
check "with the mock's command" '"input":{"command":"echo scira2api-mock"}'
check "the tool ran and printed" '"type":"tool_result","content":"scira2api-mock'
check "an answer after the tool result" '"type":"result","subtype":"success"'
if [ "$(grep -c '"type":"tool_result"' <<<"$out")" != 1 ]; then echo "FAILED: not exactly one tool run"; exit 1; fi
passed=$((passed + 1))
if [ "$native" = --native ]; then
  check "the upstream's own messages, passed through" '"id":"msg_mock'
elif grep -q '"id":"msg_mock' <<<"$out"; then
  echo "FAILED: a translated run got the mock's native messages"; exit 1
fi
echo "$passed passed, 0 failed"

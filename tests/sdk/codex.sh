#!/usr/bin/env bash
# Codex CLI (npm @openai/codex) against a running scira2api with the chat mock upstream: a
# custom model provider with `wire_api = "responses"`, `codex exec` with its default features
# (it offers its function tools and a built-in web_search on every request). The mock calls the
# first function tool — Codex's shell tool, `exec_command` — with `echo scira2api-mock`; Codex
# runs it, sends the output back as a function_call_output, and prints the answer.
#
# Usage: tests/sdk/codex.sh CODEX_BIN http://127.0.0.1:PORT/v1 API_KEY
# Prints '<N> passed, 0 failed' and exits 0 when every check holds.
set -euo pipefail
codex=$(readlink -f "$1") base=$2 key=$3
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
mkdir -p "$home/.codex" "$home/work"
cat > "$home/.codex/config.toml" <<TOML
model = "gpt-4o"
model_provider = "gw"
approval_policy = "never"
[model_providers.gw]
name = "gw"
base_url = "$base"
env_key = "GW_KEY"
wire_api = "responses"
TOML
cd "$home/work"
out=$(HOME=$home CODEX_HOME=$home/.codex GW_KEY=$key timeout 120 "$codex" exec --json \
  --skip-git-repo-check --dangerously-bypass-approvals-and-sandbox "Run echo, then tell me what it printed" 2>"$home/stderr") || {
  echo "FAILED: codex exec exited $?"; cat "$home/stderr"; echo "$out"; exit 1; }
passed=0
check() { # description, jq-free grep pattern
  if grep -q -- "$2" <<<"$out"; then passed=$((passed + 1)); else echo "FAILED: $1"; echo "$out"; exit 1; fi
}
check "the shell tool ran once" '"type":"command_execution","command":"[^"]*echo scira2api-mock[^"]*","aggregated_output":"scira2api-mock\\n","exit_code":0,"status":"completed"'
check "an answer after the tool output" '"type":"agent_message","text":"Mock answer'
check "the turn completed with usage" '"type":"turn.completed","usage":{"input_tokens":[1-9]'
if [ "$(grep -c '"type":"command_execution".*"status":"completed"' <<<"$out")" != 1 ]; then
  echo "FAILED: not exactly one shell command"; echo "$out"; exit 1
fi
passed=$((passed + 1))
echo "$passed passed, 0 failed"

#!/usr/bin/env bash
# The cost of the translated endpoints against chat completions, one gateway build: the same
# mock answer asked for through /v1/chat/completions, /v1/responses and /v1/messages (non-stream
# and streamed), wrk c=16 for 3 s each, CPU per request from /proc (gateway on CPU 0, one worker;
# mock and wrk on CPU 1). Report ratios: the machine is shared and noisy.
#
#   bench/endpoints.sh [BIN]     (default target/release/scira2api-server; needs target/release/scira2api-mock and wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/scira2api-server}
OUT=target/bench/endpoints
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
taskset -c 1 target/release/scira2api-mock --addr 127.0.0.1:19310 > "$OUT/mock.log" 2>&1 &
pids+=($!)
env -i PATH="$PATH" HOST=127.0.0.1 PORT=19311 WORKERS=1 BASE_URL=http://127.0.0.1:19310 \
  MODEL_MAPPINGS=gpt-4o:mock-gpt LOG_LEVEL=warn RETRY=1 RATE_LIMIT_ENABLED=false \
  CACHE_ENABLED=false taskset -c 0 "$BIN" > "$OUT/gw.log" 2>&1 &
GW=$!
pids+=($GW)
sleep 1
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # name path body
  cat > "$OUT/$1.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$3'
done = function(summary, latency, requests)
  io.write(string.format('%d %.1f %d\n', summary.requests, summary.requests / (summary.duration / 1e6), latency:percentile(50)))
end
LUA
  local t0 n rps p50 t1
  t0=$(ticks "$GW")
  read -r n rps p50 < <(taskset -c 1 wrk -t1 -c16 -d3s -s "$OUT/$1.lua" "http://127.0.0.1:19311$2" | tail -1)
  t1=$(ticks "$GW")
  echo "$1 req/s=$rps p50_us=$p50 cpu_us_per_req=$(( (t1 - t0) * 10000 / n ))"
}
M='[{"role":"user","content":"Hello there, how are you?"}]'
run chat /v1/chat/completions "{\"model\":\"gpt-4o\",\"messages\":$M}"
run responses /v1/responses '{"model":"gpt-4o","input":"Hello there, how are you?","store":false}'
run messages /v1/messages "{\"model\":\"gpt-4o\",\"max_tokens\":100,\"messages\":$M}"
run chat_stream /v1/chat/completions "{\"model\":\"gpt-4o\",\"stream\":true,\"messages\":$M}"
run responses_stream /v1/responses '{"model":"gpt-4o","input":"Hello there, how are you?","stream":true,"store":false}'
run messages_stream /v1/messages "{\"model\":\"gpt-4o\",\"max_tokens\":100,\"stream\":true,\"messages\":$M}"

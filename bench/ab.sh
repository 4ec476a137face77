#!/usr/bin/env bash
# A/B of two gateway builds against one mock, interleaved, CPU per request from /proc — for a
# change's cost on a noisy shared machine, where whole bench runs swing more than the effect.
#
#   bench/ab.sh OLD_BIN NEW_BIN [ROUNDS]
#   e.g. git worktree add /tmp/old <rev> && (cd /tmp/old && CARGO_TARGET_DIR=$PWD/../target-old \
#        cargo build --release -p scira2api-server); bench/ab.sh /tmp/target-old/release/scira2api-server \
#        target/release/scira2api-server
#
# Needs target/release/scira2api-mock, wrk and taskset (bench/run.sh installs wrk). Gateways on
# CPU 0 (one worker each), mock and wrk on CPU 1; 3 s of wrk per path and concurrency per round.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: bench/ab.sh OLD_BIN NEW_BIN [ROUNDS]}
NEW=${2:?usage: bench/ab.sh OLD_BIN NEW_BIN [ROUNDS]}
ROUNDS=${3:-3}
OUT=target/bench/ab
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
taskset -c 1 target/release/scira2api-mock --addr 127.0.0.1:19300 > "$OUT/mock.log" 2>&1 &
pids+=($!)
start() { # port bin
  env -i PATH="$PATH" HOST=127.0.0.1 PORT="$1" WORKERS=1 BASE_URL=http://127.0.0.1:19300 \
    APIKEY=bench MODEL_MAPPINGS=gpt-4o:mock-gpt LOG_LEVEL=warn RETRY=1 MAX_CONNS_PER_HOST=2048 \
    RATE_LIMIT_ENABLED=true REQUESTS_PER_SECOND=1000000 BURST=1000000 CACHE_ENABLED=false \
    taskset -c 0 "$2" > "$OUT/gw-$1.log" 2>&1 &
  pids+=($!)
  echo $!
}
OLD_PID=$(start 19301 "$OLD")
NEW_PID=$(start 19302 "$NEW")
sleep 1
cat > "$OUT/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
wrk.body = '{"model":"gpt-4o","messages":[{"role":"user","content":"Hello there, how are you?"}]}'
done = function(summary, latency, requests)
  io.write(string.format('%d %.1f %d\n', summary.requests,
    summary.requests / (summary.duration / 1e6), latency:percentile(50)))
end
LUA
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
for round in $(seq 1 "$ROUNDS"); do
  for c in 1 16; do
    for who in old new; do
      if [ "$who" = old ]; then pid=$OLD_PID; port=19301; else pid=$NEW_PID; port=19302; fi
      t0=$(ticks "$pid")
      read -r n rps p50 < <(taskset -c 1 wrk -t1 -c"$c" -d3s -s "$OUT/post.lua" \
        "http://127.0.0.1:$port/v1/chat/completions" | tail -1)
      t1=$(ticks "$pid")
      echo "$who c=$c round=$round req/s=$rps p50_us=$p50 cpu_us_per_req=$(( (t1 - t0) * 10000 / n ))"
    done
  done
done

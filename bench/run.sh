#!/usr/bin/env bash
# The scira2api benchmark: the gateway against the physical limit (client -> mock directly), the
# floor of any proxy (nginx with upstream keep-alive), and optionally LiteLLM, all in one run on
# loopback, so ratios stay comparable on a noisy shared machine.
#
#   bench/run.sh            full run (about 5 minutes: 3 interleaved rounds per path)
#   bench/run.sh --smoke    a couple of seconds per path (CI runs this; no targets enforced)
#   bench/run.sh --litellm  also LiteLLM 1.82.6 from PyPI (installed into target/bench/venv)
#
# Then bench/fast.sh: the same proxies against an upstream that is not the bottleneck (nginx
# answering from memory), beside a bare actix-web + awc proxy, with CPU time per request.
#
# Pinning: with 2+ CPUs the proxy under test (gateway, nginx or LiteLLM) runs on CPU 0, the mock
# upstream and the load tools on CPU 1. Results: target/bench/results.json and results.md.
set -euo pipefail
cd "$(dirname "$0")/.."

SMOKE=0
LITELLM=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    --litellm) LITELLM=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

OUT=target/bench
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.jsonl "$OUT"/*.log "$OUT"/*.txt

if [ "$SMOKE" = 1 ]; then
  DURATION=2s; ROUNDS=1; CONCURRENCY="1 16"; STREAMS=16; STREAM_REQS=16; CHUNKS=8; HOLD=50; HOLD_CHUNKS=8
else
  # Each path runs ROUNDS times per concurrency, interleaved with the others, so a slow spell
  # of the shared machine hits every path alike; the report takes the median round.
  DURATION=4s; ROUNDS=3; CONCURRENCY="1 16 64"; STREAMS=64; STREAM_REQS=128; CHUNKS=64; HOLD=1000; HOLD_CHUNKS=24
fi

# --- tools ------------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v valgrind >/dev/null 2>&1 || need+=(valgrind)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
cargo build --release -q -p scira2api-server -p scira2api-mock -p scira2api-loadgen -p scira2api-bare
BIN=target/release

# shellcheck source=bench/lib.sh
. bench/lib.sh
# This script's own work (RSS sampling) stays off the proxy's CPU too.
pin_cpus "mock and load tools"

MOCK=127.0.0.1:19100
GW=127.0.0.1:19101
GW_CACHE=127.0.0.1:19102
NGINX=127.0.0.1:19103
LITE=127.0.0.1:19104
REDIS=127.0.0.1:19105
GW_REDIS=127.0.0.1:19106

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; kill -CONT "$p" 2>/dev/null || true; done
  [ -f "$OUT/nginx.pid" ] && kill "$(cat "$OUT/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT


# --- servers ----------------------------------------------------------------------------------
$LOAD_CPU "$BIN/scira2api-mock" --addr "$MOCK" --workers 1 --chunks 4 > "$OUT/mock.log" 2>&1 &
pids+=($!)
wait_port "$MOCK"

gateway() { # addr, extra env...
  local addr=$1; shift
  env -i PATH="$PATH" HOST="${addr%:*}" PORT="${addr#*:}" WORKERS=1 BASE_URL="http://$MOCK" \
    APIKEY=bench MODEL_MAPPINGS=gpt-4o:mock-gpt LOG_LEVEL=warn RETRY=1 MAX_CONNS_PER_HOST=2048 \
    RATE_LIMIT_ENABLED=true REQUESTS_PER_SECOND=1000000 BURST=1000000 "$@" \
    $PROXY_CPU "$BIN/scira2api-server" > "$OUT/gateway-${addr#*:}.log" 2>&1 &
  pids+=($!)
  wait_port "$addr"
}
gateway "$GW" CACHE_ENABLED=false
GW_PID=${pids[-1]}
gateway "$GW_CACHE" CACHE_ENABLED=true
# The same gateway with its rate limits in Redis (one script call per request), beside the
# in-memory one: what sharing limits across replicas costs.
$LOAD_CPU redis-server --bind "${REDIS%:*}" --port "${REDIS#*:}" --save "" --appendonly no > "$OUT/redis.log" 2>&1 &
pids+=($!)
wait_port "$REDIS"
gateway "$GW_REDIS" CACHE_ENABLED=false REDIS_URL="redis://$REDIS" REDIS_TIMEOUT=1s
GW_REDIS_PID=${pids[-1]}

NGINX_BIN=/usr/sbin/nginx
mkdir -p "$OUT/nginx"
cat > "$OUT/nginx.conf" <<EOF
worker_processes 1;
daemon on;
pid $PWD/$OUT/nginx.pid;
error_log $PWD/$OUT/nginx/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $PWD/$OUT/nginx/body;
  proxy_temp_path $PWD/$OUT/nginx/proxy;
  fastcgi_temp_path $PWD/$OUT/nginx/fastcgi;
  uwsgi_temp_path $PWD/$OUT/nginx/uwsgi;
  scgi_temp_path $PWD/$OUT/nginx/scgi;
  upstream mock { server $MOCK; keepalive 128; }
  server {
    listen $NGINX;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
$PROXY_CPU "$NGINX_BIN" -c "$PWD/$OUT/nginx.conf" -p "$PWD/$OUT/nginx" 2>"$OUT/nginx/start.log"
wait_port "$NGINX"

PATHS="direct nginx gateway"
if [ "$LITELLM" = 1 ]; then
  VENV=$OUT/venv
  if [ ! -x "$VENV/bin/litellm" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==1.82.6"
  fi
  OPENAI_API_KEY=sk-mock LITELLM_LOCAL_MODEL_COST_MAP=True $PROXY_CPU "$VENV/bin/litellm" --model openai/mock-gpt \
    --api_base "http://$MOCK/v1" --host "${LITE%:*}" --port "${LITE#*:}" --num_workers 1 \
    --telemetry False > "$OUT/litellm.log" 2>&1 &
  pids+=($!)
  LITE_PID=${pids[-1]}
  for _ in $(seq 1 600); do curl -fs "http://$LITE/health/liveliness" >/dev/null 2>&1 && break; sleep 0.1; done
  # Frozen (SIGSTOP) except during its own turn: its background work must not share CPU 0
  # with the other proxies' measurements.
  kill -STOP "$LITE_PID"
  PATHS="$PATHS litellm"
fi
# The direct path measured a second time at the end: how far two runs of the same path differ
# is the noise floor of this machine, under which an "added" figure means nothing.
PATHS="$PATHS direct_again"

url_of() {
  case "$1" in
    direct|direct_again) echo "http://$MOCK" ;;
    nginx) echo "http://$NGINX" ;;
    gateway) echo "http://$GW" ;;
    gateway_cache) echo "http://$GW_CACHE" ;;
    gateway_redis) echo "http://$GW_REDIS" ;;
    litellm) echo "http://$LITE" ;;
  esac
}
pid_of() { if [ "$1" = gateway_redis ]; then echo "$GW_REDIS_PID"; else echo "$GW_PID"; fi; }
model_of() { case "$1" in gateway|gateway_cache|gateway_redis) echo gpt-4o ;; litellm) echo openai/mock-gpt ;; *) echo mock-gpt ;; esac; }

# Resident memory of a process in KiB (read without forking: it is sampled during the load).
rss_kb() {
  local k v _
  while read -r k v _; do
    if [ "$k" = VmRSS: ]; then echo "$v"; return; fi
  done < "/proc/$1/status"
}
TCK=$(getconf CLK_TCK)

# --- non-stream load (wrk) ---------------------------------------------------------------------
cat > "$OUT/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer bench"
wrk.body = os.getenv("BODY")
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format(
    '{"requests":%d,"errors":%d,"rps":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, errors, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
EOF

RSS_IDLE=$(rss_kb "$GW_PID")
RSS_PEAK=$RSS_IDLE
for c in $CONCURRENCY; do
  for round in $(seq 1 "$ROUNDS"); do
    for path in $PATHS gateway_cache gateway_redis; do
      [ "$path" = gateway_cache ] && [ "$c" != 16 ] && continue
      [ "$path" = gateway_redis ] && [ "$c" != 16 ] && continue
      [ "$path" = direct_again ] && [ "$c" != 1 ] && continue
      [ "$path" = litellm ] && kill -CONT "$LITE_PID"
      body="{\"model\":\"$(model_of "$path")\",\"messages\":[{\"role\":\"user\",\"content\":\"Say hello to the benchmark.\"}]}"
      # One warm-up request fills the cache and opens pooled connections.
      curl -fs -o /dev/null -H 'content-type: application/json' -H 'authorization: Bearer bench' \
        -d "$body" "$(url_of "$path")/v1/chat/completions" || true
      t0=$(cpu_ticks "$(pid_of "$path")")
      BODY=$body $LOAD_CPU wrk -t1 -c"$c" -d"$DURATION" -s "$OUT/post.lua" \
        "$(url_of "$path")/v1/chat/completions" > "$OUT/wrk-$path-$c-$round.txt" &
      wrk_pid=$!
      while kill -0 "$wrk_pid" 2>/dev/null; do
        # Sampled on every path (the same work on the load CPU), kept for the gateway's.
        r=$(rss_kb "$GW_PID")
        if [ "$path" = gateway ] && [ "$r" -gt "$RSS_PEAK" ]; then RSS_PEAK=$r; fi
        sleep 0.2
      done
      wait "$wrk_pid"
      t1=$(cpu_ticks "$(pid_of "$path")")
      [ "$path" = litellm ] && kill -STOP "$LITE_PID"
      tail -n 1 "$OUT/wrk-$path-$c-$round.txt" \
        | sed "s/^{/{\"path\":\"$path\",\"concurrency\":$c,\"round\":$round,\"gateway_cpu_ticks\":$(( t1 - t0 )),\"clk_tck\":$TCK,/" \
        >> "$OUT/nonstream.jsonl"
    done
  done
done
sleep 2
RSS_AFTER=$(rss_kb "$GW_PID")

# --- streaming load (loadgen): 64 deltas 20 ms apart ---------------------------------------
for path in $PATHS; do
  [ "$path" = litellm ] || [ "$path" = direct_again ] && continue
  $LOAD_CPU "$BIN/scira2api-loadgen" --url "$(url_of "$path")/v1/chat/completions" \
    --header "authorization: Bearer bench" --concurrency "$STREAMS" --requests "$STREAM_REQS" \
    --chunks "$CHUNKS" --delay-ms 20 | sed "s/^{/{\"path\":\"$path\",/" >> "$OUT/stream.jsonl"
done
# Time to first event without load-side queueing: 4 streams at a time, 16 events 5 ms apart.
PROBE_REQS=$([ "$SMOKE" = 1 ] && echo 16 || echo 200)
for round in $(seq 1 "$ROUNDS"); do
  for path in $PATHS; do
    [ "$path" = litellm ] && continue
    $LOAD_CPU "$BIN/scira2api-loadgen" --url "$(url_of "$path")/v1/chat/completions" \
      --header "authorization: Bearer bench" --concurrency 4 --requests "$PROBE_REQS" \
      --chunks 16 --delay-ms 5 | sed "s/^{/{\"path\":\"$path\",\"round\":$round,/" >> "$OUT/probe.jsonl"
  done
done
# Many concurrent streams held through the gateway: stalls and memory. The same load straight
# to the mock first: stalls there belong to the load side (mock and load generator share a CPU).
# Events are 100 ms apart (10k events/s in all): at 20 ms the load side alone stalls here.
$LOAD_CPU "$BIN/scira2api-loadgen" --url "http://$MOCK/v1/chat/completions" \
  --concurrency "$HOLD" --requests "$HOLD" --chunks "$HOLD_CHUNKS" --delay-ms 100 > "$OUT/hold-direct.json"
RSS_STREAMS=0
$LOAD_CPU "$BIN/scira2api-loadgen" --url "http://$GW/v1/chat/completions" \
  --header "authorization: Bearer bench" --concurrency "$HOLD" --requests "$HOLD" \
  --chunks "$HOLD_CHUNKS" --delay-ms 100 > "$OUT/hold.json" &
hold_pid=$!
while kill -0 "$hold_pid" 2>/dev/null; do
  r=$(rss_kb "$GW_PID"); [ "$r" -gt "$RSS_STREAMS" ] && RSS_STREAMS=$r
  sleep 0.1
done
wait "$hold_pid"

# --- report ---------------------------------------------------------------------------------
python3 - "$OUT" "$RSS_IDLE" "$RSS_PEAK" "$RSS_AFTER" "$RSS_STREAMS" "$HOLD" "$PINNING" "$SMOKE" <<'EOF'
import json, sys, platform, subprocess, datetime, statistics
out, rss_idle, rss_peak, rss_after, rss_streams, hold, pinning, smoke = sys.argv[1:9]
order = ["direct", "nginx", "gateway", "litellm", "direct_again", "gateway_cache", "gateway_redis"]

def rounds(rows, key, median, total):
    """One row per key: the median round for `median` fields, sums for `total` fields."""
    groups = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    merged = []
    for rs in groups.values():
        m = json.loads(json.dumps(rs[0]))
        m.pop("round", None)
        m["rounds"] = len(rs)
        for f in median:
            outer, _, inner = f.partition(".")
            vals = [r[outer][inner] if inner else r[outer] for r in rs]
            v = statistics.median(vals)
            if inner: m[outer][inner] = v
            else: m[outer] = v
        for f in total:
            m[f] = sum(r[f] for r in rs)
        merged.append(m)
    return sorted(merged, key=lambda r: (order.index(r["path"]), r.get("concurrency", 0)))

ns_raw = [json.loads(l) for l in open(f"{out}/nonstream.jsonl")]
ns = rounds(ns_raw, lambda r: (r["path"], r["concurrency"]),
            ["rps", "p50_us", "p90_us", "p99_us", "p999_us"], ["requests", "errors", "gateway_cpu_ticks"])
st = [json.loads(l) for l in open(f"{out}/stream.jsonl")]
pr_raw = [json.loads(l) for l in open(f"{out}/probe.jsonl")]
pr = rounds(pr_raw, lambda r: r["path"],
            ["ttft_us.p50", "ttft_us.p99", "delivery_us.p50", "delivery_us.p99", "gap_us.p99"],
            ["requests_ok", "errors", "stalls"])
pb = {r["path"]: r for r in pr}
hold_r = json.load(open(f"{out}/hold.json"))
hold_direct = json.load(open(f"{out}/hold-direct.json"))
by = {(r["path"], r["concurrency"]): r for r in ns}
sb = {r["path"]: r for r in st}
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
res = {"date": datetime.datetime.utcnow().isoformat(timespec="seconds") + "Z", "machine": f"{cpu}, {subprocess.run(['nproc', '--all'], capture_output=True, text=True).stdout.strip()} CPUs",
       "pinning": pinning, "smoke": smoke == "1", "nonstream": ns, "stream": st, "probe": pr, "hold": hold_r, "hold_direct": hold_direct,
       "nonstream_rounds": ns_raw, "probe_rounds": pr_raw,
       "rss_kb": {"idle": int(rss_idle), "under_load": int(rss_peak), "after_load": int(rss_after), f"{hold}_streams": int(rss_streams)},
       "ratios": {}}
concs = sorted({r["concurrency"] for r in ns if r["path"] == "gateway"})
for c in concs:
    g, d, n = by.get(("gateway", c)), by.get(("direct", c)), by.get(("nginx", c))
    if g and n: res["ratios"][f"rps_gateway_over_nginx_c{c}"] = round(g["rps"] / n["rps"], 3)
    if g and d: res["ratios"][f"rps_gateway_over_direct_c{c}"] = round(g["rps"] / d["rps"], 3)
    l = by.get(("litellm", c))
    if g and l and l["rps"] > 0: res["ratios"][f"rps_gateway_over_litellm_c{c}"] = round(g["rps"] / l["rps"], 1)
    if g and d:
        res["ratios"][f"added_p50_us_c{c}"] = g["p50_us"] - d["p50_us"]
        res["ratios"][f"added_p99_us_c{c}"] = g["p99_us"] - d["p99_us"]
    if g and g["requests"]:
        res["ratios"][f"gateway_cpu_s_per_10k_c{c}"] = round(g["gateway_cpu_ticks"] / g["clk_tck"] / g["requests"] * 10000, 3)
# Rate limits in Redis versus in memory (the same gateway otherwise), at c=16.
g, rd = by.get(("gateway", 16)), by.get(("gateway_redis", 16))
if g and rd and g["rps"] > 0 and rd["requests"]:
    res["ratios"]["rps_redis_limits_over_memory_c16"] = round(rd["rps"] / g["rps"], 3)
    res["ratios"]["redis_limits_added_p50_us_c16"] = rd["p50_us"] - g["p50_us"]
    res["ratios"]["redis_limits_added_p99_us_c16"] = rd["p99_us"] - g["p99_us"]
    res["ratios"]["gateway_redis_cpu_s_per_10k_c16"] = round(rd["gateway_cpu_ticks"] / rd["clk_tck"] / rd["requests"] * 10000, 3)
def stream_added(name, rows, a, b, fields=("ttft_us", "delivery_us")):
    """`name_<field>_<pct>_us` = path a minus path b, for each stream field and percentile."""
    if a in rows and b in rows:
        for f in fields:
            for p in ("p50", "p99"):
                res["ratios"][f"{name}_{f[:-3]}_{p}_us"] = round(rows[a][f][p] - rows[b][f][p], 1)

stream_added("stream_added", sb, "gateway", "direct")
stream_added("probe_added", pb, "gateway", "direct")
# A/A: the direct path measured twice; the difference is this machine's noise floor.
a, d = by.get(("direct_again", 1)), by.get(("direct", 1))
if a and d:
    res["ratios"]["noise_direct_vs_direct_p50_us_c1"] = a["p50_us"] - d["p50_us"]
    res["ratios"]["noise_direct_vs_direct_p99_us_c1"] = a["p99_us"] - d["p99_us"]
stream_added("probe_noise_direct_vs_direct", pb, "direct_again", "direct", ("ttft_us",))
stream_added("probe_nginx_added", pb, "nginx", "direct", ("ttft_us",))
json.dump(res, open(f"{out}/results.json", "w"), indent=2)
md = [f"Benchmark {res['date']} on {res['machine']}; pinning: {pinning}{' (smoke run)' if smoke == '1' else ''}; "
      f"each row is the median of {ns[0]['rounds'] if ns else 0} interleaved rounds", "",
      "| path | conc. | req/s | p50 µs | p90 µs | p99 µs | p99.9 µs | errors |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
for r in ns:
    md.append(f"| {r['path']} | {r['concurrency']} | {r['rps']:.0f} | {r['p50_us']} | {r['p90_us']} | {r['p99_us']} | {r['p999_us']} | {r['errors']} |")
md += ["", "| stream path | TTFT p50 µs | TTFT p99 µs | delivery p50 µs | delivery p99 µs | gap p99 µs | stalls | ok/errors |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
for r in st + [dict(r, path=f"{r['path']}, probe: 4 at a time, 16 events 5 ms apart") for r in pr] + [dict(hold_direct, path=f"direct, {hold} streams at once, events 100 ms apart"), dict(hold_r, path=f"gateway, {hold} streams at once, events 100 ms apart")]:
    md.append(f"| {r['path']} | {r['ttft_us']['p50']:.0f} | {r['ttft_us']['p99']:.0f} | {r['delivery_us']['p50']:.0f} | {r['delivery_us']['p99']:.0f} | {r['gap_us']['p99']:.0f} | {r['stalls']} | {r['requests_ok']}/{r['errors']} |")
md += ["", "| gateway RSS | KiB |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in res["rss_kb"].items()]
md += ["", "| ratio / added | value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in res["ratios"].items()]
open(f"{out}/results.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
EOF

# --- fast upstream: what the gateway itself costs, against its HTTP stack's floor ------------
# The mock-path servers stop first, so nothing else shares the proxies' CPU.
cleanup
trap - EXIT
bash bench/fast.sh $([ "$SMOKE" = 1 ] && echo --smoke)

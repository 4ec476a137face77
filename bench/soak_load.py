#!/usr/bin/env python3
"""The load and the verdict of the soak test (bench/soak.sh); python3 standard library only.

    soak_load.py load   --url URL --key KEY --duration S --out STATS.json [--nonstream N]
                        [--stream N] [--abort N] [--rate R] [--hot-share F]
    soak_load.py report --csv RSS.csv --stats STATS.json --warmup S --md OUT.md
                        [--alive 0|1] [--health 0|1] [--idle-rss KB] [--log-lines N]
                        [--min-growth-mb 3] [--growth-pct 10] [--fd-min-growth 32] [--title T]

`load` runs three kinds of client threads against the gateway until the duration is over, each
on its own keep-alive connection (reopened after an error or a deliberate close):
  * non-stream clients: ordinary chat completions, paced so all of them together send at most
    --rate requests/s;
  * stream clients: `"stream": true`, read to `data: [DONE]`, every event parsed;
  * abort clients: open a long stream and drop the connection after 0-4 events, or send a
    non-stream request to a slow upstream answer and hang up before it comes — what a client
    that gives up does; the gateway must clean up the upstream side each time.
Prompts are unique (so they miss the response cache and fill it with new entries) except for
--hot-share of them, drawn from a handful of fixed prompts (so they hit). Anything other than
a complete, well-formed 200 answer is an error, except the deliberate hang-ups.

`report` reads the RSS samples and the load's counters, prints the summary, writes the
Markdown report and exits 1 when the run failed (the method is described in bench/soak.sh).
"""
import argparse
import http.client
import json
import random
import signal
import statistics
import sys
import threading
import time
import urllib.parse

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
         "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
         "memory leak stream cache gateway upstream request answer token model").split()
HOT_PROMPTS = [f"Soak test: the cached question number {i}." for i in range(8)]
STOP = threading.Event()  # SIGTERM/SIGINT: end the run now (bench/soak.sh does, when the gateway died)


class Client(threading.Thread):
    """One client: its own connection, its own counters (merged by the main thread at the end)."""

    def __init__(self, kind, n, args, deadline):
        super().__init__(daemon=True, name=f"{kind}-{n}")
        self.kind, self.args, self.deadline = kind, args, deadline
        self.rng = random.Random(f"{kind}-{n}")
        self.c = {"ok": 0, "errors": 0, "aborts": 0, "hits": 0, "misses": 0, "events": 0}
        self.latency_ms = []  # (start time since the load began, non-stream latency / stream TTFT)
        self.error_samples = []
        self.seq = 0
        self.conn = None
        url = urllib.parse.urlsplit(args.url)
        self.host, self.port = url.hostname, url.port or 80
        self.headers = {"content-type": "application/json", "authorization": f"Bearer {args.key}"}

    # --- helpers ---------------------------------------------------------------------------
    def body(self, stream, knobs, may_hit=True):
        """A request body: a unique prompt with the given mock knobs, or (--hot-share of the
        time) one of the fixed prompts with fixed knobs, the same for streams and non-streams
        (`stream` is not part of the cache key), so it is answered from the cache."""
        if may_hit and self.rng.random() < self.args.hot_share:
            prompt = HOT_PROMPTS[self.rng.randrange(len(HOT_PROMPTS))]
            knobs = {"chunks": 12, "delay_ms": 20}
        else:
            self.seq += 1
            # Unique, and of varied length (the mock echoes it, so answers vary in size too).
            words = " ".join(self.rng.choice(WORDS) for _ in range(self.rng.randint(5, 300)))
            prompt = f"{self.name} #{self.seq}: {words}"
        body = {"model": self.args.model, "messages": [{"role": "user", "content": prompt}],
                "mock": knobs}
        if stream:
            body["stream"] = True
        return body

    def connect(self):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        return self.conn

    def drop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
        self.conn = None

    def error(self, what):
        self.c["errors"] += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{self.name}: {what}"[:300])
        self.drop()
        STOP.wait(0.2)  # no busy loop against a gateway that is down

    def send(self, body):
        conn = self.connect()
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers=self.headers)
        return conn

    def cache_header(self, resp):
        x = (resp.getheader("x-cache") or "").upper()
        if x == "HIT":
            self.c["hits"] += 1
        elif x == "MISS":
            self.c["misses"] += 1

    # --- the three kinds of request ----------------------------------------------------------
    def nonstream(self):
        body = self.body(False, {"chunks": self.rng.randint(1, 16)})
        t0 = time.monotonic()
        resp = self.send(body).getresponse()
        data = resp.read()
        if resp.status != 200:
            return self.error(f"non-stream: HTTP {resp.status}: {data[:200]!r}")
        msg = json.loads(data)["choices"][0]["message"]
        if not msg.get("content"):
            return self.error(f"non-stream: no content in {data[:200]!r}")
        self.cache_header(resp)
        self.latency_ms.append((t0 - self.args.t0, (time.monotonic() - t0) * 1e3))
        self.c["ok"] += 1

    def stream(self, abort_after=None):
        if abort_after is None:
            body = self.body(True, {"chunks": self.rng.randint(4, 24), "delay_ms": self.rng.randint(10, 30)})
        else:  # long enough to hang up in the middle, never from the cache
            body = self.body(True, {"chunks": self.rng.randint(30, 60), "delay_ms": 20}, may_hit=False)
        t0 = time.monotonic()
        resp = self.send(body).getresponse()
        if resp.status != 200:
            return self.error(f"stream: HTTP {resp.status}: {resp.read()[:200]!r}")
        if not (resp.getheader("content-type") or "").startswith("text/event-stream"):
            return self.error(f"stream: content-type {resp.getheader('content-type')}")
        self.cache_header(resp)
        events, finished, done = 0, False, False
        while True:
            if abort_after is not None and events >= abort_after:
                # Hang up mid-stream: close the socket without reading the rest.
                self.drop()
                self.c["aborts"] += 1
                return
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                done = True
                break
            event = json.loads(line[6:])
            if events == 0:
                self.latency_ms.append((t0 - self.args.t0, (time.monotonic() - t0) * 1e3))
            events += 1
            self.c["events"] += 1
            if any(ch.get("finish_reason") for ch in event.get("choices", [])):
                finished = True
        if abort_after is not None:
            return self.error(f"abort stream ended after {events} events, before the hang-up")
        if not (done and finished):
            return self.error(f"stream cut: {events} events, finish={finished}, [DONE]={done}")
        resp.read()  # the end of the chunked body, so the connection can be reused
        self.c["ok"] += 1

    def abort(self):
        if self.rng.random() < 0.25:
            # A non-stream request whose answer takes 300 ms; hang up after 20-150 ms.
            self.send(self.body(False, {"latency_ms": 300}, may_hit=False))
            STOP.wait(self.rng.uniform(0.02, 0.15))
            self.drop()
            self.c["aborts"] += 1
        else:
            self.stream(abort_after=self.rng.randint(0, 4))

    # --- the loop --------------------------------------------------------------------------
    def run(self):
        if self.kind == "nonstream":
            interval = self.args.nonstream / self.args.rate  # s between two requests of one client
            work = self.nonstream
        elif self.kind == "stream":
            interval, work = 0.0, self.stream
        else:
            interval, work = 0.1, self.abort
        next_at = time.monotonic() + self.rng.uniform(0, max(interval, 0.05))
        while time.monotonic() < self.deadline and not STOP.is_set():
            pause = next_at - time.monotonic()
            if pause > 0 and STOP.wait(pause):
                break
            next_at = max(next_at + interval, time.monotonic() - 1.0)
            try:
                work()
            except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError) as e:
                self.error(f"{type(e).__name__}: {e}")
        self.drop()


def load(args):
    args.t0 = time.monotonic()
    deadline = args.t0 + args.duration
    clients = ([Client("nonstream", i, args, deadline) for i in range(args.nonstream)]
               + [Client("stream", i, args, deadline) for i in range(args.stream)]
               + [Client("abort", i, args, deadline) for i in range(args.abort)])
    for c in clients:
        c.start()

    def totals():
        t = {}
        for c in clients:
            for k, v in c.c.items():
                t.setdefault(c.kind, {}).setdefault(k, 0)
                t[c.kind][k] += v
        return t

    every = max(5.0, args.duration / 10)
    while time.monotonic() < deadline and not STOP.is_set():
        STOP.wait(min(every, max(0.0, deadline - time.monotonic())))
        if time.monotonic() < deadline - 1 and not STOP.is_set():
            t = totals()
            print(f"  {time.monotonic() - args.t0:5.0f} s: " + ", ".join(
                f"{k} {v['ok'] + v['aborts']} ({v['errors']} errors)" for k, v in t.items()),
                file=sys.stderr, flush=True)
    # In-flight requests finish (or time out: 30 s per socket operation) after the deadline.
    end = min(deadline, time.monotonic()) + 35
    for c in clients:
        c.join(timeout=max(0.0, end - time.monotonic()))
    stuck = [c.name for c in clients if c.is_alive()]

    def lat(kind):
        """p50/p99 in the first and the last quarter of the run: slowing down is a symptom too."""
        pts = [p for c in clients if c.kind == kind for p in c.latency_ms]
        out = {}
        for name, lo, hi in (("first_quarter", 0, 0.25), ("last_quarter", 0.75, 1.01)):
            v = sorted(ms for t, ms in pts if lo * args.duration <= t < hi * args.duration)
            if v:
                out[name] = {"p50": round(v[len(v) // 2], 2), "p99": round(v[int((len(v) - 1) * 0.99)], 2)}
        return out

    stats = {"duration_s": args.duration, "stopped_early": STOP.is_set(), "wall_s": round(time.monotonic() - args.t0, 1),
             "clients": {"nonstream": args.nonstream, "stream": args.stream, "abort": args.abort},
             "rate_limit_nonstream": args.rate, "hot_share": args.hot_share,
             "totals": totals(), "stuck_clients": stuck,
             "latency_ms": {"nonstream": lat("nonstream"), "stream_ttft": lat("stream")},
             "error_samples": [e for c in clients for e in c.error_samples][:20]}
    with open(args.out, "w") as f:
        json.dump(stats, f, indent=2)


# --- the verdict --------------------------------------------------------------------------------
def theil_sen(ts, ys):
    """Median of the pairwise slopes (robust to outliers, unlike least squares). Subsamples
    evenly to at most 400 points so a long run stays cheap (~80k pairs)."""
    if len(ts) > 400:
        idx = [round(i * (len(ts) - 1) / 399) for i in range(400)]
        ts, ys = [ts[i] for i in idx], [ys[i] for i in idx]
    slopes = [(ys[j] - ys[i]) / (ts[j] - ts[i])
              for i in range(len(ts)) for j in range(i + 1, len(ts)) if ts[j] > ts[i]]
    return statistics.median(slopes) if slopes else 0.0


def trend(ts, ys):
    """Quarter medians and the Theil-Sen slope of one series (the post-warm-up window)."""
    q = max(1, len(ys) // 4)
    first, last = statistics.median(ys[:q]), statistics.median(ys[-q:])
    slope = theil_sen(ts, ys)  # per second
    return {"first_q": first, "last_q": last, "growth": last - first, "slope_s": slope,
            "fit_growth": slope * (ts[-1] - ts[0])}


def report(args):
    rows = []
    with open(args.csv) as f:
        next(f)  # header
        for line in f:
            p = line.strip().split(",")
            if len(p) >= 4:
                rows.append((float(p[0]), int(p[1]), int(p[2]), int(p[3])))
    with open(args.stats) as f:
        stats = json.load(f)
    tot = stats["totals"]
    get = lambda kind, k: tot.get(kind, {}).get(k, 0)
    failures = []

    if not rows:
        failures.append("no RSS samples")
        rows = [(0.0, 0, 0, 0)]
    t = [r[0] for r in rows]
    rss = [r[1] for r in rows]
    fds = [r[3] for r in rows]
    win = [i for i, ti in enumerate(t) if ti >= args.warmup]
    judged = len(win) >= 8
    if not judged:
        failures.append(f"only {len(win)} RSS samples after the {args.warmup:.0f} s warm-up (need 8)")
        win = win if len(win) >= 2 else list(range(len(rows)))  # shown, not judged
    wt = [t[i] for i in win]
    mem = trend(wt, [rss[i] for i in win])
    fd = trend(wt, [fds[i] for i in win])

    # RSS: both the quarter medians and the fitted line must have grown past the allowance.
    allow_kb = max(args.min_growth_mb * 1024, args.growth_pct / 100 * mem["first_q"])
    if judged and mem["growth"] > allow_kb and mem["fit_growth"] > allow_kb:
        failures.append(
            f"RSS keeps growing after warm-up: +{mem['growth'] / 1024:.1f} MiB between the first and "
            f"the last quarter (medians), fitted +{mem['fit_growth'] / 1024:.1f} MiB over the window; "
            f"allowed {allow_kb / 1024:.1f} MiB")
    # Open files (sockets): the same test with its own allowance.
    allow_fd = max(args.fd_min_growth, 0.5 * fd["first_q"])
    if judged and fd["growth"] > allow_fd and fd["fit_growth"] > allow_fd:
        failures.append(f"open file descriptors keep growing: {fd['first_q']:.0f} -> {fd['last_q']:.0f}"
                        f" (allowed +{allow_fd:.0f})")

    ok_ns, ok_st, aborts = get("nonstream", "ok"), get("stream", "ok"), get("abort", "aborts")
    errors = sum(v.get("errors", 0) for v in tot.values())
    if errors:
        failures.append(f"{errors} request(s) failed, e.g. " + "; ".join(stats["error_samples"][:3]))
    for what, kind, n in (("non-stream", "nonstream", ok_ns), ("stream", "stream", ok_st),
                          ("hang-up", "abort", aborts)):
        if stats["clients"][kind] and n == 0:
            failures.append(f"no {what} request completed")
    if stats["stuck_clients"]:
        failures.append(f"clients still waiting 35 s after the end: {', '.join(stats['stuck_clients'][:5])}")
    if not args.alive:
        failures.append("the gateway died during the run" + (" (the load was stopped then)" if stats.get("stopped_early") else ""))
    elif not args.health:
        failures.append("the gateway did not answer GET /health after the load")

    hits = sum(v.get("hits", 0) for v in tot.values())
    misses = sum(v.get("misses", 0) for v in tot.values())
    lat = stats["latency_ms"]
    fmt_lat = lambda d: ", ".join(f"{k.replace('_', ' ')} p50 {v['p50']} / p99 {v['p99']}" for k, v in d.items()) or "-"
    mib = lambda kb: f"{kb / 1024:.1f} MiB"
    verdict = "PASS" if not failures else "FAIL"
    lines = [
        f"# Soak test: {verdict}",
        "",
        f"{args.title}",
        "",
        "| | |",
        "|---|---|",
        f"| duration | {stats['duration_s']:.0f} s load (warm-up {args.warmup:.0f} s), {len(rows)} RSS samples |",
        f"| clients | {stats['clients']['nonstream']} non-stream (≤ {stats['rate_limit_nonstream']:g} req/s together), "
        f"{stats['clients']['stream']} stream, {stats['clients']['abort']} hang-up |",
        f"| requests | {ok_ns + ok_st + aborts} done: {ok_ns} non-stream, {ok_st} stream "
        f"({get('stream', 'events')} events), {aborts} deliberate hang-ups |",
        f"| response cache | {hits} hits, {misses} misses |",
        f"| errors | {errors}" + (f"; the gateway logged {args.log_lines} line(s) at warn or above"
                                   if args.log_lines >= 0 else "") + " |",
        f"| RSS | start {mib(rss[0])}, peak {mib(max(rss))}, end {mib(rss[-1])}"
        + (f", idle after the load {mib(args.idle_rss)}" if args.idle_rss else "") + " |",
        f"| RSS after warm-up | first quarter {mib(mem['first_q'])}, last quarter {mib(mem['last_q'])} "
        f"({mem['growth'] / 1024:+.1f} MiB; allowed +{allow_kb / 1024:.1f} MiB) |",
        f"| RSS slope after warm-up | {mem['slope_s'] * 60:+.0f} KiB/min (Theil-Sen; "
        f"{mem['fit_growth'] / 1024:+.1f} MiB over the window) |",
        f"| open fds | start {fds[0]}, peak {max(fds)}, end {fds[-1]}; after warm-up "
        f"{fd['first_q']:.0f} -> {fd['last_q']:.0f} |",
        f"| threads | start {rows[0][2]}, peak {max(r[2] for r in rows)}, end {rows[-1][2]} |",
        f"| non-stream latency ms | {fmt_lat(lat['nonstream'])} |",
        f"| stream first event ms | {fmt_lat(lat['stream_ttft'])} |",
    ]
    if failures:
        lines += ["", "Failures:", ""] + [f"- {x}" for x in failures]
    text = "\n".join(lines) + "\n"
    with open(args.md, "w") as f:
        f.write(text)
    print(text, end="")
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("--url", required=True)
    lp.add_argument("--key", default="soak")
    lp.add_argument("--model", default="gpt-4o")
    lp.add_argument("--duration", type=float, required=True)
    lp.add_argument("--nonstream", type=int, default=8)
    lp.add_argument("--stream", type=int, default=8)
    lp.add_argument("--abort", type=int, default=4)
    lp.add_argument("--rate", type=float, default=100.0, help="non-stream requests/s, all clients")
    lp.add_argument("--hot-share", type=float, default=0.2)
    lp.add_argument("--out", required=True)
    rp = sub.add_parser("report")
    rp.add_argument("--csv", required=True)
    rp.add_argument("--stats", required=True)
    rp.add_argument("--warmup", type=float, required=True)
    rp.add_argument("--md", required=True)
    rp.add_argument("--alive", type=int, default=1)
    rp.add_argument("--health", type=int, default=1)
    rp.add_argument("--idle-rss", type=int, default=0)
    rp.add_argument("--log-lines", type=int, default=-1, help="lines the gateway logged (shown)")
    rp.add_argument("--min-growth-mb", type=float, default=3.0)
    rp.add_argument("--growth-pct", type=float, default=10.0)
    rp.add_argument("--fd-min-growth", type=float, default=32)
    rp.add_argument("--title", default="")
    args = ap.parse_args()
    if args.cmd == "load":
        if args.rate <= 0:
            ap.error("--rate must be positive")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: STOP.set())
        load(args)
        return 0
    return report(args)


if __name__ == "__main__":
    sys.exit(main())

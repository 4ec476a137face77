#!/usr/bin/env python3
"""How the time to first byte of one request depends on how long the machine was idle before it.

Sends the same streaming chat request over one keep-alive connection, 300 times, pausing GAP
seconds between requests, and prints the median time to first byte and how it splits: request
sent -> the upstream stamped its first event (x_mock_sent_us), and stamp -> arrival.

    target/release/scira2api-mock --addr 127.0.0.1:19250 &
    for g in 0 0.001 0.005 0.05; do python3 bench/idle_gap.py 19250 $g; done

On a VM, a CPU that has been idle for a few milliseconds wakes slowly; a proxy adds hops that
each pay that, which is why streaming time-to-first-token through any proxy costs more here
than back-to-back requests suggest (docs/benchmarks.md).
"""
import json
import socket
import statistics
import sys
import time

port, gap = int(sys.argv[1]), float(sys.argv[2])
body = json.dumps({"model": "gpt-4o", "stream": True,
                   "messages": [{"role": "user", "content": "hi"}],
                   "mock": {"chunks": 2, "delay_ms": 0, "timestamps": True}}).encode()
req = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench\r\n"
       b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ttfb, to_stamp, to_arrival = [], [], []
for _ in range(300):
    time.sleep(gap)
    t0 = time.time()
    s.sendall(req)
    buf, t1 = b"", None
    while not buf.endswith(b"0\r\n\r\n"):
        chunk = s.recv(65536)
        if t1 is None:
            t1 = time.time()
        buf += chunk
    i = buf.find(b'"x_mock_sent_us":')
    stamp = int(buf[i + 17:i + 33]) / 1e6
    ttfb.append((t1 - t0) * 1e6)
    to_stamp.append((stamp - t0) * 1e6)
    to_arrival.append((t1 - stamp) * 1e6)
med = lambda v: statistics.median(v[20:])
print(f"gap {gap * 1000:g} ms: first byte {med(ttfb):.0f} us "
      f"(request -> first event stamped {med(to_stamp):.0f} us, stamp -> arrival {med(to_arrival):.0f} us)")

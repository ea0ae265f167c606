#!/usr/bin/env python3
"""A worker that writes --rate lines per second to stdout (in a batch every
10 ms, each line ~80 bytes, like an access log) until SIGUSR2 or SIGTERM.
Run with `python3 -S`."""
import os, signal, sys, time

args = sys.argv[1:]
rate = int(args[args.index("--rate") + 1]) if "--rate" in args else 1000
signal.signal(signal.SIGUSR2, lambda s, f: sys.exit(0))
pid = os.getpid()
n = 0
tick = 0.01
per_tick = max(1, rate // 100)
next_at = time.monotonic()
while True:
    batch = b"".join(b"%d GET /api/items/%d 200 1234 0.003 \"Mozilla/5.0 (bench)\" req=%08d\n" % (pid, (n + i) % 997, n + i) for i in range(per_tick))
    n += per_tick
    os.write(1, batch)
    next_at += tick
    delay = next_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)

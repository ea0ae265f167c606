#!/usr/bin/env python3
"""The lightest useful Einhorn worker: with --ack it sends the manual ACK
(over EINHORN_SOCK_FD when given, else EINHORN_SOCK_PATH), then does nothing
until a signal. SIGUSR2 exits 0; SIGTERM kills it.
--delay MS first sleeps MS milliseconds: a worker that takes that long to load
before it can serve (rollout-time). --burn MS instead keeps one CPU busy until
the process has used MS milliseconds of CPU (interpreter start included): a
worker whose start is CPU-bound (rollout-limit). With --delay-while PATH
either happens only while that file exists, so a benchmark can start its
first generation quickly and time the upgrade's.
Run with `python3 -S` so start-up time is the interpreter's, not site's."""
import os
import signal
import socket
import sys
import time

args = sys.argv[1:]


def opt(name):
    return args[args.index(name) + 1] if name in args else None


signal.signal(signal.SIGUSR2, lambda *_: sys.exit(0))
delay = opt("--delay")
burn = opt("--burn")
slow = opt("--delay-while") is None or os.path.exists(opt("--delay-while"))
if delay is not None and slow:
    time.sleep(int(delay) / 1000.0)
if burn is not None and slow:
    target = int(burn) / 1000.0
    while time.process_time() < target:
        sum(range(1000))

if "--ack" in args:
    line = ('{"command":"worker:ack","pid":%d}\n' % os.getpid()).encode()
    fd = os.environ.get("EINHORN_SOCK_FD")
    if fd is not None:
        os.write(int(fd), line)
        os.close(int(fd))
    else:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(os.environ["EINHORN_SOCK_PATH"])
        conn.sendall(line)
        conn.close()

while True:
    signal.pause()

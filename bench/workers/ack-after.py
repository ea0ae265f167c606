#!/usr/bin/env python3
"""ack-now.py with a start-up delay: sleeps DELAY_MS milliseconds (first
argument), then sends the manual ACK (EINHORN_SOCK_FD when given, else
EINHORN_SOCK_PATH) and waits for a signal. SIGUSR2 exits 0. Stands in for a
worker that takes DELAY_MS to load before it can serve (rollout-time).
With a second argument, a path, it delays only while that file exists, so a
benchmark can start its first generation quickly and time the upgrade's."""
import os
import signal
import socket
import sys
import time

signal.signal(signal.SIGUSR2, lambda *_: sys.exit(0))
if len(sys.argv) < 3 or os.path.exists(sys.argv[2]):
    time.sleep(int(sys.argv[1]) / 1000.0)
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

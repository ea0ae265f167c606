#!/usr/bin/env python3
"""The lightest useful Einhorn worker: with --ack it sends the manual ACK the
moment it starts (over EINHORN_SOCK_FD when given, else EINHORN_SOCK_PATH),
then does nothing until a signal. SIGUSR2 exits 0; SIGTERM kills it.
Run with `python3 -S` so start-up time is the interpreter's, not site's."""
import os
import signal
import socket
import sys

if "--ack" in sys.argv:
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

signal.signal(signal.SIGUSR2, lambda *_: sys.exit(0))
while True:
    signal.pause()

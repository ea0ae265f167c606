#!/usr/bin/env python3
"""A worker written for systemd socket activation (sd_listen_fds), unmodified
under einhorn with --listen-fds:

    einhorn --listen-fds -n 2 -b 127.0.0.1:8082,name=time -- python3 examples/listen-fds-worker.py

It checks LISTEN_PID is its own pid (as sd_listen_fds does), takes its sockets
from fd 3 on, and tells each client the time. It knows nothing about einhorn:
with timer ACKs (-m, the default) einhorn counts it up once it has lived a second.
"""
import os, signal, socket, sys, threading, time

SD_LISTEN_FDS_START = 3


def listen_fds():
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("LISTEN_PID is %r, not my pid %d: these sockets are not for me" % (os.environ.get("LISTEN_PID"), os.getpid()))
    n = int(os.environ.get("LISTEN_FDS", "0"))
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    return [(SD_LISTEN_FDS_START + i, names[i] if i < len(names) else "unknown") for i in range(n)]


def serve(fd, name):
    s = socket.socket(fileno=fd)
    while True:
        conn, _ = s.accept()
        with conn:
            conn.sendall(("%s %s from pid %d\n" % (name, time.strftime("%Y-%m-%dT%H:%M:%S"), os.getpid())).encode())


def main():
    fds = listen_fds()
    if not fds:
        sys.exit("no sockets passed (LISTEN_FDS is 0 or unset)")
    for fd, name in fds:
        threading.Thread(target=serve, args=(fd, name), daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGUSR2, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""An HTTP worker in plain Python (standard library only) for einhorn.

    einhorn -n 3 -m manual -b 127.0.0.1:8080,n -- python3 examples/python-worker.py

It serves on the socket einhorn passes in EINHORN_FD_0, ACKs with the raw JSON
line every Einhorn worker library sends, and on SIGUSR2 stops accepting,
finishes what it is serving (answering with `Connection: close`) and exits.
"""
import json, os, signal, socket, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Draining:
    """Set once from the SIGUSR2 handler; read by request threads and the main loop."""
    flag = False

    def set_flag(self):
        self.flag = True

    def is_set(self):
        return self.flag


draining = Draining()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # An idle keep-alive connection is closed after this many seconds; without
    # it a client that keeps one open would hold a draining worker forever.
    timeout = 2
    # Headers and body go out in two writes; with Nagle's algorithm on, the
    # second waits for the client's delayed ACK (40 ms) on every keep-alive
    # request: 320 req/s instead of 28,000 under wrk -t2 -c16 on 4 workers.
    disable_nagle_algorithm = True

    def do_GET(self):
        body = ("Hello from python worker %d (index %s)\n" % (os.getpid(), os.environ.get("EINHORN_CHILD_INDEX", "-"))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if draining.is_set():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def ack():
    """Tell the master this worker is up: one JSON line on the command socket."""
    line = (json.dumps({"command": "worker:ack", "pid": os.getpid()}) + "\n").encode()
    if "EINHORN_SOCK_FD" in os.environ:  # einhorn -g: already connected
        os.write(int(os.environ["EINHORN_SOCK_FD"]), line)
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(os.environ["EINHORN_SOCK_PATH"])
        c.sendall(line)


def main():
    if "EINHORN_FD_0" not in os.environ:
        sys.exit("run me under einhorn: einhorn -b 127.0.0.1:8080 -m manual -- python3 %s" % sys.argv[0])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = socket.socket(fileno=int(os.environ["EINHORN_FD_0"]))
    # socketserver waits in select() and then accepts. The listening socket is
    # shared by every worker, so another worker may take the connection in
    # between: a blocking accept() would then hang until the next one comes,
    # and a draining worker would never stop. Non-blocking, that accept just
    # fails with EAGAIN. This is what einhorn's `,n` bind flag is for; set it
    # here too in case the master was started without it.
    server.socket.setblocking(False)
    server.daemon_threads = False  # finish in-flight requests before exiting
    server.block_on_close = True

    # The signal handler only flips a flag: starting a thread (or taking any
    # lock) inside a Python signal handler can deadlock when the signal lands
    # while the main thread holds that lock, e.g. inside Thread.start().
    def on_usr2(signum, frame):
        draining.set_flag()

    signal.signal(signal.SIGUSR2, on_usr2)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    serving.start()
    ack()
    while not draining.flag:
        time.sleep(0.1)
    server.shutdown()       # stop accepting; the kernel queue belongs to the other workers
    server.server_close()   # joins the request threads: in-flight requests finish
    serving.join()


if __name__ == "__main__":
    main()

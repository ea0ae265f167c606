# uvicorn under einhorn, from a launcher that gives uvicorn einhorn's drain:
#   einhorn -n 2 -m 2 -b 0.0.0.0:8080 -- python3 asgi_app.py
#
# uvicorn --fd serves the inherited socket, but on its graceful stop (TERM)
# it closes idle keep-alive connections at once, racing with clients that are
# reusing them. So on einhorn's retire signal (USR2) this launcher first stops
# accepting (the other workers take new connections), answers every request
# with `Connection: close` for a grace period, and only then asks uvicorn to
# stop.
import os
import signal
import threading

import uvicorn

GRACE_SECONDS = 2.0
draining = False


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    body = f"hello from uvicorn, worker {os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    """The application, plus `Connection: close` on every response once draining."""
    async def send_closing(message):
        if draining and message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)
    await hello(scope, receive, send_closing)


server = uvicorn.Server(uvicorn.Config(app, fd=int(os.environ["EINHORN_FD_0"]), access_log=False))


def retire(signum, frame):
    global draining
    draining = True
    for s in server.servers:
        s.close()  # stop accepting; open connections stay
    threading.Timer(GRACE_SECONDS, lambda: setattr(server, "should_exit", True)).start()


signal.signal(signal.SIGUSR2, retire)
server.run()

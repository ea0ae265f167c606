# A WSGI app for gunicorn under einhorn (TERM is gunicorn's graceful stop; USR2 would re-exec it):
#   einhorn -n 2 -m 2 --retire-signal TERM -b 0.0.0.0:8080 -- \
#     sh -c 'exec gunicorn --bind "fd://$EINHORN_FD_0" --workers 2 wsgi_app:app'
import os


def app(environ, start_response):
    body = f"hello from gunicorn, worker {os.getppid()}/{os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

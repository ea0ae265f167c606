# puma under einhorn. Puma takes the socket the systemd way (--listen-fds)
# when its -b names the same address:
#   einhorn -n 2 -m 2 --retire-signal QUIT --listen-fds -b 127.0.0.1:8080 -- \
#     puma -b tcp://127.0.0.1:8080 config.ru
#
# USR2 means "restart" to puma, and on its graceful stop (TERM) puma keeps
# serving keep-alive connections that stay busy. So einhorn retires it with
# QUIT, which this file handles:
#  1. puma stops taking connections from the shared socket: its descriptor
#     (fd 3, the first LISTEN_FDS socket) is replaced by a private listener
#     nobody connects to. Puma has no switch for "stop accepting, keep
#     serving"; its TERM closes connections that have not sent a byte yet,
#     and a client that just connected to an old worker then loses its request.
#  2. every response says `Connection: close` for a grace period, so busy
#     clients reconnect, to the other workers;
#  3. then TERM, when this worker holds no connection a client is using.
require "socket"

GRACE_SECONDS = 2
FIRST_LISTEN_FD = 3
$draining = false

Signal.trap("QUIT") do
  next if $draining
  $draining = true
  Thread.new do
    private_listener = TCPServer.new("127.0.0.1", 0)
    # dup2 over puma's own descriptor: the shared socket stays open in einhorn
    # and the other workers; here, puma's accept loop now waits on a socket
    # no client knows.
    IO.for_fd(FIRST_LISTEN_FD, autoclose: false).reopen(private_listener)
    private_listener.close
    sleep GRACE_SECONDS
    Process.kill("TERM", Process.pid)
  end
end

class CloseWhenDraining
  def initialize(app) = @app = app

  def call(env)
    status, headers, body = @app.call(env)
    headers = headers.merge("connection" => "close") if $draining
    [status, headers, body]
  end
end

use CloseWhenDraining
run ->(env) { [200, { "content-type" => "text/plain" }, ["hello from puma, worker #{Process.pid}\n"]] }

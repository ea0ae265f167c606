# puma under einhorn. Puma takes the socket the systemd way (--listen-fds)
# when its -b names the same address:
#   einhorn -n 2 -m 2 --retire-signal QUIT --listen-fds -b 127.0.0.1:8080 -- \
#     puma -b tcp://127.0.0.1:8080 config.ru
#
# USR2 means "restart" to puma, and on its graceful stop (TERM) puma keeps
# serving keep-alive connections that stay busy. So einhorn retires it with
# QUIT, which this file handles: every response says `Connection: close` for
# a grace period (busy clients reconnect to the other workers), then TERM.
GRACE_SECONDS = 2
$draining = false

Signal.trap("QUIT") do
  $draining = true
  Thread.new { sleep GRACE_SECONDS; Process.kill("TERM", Process.pid) }
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

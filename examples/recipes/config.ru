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
#  2. every response says `Connection: close`, so busy clients reconnect, to
#     the other workers;
#  3. TERM once this process holds no established TCP connection (Linux:
#     its socket descriptors against /proc/net/tcp{,6}), or after
#     DRAIN_LIMIT_SECONDS for clients that stay idle on keep-alive. A fixed
#     grace is a guess: on a busy machine a response can take longer than it,
#     and TERM then cuts a request in flight.
require "socket"

FIRST_LISTEN_FD = 3
DRAIN_POLL_SECONDS = 0.1
DRAIN_LIMIT_SECONDS = 30
ESTABLISHED = "01" # TCP state column of /proc/net/tcp
$draining = false

# Socket inodes of this process's TCP connections that are still established
# (a client that closed its end shows as CLOSE_WAIT and no longer counts).
def established_connections
  mine = Dir.children("/proc/self/fd").filter_map do |fd|
    File.readlink("/proc/self/fd/#{fd}")[/\Asocket:\[(\d+)\]\z/, 1]
  rescue SystemCallError
    nil
  end
  return 0 if mine.empty?
  ours = mine.to_h { |inode| [inode, true] }
  %w[/proc/self/net/tcp /proc/self/net/tcp6].sum do |table|
    File.foreach(table).drop(1).count do |row|
      cols = row.split
      cols[3] == ESTABLISHED && ours[cols[9]]
    end
  rescue SystemCallError
    0
  end
end

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
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    loop do
      open_now = established_connections
      waited = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
      if open_now.zero?
        $stderr.puts "puma #{Process.pid}: drained in #{waited.round(1)}s; stopping"
        break
      end
      if waited >= DRAIN_LIMIT_SECONDS
        $stderr.puts "puma #{Process.pid}: #{open_now} connection(s) still open after #{DRAIN_LIMIT_SECONDS}s; stopping anyway"
        break
      end
      sleep DRAIN_POLL_SECONDS
    end
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

// A TCP port on 127.0.0.1 that was free a moment ago, for the few places that
// must name a port before anything binds it (a server told its address on the
// command line, a bench comparing einhorn with a server that binds itself).
// Shared by tests and benches; it can race with another process taking the
// port, which is why everything else binds port 0 instead.
import * as sock from "../ffi/socket";

export function freeTcpPort(): number {
  const fd = sock.socket("inet");
  try {
    sock.bind(fd, { family: "inet", host: "127.0.0.1", port: 0 });
    const a = sock.getsockname(fd);
    return a.family === "inet" ? a.port : 0;
  } finally {
    sock.close(fd);
  }
}

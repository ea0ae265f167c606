// The data-path benchmark's HTTP worker: one program, two ways to get its
// listening socket, the same serving code after that.
//
//   under einhorn:            serve() on the inherited EINHORN_FD_0, ACK once listening
//   BENCH_REUSEPORT=HOST:PORT  bind HOST:PORT itself with SO_REUSEPORT (run N copies),
//                             then serve() on that descriptor; no master, no ACK
//
// Every request gets a small fixed body, so the benchmark measures the socket
// path and the HTTP stack, not the handler.
import { serve } from "einhorn/worker";
import * as sock from "../../ffi/socket";

const BODY = "hello from an einhorn bench worker\n";
const fetch = () => new Response(BODY, { headers: { "content-type": "text/plain" } });

const own = process.env.BENCH_REUSEPORT;
if (own) {
  const m = own.match(/^(.+):(\d+)$/);
  if (!m) throw new Error(`BENCH_REUSEPORT=${own}: expected HOST:PORT`);
  const fd = sock.socket("inet");
  sock.setsockoptInt(fd, sock.SOL_SOCKET, sock.SO_REUSEPORT, 1);
  sock.bind(fd, { family: "inet", host: m[1]!, port: Number(m[2]) });
  // The backlog einhorn uses by default (-l 100), so both setups queue alike.
  sock.listen(fd, Number(process.env.BENCH_BACKLOG ?? 100));
  await serve({ fetch, fd, ack: false, drainTimeoutMs: 5000 });
  console.log(`reuseport worker ${process.pid} listening on ${own}`);
} else {
  await serve({ fetch, drainTimeoutMs: 5000 });
}

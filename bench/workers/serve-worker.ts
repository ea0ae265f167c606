// The serve-throughput benchmark's Bun worker: one fetch handler, served two ways.
//   under einhorn:                 serve({ fetch }) from einhorn/worker (Bun.serve adopted onto EINHORN_FD_0)
//   BENCH_BUN_REUSEPORT=PORT        Bun.serve({ port: PORT, reusePort: true, fetch }) on 127.0.0.1, no master
import { serve } from "einhorn/worker";

const BODY = "hello from an einhorn bench worker\n";
const fetch = () => new Response(BODY, { headers: { "content-type": "text/plain" } });

const port = process.env.BENCH_BUN_REUSEPORT;
if (port) {
  Bun.serve({ port: Number(port), hostname: "127.0.0.1", reusePort: true, fetch });
  console.log(`Bun.serve reusePort worker ${process.pid} listening on 127.0.0.1:${port}`);
} else {
  const s = await serve({ fetch, drainTimeoutMs: 5000 });
  console.log(`serve() worker ${process.pid}, engine ${s.engine}`);
}

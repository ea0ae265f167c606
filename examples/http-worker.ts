// An HTTP worker with graceful shutdown, using serve() from einhorn/worker.
//
//   einhorn -b 127.0.0.1:8080 -n 4 -m manual -- bun examples/http-worker.ts
//   curl http://127.0.0.1:8080/
//   curl 'http://127.0.0.1:8080/slow?ms=5000' &  einhorn sh -e upgrade   # the slow request still completes
//
// serve() listens on the socket einhorn passes (EINHORN_FD_0), ACKs once it
// is listening, and on SIGUSR2 stops accepting, lets in-flight requests
// finish, closes idle keep-alive connections and exits 0. Outside einhorn it
// binds $PORT (default 3000), so `bun examples/http-worker.ts` works too.
import { childIndex, onGracefulShutdown, serve } from "einhorn/worker";

const started = new Date().toISOString();

const server = await serve({
  drainTimeoutMs: 30_000,
  async fetch(req) {
    const url = new URL(req.url);
    if (url.pathname === "/slow") {
      const ms = Math.min(Number(url.searchParams.get("ms") ?? 1000), 60_000);
      await Bun.sleep(ms);
      return new Response(`slept ${ms} ms in worker ${process.pid}\n`);
    }
    if (url.pathname === "/health") return Response.json({ ok: true, pid: process.pid, index: childIndex(), started });
    return new Response(`Hello from worker ${process.pid} (index ${childIndex() ?? "-"})\n`, {
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  },
});

onGracefulShutdown(() => {
  console.error(`worker ${process.pid}: draining ${server.connectionCount()} connection(s), then exiting`);
});

if (!server.underEinhorn) console.log(`listening on http://localhost:${server.port}/ (not under einhorn)`);

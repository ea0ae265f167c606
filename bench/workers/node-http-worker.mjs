// The serve-throughput benchmark's Node worker: one node:http server, on
// einhorn's socket two ways.
//   default:             listen(server) from the einhorn package (pkg/worker.js, built by scripts/build-package.ts)
//   BENCH_NODE_DIRECT=1  server.listen({ fd: EINHORN_FD_0 }): Node's own listen on the same descriptor, no helper
import http from "node:http";

const BODY = "hello from an einhorn bench worker\n";
const server = http.createServer((req, res) => {
  res.setHeader("content-type", "text/plain");
  res.end(BODY);
});

if (process.env.BENCH_NODE_DIRECT) {
  server.listen({ fd: Number(process.env.EINHORN_FD_0) }, () => console.log(`node direct worker ${process.pid}`));
} else {
  const { listen } = await import("../../pkg/worker.js");
  await listen(server, { drainTimeoutMs: 5000 });
  console.log(`node listen() worker ${process.pid}`);
}

// A plain Node http server under einhorn:  einhorn -n 2 -m manual -b 0.0.0.0:8080 -- node node-http.mjs
import http from "node:http";
import { listen } from "einhorn/worker";

const server = http.createServer((req, res) => {
  res.setHeader("content-type", "text/plain");
  res.end(`hello from node http, worker ${process.pid}\n`);
});
await listen(server); // the inherited socket under einhorn (ACK, drain on USR2); PORT otherwise

// Koa under einhorn:  einhorn -n 2 -m manual -b 0.0.0.0:8080 -- node koa.mjs
import http from "node:http";
import Koa from "koa";
import { listen } from "einhorn/worker";

const app = new Koa();
app.use((ctx) => { ctx.type = "text/plain"; ctx.body = `hello from koa, worker ${process.pid}\n`; });
await listen(http.createServer(app.callback()));

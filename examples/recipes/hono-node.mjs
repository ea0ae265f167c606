// Hono on Node under einhorn:  einhorn -n 2 -m manual -b 0.0.0.0:8080 -- node hono-node.mjs
import { Hono } from "hono";
import { createAdaptorServer } from "@hono/node-server";
import { listen } from "einhorn/worker";

const app = new Hono();
app.get("/", (c) => c.text(`hello from hono on node, worker ${process.pid}\n`));
await listen(createAdaptorServer({ fetch: app.fetch }));

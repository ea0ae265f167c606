// Hono on Bun under einhorn:  einhorn -n 2 -m manual -b 0.0.0.0:8080 -- bun hono-bun.ts
import { Hono } from "hono";
import { serve } from "einhorn/worker";

const app = new Hono();
app.get("/", (c) => c.text(`hello from hono on bun, worker ${process.pid}\n`));
await serve({ fetch: app.fetch }); // Bun.serve on the inherited socket

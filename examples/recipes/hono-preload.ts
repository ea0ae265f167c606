// Hono as an einhorn -p module (no Bun needed on the server; hono from this project's node_modules):
//   einhorn -n 2 -m manual -b 0.0.0.0:8080 -p ./hono-preload.ts
import { Hono } from "hono";
import { serve } from "einhorn/worker";

const app = new Hono();
app.get("/", (c) => c.text(`hello from hono under -p, worker ${process.pid}\n`));

export async function einhorn_main() {
  await serve({ fetch: app.fetch });
}

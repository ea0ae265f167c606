// A fetch handler on Bun under einhorn:  einhorn -n 2 -m manual -b 0.0.0.0:8080 -- bun fetch-bun.ts
import { serve } from "einhorn/worker";

await serve({
  fetch: (req) => new Response(`hello from bun, worker ${process.pid}\n`, { headers: { "content-type": "text/plain" } }),
});

// A fetch handler as an einhorn -p module:  einhorn -n 2 -m manual -b 0.0.0.0:8080 -p ./fetch-preload.ts
import { serve } from "einhorn/worker";

export async function einhorn_main() {
  await serve({ fetch: () => new Response(`hello from a -p module, worker ${process.pid}\n`) });
}

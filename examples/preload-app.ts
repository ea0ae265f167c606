// A preload module: `einhorn -p` runs each worker from this module's
// einhorn_main with the Bun runtime built into the einhorn binary, so the
// server needs no Bun of its own.
//
//   einhorn -p examples/preload-app.ts -n 2 -m manual -b 127.0.0.1:8083 -- --greeting hi
//
// The module is loaded in a throwaway process before any worker starts and
// before every upgrade: a syntax error or a missing einhorn_main is reported
// at once instead of as a crash loop. Arguments after `--` are process.argv.slice(2).
import { serve } from "einhorn/worker";

export async function einhorn_main(): Promise<void> {
  const i = process.argv.indexOf("--greeting");
  const greeting = i >= 0 ? process.argv[i + 1] : "hello";
  await serve({
    fetch: () => new Response(`${greeting} from preloaded worker ${process.pid}\n`, { headers: { "content-type": "text/plain" } }),
  });
}

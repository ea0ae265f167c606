// `einhorn _preload [--check] PATH [-- ARGS...]`: run a worker from a
// Bun/TypeScript module that exports `einhorn_main`, with the Bun runtime
// built into this binary (no Bun needed on the server).
//
// A JavaScript runtime cannot fork, so unlike Ruby Einhorn's preload the
// module is not loaded once and shared copy-on-write: each worker loads it
// itself. What preload gives here is a checked start (a syntax error or a
// missing einhorn_main is reported before any worker starts, and before every
// upgrade) and no separate runtime to install.
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const PRELOAD_ENTRY = "einhorn_main";

/**
 * The files -p can preload: what Bun loads as a module. Anything else
 * (`app.rb`, `app.py`, an extensionless script) is not ours to load; as
 * Einhorn "proceeds with postload" when it cannot preload, the master then
 * warns and runs PROGRAM as given.
 */
const MODULE_EXTENSIONS = [".ts", ".tsx", ".mts", ".cts", ".js", ".jsx", ".mjs", ".cjs"];

export function isPreloadModule(path: string): boolean {
  return MODULE_EXTENSIONS.some((ext) => path.toLowerCase().endsWith(ext));
}

let registered = false;

/**
 * Make `import ... from "einhorn/worker"` resolve to the worker helper built
 * into this binary, so a preload module needs no node_modules on the server.
 */
function registerWorkerModule(): void {
  if (registered) return;
  registered = true;
  Bun.plugin({
    name: "einhorn-worker-helper",
    setup(build) {
      build.module("einhorn/worker", async () => ({ exports: await import("../worker/index"), loader: "object" }));
    },
  });
}

async function loadPreload(path: string): Promise<() => unknown> {
  registerWorkerModule();
  const abs = isAbsolute(path) ? path : resolve(path);
  const mod = (await import(pathToFileURL(abs).href)) as Record<string, unknown>;
  const main = mod[PRELOAD_ENTRY] ?? (mod.default as Record<string, unknown> | undefined)?.[PRELOAD_ENTRY];
  if (typeof main !== "function") {
    const has = Object.keys(mod).filter((k) => k !== "default");
    throw new Error(`${path} does not export a function named ${PRELOAD_ENTRY} (it exports: ${has.length ? has.join(", ") : "nothing"})`);
  }
  return main as () => unknown;
}

/** Load the module in this (throwaway) process; a one-line reason on failure. */
export async function checkPreload(path: string): Promise<string | null> {
  try {
    await loadPreload(path);
    return null;
  } catch (e) {
    const err = e as Error & { position?: { line?: number; column?: number } };
    const where = err.position?.line ? ` (line ${err.position.line})` : "";
    return `${err.message.split("\n")[0]}${where}`;
  }
}

export async function runPreload(argv: string[]): Promise<void> {
  const check = argv[0] === "--check";
  const rest = check ? argv.slice(1) : argv;
  const path = rest[0];
  if (!path) {
    process.stderr.write("einhorn _preload: no module path given\n");
    process.exit(2);
  }
  if (check) {
    const why = await checkPreload(path);
    if (why) {
      process.stderr.write(`einhorn: preload ${path}: ${why}\n`);
      process.exit(1);
    }
    process.exit(0);
  }
  const args = rest[1] === "--" ? rest.slice(2) : rest.slice(1);
  let main: () => unknown;
  try {
    main = await loadPreload(path);
  } catch (e) {
    process.stderr.write(`einhorn _preload: ${(e as Error).message}\n`);
    process.exit(1);
  }
  // The module sees itself as the script and ARGS as its arguments.
  process.argv = [process.argv[0]!, resolve(path), ...args];
  await main();
}

// The one way einhorn's standalone executable is built. scripts/build.ts (the
// development binary dist/einhorn) and scripts/release.ts (the release set)
// both call compileEinhorn, so a release binary can never be built with other
// options than the one the test suite exercised.
import { mkdirSync, mkdtempSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");

/**
 * Release targets: our name (in file names and `--version`) and Bun's
 * compile target. Foreign runtimes are fetched by Bun from the npm registry
 * (@oven/bun-linux-*) on first use and cached in ~/.bun/install/cache.
 */
export const RELEASE_TARGETS = {
  "linux-x64": "bun-linux-x64",
  // For x86-64 CPUs without AVX2 (before Haswell, some virtual machines).
  "linux-x64-baseline": "bun-linux-x64-baseline",
  "linux-arm64": "bun-linux-arm64",
  // musl systems (Alpine): ffi/c-library.ts finds musl's libc at start-up.
  "linux-x64-musl": "bun-linux-x64-musl",
  "linux-arm64-musl": "bun-linux-arm64-musl",
} as const;

export type ReleaseTarget = keyof typeof RELEASE_TARGETS;

export interface CompileOptions {
  outfile: string;
  /** A release target; omitted: the running Bun's own platform (development build). */
  target?: ReleaseTarget;
  /** Baked into the version label (einhorn 0.1.0+TAG), e.g. to tell two builds apart in a re-exec test. */
  tag?: string;
}

export interface Compiled {
  outfile: string;
  bytes: number;
  ms: number;
}

export async function compileEinhorn(opts: CompileOptions): Promise<Compiled> {
  const outfile = resolve(opts.outfile);
  mkdirSync(dirname(outfile), { recursive: true });
  // Bun writes a .map file per chunk beside the binary, with hashed names that
  // pile up build after build. The source map is also embedded in the binary
  // (that is what makes an internal error's stack trace name our source
  // files), so the files are not needed: build in a scratch directory beside
  // the target (same file system, so the rename is atomic) and keep only the
  // executable.
  const scratch = mkdtempSync(join(dirname(outfile), ".build-"));
  try {
    return await compileInto(join(scratch, "einhorn"), outfile, opts);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

async function compileInto(scratchFile: string, outfile: string, opts: CompileOptions): Promise<Compiled> {
  const define: Record<string, string> = {};
  if (opts.tag) define.__EINHORN_BUILD_TAG__ = JSON.stringify(opts.tag);
  if (opts.target) define.__EINHORN_TARGET__ = JSON.stringify(opts.target);
  const started = performance.now();
  const result = await Bun.build({
    entrypoints: [resolve(ROOT, "src/cli/main.ts")],
    compile: {
      outfile: scratchFile,
      ...(opts.target ? { target: RELEASE_TARGETS[opts.target] } : {}),
      // A server tool must not change behaviour with the directory it is started
      // in: a compiled Bun binary would otherwise load `.env` (into the master's
      // and so every worker's environment) and `bunfig.toml` from the cwd.
      autoloadDotenv: false,
      autoloadBunfig: false,
      // ... but a `-p` module is a Bun program of the user's and resolves its npm
      // packages from its own node_modules like one (this also reads the nearest
      // package.json for "imports"/"type"; see test/integration/build-flags.test.ts).
      autoloadPackageJson: true,
    },
    minify: true,
    // Precompiled bytecode: `einhorn --version` 32.7 -> 10.9 ms and the idle
    // master 1.2 MB smaller than parsing the bundle at every start (measured
    // side by side with hyperfine; see bench/results/startup.json).
    bytecode: true,
    format: "esm",
    // Split at dynamic imports: each chunk, and the Node built-ins it imports
    // (node:http, node:net, node:readline and the streams behind them), loads
    // only when its code path runs. One bundle loaded them all at every start:
    // `einhorn --version` 9.5 -> 6 ms of CPU, and every process an upgrade
    // starts (the shell, the preflight, the master's next image) pays it.
    splitting: true,
    sourcemap: "linked",
    define,
  });
  if (!result.success) {
    throw new Error(`building ${outfile}${opts.target ? ` for ${opts.target}` : ""} failed:\n${result.logs.map(String).join("\n")}`);
  }
  renameSync(scratchFile, outfile);
  return { outfile, bytes: statSync(outfile).size, ms: performance.now() - started };
}

// Build what the npm package `einhorn` ships for `import ... from "einhorn/worker"`:
//   pkg/worker.js   one ES module for Node >= 18 and Bun, no dependencies
//                   (the Bun-only part, which needs bun:ffi, is a separate
//                   chunk that only Bun ever loads)
//   pkg/types/...   the .d.ts files (exports "types")
// Run by `npm pack` / `npm publish` (the "prepack" script), so installing the
// package needs no build step. In this repository, "einhorn/worker" resolves
// to the TypeScript source instead (tsconfig.json "paths").
//   bun scripts/build-package.ts [--no-types]
// --no-types skips the .d.ts files (tests that only run the module).
//
// pkg/ is never half-written: the build goes to a staging folder beside it,
// then each file is renamed into place (rename(2) replaces a file atomically)
// and files the build no longer makes are removed. Several writers can run
// at once (the test suite runs files side by side: `npm pack` in one, the
// release build in another, a test whose Node workers import pkg/worker.js in
// a third), and a reader never meets a missing or truncated file: the same
// sources give the same content-hashed names.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const out = join(root, "pkg");
const staging = mkdtempSync(join(root, ".pkg-build-"));
process.on("exit", () => rmSync(staging, { recursive: true, force: true }));

const started = performance.now();
const result = await Bun.build({
  entrypoints: [join(root, "src/worker/index.ts")],
  outdir: staging,
  target: "node",
  format: "esm",
  splitting: true,
  external: ["bun:ffi"],
  naming: { entry: "worker.js", chunk: "worker-[name]-[hash].js" },
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
const withTypes = !process.argv.includes("--no-types");
const tsc = !withTypes ? { exitCode: 0 } : Bun.spawnSync([process.execPath, join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.package.json"), "--outDir", join(staging, "types")], { cwd: root, stdout: "inherit", stderr: "inherit" });
if (tsc.exitCode !== 0) process.exit(1);
// Node's ESM resolution (moduleResolution node16/nodenext in a user's
// tsconfig) wants explicit extensions on relative imports; tsc writes the
// specifiers as our sources spell them (none).
for (const entry of withTypes ? readdirSync(join(staging, "types"), { recursive: true, withFileTypes: true }) : []) {
  if (!entry.isFile() || !entry.name.endsWith(".d.ts")) continue;
  const file = join(entry.parentPath, entry.name);
  const text = readFileSync(file, "utf8").replace(/(from\s+|import\()(["'])(\.{1,2}\/[^"']+?)(?<!\.js)\2/g, "$1$2$3.js$2");
  writeFileSync(file, text);
}
/** Files under `dir`, as paths relative to it. */
const filesIn = (dir: string): string[] => {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)));
  } catch {
    return []; // no such folder yet
  }
};
const built = filesIn(staging);
for (const f of built) {
  mkdirSync(dirname(join(out, f)), { recursive: true });
  renameSync(join(staging, f), join(out, f));
}
// Stale files of an earlier build; a build without types leaves types/ alone.
const keep = new Set(built);
for (const f of filesIn(out)) {
  if (keep.has(f) || (!withTypes && f.startsWith("types/"))) continue;
  try { unlinkSync(join(out, f)); } catch { /* another build removed it */ }
}
console.log(`built pkg/ (${result.outputs.map((o) => relative(staging, o.path)).join(", ")} ${withTypes ? "and types" : "without types"}) in ${((performance.now() - started) / 1000).toFixed(1)}s`);

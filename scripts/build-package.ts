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
import { readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

const root = resolve(import.meta.dir, "..");
const out = join(root, "pkg");
rmSync(out, { recursive: true, force: true });

const started = performance.now();
const result = await Bun.build({
  entrypoints: [join(root, "src/worker/index.ts")],
  outdir: out,
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
const tsc = !withTypes ? { exitCode: 0 } : Bun.spawnSync([process.execPath, join(root, "node_modules/typescript/bin/tsc"), "-p", join(root, "tsconfig.package.json")], { cwd: root, stdout: "inherit", stderr: "inherit" });
if (tsc.exitCode !== 0) process.exit(1);
// Node's ESM resolution (moduleResolution node16/nodenext in a user's
// tsconfig) wants explicit extensions on relative imports; tsc writes the
// specifiers as our sources spell them (none).
for (const entry of withTypes ? readdirSync(join(out, "types"), { recursive: true, withFileTypes: true }) : []) {
  if (!entry.isFile() || !entry.name.endsWith(".d.ts")) continue;
  const file = join(entry.parentPath, entry.name);
  const text = readFileSync(file, "utf8").replace(/(from\s+|import\()(["'])(\.{1,2}\/[^"']+?)(?<!\.js)\2/g, "$1$2$3.js$2");
  writeFileSync(file, text);
}
console.log(`built pkg/ (${result.outputs.map((o) => o.path.slice(out.length + 1)).join(", ")} ${withTypes ? "and types" : "without types"}) in ${((performance.now() - started) / 1000).toFixed(1)}s`);

// Build the standalone executable (Bun runtime included).
//   bun scripts/build.ts [--outfile PATH] [--tag NAME]
// --tag bakes a build tag into the version label (einhorn 0.1.0+NAME).
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";

const args = process.argv.slice(2);
const opt = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const outfile = opt("--outfile") ?? "dist/einhorn";
const tag = opt("--tag");

mkdirSync(dirname(outfile), { recursive: true });
const started = performance.now();
const result = await Bun.build({
  entrypoints: ["src/cli/main.ts"],
  compile: {
    outfile,
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
  define: tag ? { __EINHORN_BUILD_TAG__: JSON.stringify(tag) } : {},
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
console.log(`built ${outfile}${tag ? ` (tag ${tag})` : ""} in ${((performance.now() - started) / 1000).toFixed(1)}s`);

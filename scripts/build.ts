// Build the standalone executable dist/einhorn (Bun runtime included).
import { mkdirSync } from "node:fs";

mkdirSync("dist", { recursive: true });
const started = performance.now();
const result = await Bun.build({
  entrypoints: ["src/cli/main.ts"],
  compile: { outfile: "dist/einhorn" },
  minify: true,
  sourcemap: "linked",
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
console.log(`built dist/einhorn in ${((performance.now() - started) / 1000).toFixed(1)}s`);

// Build the standalone executable (Bun runtime included) for this machine.
//   bun scripts/build.ts [--outfile PATH] [--tag NAME]
// --tag bakes a build tag into the version label (einhorn 0.1.0+NAME).
// The build options live in scripts/compile.ts, shared with scripts/release.ts.
import { compileEinhorn } from "./compile";

const args = process.argv.slice(2);
const opt = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const outfile = opt("--outfile") ?? "dist/einhorn";
const tag = opt("--tag");

try {
  const built = await compileEinhorn({ outfile, tag });
  console.log(`built ${outfile}${tag ? ` (tag ${tag})` : ""} in ${(built.ms / 1000).toFixed(1)}s`);
} catch (e) {
  console.error((e as Error).message);
  process.exit(1);
}

// The release set, from one checkout (`npm run release`):
//
//   dist/release/einhorn-VERSION-TARGET    one standalone binary per target
//   dist/release/SHA256SUMS                `sha256sum -c SHA256SUMS` checks them
//   dist/release/npm/                      the npm packages, ready for `npm publish`:
//     einhorn/                             the einhorn package with its optionalDependencies
//     einhorn-linux-x64/ ...               @einhorn/linux-x64 etc.: one binary each
//
//   bun scripts/release.ts [--targets linux-x64,linux-arm64,...] [--out DIR]
//
// Cross-compiled with Bun (scripts/compile.ts, the same options as dist/einhorn);
// the foreign runtimes come from the npm registry on first use and are cached.
import { copyFileSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { compileEinhorn, RELEASE_TARGETS, type ReleaseTarget } from "./compile";

const ROOT = resolve(import.meta.dir, "..");

/**
 * The npm platform packages and the release binary each carries. The x86-64
 * glibc package carries the baseline build, which runs on every x86-64 CPU
 * (with or without AVX2): npm cannot choose by CPU feature, and installing
 * both builds would put two 100 MB binaries on every machine.
 */
export const NPM_PLATFORMS = {
  "linux-x64": { binary: "linux-x64-baseline", cpu: "x64", libc: "glibc", what: "Linux x86-64 (glibc; any x86-64 CPU)" },
  "linux-arm64": { binary: "linux-arm64", cpu: "arm64", libc: "glibc", what: "Linux arm64 (glibc)" },
  "linux-x64-musl": { binary: "linux-x64-musl", cpu: "x64", libc: "musl", what: "Linux x86-64 (musl, e.g. Alpine; CPUs with AVX2)" },
  "linux-arm64-musl": { binary: "linux-arm64-musl", cpu: "arm64", libc: "musl", what: "Linux arm64 (musl, e.g. Alpine)" },
} as const satisfies Record<string, { binary: ReleaseTarget; cpu: string; libc: string; what: string }>;

export const NPM_SCOPE = "@einhorn";

export function releaseFileName(version: string, target: ReleaseTarget): string {
  return `einhorn-${version}-${target}`;
}

function sha256(path: string): string {
  return new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");
}

function parseArgs(argv: string[]): { targets: ReleaseTarget[]; out: string } {
  let targets = Object.keys(RELEASE_TARGETS) as ReleaseTarget[];
  let out = join(ROOT, "dist", "release");
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--targets") {
      const names = value().split(",").filter(Boolean);
      const unknown = names.filter((n) => !(n in RELEASE_TARGETS));
      if (unknown.length || names.length === 0) throw new Error(`--targets: unknown target(s) ${unknown.join(", ") || "(none given)"}; known: ${Object.keys(RELEASE_TARGETS).join(", ")}`);
      targets = names as ReleaseTarget[];
    } else if (a === "--out") out = resolve(value());
    else throw new Error(`unknown argument ${a}; usage: bun scripts/release.ts [--targets T1,T2] [--out DIR]`);
  }
  return { targets, out };
}

/**
 * The files `npm pack` puts in the einhorn package (its `files` field and
 * `prepack` script decide: the worker helper's build in pkg/), without the
 * development binary.
 */
function packedFiles(): string[] {
  const npm = (args: string[]) => {
    const r = Bun.spawnSync(["npm", ...args], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`npm ${args.join(" ")} failed: ${r.stderr.toString()}${r.stdout.toString()}`);
    return r.stdout.toString();
  };
  // Run prepack on its own: its output would otherwise be mixed into the JSON.
  npm(["run", "prepack", "--if-present"]);
  const [info] = JSON.parse(npm(["pack", "--dry-run", "--json", "--ignore-scripts"])) as [{ files: { path: string }[] }];
  return info.files.map((f) => f.path).filter((p) => p !== "package.json" && !p.startsWith("dist/"));
}

/** dist/release/npm: the einhorn package with optionalDependencies on the platform packages, and those packages. */
function writeNpmPackages(out: string, version: string, built: Set<ReleaseTarget>): string[] {
  const npmDir = join(out, "npm");
  const made: string[] = [];
  const optional: Record<string, string> = {};
  for (const [platform, p] of Object.entries(NPM_PLATFORMS)) {
    if (!built.has(p.binary)) continue;
    const dir = join(npmDir, `einhorn-${platform}`);
    mkdirSync(join(dir, "bin"), { recursive: true });
    // A hard link: the same 100 MB file twice in dist/ would only waste disk.
    linkSync(join(out, releaseFileName(version, p.binary)), join(dir, "bin", "einhorn"));
    const name = `${NPM_SCOPE}/${platform}`;
    const manifest = {
      name,
      version,
      description: `The einhorn binary for ${p.what}; installed by the einhorn package, not meant to be used on its own`,
      license: "MIT",
      os: ["linux"],
      cpu: [p.cpu],
      libc: [p.libc],
      files: ["bin/einhorn"],
    };
    writeFileSync(join(dir, "package.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    writeFileSync(join(dir, "README.md"), `# ${name}\n\nThe \`einhorn\` ${version} executable for ${p.what} (release build ${p.binary}).\nInstall the \`einhorn\` package instead: it depends on this one where it fits.\n`);
    optional[name] = version;
    made.push(dir);
  }

  // The einhorn package itself: the repository's manifest without what only
  // development needs, plus the platform packages. optionalDependencies live
  // only here: in the repository's package.json they would name packages
  // that exist only once published, and `npm ci` refuses a lockfile without them.
  const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
  delete pkg.devDependencies;
  delete pkg.scripts;
  pkg.optionalDependencies = optional;
  const mainDir = join(npmDir, "einhorn");
  for (const f of packedFiles()) {
    mkdirSync(dirname(join(mainDir, f)), { recursive: true });
    copyFileSync(join(ROOT, f), join(mainDir, f));
  }
  writeFileSync(join(mainDir, "package.json"), `${JSON.stringify(pkg, null, 2)}\n`);
  made.push(mainDir);
  return made;
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  const { targets, out } = args;
  const version = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version as string;
  // A fresh set every time: a stale binary of another version must not sit beside SHA256SUMS.
  if (existsSync(out)) {
    for (const f of readdirSync(out)) if (f.startsWith("einhorn-") || f === "SHA256SUMS" || f === "npm" || f.startsWith(".build-")) rmSync(join(out, f), { recursive: true, force: true });
  }
  mkdirSync(out, { recursive: true });

  const started = performance.now();
  const rows: string[] = [];
  const sums: string[] = [];
  for (const target of targets) {
    const name = releaseFileName(version, target);
    const built = await compileEinhorn({ outfile: join(out, name), target });
    const hash = sha256(join(out, name));
    sums.push(`${hash}  ${name}`);
    rows.push(`${name.padEnd(40)} ${(statSync(join(out, name)).size / 1e6).toFixed(1).padStart(6)} MB  sha256 ${hash.slice(0, 16)}  ${(built.ms / 1000).toFixed(1)} s`);
    console.error(`built ${name} in ${(built.ms / 1000).toFixed(1)} s`);
  }
  writeFileSync(join(out, "SHA256SUMS"), `${sums.sort((a, b) => a.slice(66).localeCompare(b.slice(66))).join("\n")}\n`);
  const npmDirs = writeNpmPackages(out, version, new Set(targets));
  console.log(rows.join("\n"));
  console.log(`SHA256SUMS and ${npmDirs.length} npm package(s) in ${out} (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  return 0;
}

if (import.meta.main) process.exit(await main());

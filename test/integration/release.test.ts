// The release set (`npm run release`): every binary, its checksum and its
// --version; the arm64 binary really running a master under qemu-user-static;
// the npm packages installed from `npm pack` tarballs; and a fresh clone
// built with the README's commands.
//
// The set is built once for this file (about 10 s with Bun's runtime cache
// warm; the first build on a machine also fetches four foreign Bun runtimes,
// about 400 MB, from the npm registry into ~/.bun/install/cache).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cLibraryForInterpreter, elfInterpreterOfFile } from "../../ffi/c-library";
import { RELEASE_TARGETS, type ReleaseTarget } from "../../scripts/compile";
import { NPM_PLATFORMS, releaseFileName } from "../../scripts/release";
import { BIN, listenerPort, onCleanup, ROOT, startMaster, stateJson, stopMaster, tempDir, waitFor, within } from "../harness";

const VERSION = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version as string;
const TARGETS = Object.keys(RELEASE_TARGETS) as ReleaseTarget[];
const QEMU = "/usr/bin/qemu-aarch64-static";
/** Debian's arm64 C library (libc6-arm64-cross, libstdc++6-arm64-cross), used by qemu as the guest's root. */
const ARM64_SYSROOT = "/usr/aarch64-linux-gnu";
const qemuReady = existsSync(QEMU) && existsSync(join(ARM64_SYSROOT, "lib", "libc.so.6")) && existsSync(join(ARM64_SYSROOT, "lib", "libstdc++.so.6"));

let out = "";
let buildSeconds = 0;

function run(cmd: string[], opts: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {}) {
  const r = Bun.spawnSync(cmd, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdout: "pipe", stderr: "pipe", timeout: opts.timeoutMs ?? 120_000 });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function sha256(path: string): string {
  return new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");
}

/** ELF e_machine: 0x3e x86-64, 0xb7 aarch64. */
function elfMachine(path: string): number {
  const b = readFileSync(path).subarray(0, 20);
  return b.readUInt16LE(18);
}

beforeAll(() => {
  out = mkdtempSync(join(tmpdir(), "einhorn-release-"));
  const t0 = performance.now();
  const r = run([process.execPath, join(ROOT, "scripts", "release.ts"), "--out", out], { cwd: ROOT, timeoutMs: 600_000 });
  buildSeconds = (performance.now() - t0) / 1000;
  if (r.code !== 0) throw new Error(`npm run release failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  console.error(`release set built in ${buildSeconds.toFixed(1)} s`);
}, within(600_000));

afterAll(() => {
  if (out) rmSync(out, { recursive: true, force: true });
});

describe("npm run release", () => {
  test("one binary per target and a SHA256SUMS that sha256sum -c accepts", () => {
    const files = readdirSync(out).filter((f) => f !== "npm").sort();
    expect(files).toEqual(["SHA256SUMS", ...TARGETS.map((t) => releaseFileName(VERSION, t))].sort());
    const lines = readFileSync(join(out, "SHA256SUMS"), "utf8").trimEnd().split("\n");
    expect(lines.length).toBe(TARGETS.length);
    for (const t of TARGETS) {
      const name = releaseFileName(VERSION, t);
      expect(lines).toContain(`${sha256(join(out, name))}  ${name}`);
      expect(statSync(join(out, name)).mode & 0o111).toBe(0o111);
    }
    // coreutils' own checker, as a user would run it.
    const check = run(["sha256sum", "-c", "SHA256SUMS"], { cwd: out });
    expect(check.stderr).toBe("");
    expect(check.code).toBe(0);
    expect(check.stdout.trim().split("\n").sort()).toEqual(TARGETS.map((t) => `${releaseFileName(VERSION, t)}: OK`).sort());
  });

  test("the README's install steps: verify one downloaded binary, install it, run it; a corrupted download is caught", () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    expect(readme).toContain("sha256sum --ignore-missing -c SHA256SUMS");
    expect(readme).toContain("install -m 0755 einhorn-0.1.0-linux-x64 /usr/local/bin/einhorn");
    // A download directory with one binary and the sums file, as a user has it.
    const dl = tempDir("einhorn-download-");
    const name = releaseFileName(VERSION, "linux-x64");
    writeFileSync(join(dl, name), readFileSync(join(out, name)));
    writeFileSync(join(dl, "SHA256SUMS"), readFileSync(join(out, "SHA256SUMS")));
    const ok = run(["sha256sum", "--ignore-missing", "-c", "SHA256SUMS"], { cwd: dl });
    expect(ok.stdout).toBe(`${name}: OK\n`);
    expect(ok.code).toBe(0);
    // /usr/local/bin stands for a prefix of the test's own here.
    mkdirSync(join(dl, "usr-local-bin"));
    expect(run(["install", "-m", "0755", name, join(dl, "usr-local-bin", "einhorn")], { cwd: dl }).code).toBe(0);
    const v = run(["einhorn", "--version"], { env: { PATH: `${join(dl, "usr-local-bin")}:${process.env.PATH}` } });
    expect(v.stdout).toBe(`einhorn ${VERSION} (linux-x64)\n`);
    // One flipped byte in the middle of the file.
    const bytes = readFileSync(join(dl, name));
    const mid = bytes.length >> 1;
    bytes[mid] = bytes[mid]! ^ 0xff;
    writeFileSync(join(dl, name), bytes);
    const bad = run(["sha256sum", "--ignore-missing", "-c", "SHA256SUMS"], { cwd: dl });
    expect(bad.stdout).toBe(`${name}: FAILED\n`);
    expect(bad.code).not.toBe(0);
  });

  test("each binary is for its CPU and C library, as ffi/c-library.ts reads it at start-up", () => {
    for (const t of TARGETS) {
      const path = join(out, releaseFileName(VERSION, t));
      expect(elfMachine(path)).toBe(t.startsWith("linux-arm64") ? 0xb7 : 0x3e);
      const interp = elfInterpreterOfFile(path);
      expect(interp).not.toBeNull();
      const lib = cLibraryForInterpreter(interp!);
      expect(lib?.kind).toBe(t.endsWith("-musl") ? "musl" : "glibc");
      if (lib?.kind === "musl") expect(lib.path).toBe(t.startsWith("linux-arm64") ? "/lib/ld-musl-aarch64.so.1" : "/lib/ld-musl-x86_64.so.1");
    }
  });

  test("--version names the version and the target (x86-64 glibc natively, arm64 under qemu)", () => {
    for (const t of ["linux-x64", "linux-x64-baseline"] as const) {
      const r = run([join(out, releaseFileName(VERSION, t)), "--version"]);
      expect(r.stdout).toBe(`einhorn ${VERSION} (${t})\n`);
      expect(r.code).toBe(0);
    }
    if (!qemuReady) {
      if (process.env.CI) throw new Error(`qemu-user-static and Debian's arm64 C library are not installed (${QEMU}, ${ARM64_SYSROOT}); npm test installs them (scripts/system-tools.ts)`);
      console.error("skipped the arm64 --version: qemu-user-static or libc6-arm64-cross missing");
      return;
    }
    const r = run([QEMU, "-L", ARM64_SYSROOT, join(out, releaseFileName(VERSION, "linux-arm64")), "--version"]);
    expect(r.stdout).toBe(`einhorn ${VERSION} (linux-arm64)\n`);
    expect(r.code).toBe(0);
    // The musl builds cannot start on this machine (Debian has no libstdc++
    // built for musl, which Bun's musl runtime links against); what can be
    // checked is that their --version text was baked in.
    for (const t of ["linux-x64-musl", "linux-arm64-musl"] as const) {
      expect(readFileSync(join(out, releaseFileName(VERSION, t))).includes(`"${t}"`)).toBe(true);
    }
  });

  test("no source map file is shipped beside the binaries (it is embedded for stack traces)", () => {
    expect(readdirSync(out).filter((f) => f.endsWith(".map"))).toEqual([]);
    expect(readdirSync(join(out, "npm"), { recursive: true }).filter((f) => String(f).endsWith(".map"))).toEqual([]);
  });
});

describe("the arm64 binary under qemu-user-static", () => {
  // An emulated master spawns its workers with posix_spawn, and the kernel
  // runs what is spawned natively: without binfmt_misc registrations (none
  // here), an arm64 program cannot be exec'd, so the workers are native
  // python3 programs, and the master re-executes itself on upgrade through
  // qemu with --reexec-as. (Its start-up re-exec to block signals cannot go
  // through qemu and is skipped with a warning.)
  test.skipIf(!qemuReady && !process.env.CI)("--version, a master with two workers serving HTTP, one upgrade, a clean stop", async () => {
    if (!qemuReady) throw new Error(`qemu-user-static and Debian's arm64 C library are not installed (${QEMU}, ${ARM64_SYSROOT}); npm test installs them (scripts/system-tools.ts)`);
    const bin = join(out, releaseFileName(VERSION, "linux-arm64"));
    const qemu = [QEMU, "-L", ARM64_SYSROOT];
    const dir = tempDir();
    const m = startMaster(
      ["-n", "2", "-m", "manual", "-b", "127.0.0.1:0,n", "-d", join(dir, "einhorn.sock"), "--reexec-as", [...qemu, bin].join(" "), "--", "python3", join(ROOT, "examples", "python-worker.py")],
      { dir, bin, wrap: qemu },
    );
    // The master is the emulator running the arm64 binary: same pid.
    expect(readlinkSync(`/proc/${m.pid}/exe`)).toBe(QEMU);
    await m.waitForOutput(/Worker \d+ \(index 1\) is up/, 60_000);
    const state = await stateJson(m.sockPath);
    expect(state.master.pid).toBe(m.pid);
    const port = listenerPort(state);
    const servedBy = async (want: Set<number>) => {
      const seen = new Set<number>();
      await waitFor(`answers from workers ${[...want].join(", ")}`, async () => {
        const text = await (await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: "close" } })).text();
        const pid = Number(/worker (\d+)/.exec(text)?.[1]);
        seen.add(pid);
        return [...want].every((p) => seen.has(p));
      }, 30_000, 5);
      expect([...seen].every((p) => want.has(p))).toBe(true);
    };
    const oldPids = new Set(state.workers.map((w) => w.pid));
    expect(oldPids.size).toBe(2);
    await servedBy(oldPids);

    // One smooth upgrade, asked for with the arm64 binary's own shell.
    const up = Bun.spawnSync([...qemu, bin, "sh", "-d", m.sockPath, "-e", "upgrade"], { stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    expect(up.stdout.toString()).toContain("Upgrade done");
    expect(up.exitCode).toBe(0);
    const after = await stateJson(m.sockPath);
    expect(after.master.pid).toBe(m.pid);
    expect(after.master.reexecs).toBe(1);
    expect(readlinkSync(`/proc/${m.pid}/exe`)).toBe(QEMU);
    // Old workers may still be draining (retiring) when "Upgrade done" arrives.
    type W = { pid: number; acked: boolean; retiring: boolean; version: number };
    const newPids = new Set<number>(after.workers.filter((w: W) => w.acked && !w.retiring && w.version === after.master.version).map((w: W) => w.pid));
    expect(after.master.version).toBe(1);
    expect(newPids.size).toBe(2);
    for (const p of newPids) expect(oldPids.has(p)).toBe(false);
    await servedBy(newPids);

    // A clean stop: workers drain, the master exits 0 (the leak check then finds no process left).
    expect(await stopMaster(m, "SIGINT", 60_000)).toBe(0);
    expect(m.output()).toContain("Exiting with status 0");
  }, within(180_000));
});

describe("npm packages", () => {
  test("npm pack + a global install from the tarballs (npm, and bun add) puts a working einhorn on PATH", async () => {
    const work = tempDir("einhorn-npm-");
    const platform = "linux-x64" as const; // this machine
    const pack = (dir: string) => {
      const r = run(["npm", "pack", "--json", "--pack-destination", work], { cwd: dir, timeoutMs: 300_000 });
      expect(r.code).toBe(0);
      return join(work, (JSON.parse(r.stdout) as [{ filename: string }])[0].filename);
    };
    const main = pack(join(out, "npm", "einhorn"));
    const bin = pack(join(out, "npm", `einhorn-${platform}`));
    const manifest = JSON.parse(readFileSync(join(out, "npm", "einhorn", "package.json"), "utf8"));
    expect(Object.keys(manifest.optionalDependencies).sort()).toEqual(Object.keys(NPM_PLATFORMS).map((p) => `@einhorn/${p}`).sort());
    expect(manifest.devDependencies).toBeUndefined();

    // A user's machine: a fresh global prefix, nothing else. The platform
    // package is not on the registry yet, so it is installed from its tarball
    // beside einhorn; npm skips the other three for their os/cpu/libc.
    const prefix = join(work, "prefix");
    const env = { npm_config_prefix: prefix, npm_config_audit: "false", npm_config_fund: "false", npm_config_update_notifier: "false" };
    const inst = run(["npm", "install", "--global", bin, main], { cwd: work, env, timeoutMs: 300_000 });
    expect(inst.stderr).not.toContain("ERR");
    expect(inst.code).toBe(0);
    const PATH = `${join(prefix, "bin")}:${process.env.PATH}`;
    const which = run(["sh", "-c", "command -v einhorn"], { env: { PATH } });
    expect(which.stdout.trim()).toBe(join(prefix, "bin", "einhorn"));
    const v = run(["einhorn", "--version"], { cwd: work, env: { PATH } });
    expect(v.stdout).toBe(`einhorn ${VERSION} (${NPM_PLATFORMS[platform].binary})\n`);
    expect(v.code).toBe(0);

    // The launcher execs the binary: the pid the user started is the master's.
    const launcher = join(prefix, "bin", "einhorn");
    const m = startMaster(["-n", "1", "-m", "0", "--", "sleep", "30"], { bin: launcher });
    await m.waitForOutput(/Worker \d+ \(index 0\) is up/, 30_000);
    expect((await stateJson(m.sockPath)).master.pid).toBe(m.pid);
    expect(readlinkSync(`/proc/${m.pid}/exe`)).toEndWith(`/@einhorn/${platform}/bin/einhorn`);
    expect(await stopMaster(m)).toBe(0);

    // Bun's installer, for people who use bunx/bun: the same tarballs into a fresh BUN_INSTALL.
    const bunHome = join(work, "bun-install");
    const bunAdd = run([process.execPath, "add", "--global", bin, main], { cwd: work, env: { BUN_INSTALL: bunHome }, timeoutMs: 300_000 });
    expect(bunAdd.code).toBe(0);
    const bv = run(["einhorn", "--version"], { cwd: work, env: { PATH: `${join(bunHome, "bin")}:${process.env.PATH}` } });
    expect(bv.stdout).toBe(`einhorn ${VERSION} (${NPM_PLATFORMS[platform].binary})\n`);
  }, within(600_000));
});

describe("a fresh clone", () => {
  test("git clone, then the README's `npm ci && npm run build`, gives dist/einhorn and leaves the tree clean", () => {
    const dir = tempDir("einhorn-clone-");
    const clone = join(dir, "einhorn");
    const t0 = performance.now();
    expect(run(["git", "clone", "-q", ROOT, clone]).code).toBe(0);
    const tClone = performance.now();
    const readme = readFileSync(join(clone, "README.md"), "utf8");
    expect(readme).toContain("npm ci && npm run build");
    const build = run(["sh", "-c", "npm ci --no-audit --no-fund && npm run build"], { cwd: clone, timeoutMs: 600_000 });
    expect(build.code).toBe(0);
    const tBuilt = performance.now();
    const v = run([join(clone, "dist", "einhorn"), "--version"]);
    expect(v.stdout).toBe(`einhorn ${VERSION}\n`);
    // Nothing that was built or installed shows up as a change: all of it is ignored.
    expect(run(["git", "status", "--porcelain"], { cwd: clone }).stdout).toBe("");
    expect(run(["git", "ls-files", "node_modules", "dist"], { cwd: clone }).stdout).toBe("");
    console.error(`fresh clone: git clone ${((tClone - t0) / 1000).toFixed(1)} s, npm ci && npm run build ${((tBuilt - tClone) / 1000).toFixed(1)} s`);
  }, within(600_000));
});

describe("C library detection at start-up", () => {
  test("a binary linked through a loader that is neither glibc's nor musl's says so and exits 1", async () => {
    // A copy of dist/einhorn whose ELF interpreter path is changed to
    // /tmp/uXX/ld-uClibc.so.0, a link to the real glibc loader: the kernel
    // starts it as before, and einhorn sees a C library it does not know.
    const image = Buffer.from(readFileSync(BIN));
    const interp = elfInterpreterOfFile(BIN)!;
    const at = image.indexOf(Buffer.from(`${interp}\0`));
    expect(at).toBeGreaterThan(0);
    const linkDir = `/tmp/u${(process.pid % 46656).toString(36)}`;
    const fake = `${linkDir}/ld-uClibc.so.0`;
    expect(fake.length).toBeLessThanOrEqual(interp.length);
    rmSync(linkDir, { recursive: true, force: true });
    mkdirSync(linkDir);
    onCleanup(() => rmSync(linkDir, { recursive: true, force: true }));
    symlinkSync(interp, fake);
    image.fill(0, at, at + interp.length + 1);
    image.write(fake, at, "latin1");
    const dir = tempDir();
    const patched = join(dir, "einhorn");
    writeFileSync(patched, image);
    chmodSync(patched, 0o755);
    expect(elfInterpreterOfFile(patched)).toBe(fake);

    // --version needs no C library calls and still works.
    const v = run([patched, "--version"]);
    expect(v.stdout).toBe(`einhorn ${VERSION}\n`);
    // A master needs libc at once, and says plainly that it cannot have it.
    const m = run([patched, "-n", "1", "--", "true"], { cwd: dir, env: { TMPDIR: dir } });
    expect(m.stderr).toBe(`einhorn: unsupported C library: this executable is linked through ${fake}, and einhorn supports glibc (libc.so.6) or musl (ld-musl-ARCH.so.1)\n`);
    expect(m.code).toBe(1);
  });
});

// Einhorn 1.1.1's users, as they are: its usage text, its "proceeds with
// postload", its own Ruby client reading `state`, Ruby and Python workers
// ACKing the way Einhorn's worker library does, and arguments/environment
// that are bytes, not text. Everything drives the compiled binary.
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, FIXTURES, fetchLine, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor } from "../harness";

const PY = ["python3", join(FIXTURES, "worker.py")];

async function acked(sockPath: string, n: number) {
  return waitFor(`${n} acked workers`, async () => {
    const s = await stateJson(sockPath);
    return s.workers.length === n && s.workers.every((w: any) => w.acked) ? s : null;
  }, 20_000);
}

describe("usage", () => {
  test("no arguments: Einhorn's usage text on stdout, first line '## Usage', exit 1, nothing on stderr", async () => {
    const r = await runBinary([]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("");
    const lines = r.stdout.split("\n");
    expect(lines[0]).toBe("## Usage");
    // Einhorn's layout: the banner, then "### Options" and OptionParser's summary lines.
    const opts = lines.indexOf("### Options");
    expect(opts).toBeGreaterThan(0);
    expect(lines[opts + 1]).toBe("");
    // Four spaces, the flags padded to 32 columns, a space, the description.
    const row = (flags: string) => lines.find((l) => l.startsWith(`    ${flags.padEnd(32)} `) && l.length > 37 && l[37] !== " ");
    for (const flags of ["-b, --bind ADDR", "    --drop-env-var VAR", "-t, --signal-timeout T", "-m, --ack-mode MODE", "    --reexec-as CMDLINE"]) {
      expect(row(flags), flags).toBeDefined();
    }
  });

  test("-h: the long usage on stdout, same layout", async () => {
    const r = await runBinary(["-h"]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe("## Usage");
    expect(r.stdout).toContain("\n## Overview\n");
    expect(r.stdout).toContain("\n### Options\n");
  });
});

describe("-p with a file that is not a Bun/TypeScript module", () => {
  test("warns, then runs PROGRAM as given (Einhorn's 'proceeds with postload'), and upgrades as usual", async () => {
    const dir = tempDir();
    const app = join(dir, "app.py");
    writeFileSync(app, "print('never imported by einhorn')\n");
    const m = startMaster(["-m", "manual", "-b", "127.0.0.1:0", "-p", app, "--", ...PY, "--ack", "manual"], { dir });
    await m.waitForOutput(/WARN.*-p .*app\.py is not a Bun\/TypeScript module.*proceeding without preload: workers run 'python3 .*worker\.py --ack manual' as given/);
    const s = await acked(m.sockPath, 1);
    const port = s.listeners[0].port;
    expect(await fetchLine(port)).toBe(`${s.workers[0].pid} 0\n`);
    const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade", "--timeout", "60"]);
    expect(up.code).toBe(0);
    const after = await acked(m.sockPath, 1);
    expect(after.master.version).toBe(1);
    expect(after.workers[0].pid).not.toBe(s.workers[0].pid);
    expect(await stopMaster(m)).toBe(0);
  });

  test("without a PROGRAM it says so and prints the usage (exit 1)", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "app.rb"), "puts 1\n");
    const r = await runBinary(["-p", join(dir, "app.rb")], { dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/app\.rb is not a Bun\/TypeScript module/);
    expect(r.stdout.split("\n")[0]).toBe("## Usage");
  });
});

// --- bytes, not text (item 5) ----------------------------------------------------

const BYTES_WORKER = join(FIXTURES, "bytes-worker.py");
/** Non-UTF-8 bytes: a lone 0xff, then a valid "é" (c3 a9), then 0xff 0xfe. */
const ARG_BAD = Buffer.from([0x61, 0xff, 0x62]);
const ARG_UTF8 = Buffer.from([0xc3, 0xa9]);
const ENV_BAD = Buffer.from([0x78, 0xff, 0xfe, 0x79]);
/** printf's octal form of some bytes, for a shell script. */
const oct = (b: Buffer) => [...b].map((x) => `\\${x.toString(8).padStart(3, "0")}`).join("");

/** What a worker received: its argv and environment as the kernel's bytes. */
function received(dir: string, pid: number): { argv: Buffer[]; env: Map<string, Buffer> } {
  const split = (b: Buffer) => {
    const out: Buffer[] = [];
    let start = 0;
    for (let i = 0; i < b.length; i++) if (b[i] === 0) { out.push(b.subarray(start, i)); start = i + 1; }
    return out;
  };
  const argv = split(readFileSync(join(dir, `${pid}.cmdline`)));
  const env = new Map<string, Buffer>();
  for (const e of split(readFileSync(join(dir, `${pid}.environ`)))) {
    const eq = e.indexOf(0x3d);
    env.set(e.subarray(0, eq).toString("latin1"), e.subarray(eq + 1));
  }
  return { argv, env };
}

function expectBytesIntact(dir: string, pid: number) {
  const r = received(dir, pid);
  // The worker's own argv ends with the two arguments, byte for byte.
  expect(r.argv.slice(-2).map((b) => b.toString("hex"))).toEqual([ARG_BAD.toString("hex"), ARG_UTF8.toString("hex")]);
  expect(r.env.get("BAD_BYTES")?.toString("hex")).toBe(ENV_BAD.toString("hex"));
}

describe("bytes, not text", () => {
  const variants: Array<[string, string[], boolean]> = [
    ["plain", [], false],
    ["-k (through the parent-death helper) and a --reexec-as script whose path is not UTF-8", ["-k"], true],
  ];
  for (const [name, flags, reexec] of variants) {
    test(`non-UTF-8 argv, environment and file paths reach the workers intact at start and after upgrades: ${name}`, async () => {
      const dir = tempDir();
      const out = join(dir, "out");
      mkdirSync(out);
      // A pidfile whose name is not UTF-8: written at start, removed at exit.
      const pidfile = Buffer.concat([Buffer.from(`${dir}/pid-`), Buffer.from([0xe9, 0xff]), Buffer.from(".pid")]);
      const extra: string[] = [];
      if (reexec) {
        const script = Buffer.concat([Buffer.from(`${dir}/re-`), Buffer.from([0xff]), Buffer.from("exec.sh")]);
        writeFileSync(script, `#!/bin/sh\nexec ${BIN} "$@"\n`);
        chmodSync(script, 0o755);
        extra.push(`--reexec-as "$(printf '${oct(script)}')"`);
      }
      // The shell puts the raw bytes on the command line and in the environment
      // (Bun.spawn would only take them as text).
      const launcher = join(dir, "launch.sh");
      writeFileSync(launcher, [
        "#!/bin/sh",
        `BAD_BYTES="$(printf '${oct(ENV_BAD)}')"; export BAD_BYTES`,
        `exec "$@" -e "$(printf '${oct(pidfile)}')" ${extra.join(" ")} -- python3 ${BYTES_WORKER} ${out} "$(printf '${oct(ARG_BAD)}')" "$(printf '${oct(ARG_UTF8)}')"`,
        "",
      ].join("\n"));
      const m = startMaster(["-m", "0", "-n", "2", ...flags], { dir, wrap: ["/bin/sh", launcher] });
      const first = await acked(m.sockPath, 2);
      expect(existsSync(pidfile)).toBe(true);
      expect(readFileSync(pidfile, "utf8").trim()).toBe(String(m.pid));
      for (const w of first.workers) {
        await waitFor("worker report", () => existsSync(join(out, `${w.pid}.environ`)));
        expectBytesIntact(out, w.pid);
      }
      for (let round = 1; round <= 2; round++) {
        const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade", "--timeout", "60"]);
        expect(up.code).toBe(0);
        const s = await waitFor(`version ${round} up`, async () => {
          const t = await stateJson(m.sockPath);
          return t.workers.length === 2 && t.workers.every((w: any) => w.acked && w.version === round) ? t : null;
        }, 30_000);
        for (const w of s.workers) {
          await waitFor("worker report", () => existsSync(join(out, `${w.pid}.environ`)));
          expectBytesIntact(out, w.pid);
        }
      }
      if (reexec) expect(m.output()).toMatch(/Re-executing: .*re-.*exec\.sh --with-state-fd/);
      expect(await stopMaster(m)).toBe(0);
      expect(existsSync(pidfile)).toBe(false);
    }, 90_000);
  }
});

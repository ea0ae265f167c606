// Einhorn 1.1.1's users, as they are: its usage text, its "proceeds with
// postload", its own Ruby client reading `state`, Ruby and Python workers
// ACKing the way Einhorn's worker library does, and arguments/environment
// that are bytes, not text. Everything drives the compiled binary.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { FIXTURES, fetchLine, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor } from "../harness";

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

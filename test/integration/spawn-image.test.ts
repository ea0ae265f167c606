// With -k, -p or --listen-fds every worker starts as the einhorn binary
// itself. A package upgrade replaces or deletes that file under a running
// master; respawns must keep working from the image the master runs, until an
// upgrade deliberately re-executes the path on disk (issue 11, item 7).
import { describe, expect, test } from "bun:test";
import { copyFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor } from "../harness";

async function oneWorker(sockPath: string, not: number[] = []) {
  return waitFor(`one acked worker other than ${not.join(", ") || "none"}`, async () => {
    const s = await stateJson(sockPath);
    const w = s.workers.filter((x) => x.acked && !not.includes(x.pid));
    return w.length === 1 && s.workers.length === 1 ? w[0] : null;
  }, 20_000);
}

describe("respawning from the running image", () => {
  for (const [name, flags] of [
    ["-k", ["-k", "--", "sleep", "1000"]],
    ["--listen-fds", ["--listen-fds", "-b", "127.0.0.1:0", "--", "sleep", "1000"]],
    ["-p", ["-p", "PRELOAD"]],
  ] as const) {
    test(`${name}: the binary deleted, then replaced by garbage, under the master: workers still respawn; an upgrade then runs the file on disk`, async () => {
      const dir = tempDir();
      const bin = join(dir, "einhorn");
      copyFileSync(BIN, bin);
      const preload = join(dir, "app.ts");
      writeFileSync(preload, "export async function einhorn_main() { setInterval(() => {}, 1 << 30); }\n");
      const m = startMaster(["-m", "0", "-s", "0.1", ...flags.map((f) => (f === "PRELOAD" ? preload : f))], { dir, bin });
      const first = await oneWorker(m.sockPath);

      // A package manager deletes the binary...
      rmSync(bin);
      process.kill(first.pid, "SIGKILL");
      const second = await oneWorker(m.sockPath, [first.pid]);
      // ...then writes a new file at the path, not yet a valid program.
      writeFileSync(bin, "#!/nonexistent/interpreter\nhalf-written\n", { mode: 0o755 });
      process.kill(second.pid, "SIGKILL");
      const third = await oneWorker(m.sockPath, [first.pid, second.pid]);
      expect(third.pid).toBeGreaterThan(0);
      expect(m.output()).not.toContain("Could not start a worker");

      // An upgrade deliberately runs what is on disk: refused while it is garbage...
      const bad = await runBinary(["sh", "-d", m.sockPath, "--timeout", "40", "-e", "upgrade"], { timeoutMs: 45_000 });
      expect(bad.code).toBe(1);
      expect(bad.stderr).toContain("Upgrade failed");
      // ...and done once the new binary is in place.
      copyFileSync(BIN, `${bin}.new`);
      renameSync(`${bin}.new`, bin);
      const good = await runBinary(["sh", "-d", m.sockPath, "--timeout", "40", "-e", "upgrade"], { timeoutMs: 45_000 });
      expect(good.stdout).toContain("Upgrade done");
      expect(good.code).toBe(0);
      expect(await stopMaster(m)).toBe(0);
    });
  }
});

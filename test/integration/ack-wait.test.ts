// No silent waits: an upgrade whose new worker never ACKs reports every 10 s
// in the master's log and to the shell waiting on it.
import { describe, expect, test } from "bun:test";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ackedWorkers, BIN, FIXTURES, onCleanup, runBinary, sendMessage, sleep, startMaster, stateJson, stopMaster, tempDir, waitFor, within } from "../harness";

describe("ACK-wait reports", () => {
  test("the master log and the waiting `einhorn sh -e upgrade` name the unACKed worker with the --ack-timeout hint", async () => {
    // Reports every 2 s instead of 10 (EINHORN_TIMEOUTS, docs/operations.md).
    const m = startMaster(["-n", "1", "-m", "manual", "--", "sleep", "1000"], { env: { EINHORN_TIMEOUTS: "ack-wait-report=2" } });
    const first = await waitFor("a worker", async () => (await stateJson(m.sockPath)).workers[0]);
    // `sleep` cannot ACK: ACK the first worker on its behalf; its successor will never ACK.
    await sendMessage(m.sockPath, { command: "worker:ack", pid: first.pid });
    await waitFor("first worker up", async () => (await stateJson(m.sockPath)).workers[0]!.acked);
    const shell = Bun.spawn([BIN, "sh", "-d", m.sockPath, "--timeout", "120", "-e", "upgrade"], { stdout: "pipe", stderr: "pipe" });
    onCleanup(() => { shell.kill("SIGKILL"); });
    let out = "";
    void (async () => { for await (const chunk of shell.stdout) out += new TextDecoder().decode(chunk); })();
    const report = /Upgrade to version 1 waiting (\d+)s for ACKs: worker (\d+) \(index 1, \d+s\) not ACKed yet; 0 of 1 new workers up\. Without --ack-timeout the upgrade waits for ever/;
    const seen = await waitFor("the report reaching the waiting shell", () => out.match(report), 20_000);
    const s = await stateJson(m.sockPath);
    const fresh = s.workers.find((w) => !w.acked);
    expect(Number(seen[2])).toBe(fresh!.pid);
    expect(Number(seen[1])).toBeGreaterThanOrEqual(2);
    expect(m.output()).toMatch(new RegExp(`WARN: ${report.source}`));
    shell.kill("SIGTERM");
    await shell.exited;
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(60_000));
});


describe("every queued input before any timer", () => {
  test("4 new workers' ACKs queued while the master is stopped (SIGSTOP) past --ack-timeout: all are handled, the upgrade succeeds", async () => {
    const dir = tempDir();
    const m = startMaster(["-n", "4", "--max-unacked", "4", "-m", "manual", "--ack-timeout", "2", "--", "python3", join(FIXTURES, "held-ack-worker.py"), dir]);
    const s0 = await ackedWorkers(m.sockPath, 4);
    const old = new Set(s0.workers.map((w) => w.pid));
    writeFileSync(join(dir, "hold"), "");
    const upgrade = runBinary(["sh", "-d", m.sockPath, "--timeout", "50", "-e", "upgrade"], { timeoutMs: 55_000 });
    const fresh = await waitFor("the 4 new workers spawned", async () => {
      const s = await stateJson(m.sockPath);
      const f = s.workers.filter((w) => !old.has(w.pid));
      return f.length === 4 ? f : null;
    }, 30_000);
    process.kill(m.pid, "SIGSTOP");
    try {
      rmSync(join(dir, "hold"));
      await waitFor("4 ACKs sent into the stopped master's socket", () => fresh.every((w) => existsSync(join(dir, `${w.pid}.acked`))));
      await sleep(3500); // well past the ACK timeout (2 s from each spawn)
    } finally {
      process.kill(m.pid, "SIGCONT");
    }
    const r = await upgrade;
    expect(m.output()).not.toMatch(/did not ACK within/);
    expect(r.stdout).toContain("Upgrade done");
    expect(r.code).toBe(0);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));
});

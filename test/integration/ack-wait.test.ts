// No silent waits: an upgrade whose new worker never ACKs reports every 10 s
// in the master's log and to the shell waiting on it.
import { describe, expect, test } from "bun:test";
import net from "node:net";
import { encodeMessage } from "../../src/protocol";
import { runBinary, startMaster, stateJson, stopMaster, waitFor } from "../harness";

describe("ACK-wait reports", () => {
  test("the master log and the waiting `einhorn sh -e upgrade` name the unACKed worker with the --ack-timeout hint", async () => {
    const m = startMaster(["-n", "1", "-m", "manual", "--", "sleep", "1000"]);
    const first = await waitFor("a worker", async () => (await stateJson(m.sockPath)).workers[0]);
    // `sleep` cannot ACK: ACK the first worker on its behalf; its successor will never ACK.
    await new Promise<void>((res) => { const c = net.createConnection(m.sockPath, () => c.end(encodeMessage({ command: "worker:ack", pid: first.pid }))); c.on("close", () => res()); });
    await waitFor("first worker up", async () => (await stateJson(m.sockPath)).workers[0].acked);
    // The shell gives up after 13 s (exit 4), by when one report (at 10 s) is due.
    const r = await runBinary(["sh", "-d", m.sockPath, "--timeout", "13", "-e", "upgrade"], { dir: m.dir, timeoutMs: 30_000 });
    expect(r.code).toBe(4);
    const s = await stateJson(m.sockPath);
    const fresh = s.workers.find((w: any) => !w.acked);
    expect(fresh).toBeDefined();
    const report = new RegExp(`Upgrade to version 1 waiting 1\\ds for ACKs: worker ${fresh.pid} \\(index 1, \\d+s\\) not ACKed yet; 0 of 1 new workers up\\. Without --ack-timeout the upgrade waits for ever`);
    expect(r.stdout).toMatch(report);
    expect(r.stdout.match(/waiting \d+s for ACKs/g)).toHaveLength(1);
    expect(m.output()).toMatch(new RegExp(`WARN: ${report.source}`));
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, 60_000);
});

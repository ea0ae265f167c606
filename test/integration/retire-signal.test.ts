// --retire-signal: what old workers get on upgrade and on a graceful stop.
// The worker here is the shape of gunicorn or puma: USR2 means something
// else to it (here: ignored), TERM makes it leave.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { ackedWorkers, runBinary, startMaster, stateJson, stopMaster, tempDir } from "../harness";
import { writeFileSync } from "node:fs";

/** A worker that logs every signal it gets and leaves only on TERM. */
function termOnlyWorker(dir: string): string {
  const path = join(dir, "term-only.sh");
  writeFileSync(path, [
    "#!/bin/sh",
    `trap 'echo "worker $$ got USR2, ignoring it"' USR2`,
    `trap 'echo "worker $$ got TERM, leaving"; exit 0' TERM`,
    "while :; do sleep 0.05; done",
  ].join("\n"), { mode: 0o755 });
  return path;
}

const sh = (sock: string, script: string) => runBinary(["sh", "-d", sock, "-e", script, "--timeout", "60"]);


describe("--retire-signal TERM", () => {
  test("upgrade: old workers get TERM (not USR2) and leave; graceful stop (INT) sends TERM too", async () => {
    const dir = tempDir();
    const m = startMaster(["-n", "2", "-m", "0.2", "--retire-signal", "TERM", "--", termOnlyWorker(dir)], { dir });
    const s0 = await ackedWorkers(m.sockPath, 2, 0);
    const r = await sh(m.sockPath, "upgrade");
    expect(r.code).toBe(0);
    await ackedWorkers(m.sockPath, 2, 1);
    for (const w of s0.workers) {
      await m.waitForOutput(new RegExp(`worker ${w.pid} got TERM, leaving`));
      await m.waitForOutput(new RegExp(`Worker ${w.pid} \\(index \\d+\\) exited with status 0`));
    }
    expect(m.output()).not.toMatch(/got USR2/);
    expect(await stopMaster(m, "SIGINT")).toBe(0);
    expect(m.output()).toMatch(/Stopping: sending SIGTERM to 2 worker/);
    expect(m.output()).not.toMatch(/got USR2/);
  });

  test("die without a signal name sends the retire signal", async () => {
    const dir = tempDir();
    const m = startMaster(["-n", "1", "-m", "0.2", "--retire-signal", "TERM", "--", termOnlyWorker(dir)], { dir });
    const s0 = await ackedWorkers(m.sockPath, 1, 0);
    const r = await sh(m.sockPath, "die");
    expect(r.stdout + r.stderr).toMatch(/Successfully sent TERMs to 1 processes/);
    await m.waitForOutput(new RegExp(`worker ${s0.workers[0]!.pid} got TERM, leaving`));
    expect(await m.exited).toBe(0);
  });
});

test("without --retire-signal, such a worker ignores the upgrade's USR2 and stays (the problem the option solves)", async () => {
  const dir = tempDir();
  const m = startMaster(["-n", "1", "-m", "0.2", "--", termOnlyWorker(dir)], { dir });
  const s0 = await ackedWorkers(m.sockPath, 1, 0);
  expect((await sh(m.sockPath, "upgrade")).code).toBe(0);
  await m.waitForOutput(new RegExp(`worker ${s0.workers[0]!.pid} got USR2, ignoring it`));
  const s1 = await stateJson(m.sockPath);
  expect(s1.workers.map((w) => w.pid)).toContain(s0.workers[0]!.pid);
  expect(await stopMaster(m, "SIGTERM")).toBe(0);
});

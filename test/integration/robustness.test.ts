// Operator mistakes and hostile conditions that must never take the master
// down or leave it stuck (each found in review of the master's code).
import { describe, expect, test } from "bun:test";
import { chmodSync } from "node:fs";
import { join } from "node:path";
import { BIN, quietFor, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor } from "../harness";

async function oneWorker(sock: string) {
  return waitFor("one acked worker", async () => {
    const s = await stateJson(sock);
    return s.workers.length === 1 && s.workers[0]!.acked ? s : null;
  });
}

describe("bad options are refused up front", () => {
  test("--reexec-as with unbalanced quotes, and --nice with a RENICE_CMD", async () => {
    const q = await runBinary(["--reexec-as", "/usr/bin/einhorn 'x", "--", "true"]);
    expect(q.code).toBe(2);
    expect(q.stderr.trim()).toBe(`einhorn: --reexec-as: unterminated ' quote starting at character 18: "'x"`);
    const n = await runBinary(["--nice", "0:5:/usr/bin/renice", "--", "true"]);
    expect(n.code).toBe(2);
    expect(n.stderr.trim()).toMatch(/^einhorn: --nice: a RENICE_CMD \('\/usr\/bin\/renice'\) is not supported/);
  });
});

describe("the master keeps its workers accounted for", () => {
  test("a worker nice level the master may not set is reported; the worker is still tracked, not spawned again and again", async () => {
    const dir = tempDir();
    chmodSync(dir, 0o777);
    // As an unprivileged user, lowering a worker's nice value fails with EACCES
    // (root runs the master as uid 65534 for that; anyone else already is one).
    const m = startMaster(["--nice", "0:-5", "-m", "0", "-s", "0.1", "--", "/bin/sleep", "1000"], {
      dir, wrap: process.getuid?.() === 0 ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] : [],
    });
    const s = await oneWorker(m.sockPath);
    await quietFor(500);
    const later = await stateJson(m.sockPath);
    expect(later.workers.map((w) => w.pid)).toEqual([s.workers[0]!.pid]);
    expect(m.output()).toMatch(/ERROR: Worker setpriority pid \d+ nice -5: EACCES/);
    expect(m.output().match(/===> Launched/g)).toHaveLength(1);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  });
});

describe("commands", () => {
  test("die answers even when no worker is alive (the master exits right after)", async () => {
    const m = startMaster(["-m", "5", "-s", "30", "--", "false"]);
    await m.waitForOutput(/exited with status 1 before ACKing/);
    const r = await runBinary(["sh", "-d", m.sockPath, "-e", "die"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Einhorn is going down!");
    expect(await m.exited).toBe(0);
  });

  test("signal and die refuse job-control signals, which would freeze workers for good", async () => {
    const m = startMaster(["-m", "0", "--", "sleep", "1000"]);
    await oneWorker(m.sockPath);
    for (const cmd of ["signal STOP", "signal TSTP", "die TTIN"]) {
      const r = await runBinary(["sh", "-d", m.sockPath, "-e", cmd]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`${cmd} refused: ${cmd.split(" ")[1]} pauses workers without ending them`);
    }
    expect(await stopMaster(m)).toBe(0);
  });

  test("verbosity set with louder survives a reload", async () => {
    const m = startMaster(["-m", "0", "--", "sleep", "1000"]);
    await oneWorker(m.sockPath);
    expect((await runBinary(["sh", "-d", m.sockPath, "-e", "louder; reload"])).code).toBe(0);
    const s = await stateJson(m.sockPath);
    expect(s.master.reexecs).toBe(1);
    expect(s.master.verbosity).toBe(0);
    const after = m.output().slice(m.output().indexOf("re-executed as"));
    await waitFor("a debug line after the reload", () => /DEBUG: /.test(m.output().slice(m.output().indexOf("re-executed as"))));
    void after;
    expect(await stopMaster(m)).toBe(0);
  });
});

describe("logging", () => {
  test("the master survives its stderr reader going away", async () => {
    const dir = tempDir();
    // stderr goes to `head -c 1`, which exits after one byte: later log lines meet EPIPE.
    const m = startMaster(["-m", "0", "--", "sleep", "1000"], {
      dir, wrap: ["sh", "-c", 'exec "$@" 2>&1 | head -c 1 >/dev/null', "sh"],
    });
    const sock = join(dir, "einhorn.sock");
    await waitFor("the command socket", async () => (await stateJson(sock)).workers.length === 1);
    for (let i = 0; i < 3; i++) expect((await runBinary(["sh", "-d", sock, "-e", "inc; dec"])).code).toBe(0);
    const s = await stateJson(sock);
    expect(s.settings.number).toBe(1);
    const masterPid = (await stateJson(sock)).master.pid;
    process.kill(masterPid, "SIGTERM");
    await waitFor("the master gone", () => { try { process.kill(masterPid, 0); return false; } catch { return true; } });
    expect(await m.exited).toBe(0);
  });
});

void BIN;

// `status` and `status json` against a live master with real workers: one
// spinning on a core, one asleep, one killed and replaced.
import { describe, expect, test } from "bun:test";
import { ask, CommandConnection, runBinary, sendMessage, startMaster, stateJson, statusJson, stopMaster, waitFor, within } from "../harness";

// Index 0 spins (a CPU hog), the others sleep.
const HOG_OR_SLEEP = ["sh", "-c", 'if [ "$EINHORN_CHILD_INDEX" = 0 ]; then while :; do :; done; else exec sleep 1000; fi'];

describe("status", () => {
  test("a table with every column, plausible CPU and RSS, restarts and last exit per index", async () => {
    const m = startMaster(["-n", "3", "-m", "0.2", "-b", "127.0.0.1:0", "--", ...HOG_OR_SLEEP]);
    await waitFor("3 workers up", async () => (await stateJson(m.sockPath)).workers.filter((w) => w.acked).length === 3, 20_000);
    const before = await stateJson(m.sockPath);
    const victim = before.workers.find((w) => w.index === 2)!;
    process.kill(victim.pid, "SIGKILL");
    await waitFor("index 2 replaced and up", async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.some((w) => w.index === 2 && w.pid !== victim.pid && w.acked);
    }, 20_000);
    // Let the hog accumulate CPU time, then read twice: the second reading is the rate between the two.
    await ask(m.sockPath, "status", ["json"]);
    // The reading that showed it is the one checked: on a busy machine the
    // hog's share between two readings varies, and a later one may dip.
    const d = await waitFor("the hog to show CPU use", async () => {
      const r = await statusJson(m.sockPath);
      return (r.workers.find((w) => w.index === 0)?.cpu_percent ?? 0) > 10 ? r : null;
    }, 20_000, 500);
    expect(d.schema).toBe("einhorn.status/1");
    expect(d.master.pid).toBe(m.pid);
    expect(d.master.rss_bytes).toBeGreaterThan(5 * 1024 * 1024);
    expect(d.master.rss_bytes).toBeLessThan(500 * 1024 * 1024);
    expect(d.master.sockets).toHaveLength(1);
    expect(d.master.sockets[0]).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(d.master.workers_up).toBe(3);
    expect(d.master.upgrade).toBeNull();
    const byIndex = Object.fromEntries(d.workers.map((w) => [w.index, w]));
    expect(Object.keys(byIndex).sort()).toEqual(["0", "1", "2"]);
    for (const w of d.workers) {
      expect(w.state).toBe("up");
      expect(w.rss_bytes).toBeGreaterThan(64 * 1024);
      expect(w.rss_bytes).toBeLessThan(200 * 1024 * 1024);
      expect(w.uptime_seconds).toBeGreaterThanOrEqual(0);
    }
    expect(byIndex[0]!.cpu_percent).toBeGreaterThan(10);
    expect(byIndex[0]!.cpu_percent).toBeLessThanOrEqual(205);
    expect(byIndex[1]!.cpu_percent).toBeLessThan(5);
    expect(byIndex[2]!.restarts).toBe(1);
    expect(byIndex[2]!.last_exit).toMatchObject({ code: null, signal: "SIGKILL" });
    expect(byIndex[1]!.restarts).toBe(0);
    expect(byIndex[1]!.last_exit).toBeNull();

    // The table, through the real shell.
    const r = await runBinary(["sh", "-d", m.sockPath, "-e", "status"], { dir: m.dir });
    expect(r.code).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(100);
    expect(lines[0]).toContain(`master ${m.pid}`);
    expect(lines[0]).toMatch(/RSS \d+(\.\d)?M/);
    expect(lines[0]).toContain("workers 3/3 up");
    expect(r.stdout).toContain(`sockets: ${d.master.sockets[0]}`);
    const head = lines.findIndex((l) => /PID +IDX +VER +STATE +UPTIME +CPU% +RSS +RESTARTS +LAST EXIT/.test(l));
    expect(head).toBeGreaterThan(0);
    const rows = lines.slice(head + 1, head + 4);
    expect(lines[head + 4]).toBe("");
    expect(rows[2]).toMatch(new RegExp(`^ +${byIndex[2]!.pid} +2 +0 up +\\d+s +\\d+\\.\\d +[\\d.]+[KM] +1 KILL, \\d+s ago$`));
    expect(rows[0]).toMatch(/ 0 -$/);

    const bad = await runBinary(["sh", "-d", m.sockPath, "-e", "status yaml"], { dir: m.dir });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("status takes 'json' or nothing");
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(60_000));

  test("during an upgrade the header names it and the workers not yet ACKed", async () => {
    // Manual ACK and a worker that never ACKs: the upgrade waits.
    const m = startMaster(["-n", "1", "-m", "manual", "--", "sleep", "1000"]);
    await waitFor("a worker", async () => (await stateJson(m.sockPath)).workers.length === 1);
    const s = await stateJson(m.sockPath);
    // `sleep` cannot ACK: ACK the first worker on its behalf, as a worker library would.
    await sendMessage(m.sockPath, { command: "worker:ack", pid: s.workers[0]!.pid });
    await waitFor("first worker acked", async () => (await stateJson(m.sockPath)).workers[0]!.acked);
    // Its answers are not read: the connection stays open while the upgrade waits.
    const up = await CommandConnection.open(m.sockPath);
    up.send({ command: "upgrade", args: [], id: 1 });
    await waitFor("upgrade under way with a new worker", async () => {
      const d = await statusJson(m.sockPath);
      return d.master.upgrade && d.master.upgrade.waiting_for_ack.length === 1 ? d : null;
    }, 60_000, 100);
    const text = await ask(m.sockPath, "status");
    expect(text).toMatch(/upgrade: smooth, version 0 -> 1, 0\/1 new up, running \d+s; waiting for ACKs from \d+/);
    expect(text).toMatch(/ starting /);
    up.close();
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(60_000));

  test("after 2 upgrades and a kill -9 with -n 4: retirements are not restarts, and the crash stays in recent exits whatever index follows it", async () => {
    const m = startMaster(["-n", "4", "-m", "0", "--max-unacked", "4", "--", "sleep", "1000"]);
    const upAll = () => waitFor("4 workers up, none retiring", async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.length === 4 && s.workers.every((w) => w.acked && !w.retiring) ? s : null;
    }, 30_000);
    await upAll();
    for (let i = 0; i < 2; i++) {
      const r = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { dir: m.dir, timeoutMs: 30_000 });
      expect(r.stdout).toContain("Upgrade done");
      await upAll();
    }
    const before = await upAll();
    const victim = before.workers[before.workers.length - 1]!;
    process.kill(victim.pid, "SIGKILL");
    await waitFor("the crash replaced", async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.length === 4 && !s.workers.some((w) => w.pid === victim.pid) && s.workers.every((w) => w.acked);
    }, 30_000);
    const d = await statusJson(m.sockPath);
    expect(d.master.exits).toEqual({ unasked: 1, asked: { upgrade: 8, dec: 0, max_memory: 0, stop: 0, signal: 0 } });
    expect(d.workers.reduce((n, w) => n + w.restarts, 0)).toBeLessThanOrEqual(1);
    expect(d.recent_exits).toHaveLength(9);
    expect(d.recent_exits[0]).toMatchObject({ pid: victim.pid, index: victim.index, generation: 2, code: null, signal: "SIGKILL", asked: false, reason: null, acked: true });
    expect(d.recent_exits.slice(1).every((r) => r.asked && r.reason === "upgrade")).toBe(true);
    const r = await runBinary(["sh", "-d", m.sockPath, "-e", "status"], { dir: m.dir });
    expect(r.stdout).toContain("exits: 1 unasked (the restarts); asked: 8 upgrade");
    expect(r.stdout).toMatch(new RegExp(`pid ${victim.pid}  index ${victim.index}  generation 2  killed by KILL  UNASKED`));
    const s = await stateJson(m.sockPath);
    expect(s.recent_exits).toHaveLength(9);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(90_000));
});

import { describe, expect, test } from "bun:test";
import { DEFAULT_SETTINGS, exitThisStep, initialState, RECENT_EXITS, upgradeState } from "../../src/core/state";
import { ready } from "../core-sim";
import { buildStatus, renderStatus, STATUS_WIDTH, type Readings } from "../../src/master/status-report";
import { CpuMeter, formatBytes, formatDuration } from "../../src/master/proc-stats";
import { parseSize } from "../../src/config/value-kinds";
import { parseBindSpec } from "../../src/config/bind-spec";

const T0 = Date.parse("2026-12-01T00:00:00Z");

function sampleState() {
  const s = initialState({ ...DEFAULT_SETTINGS, number: 3 }, T0);
  s.version = 2;
  s.lastVersion = 2;
  s.workers = [
    { pid: 4_194_301, index: 1, version: 2, spawnedAt: T0 + 1000, ackedAt: T0 + 1500, signals: [], lastPing: null },
    { pid: 12, index: 0, version: 1, spawnedAt: T0, ackedAt: T0 + 100, signals: [{ signal: "SIGUSR2", at: T0 + 2000 }], lastPing: null },
    { pid: 13, index: 2, version: 2, spawnedAt: T0 + 3000, ackedAt: null, signals: [], lastPing: null },
  ];
  s.exits = { "1": { total: 7, beforeAck: 2, unasked: 3, lastCode: null, lastSignal: "SIGKILL", lastAt: T0 + 900 } };
  s.upgrade = { mode: "smooth", startedAt: T0 + 800, fromVersion: 1, deathsBeforeAck: 0 };
  return s;
}

const listeners = Array.from({ length: 9 }, (_, i) => {
  const spec = parseBindSpec(`127.0.0.1:${8000 + i}`);
  return { fd: 3 + i, spec, bound: { family: "inet" as const, host: "127.0.0.1", port: 8000 + i }, unixPath: null };
});

describe("status", () => {
  const readings: Readings = new Map([[99, { cpuPercent: 1.234, rssBytes: 31 * 1024 * 1024 }], [12, { cpuPercent: 150, rssBytes: 5_000_000_000 }], [13, null]]);
  const rt = { masterPid: 99, einhornVersion: "0.1.0", commandName: "a-rather-long-service-name-that-goes-on-and-on-and-on", socketPath: `/tmp/${"x".repeat(150)}.sock`, listeners };

  test("data: states, restarts and last exit per index, upgrade and readings", () => {
    const d = buildStatus(sampleState(), rt, readings, T0 + 10_000);
    expect(d.workers.map((w) => [w.index, w.pid, w.state])).toEqual([[0, 12, "retiring"], [1, 4_194_301, "up"], [2, 13, "starting"]]);
    expect(d.workers[1]!.restarts).toBe(3);
    expect(d.workers[1]!.retirements).toBe(4);
    expect(d.workers[1]!.last_exit).toEqual({ code: null, signal: "SIGKILL", at: new Date(T0 + 900).toISOString(), ago_seconds: 9.1 });
    expect(d.workers[0]!.last_exit).toBeNull();
    expect(d.workers[1]!.cpu_percent).toBeNull(); // no reading for that pid
    expect(d.workers[2]!.rss_bytes).toBeNull();
    expect(d.workers[0]!.cpu_percent).toBe(150);
    expect(d.master.rss_bytes).toBe(31 * 1024 * 1024);
    expect(d.master.upgrade).toEqual({ mode: "smooth", from_version: 1, to_version: 2, elapsed_seconds: 9.2, new_up: 1, waiting_for_ack: [13] });
    expect(d.master.workers_up).toBe(1);
    expect(d.master.sockets).toHaveLength(9);
  });

  test("table: every line fits 100 columns, one row per worker, the columns named", () => {
    const text = renderStatus(buildStatus(sampleState(), rt, readings, T0 + 10_000));
    const lines = text.split("\n");
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(STATUS_WIDTH);
    const head = lines.findIndex((l) => l.startsWith("     PID"));
    expect(lines[head]).toMatch(/PID +IDX +VER +STATE +UPTIME +CPU% +RSS +RESTARTS +LAST EXIT/);
    expect(lines.slice(head + 1)).toHaveLength(3);
    expect(lines[head + 2]).toMatch(/^ +4194301 +1 +2 up +9s +\? +\? +3 KILL, 9s ago$/);
    expect(lines[head + 1]).toMatch(/^ +12 +0 +1 retiring +10s +150\.0 +4\.7G +0 -$/);
    expect(text).toContain("upgrade: smooth, version 1 -> 2, 1/3 new up");
    expect(text).toContain("waiting for ACKs from 13");
    // Nine sockets wrap onto more than one line, none lost.
    for (let i = 0; i < 9; i++) expect(text).toContain(`127.0.0.1:${8000 + i}`);
  });

  test("no workers", () => {
    const s = initialState(DEFAULT_SETTINGS, T0);
    expect(renderStatus(buildStatus(s, { ...rt, listeners: [] }, new Map(), T0))).toContain("(no workers)");
  });
});

describe("proc-stats helpers", () => {
  test("CPU meter: lifetime average first, then the rate between readings", () => {
    const m = new CpuMeter();
    expect(m.percent(1, { cpuSeconds: 5, rssBytes: 0, startedSinceBoot: 90 }, 100)).toBeCloseTo(50);
    expect(m.percent(1, { cpuSeconds: 6, rssBytes: 0, startedSinceBoot: 90 }, 102)).toBeCloseTo(50);
    expect(m.percent(1, { cpuSeconds: 8, rssBytes: 0, startedSinceBoot: 90 }, 103)).toBeCloseTo(200);
    m.forget(new Set());
    expect(m.percent(1, { cpuSeconds: 8, rssBytes: 0, startedSinceBoot: 90 }, 106)).toBeCloseTo(50);
  });
  test("sizes and durations", () => {
    expect(parseSize("512M")).toBe(512 * 1024 * 1024);
    expect(parseSize("1.5g")).toBe(1.5 * 1024 ** 3);
    expect(parseSize("300k")).toBe(300 * 1024);
    expect(parseSize("4096")).toBe(4096);
    expect(parseSize("12MiB")).toBe(12 * 1024 * 1024);
    for (const bad of ["", "M", "-1M", "0", "12 parsecs", "1e9"]) expect(parseSize(bad)).toBeNull();
    expect(formatBytes(1536)).toBe("1.5K");
    expect(formatBytes(300 * 1024 * 1024)).toBe("300M");
    expect(formatDuration(59.9)).toBe("59s");
    expect(formatDuration(3 * 60 + 3)).toBe("3m03s");
    expect(formatDuration(2 * 3600 + 5 * 60)).toBe("2h05m");
    expect(formatDuration(3 * 86400 + 4 * 3600)).toBe("3d04h");
  });
});

describe("status after incidents: restarts are unasked exits, recent exits keep a crash in view", () => {
  test("-n 4, two upgrades and one SIGKILL: RESTARTS adds up to 1, retirements apart by reason, the crash in recent exits", () => {
    const sim = ready(4, { maxUnacked: 4 }, T0);
    let t = T0 + 1000;
    // Two fleet upgrades: each new generation ACKs, each old worker leaves when asked.
    for (let u = 0; u < 2; u++) {
      sim.send({ type: "upgrade", mode: "fleet" }, t);
      sim.ackAll(t += 100);
      for (const w of sim.state.workers.filter((x) => x.signals.length)) sim.exit(w.pid, t += 10);
    }
    // kill -9 of the worker at index 2; its replacement takes the lowest free index.
    const victim = sim.state.workers.find((w) => w.index === Math.min(...sim.state.workers.map((x) => x.index)))!;
    sim.exit(victim.pid, t += 1000, null, "SIGKILL");
    sim.advance(t + 5000);
    sim.ackAll(t += 5000);
    const d = buildStatus(sim.state, { masterPid: 1, einhornVersion: "0.1.0", commandName: null, socketPath: "/tmp/s.sock", listeners: [] }, new Map(), t + 1000);
    expect(d.workers.reduce((n, w) => n + w.restarts, 0)).toBe(1);
    expect(d.master.exits).toEqual({ unasked: 1, asked: { upgrade: 8, dec: 0, max_memory: 0, stop: 0, signal: 0 } });
    expect(d.recent_exits).toHaveLength(9);
    expect(d.recent_exits[0]).toMatchObject({ pid: victim.pid, index: victim.index, generation: 2, code: null, signal: "SIGKILL", asked: false, reason: null, acked: true });
    expect(d.recent_exits.slice(1).every((r) => r.asked && r.reason === "upgrade")).toBe(true);
    const text = renderStatus(d);
    for (const l of text.split("\n")) expect(l.length).toBeLessThanOrEqual(STATUS_WIDTH);
    expect(text).toContain("exits: 1 unasked (the restarts); asked: 8 upgrade");
    expect(text).toContain(`pid ${victim.pid}  index ${victim.index}  generation 2  killed by KILL  UNASKED`);
    expect(text).toContain("recent exits, newest first (9 of the last 9; all in 'status json'):");
  });

  test("the recent-exits list stays bounded and crosses a re-exec (JSON); an older document gets defaults", () => {
    const sim = ready(1, {}, T0);
    for (let i = 0; i < 30; i++) {
      sim.exit(sim.state.workers[0]!.pid, sim.now + 100, 1);
      sim.advance(sim.now + 60_000);
      sim.ackAll();
    }
    expect(sim.state.recentExits).toHaveLength(RECENT_EXITS);
    expect(sim.state.exitTotals.unasked).toBe(30);
    const again = upgradeState(JSON.parse(JSON.stringify(sim.state)), sim.now);
    expect(again.recentExits).toEqual(sim.state.recentExits);
    // A document written before recentExits and exitTotals, and before exits counted unasked ones.
    const { recentExits: _r, exitTotals: _t, ...older } = JSON.parse(JSON.stringify(sim.state)) as typeof sim.state;
    for (const c of Object.values(older.exits) as Array<Partial<(typeof older.exits)[string]>>) delete c.unasked;
    const old = upgradeState(older, sim.now);
    expect(old.recentExits).toEqual([]);
    expect(old.exitTotals.unasked).toBe(0);
    expect(old.exits["0"]!.unasked).toBe(30);
  });
});

describe("exitThisStep: the one record of an exit that metrics and sd_notify read", () => {
  test("a crash gives its record (unasked, ACKed); an exit during a stop says so; a step without an exit, or a stray pid, gives null", () => {
    const sim = ready(2, {}, T0);
    const [a, b] = sim.pids() as [number, number];
    let before = sim.state;
    sim.exit(a, sim.now + 100, null, "SIGKILL");
    expect(exitThisStep(before, sim.state)).toMatchObject({ pid: a, asked: null, acked: true, signal: "SIGKILL", code: null });
    before = sim.state;
    sim.tick(sim.now + 10);
    expect(exitThisStep(before, sim.state)).toBeNull();
    before = sim.state;
    sim.exit(4242, sim.now + 10, 0);
    expect(exitThisStep(before, sim.state)).toBeNull();
    // USR2 to the master is Einhorn's graceful stop.
    sim.send({ type: "signal", signal: "SIGUSR2" }, sim.now + 10);
    before = sim.state;
    sim.exit(b, sim.now + 10, 0);
    expect(exitThisStep(before, sim.state)).toMatchObject({ pid: b, asked: "stop", code: 0, acked: true });
  });
});

import { describe, expect, test } from "bun:test";
import { initialState, DEFAULT_SETTINGS } from "../../src/core/state";
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
  s.exits = { "1": { total: 7, beforeAck: 2, lastCode: null, lastSignal: "SIGKILL", lastAt: T0 + 900 } };
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
    expect(d.workers[1]!.restarts).toBe(7);
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
    expect(lines[head + 2]).toMatch(/^ +4194301 +1 +2 up +9s +\? +\? +7 KILL, 9s ago$/);
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

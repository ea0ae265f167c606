// Table-driven tests for the read-only pool questions in src/core/pool.ts.
import { describe, expect, test } from "bun:test";
import {
  ackedCurrentCount, BACKOFF_CAP_SECONDS, backoffMs, currentWorkers, findWorker, freeIndex, isAcked, isRetiring,
  missingCount, otherVersionWorkers, pendingOfCurrent, RETIRING_SIGNALS, spawnIntervalMs,
  unackedCount, wasSent,
} from "../../src/core/pool";
import type { SignalName } from "../../src/signal-names";
import { DEFAULT_SETTINGS, initialState, type PendingSpawn, type Settings, type State, type Worker } from "../../src/core/state";

let pidSeq = 1000;
function worker(p: Partial<Worker> = {}): Worker {
  return { pid: pidSeq++, index: 0, version: 0, spawnedAt: 0, ackedAt: null, signals: [], lastPing: null, ...p };
}
function pending(p: Partial<PendingSpawn> = {}): PendingSpawn {
  return { spawnId: pidSeq++, index: 0, version: 0, ...p };
}
function state(p: Partial<State> = {}, settings: Partial<Settings> = {}): State {
  return { ...initialState({ ...DEFAULT_SETTINGS, ...settings }, 0), ...p };
}
const sig = (signal: SignalName, at = 0) => ({ signal, at });

describe("retiring signals", () => {
  test("exactly USR2, TERM, INT, QUIT, KILL retire a worker", () => {
    expect([...RETIRING_SIGNALS].sort()).toEqual(["SIGINT", "SIGKILL", "SIGQUIT", "SIGTERM", "SIGUSR2"]);
  });
  const cases: [SignalName[], boolean][] = [
    [[], false], [["SIGHUP"], false], [["SIGHUP", "SIGUSR1", "SIGWINCH"], false], [["SIGUSR2"], true],
    [["SIGHUP", "SIGTERM"], true], [["SIGKILL"], true], [["SIGQUIT"], true], [["SIGINT"], true],
  ];
  for (const [signals, retiring] of cases) {
    test(`signals [${signals.join(",")}] -> retiring=${retiring}`, () => {
      expect(isRetiring(worker({ signals: signals.map((s) => sig(s)) }))).toBe(retiring);
    });
  }
  test("wasSent matches the exact normalised name", () => {
    const w = worker({ signals: [sig("SIGHUP"), sig("SIGUSR2")] });
    expect(wasSent(w, "SIGUSR2")).toBe(true);
    expect(wasSent(w, "SIGHUP")).toBe(true);
    expect(wasSent(w, "SIGKILL")).toBe(false);
  });
  test("isAcked follows ackedAt, including an ACK at time 0", () => {
    expect(isAcked(worker({ ackedAt: null }))).toBe(false);
    expect(isAcked(worker({ ackedAt: 0 }))).toBe(true);
    expect(isAcked(worker({ ackedAt: 1234 }))).toBe(true);
  });
});

describe("backoffMs: seconds * 1.5^deaths, capped at 30 s", () => {
  test("cap is 30 s", () => expect(BACKOFF_CAP_SECONDS).toBe(30));
  const cases: [number, number, number][] = [
    [1, 0, 1000], [1, 1, 1500], [1, 2, 2250], [1, 3, 3375], [1, 4, 5062.5], [1, 8, 25628.90625],
    [1, 9, 30000], [1, 50, 30000], [1, 1000, 30000], [2, 0, 2000], [2, 3, 6750], [2, 7, 30000],
    [0.5, 0, 500], [0.5, 1, 750], [0.1, 2, 225], [10, 2, 22500], [10, 3, 30000],
  ];
  for (const [seconds, deaths, ms] of cases) {
    test(`seconds=${seconds} deaths=${deaths} -> ${ms} ms`, () => expect(backoffMs(seconds, deaths)).toBeCloseTo(ms, 6));
  }
});

describe("spawnIntervalMs", () => {
  const up = { mode: "smooth" as const, startedAt: 0, fromVersion: 0, deathsBeforeAck: 0 };
  const cases: [string, Partial<State>, number, number][] = [
    ["no upgrade, no deaths: seconds", { consecutiveDeaths: 0 }, 2, 2000],
    ["no upgrade, 2 deaths: backoff", { consecutiveDeaths: 2 }, 2, 4500],
    ["upgrade, no deaths: not paced by a clock", { consecutiveDeaths: 0, upgrade: up }, 2, 0],
    ["upgrade, 1 death: backoff again", { consecutiveDeaths: 1, upgrade: up }, 2, 3000],
    ["upgrade, many deaths: capped", { consecutiveDeaths: 40, upgrade: up }, 2, 30000],
  ];
  for (const [name, p, seconds, ms] of cases) {
    test(name, () => expect(spawnIntervalMs(state(p, { seconds }))).toBe(ms));
  }
});

describe("freeIndex: smallest index not held by a live worker of any version or a pending spawn", () => {
  const cases: [string, number[], number[], number[], number][] = [
    // name, current-version worker indexes, old-version worker indexes, pending indexes, expected
    ["empty pool", [], [], [], 0],
    ["dense", [0, 1, 2], [], [], 3],
    ["hole at 1", [0, 2, 3], [], [], 1],
    ["hole at 0", [1, 2], [], [], 0],
    ["old generation holds 0", [1], [0], [], 2],
    ["old generation holds the hole", [0, 2], [1], [], 3],
    ["pending spawn holds 0", [1], [], [0], 2],
    ["pending spawns and old workers", [3], [0, 2], [1], 4],
    ["unsorted", [5, 0, 3, 1], [2], [], 4],
  ];
  for (const [name, cur, old, pend, expected] of cases) {
    test(`${name} -> ${expected}`, () => {
      const s = state({
        version: 1,
        lastVersion: 1,
        workers: [...cur.map((index) => worker({ index, version: 1 })), ...old.map((index) => worker({ index, version: 0 }))],
        pending: pend.map((index) => pending({ index, version: 1 })),
      });
      expect(freeIndex(s)).toBe(expected);
    });
  }
});

describe("pool counts", () => {
  // version 2 is current; one old (v1) worker; a retiring current worker; pending spawns of both versions
  const s = state({
    version: 2,
    lastVersion: 2,
    workers: [
      worker({ pid: 1, index: 0, version: 2, ackedAt: 10 }),
      worker({ pid: 2, index: 1, version: 2, ackedAt: null }),
      worker({ pid: 3, index: 2, version: 2, ackedAt: 10, signals: [sig("SIGHUP")] }),
      worker({ pid: 4, index: 3, version: 2, ackedAt: 10, signals: [sig("SIGUSR2")] }),
      worker({ pid: 5, index: 4, version: 2, ackedAt: null, signals: [sig("SIGTERM")] }),
      worker({ pid: 6, index: 5, version: 1, ackedAt: 10 }),
      worker({ pid: 7, index: 6, version: 1, ackedAt: null }),
    ],
    pending: [pending({ index: 7, version: 2 }), pending({ index: 8, version: 1 })],
  }, { number: 8 });

  test("current / other version split", () => {
    expect(currentWorkers(s).map((w) => w.pid)).toEqual([1, 2, 3, 4, 5]);
    expect(otherVersionWorkers(s).map((w) => w.pid)).toEqual([6, 7]);
    expect(pendingOfCurrent(s)).toBe(1);
  });
  test("missing = number - current workers (retiring included) - current pending", () => {
    expect(missingCount(s)).toBe(8 - 5 - 1);
  });
  test("unacked = current unacked non-retiring + current pending", () => {
    expect(unackedCount(s)).toBe(1 /* pid 2 */ + 1 /* pending v2 */);
  });
  test("ackedCurrent excludes retiring workers but not HUPed ones", () => {
    expect(ackedCurrentCount(s)).toBe(2); // pids 1 and 3
  });
  test("findWorker", () => {
    expect(findWorker(s, 6)?.index).toBe(5);
    expect(findWorker(s, 99)).toBeUndefined();
  });
});

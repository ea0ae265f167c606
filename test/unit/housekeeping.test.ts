// The master's repeating timers (src/master/housekeeping.ts) over the real
// core and Interpreter and a clock that moves only when the test says: the
// reap safety net, the report of an upgrade waiting for ACKs (to the log and
// to the waiting clients), and that nothing fires once stopped or exited.
import { describe, expect, test } from "bun:test";
import { DEFAULT_SETTINGS, initialState, type State } from "../../src/core/state";
import type { Effect, Event, ReexecKind } from "../../src/core/step";
import { Housekeeping } from "../../src/master/housekeeping";
import { defaultTimeouts } from "../../src/config/timeouts";
import type { ExecRequest, Host } from "../../src/master/interpreter";
import { Interpreter } from "../../src/master/interpreter";
import type { Os } from "../../src/master/os";
import { ScriptedClock, T0 } from "../scripted-clock";


/** Timers and a clock (the shared scripted clock); every other Os call is not on this path. */
function clock() {
  const c = new ScriptedClock(T0);
  const off = (what: string) => () => { throw new Error(`${what}: not on this path`); };
  const os: Os = {
    now: c.now, after: c.after, every: c.every,
    spawn: off("spawn"), kill: () => true, wait: () => null, check: () => ({ kind: "running" }),
    handOverChildren: () => [], adoptChildren: () => {}, exec: off("exec"), exit: (() => undefined) as unknown as Os["exit"],
  };
  return { os, advance: (ms: number) => c.advance(ms), armed: () => c.armedRepeating };
}

class WorkersHost implements Host {
  nextPid = 500;
  spawnWorker(): number { return this.nextPid++; }
  enroll(_requestId: number, _kind: ReexecKind): void {}
  refuse(_requestId: number, _message: string): void {}
  notify(_kind: ReexecKind, _message: string, _final: boolean, _error: boolean): void {}
  runPreflight(_kind: ReexecKind): void {}
  exec(_pending: ExecRequest): void {}
  cancelExec(): void {}
  cancelPreflight(): void {}
  inputWaiting(): boolean { return false; }
  observe(_e: Event, _before: State, _after: State, _effects: Effect[], _now: number): void {}
  leave(_code: number): void {}
}

function setUp() {
  const c = clock();
  const loop = new Interpreter(c.os, new WorkersHost(), { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} }, initialState({ ...DEFAULT_SETTINGS, number: 1, ackMode: { kind: "manual" } }, T0));
  const seen = { reaps: 0, warnings: [] as string[], notes: [] as string[] };
  const housekeeping = new Housekeeping({
    state: () => loop.state,
    dispatch: (e) => loop.dispatch(e),
    notify: (kind, message, final) => seen.notes.push(`${kind}${final ? " final" : ""}: ${message}`),
    exited: () => loop.exited,
    reap: () => { seen.reaps++; loop.reap(); },
    os: c.os,
    log: { warn: (m) => seen.warnings.push(m) },
    config: { maxMemory: null },
    timeouts: defaultTimeouts(),
  });
  loop.dispatch({ type: "start" });
  loop.dispatch({ type: "ack", pid: 500 });
  return { ...c, loop, housekeeping, seen };
}

describe("housekeeping timers", () => {
  test("the reap safety net runs every 5 s, from start until stop", () => {
    const h = setUp();
    h.advance(20_000);
    expect(h.seen.reaps).toBe(0);
    h.housekeeping.start();
    expect(h.armed()).toBe(2);
    h.advance(15_000);
    expect(h.seen.reaps).toBe(3);
    h.housekeeping.stop();
    expect(h.armed()).toBe(0);
    h.advance(15_000);
    expect(h.seen.reaps).toBe(3);
  });

  test("an upgrade waiting for ACKs is reported to the log and to the waiting clients every 10 s, and not once the master exited", () => {
    const h = setUp();
    h.housekeeping.start();
    h.loop.dispatch({ type: "upgrade", mode: "smooth" });
    const waiting = h.loop.state.workers.find((w) => w.version === 1)!;
    h.advance(9_000);
    expect(h.seen.warnings).toEqual([]);
    h.advance(1_000);
    const report = `Upgrade to version 1 waiting 10s for ACKs: worker ${waiting.pid} (index ${waiting.index}, 10s) not ACKed yet; 0 of 1 new workers up. Without --ack-timeout the upgrade waits for ever; set it (or 'config ack_timeout=SECONDS') to fail an upgrade whose workers never ACK.`;
    expect(h.seen.warnings).toEqual([report]);
    expect(h.seen.notes).toEqual([`upgrade: ${report}`]);

    h.loop.dispatch({ type: "quit" });
    expect(h.loop.exited).toBe(true);
    h.advance(30_000);
    expect(h.seen.warnings.length).toBe(1);
  });
});

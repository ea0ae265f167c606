// The sd_notify policy (src/master/sd-notify.ts) over the real decision core:
// a simulated master's every step goes through SdNotifier.observe, with a
// scripted clock and a transport that records each datagram.
import { describe, expect, test } from "bun:test";
import type { Event } from "../../src/core/step";
import type { State } from "../../src/core/state";
import { phaseOf, readNotifyEnv, SdNotifier, statusText, workerNotifyEnv } from "../../src/master/sd-notify";
import { MANUAL, ready, Sim, type SimSettings, SPEC_A } from "../core-sim";

interface Timer { at: number; every: number | null; fn: () => void; live: boolean }

/** A Sim whose steps a notifier observes, with the timers the notifier sets run on the Sim's clock. */
class Rig {
  sent: Array<{ at: number; text: string }> = [];
  warnings: string[] = [];
  timers: Timer[] = [];
  notifier!: SdNotifier;
  private seen = 0;
  private prev: State;

  constructor(readonly sim: Sim, env: Record<string, string> = { NOTIFY_SOCKET: "/run/systemd/notify" }, readonly pid = 4242) {
    this.prev = sim.state;
    this.seen = sim.history.length;
    this.attach(env);
  }

  /** A fresh notifier (a new master image), on the same transport. */
  attach(env: Record<string, string> = { NOTIFY_SOCKET: "/run/systemd/notify" }): SdNotifier {
    for (const t of this.timers) t.live = false;
    this.timers = [];
    const os = {
      now: () => this.sim.now,
      after: (ms: number, fn: () => void) => this.timer(ms, null, fn),
      every: (ms: number, fn: () => void) => this.timer(ms, ms, fn),
    };
    const log = { debug() {}, info() {}, warn: (m: string) => this.warnings.push(m) };
    this.notifier = new SdNotifier(env, this.pid, os, log, () => ({ send: (text) => this.sent.push({ at: this.sim.now, text }), close() {} }), () => 123456789n);
    return this.notifier;
  }

  private timer(ms: number, every: number | null, fn: () => void) {
    const t: Timer = { at: this.sim.now + ms, every, fn, live: true };
    this.timers.push(t);
    return () => { t.live = false; };
  }

  /** Feed the notifier the steps the Sim made since last time. */
  sync(): void {
    for (const r of this.sim.history.slice(this.seen)) {
      this.notifier.observe(r.event, this.prev, r.state, r.effects, r.at);
      this.prev = r.state;
    }
    this.seen = this.sim.history.length;
  }

  send(e: Event, at = this.sim.now): void {
    this.sim.send(e, at);
    this.sync();
  }

  /** Move time to `to`, running the core's wake-ups and the notifier's timers in order. */
  advance(to: number): void {
    for (;;) {
      const due = this.timers.filter((t) => t.live && t.at <= to).sort((a, b) => a.at - b.at)[0];
      const wake = this.sim.wakeAt !== null && this.sim.wakeAt > this.sim.now && this.sim.wakeAt <= to ? this.sim.wakeAt : null;
      if (!due && wake === null) break;
      if (due && (wake === null || due.at <= wake)) {
        this.sim.now = Math.max(this.sim.now, due.at);
        if (due.every) due.at += due.every; else due.live = false;
        due.fn();
      } else {
        this.sim.tick(wake!);
        this.sync();
      }
    }
    this.sim.now = Math.max(this.sim.now, to);
  }

  /** Every line sent, with its time, in order. */
  lines(): Array<[number, string]> {
    return this.sent.flatMap((d) => d.text.split("\n").map((l): [number, string] => [d.at, l]));
  }
  states(): string[] {
    return this.lines().map(([, l]) => l).filter((l) => !l.startsWith("STATUS=") && l !== "WATCHDOG=1");
  }
  statuses(): string[] {
    return this.lines().filter(([, l]) => l.startsWith("STATUS=")).map(([, l]) => l.slice(7));
  }
}

/** As core-sim's ready(): n workers started and ACKed, every step observed from the start. */
function readyRig(n: number, settings: SimSettings = {}, env?: Record<string, string>): Rig {
  const sim = new Sim({ number: n, ackMode: MANUAL, seconds: 1, maxUnacked: 1, ...settings }, 1_000_000);
  const rig = new Rig(sim, env);
  rig.send({ type: "start" });
  for (const pid of sim.pids()) rig.send({ type: "ack", pid }, sim.now + 10);
  expect(rig.states()).toEqual(["READY=1"]);
  return rig;
}

function started(n: number, settings = {}): Rig {
  const sim = new Sim({ number: n, ackMode: MANUAL, seconds: 1, maxUnacked: n, ...settings }, 1_000_000);
  const rig = new Rig(sim);
  rig.send({ type: "start" });
  return rig;
}

describe("READY=1", () => {
  test("only once every wanted worker ACKed", () => {
    const rig = started(2);
    const [a, b] = rig.sim.pids();
    expect(rig.states()).toEqual([]);
    rig.send({ type: "ack", pid: a! }, rig.sim.now + 100);
    expect(rig.states()).toEqual([]);
    rig.send({ type: "ack", pid: b! }, rig.sim.now + 2000);
    expect(rig.states()).toEqual(["READY=1"]);
    expect(rig.lines().find(([, l]) => l === "READY=1")![0]).toBe(rig.sim.now);
    // A crash afterwards does not take it back.
    rig.send({ type: "exited", pid: a!, code: 1, signal: null }, rig.sim.now + 5000);
    expect(rig.states()).toEqual(["READY=1"]);
  });

  test("never, for a worker that never ACKs; STATUS= says what it waits for", () => {
    const rig = started(1);
    rig.advance(rig.sim.now + 60_000);
    expect(rig.states()).toEqual([]);
    expect(rig.statuses()).toEqual(["Starting: 0/1 workers up, version 0"]);
  });

  test("by the timer ACK too", () => {
    const sim = new Sim({ number: 2, ackMode: { kind: "timer", seconds: 1 }, seconds: 1, maxUnacked: 2 }, 0);
    const rig = new Rig(sim);
    rig.send({ type: "start" });
    rig.advance(999);
    expect(rig.states()).toEqual([]);
    rig.advance(1001);
    expect(rig.states()).toEqual(["READY=1"]);
  });
});

/** Request an upgrade and carry it through preflight and the re-exec (a new notifier restored from the old one's document). */
function upgradeThroughExec(rig: Rig): void {
  rig.send({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: null }, rig.sim.now + 1000);
  rig.send({ type: "preflight-done", ok: true, detail: "ok" }, rig.sim.now + 300);
  const doc = JSON.parse(JSON.stringify(rig.notifier.toJSON()));
  rig.notifier.stop();
  rig.attach().restore(doc);
  rig.notifier.start();
  rig.send({ type: "resumed", version: "next", pid: rig.pid, spec: SPEC_A }, rig.sim.now + 200);
}

function ackNewWorkers(rig: Rig, until = rig.sim.now + 30_000): void {
  while (rig.sim.now < until) {
    const fresh = rig.sim.state.workers.filter((w) => w.version === rig.sim.state.version && w.ackedAt === null);
    for (const w of fresh) rig.send({ type: "ack", pid: w.pid }, rig.sim.now + 10);
    if (!rig.sim.state.upgrade) return;
    rig.advance(rig.sim.now + 500);
  }
}

describe("upgrades", () => {
  test("RELOADING=1 with MONOTONIC_USEC= when accepted, MAINPID= after the re-exec, READY=1 when the new generation is up", () => {
    const rig = readyRig(2, { maxUnacked: 1 });
    upgradeThroughExec(rig);
    expect(rig.states()).toEqual(["READY=1", "RELOADING=1", "MONOTONIC_USEC=123456789", "MAINPID=4242"]);
    // Sent together: RELOADING=1 and its MONOTONIC_USEC= in one datagram.
    expect(rig.sent.some((d) => d.text.startsWith("RELOADING=1\nMONOTONIC_USEC=123456789"))).toBe(true);
    ackNewWorkers(rig);
    expect(rig.states()).toEqual(["READY=1", "RELOADING=1", "MONOTONIC_USEC=123456789", "MAINPID=4242", "READY=1"]);
    expect(rig.sim.state.version).toBe(1);
  });

  test("a failed preflight: READY=1 again, and STATUS= says the upgrade failed until the next one", () => {
    const rig = readyRig(1);
    rig.send({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: null }, rig.sim.now + 1000);
    rig.send({ type: "preflight-done", ok: false, reason: "the next binary exited with status 1" }, rig.sim.now + 100);
    expect(rig.states()).toEqual(["READY=1", "RELOADING=1", "MONOTONIC_USEC=123456789", "READY=1"]);
    rig.advance(rig.sim.now + 2000);
    expect(rig.statuses().at(-1)).toBe("1/1 workers up, version 0; Upgrade failed: the next binary exited with status 1");
  });

  test("new workers that die before ACKing fail the upgrade safe: READY=1, STATUS= says so", () => {
    const rig = readyRig(1, { upgradeMaxDeaths: 2 });
    upgradeThroughExec(rig);
    for (let i = 0; i < 2; i++) {
      const fresh = rig.sim.state.workers.find((w) => w.version === 1);
      if (!fresh) { rig.advance(rig.sim.now + 2000); continue; }
      rig.send({ type: "exited", pid: fresh.pid, code: 1, signal: null }, rig.sim.now + 50);
      rig.advance(rig.sim.now + 2000);
    }
    expect(rig.sim.state.upgrade).toBeNull();
    expect(rig.states()).toEqual(["READY=1", "RELOADING=1", "MONOTONIC_USEC=123456789", "MAINPID=4242", "READY=1"]);
    const last = rig.statuses().at(-1)!;
    expect(last).toStartWith("1/1 workers up, version 0; Upgrade failed: 2 new workers in a row exited before they ACKed; last crash: index 1 (pid ");
    expect(last).toMatch(/exited with status 1 at \d\d:\d\d:\d\d UTC$/);
  });

  test("with a bake: READY=1 when up, STATUS= while baking; a rollback reloads again and says it rolled back", () => {
    const rig = readyRig(2, { upgradeBake: 60, upgradeMaxDeaths: 1, maxUnacked: 2 });
    upgradeThroughExec(rig);
    ackNewWorkers(rig);
    expect(rig.sim.state.bake).not.toBeNull();
    expect(rig.states().at(-1)).toBe("READY=1");
    rig.advance(rig.sim.now + 1500);
    expect(rig.statuses().at(-1)).toBe("2/2 workers up, version 1; baking version 1 (60s window, 0 unasked exits)");
    const [a, b] = rig.sim.pids(1);
    rig.send({ type: "exited", pid: a!, code: null, signal: "SIGSEGV" }, rig.sim.now + 100);
    rig.send({ type: "exited", pid: b!, code: null, signal: "SIGSEGV" }, rig.sim.now + 100);
    expect(rig.sim.state.upgrade?.rollback).toBe(true);
    expect(rig.states().slice(-2)).toEqual(["RELOADING=1", "MONOTONIC_USEC=123456789"]);
    rig.advance(rig.sim.now + 1500);
    expect(rig.statuses().at(-1)).toMatch(/^Rolling back as version 2 \(the spec of version 0\): 0\/2 up; Upgrade to version 1 rolled back: 2 of its workers exited unasked/);
    ackNewWorkers(rig);
    rig.advance(rig.sim.now + 1500);
    expect(rig.states().at(-1)).toBe("READY=1");
    expect(rig.statuses().at(-1)).toMatch(/^2\/2 workers up, version 2; Upgrade to version 1 rolled back: .*; last crash: index \d \(pid \d+\) killed by SIGSEGV at /);
  });

  test("a reload: RELOADING=1, then READY=1 as soon as the new image runs", () => {
    const rig = readyRig(1);
    rig.send({ type: "reexec-requested", kind: "reload", mode: null, requestId: null }, rig.sim.now + 1000);
    rig.send({ type: "preflight-done", ok: true, detail: "ok" }, rig.sim.now + 100);
    const doc = rig.notifier.toJSON();
    rig.attach().restore(doc);
    rig.notifier.start();
    rig.send({ type: "resumed", version: "next", pid: rig.pid, spec: SPEC_A }, rig.sim.now + 100);
    expect(rig.states()).toEqual(["READY=1", "RELOADING=1", "MONOTONIC_USEC=123456789", "MAINPID=4242", "READY=1"]);
  });
});

describe("STATUS=", () => {
  test("sent on change, at most once a second; the last change is not lost", () => {
    const rig = started(4);
    const t0 = rig.sim.now;
    for (const [i, pid] of rig.sim.pids().entries()) rig.send({ type: "ack", pid }, t0 + 100 * (i + 1));
    rig.advance(t0 + 5000);
    const times = rig.lines().filter(([, l]) => l.startsWith("STATUS=")).map(([t]) => t);
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(1000);
    expect(rig.statuses()).toEqual(["Starting: 0/4 workers up, version 0", "4/4 workers up, version 0"]);
    // READY=1 itself was not held back by the interval.
    expect(rig.lines().find(([, l]) => l === "READY=1")![0]).toBe(t0 + 400);
  });

  test("stopping: STOPPING=1", () => {
    const rig = readyRig(1);
    rig.send({ type: "signal", signal: "SIGTERM" }, rig.sim.now + 5000);
    expect(rig.states()).toEqual(["READY=1", "STOPPING=1"]);
    expect(rig.statuses().at(-1)).toBe("Stopping (SIGTERM): 1 worker left");
  });

  test("statusText during a preflight", () => {
    const sim = ready(2);
    sim.send({ type: "reexec-requested", kind: "upgrade", mode: "fleet", requestId: null }, sim.now + 10);
    expect(phaseOf(sim.state)).toBe("reloading");
    expect(statusText(sim.state, { ready: true, lastCrash: null, note: null })).toBe("2/2 workers up, version 0; upgrade requested: checking the next master");
  });
});

describe("the environment", () => {
  test("the watchdog pings at half WATCHDOG_USEC, only when WATCHDOG_PID is absent or ours", () => {
    const rig = readyRig(1, {}, { NOTIFY_SOCKET: "@sd", WATCHDOG_USEC: "2000000", WATCHDOG_PID: "4242" });
    rig.notifier.start();
    rig.advance(rig.sim.now + 3500);
    expect(rig.lines().filter(([, l]) => l === "WATCHDOG=1").length).toBe(4); // one at once, then every second
    rig.notifier.stop();
    rig.advance(rig.sim.now + 3000);
    expect(rig.lines().filter(([, l]) => l === "WATCHDOG=1").length).toBe(4); // one at once, then every second

    // A ping just before the execve, whatever the timer's phase.
    const up = readyRig(1, {}, { NOTIFY_SOCKET: "@sd", WATCHDOG_USEC: "60000000" });
    up.notifier.start();
    up.send({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: null }, up.sim.now + 1000);
    const before = up.sent.length;
    up.send({ type: "preflight-done", ok: true, detail: "ok" }, up.sim.now + 100);
    expect(up.sent.slice(before).map((d) => d.text)).toEqual(["WATCHDOG=1"]);

    const other = readyRig(1, {}, { NOTIFY_SOCKET: "/run/n", WATCHDOG_USEC: "2000000", WATCHDOG_PID: "1" });
    other.notifier.start();
    other.advance(other.sim.now + 5000);
    expect(other.lines().filter(([, l]) => l === "WATCHDOG=1")).toEqual([]);
  });

  test("what is read, and the one-line warnings for what cannot be used", () => {
    expect(readNotifyEnv({}, 1)).toEqual({ target: null, warnings: [] });
    expect(readNotifyEnv({ NOTIFY_SOCKET: "@x", WATCHDOG_USEC: "30000000" }, 1)).toEqual({ target: { socket: "@x", watchdogMs: 15000 }, warnings: [] });
    expect(readNotifyEnv({ NOTIFY_SOCKET: "vsock:2:1" }, 1).warnings).toEqual(["NOTIFY_SOCKET is 'vsock:2:1', which is neither an absolute path nor an @abstract name; not notifying systemd"]);
    expect(readNotifyEnv({ NOTIFY_SOCKET: "/n", WATCHDOG_USEC: "soon" }, 1)).toEqual({
      target: { socket: "/n", watchdogMs: null },
      warnings: ["WATCHDOG_USEC is 'soon', not a positive number of microseconds; not pinging the watchdog"],
    });
  });

  test("workers get neither NOTIFY_SOCKET nor WATCHDOG_*, unless --pass-notify-socket (NOTIFY_SOCKET only)", () => {
    const env = { PATH: "/bin", NOTIFY_SOCKET: "/run/systemd/notify", WATCHDOG_USEC: "1", WATCHDOG_PID: "7" };
    expect(workerNotifyEnv(env, false)).toEqual({ PATH: "/bin" });
    expect(workerNotifyEnv(env, true)).toEqual({ PATH: "/bin", NOTIFY_SOCKET: "/run/systemd/notify" });
  });

  test("a send that fails is warned about once and retried", () => {
    const sim = ready(1);
    let fail = true;
    const sent: string[] = [];
    const warnings: string[] = [];
    const timers: Array<() => void> = [];
    const n = new SdNotifier({ NOTIFY_SOCKET: "/run/n" }, 1, { now: () => sim.now, after: (_ms, fn) => { timers.push(fn); return () => {}; }, every: () => () => {} },
      { debug() {}, info() {}, warn: (m) => warnings.push(m) },
      () => ({ send: (t) => { if (fail) throw new Error("sendto /run/n: ECONNREFUSED (Connection refused)"); sent.push(t); }, close() {} }));
    const before = sim.state;
    sim.send({ type: "tick" }, sim.now + 10);
    n.observe({ type: "tick" }, before, sim.state, [], sim.now);
    expect(warnings).toEqual(["Could not notify systemd at /run/n: sendto /run/n: ECONNREFUSED (Connection refused)"]);
    fail = false;
    sim.now += 1500;
    timers.shift()!();
    expect(sent).toEqual(["READY=1\nSTATUS=1/1 workers up, version 0"]);
  });
});

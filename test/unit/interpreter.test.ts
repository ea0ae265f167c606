// The I/O shell's loop (src/master/interpreter.ts) over a scripted Os: no
// process is started and no real time passes. What this covers is the
// shell's own part of every decision: that effects reach the Os and the
// Host in order, that the outcomes of spawns and exits come back to the core
// as events, that the core is woken at its `wakeAt`, that late timers let
// waiting input go first, and that nothing reaches the core after `exit`.
// The kernel side (pidfds, waitpid, execve) is covered by the ffi and
// integration tests.
import { describe, expect, test } from "bun:test";
import type { ExitStatus, SpawnOptions } from "../../ffi/process";
import { backoffMs } from "../../src/core/pool";
import { DEFAULT_SETTINGS, initialState, type Settings, type State } from "../../src/core/state";
import type { Effect, Event, ReexecKind } from "../../src/core/step";
import type { Logger } from "../../src/logging";
import type { SignalName } from "../../src/signal-names";
import { type ExecRequest, type Host, INPUT_FIRST_MAX_MS, Interpreter, MAX_TIMER_MS } from "../../src/master/interpreter";
import type { Os } from "../../src/master/os";
import { ScriptedClock, T0 } from "../scripted-clock";
import type { ChildCheck, HandedPidfd } from "../../src/master/child-handles";


/** An Os whose clock moves only when the test says, and whose children exist only in its tables. */
class ScriptedOs extends ScriptedClock implements Os {
  /** Exits waitpid will report, in order. */
  exits: Array<{ pid: number; status: ExitStatus }> = [];
  killed: Array<{ pid: number; signal: SignalName }> = [];
  /** Pids kill() reports as already gone; one that throws. */
  gone = new Set<number>();
  killThrows: number | null = null;
  waitThrows = false;
  exitCode: number | null = null;
  calls: string[] = [];

  spawn(_file: string, _argv: string[], _env: string[], _opts: SpawnOptions): number {
    throw new Error("the interpreter spawns through its Host");
  }
  kill = (pid: number, signal: SignalName): boolean => {
    this.calls.push(`kill ${pid} ${signal}`);
    if (pid === this.killThrows) throw new Error("pidfd_send_signal: EPERM (Operation not permitted)");
    this.killed.push({ pid, signal });
    return !this.gone.has(pid);
  };
  wait = (): { pid: number; status: ExitStatus } | null => {
    if (this.waitThrows) throw new Error("waitpid: EINVAL (Invalid argument)");
    return this.exits.shift() ?? null;
  };
  check = (_pid: number): ChildCheck => ({ kind: "running" });
  handOverChildren = (): HandedPidfd[] => [];
  adoptChildren = (_list: HandedPidfd[]): void => {};
  exec = (file: string): never => { throw new Error(`exec ${file}: not in this test`); };
  exit = (code: number): never => {
    this.calls.push(`exit ${code}`);
    this.exitCode = code;
    return undefined as never;
  };

}

/** A Host that records what the effects asked of it and starts "workers" with made-up pids. */
class RecordingHost implements Host {
  nextPid = 500;
  spawned: Array<{ index: number; pid: number }> = [];
  failSpawns = 0;
  inputs = 0;
  calls: string[] = [];
  observed: Event["type"][] = [];

  constructor(private readonly os: ScriptedOs) {}

  spawnWorker(index: number): number {
    if (this.failSpawns > 0) {
      this.failSpawns--;
      throw new Error("posix_spawn /srv/app: ENOENT (No such file or directory)");
    }
    const pid = this.nextPid++;
    this.spawned.push({ index, pid });
    this.calls.push(`spawn ${index} -> ${pid}`);
    return pid;
  }
  enroll(requestId: number, kind: ReexecKind): void { this.calls.push(`enroll ${requestId} ${kind}`); }
  refuse(requestId: number, message: string): void { this.calls.push(`refuse ${requestId} ${message}`); }
  notify(kind: ReexecKind, message: string, final: boolean, error: boolean): void {
    this.calls.push(`notify ${kind}${final ? " final" : ""}${error ? " error" : ""}: ${message}`);
  }
  runPreflight(kind: ReexecKind): void { this.calls.push(`preflight ${kind}`); }
  exec(pending: ExecRequest): void { this.calls.push(`exec ${pending.kind}`); }
  cancelExec(): void { this.calls.push("cancel-exec"); }
  cancelPreflight(): void { this.calls.push("cancel-preflight"); }
  inputWaiting(): boolean {
    if (this.inputs > 0) { this.inputs--; return true; }
    return false;
  }
  observe(e: Event, _before: State, _after: State, _effects: Effect[], _now: number): void { this.observed.push(e.type); }
  leaveThrows = false;
  leave(code: number): void {
    this.calls.push(`leave ${code}`);
    this.os.calls.push(`leave ${code}`);
    if (this.leaveThrows) throw new Error("rm /srv/app.sock: EISDIR (Is a directory)");
  }
}

class RecordingLog implements Pick<Logger, "debug" | "info" | "warn" | "error"> {
  lines: string[] = [];
  debug = (m: string) => { this.lines.push(`debug ${m}`); };
  info = (m: string) => { this.lines.push(`info ${m}`); };
  warn = (m: string) => { this.lines.push(`warn ${m}`); };
  error = (m: string) => { this.lines.push(`error ${m}`); };
}

function setUp(settings: Partial<Settings> = {}) {
  const os = new ScriptedOs();
  const host = new RecordingHost(os);
  const log = new RecordingLog();
  const loop = new Interpreter(os, host, log, initialState({ ...DEFAULT_SETTINGS, ackMode: { kind: "manual" }, maxUnacked: 100, ...settings }, T0));
  return { os, host, log, loop };
}

const pids = (s: State) => s.workers.map((w) => w.pid);

/** When the core replaces a worker that died before its ACK, with `seconds` 1: its first backoff. */
const BACKOFF = backoffMs(1, 1);

describe("the interpreter over a scripted Os", () => {
  test("start: every worker is spawned through the Host and recorded by the core, in one dispatch", () => {
    const { host, loop } = setUp({ number: 3 });
    loop.dispatch({ type: "start" });
    expect(host.spawned.map((s) => s.index)).toEqual([0, 1, 2]);
    expect(pids(loop.state)).toEqual([500, 501, 502]);
    expect(loop.state.pending).toEqual([]);
    // Each spawn's outcome came back as its own event, after the step that asked for it.
    expect(host.observed).toEqual(["start", "spawned", "spawned", "spawned"]);
  });

  test("a reaped worker comes back to the core as `exited` and is replaced once the backoff timer fires", () => {
    const { os, host, loop } = setUp({ number: 2, seconds: 1 });
    loop.dispatch({ type: "start" });
    os.exits.push({ pid: 500, status: { code: 3, signal: null } });
    loop.reap();
    expect(pids(loop.state)).toEqual([501]);
    expect(host.spawned.length).toBe(2);
    // Not before the core's wakeAt...
    os.advance(BACKOFF - 1);
    expect(host.spawned.length).toBe(2);
    // ...and once it is reached (+1 ms: timers never fire early), by the timer the interpreter armed.
    os.advance(2);
    expect(host.spawned.length).toBe(3);
    expect(host.spawned[2]).toEqual({ index: 0, pid: 502 });
    expect(pids(loop.state).sort()).toEqual([501, 502]);
  });

  test("reap drains every exit waiting (SIGCHLD coalesces)", () => {
    const { os, host, loop } = setUp({ number: 3, seconds: 1 });
    loop.dispatch({ type: "start" });
    os.exits.push({ pid: 500, status: { code: 0, signal: null } }, { pid: 502, status: { code: null, signal: "SIGKILL", signo: 9 } });
    loop.reap();
    expect(pids(loop.state)).toEqual([501]);
    expect(host.observed.filter((t) => t === "exited").length).toBe(2);
  });

  test("a child watched by the shell (the preflight) goes to its callback, not to the core", () => {
    const { os, host, loop } = setUp({ number: 1 });
    loop.dispatch({ type: "start" });
    const seen: ExitStatus[] = [];
    loop.watchChild(900, (st) => seen.push(st));
    os.exits.push({ pid: 900, status: { code: 0, signal: null } });
    loop.reap();
    expect(seen).toEqual([{ code: 0, signal: null }]);
    expect(host.observed).not.toContain("exited");
    // Unwatched, the same pid would be news to the core (which ignores a stranger).
    loop.unwatchChild(900);
    os.exits.push({ pid: 900, status: { code: 0, signal: null } });
    loop.reap();
    expect(host.observed.at(-1)).toBe("exited");
    expect(seen.length).toBe(1);
  });

  test("a failing waitpid is logged and the loop goes on", () => {
    const { os, log, loop, host } = setUp({ number: 1 });
    loop.dispatch({ type: "start" });
    os.waitThrows = true;
    loop.reap();
    expect(log.lines).toContain("error waitpid failed: waitpid: EINVAL (Invalid argument)");
    os.waitThrows = false;
    loop.dispatch({ type: "inc" });
    os.advance(2_000);
    expect(host.spawned.length).toBe(2);
  });

  test("kill effects go to the Os; a worker already gone is a debug line, a failing signal an error, and the rest still go out", () => {
    const { os, log, loop } = setUp({ number: 3 });
    loop.dispatch({ type: "start" });
    os.gone.add(500);
    os.killThrows = 501;
    loop.dispatch({ type: "signal-workers", signals: ["SIGHUP"] });
    expect(os.calls.filter((c) => c.startsWith("kill"))).toEqual(["kill 500 SIGHUP", "kill 501 SIGHUP", "kill 502 SIGHUP"]);
    expect(log.lines).toContain("debug Worker 500 was already gone when sent SIGHUP");
    expect(log.lines).toContain("error Could not send SIGHUP to 501: pidfd_send_signal: EPERM (Operation not permitted)");
    expect(os.killed.map((k) => k.pid)).toEqual([500, 502]);
  });

  test("a spawn that fails comes back as `spawn-failed`, and the core retries after its backoff", () => {
    const { os, host, loop, log } = setUp({ number: 1, seconds: 1 });
    host.failSpawns = 1;
    loop.dispatch({ type: "start" });
    expect(host.observed).toEqual(["start", "spawn-failed"]);
    expect(loop.state.workers).toEqual([]);
    expect(log.lines.some((l) => l.includes("ENOENT"))).toBe(true);
    os.advance(2_000);
    expect(host.spawned.map((s) => s.pid)).toEqual([500]);
    expect(pids(loop.state)).toEqual([500]);
  });

  test("lifecycle effects reach the Host in the core's order: enroll, preflight, exec", () => {
    const { host, loop } = setUp({ number: 1 });
    loop.dispatch({ type: "start" });
    loop.dispatch({ type: "ack", pid: 500 });
    host.calls = [];
    loop.dispatch({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: 4 });
    expect(host.calls.filter((c) => !c.startsWith("notify"))).toEqual(["enroll 4 upgrade", "preflight upgrade"]);
    loop.dispatch({ type: "preflight-done", ok: true, detail: "new einhorn 9.9.9" });
    expect(host.calls.at(-1)).toBe("exec upgrade");
    // A stop before the exec happened: the core cancels it, and the waiters hear so.
    loop.dispatch({ type: "signal", signal: "SIGTERM" });
    expect(host.calls).toContain("cancel-exec");
    expect(host.calls.some((c) => c.startsWith("notify upgrade final error"))).toBe(true);
  });

  test("a second request while one is prepared is refused through the Host", () => {
    const { host, loop } = setUp({ number: 1 });
    loop.dispatch({ type: "start" });
    loop.dispatch({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: 1 });
    loop.dispatch({ type: "reexec-requested", kind: "reload", mode: null, requestId: 2 });
    expect(host.calls.some((c) => c.startsWith("refuse 2 "))).toBe(true);
  });

  test("exit: the Host's last words, then the Os ends the process; nothing reaches the core afterwards", () => {
    const { os, host, loop } = setUp({ number: 2, seconds: 1 });
    loop.dispatch({ type: "start" });
    loop.dispatch({ type: "stop", signal: "SIGTERM" });
    expect(os.exitCode).toBeNull();
    os.exits.push({ pid: 500, status: { code: 0, signal: null } }, { pid: 501, status: { code: 0, signal: null } });
    loop.reap();
    expect(os.calls.slice(-2)).toEqual(["leave 0", "exit 0"]);
    expect(loop.exited).toBe(true);
    const before = host.observed.length;
    loop.dispatch({ type: "inc" });
    os.advance(60_000);
    expect(host.observed.length).toBe(before);
    // No wake timer is left armed to step a core that is gone.
    expect(os.armed).toBe(0);
  });

  test("exit kills a side child still running (a preflight cut short by a stop) before the last words", () => {
    const { os, loop } = setUp({ number: 1 });
    loop.dispatch({ type: "start" });
    loop.watchChild(900, () => {});
    loop.dispatch({ type: "signal", signal: "SIGQUIT" });
    expect(os.calls.slice(-4)).toEqual(["kill 500 SIGQUIT", "kill 900 SIGKILL", "leave 1", "exit 1"]);
  });

  test("if the last words throw, the process still ends, with the error logged", () => {
    const { os, host, log, loop } = setUp({ number: 1 });
    loop.dispatch({ type: "start" });
    host.leaveThrows = true;
    loop.dispatch({ type: "signal", signal: "SIGQUIT" });
    expect(os.calls.slice(-2)).toEqual(["leave 1", "exit 1"]);
    expect(log.lines).toContain("error While exiting: rm /srv/app.sock: EISDIR (Is a directory)");
  });

  test("a wake further off than setTimeout can hold (24.8 days) is armed in steps, without spinning", () => {
    // -m 3000000: a worker that never ACKs is timer-ACKed after ~34.7 days.
    const { os, host, loop } = setUp({ number: 1, ackMode: { kind: "timer", seconds: 3_000_000 } });
    loop.dispatch({ type: "start" });
    expect(Math.max(...os.delays)).toBe(MAX_TIMER_MS);
    const ticks = () => host.observed.filter((t) => t === "tick").length;
    os.advance(MAX_TIMER_MS);
    // One early tick, which finds nothing due and arms the rest.
    expect(ticks()).toBe(1);
    expect(loop.state.workers[0]!.ackedAt).toBeNull();
    expect(os.delays.every((d) => d >= 1 && d <= MAX_TIMER_MS)).toBe(true);
    os.advance(3_000_000_000 - MAX_TIMER_MS + 1);
    expect(ticks()).toBe(2);
    expect(loop.state.workers[0]!.ackedAt).not.toBeNull();
  });

  test("a due wake lets waiting input go first, for at most INPUT_FIRST_MAX_MS", () => {
    const { os, host, loop } = setUp({ number: 1, seconds: 1 });
    loop.dispatch({ type: "start" });
    os.exits.push({ pid: 500, status: { code: 1, signal: null } });
    loop.reap();
    const ticks = () => host.observed.filter((t) => t === "tick").length;
    // Input is readable at the moment the backoff ends, for a few more turns.
    host.inputs = 3;
    os.advance(BACKOFF + 1);
    expect(ticks()).toBe(0);
    os.advance(3);
    expect(ticks()).toBe(1);
    expect(host.spawned.length).toBe(2);
  });

  test("a flood of input cannot hold the core's timer off for more than INPUT_FIRST_MAX_MS", () => {
    const { os, host, loop } = setUp({ number: 1, seconds: 1 });
    loop.dispatch({ type: "start" });
    os.exits.push({ pid: 500, status: { code: 1, signal: null } });
    loop.reap();
    host.inputs = Number.MAX_SAFE_INTEGER;
    const ticks = () => host.observed.filter((t) => t === "tick").length;
    os.advance(BACKOFF + 1 + INPUT_FIRST_MAX_MS - 5);
    expect(ticks()).toBe(0);
    os.advance(10);
    expect(ticks()).toBe(1);
  });

  test("only one wake timer is armed at a time, however many steps ran", () => {
    const { os, loop } = setUp({ number: 4, seconds: 1 });
    loop.dispatch({ type: "start" });
    for (let i = 0; i < 4; i++) {
      os.exits.push({ pid: 500 + i, status: { code: 1, signal: null } });
      loop.reap();
    }
    expect(os.armed).toBe(1);
  });
});

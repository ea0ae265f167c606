// The way to the next master image (src/master/reexec.ts), driven by the
// real core and Interpreter over a scripted Os: the request, the config
// re-read, the preflight (a scripted child that prints what --upgrade-check
// prints), then the exec, where the scripted execve reads the handoff
// document the way the next image would. The descriptors are real (socket
// pairs and the document's memfd), so what is checked of them is what the
// kernel says: /proc/self/fdinfo's close-on-exec flag, /proc/self/fd.
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ExitStatus, SpawnOptions } from "../../ffi/process";
import * as sock from "../../ffi/socket";
import { parseMasterArgs } from "../../src/config/master-args";
import { DEFAULT_SPEC, type WorkerSpec } from "../../src/core/generation";
import { DEFAULT_SETTINGS, initialState, type Settings, type State } from "../../src/core/state";
import type { Effect, Event, ReexecKind } from "../../src/core/step";
import type { SignalName } from "../../src/signal-names";
import { ENV } from "../../src/protocol-env";
import { parseBindSpec } from "../../src/config/bind-spec";
import type { ChildCheck, HandedPidfd } from "../../src/master/child-handles";
import type { MasterConfig } from "../../src/master/config";
import { type HandedConnection, type Handoff, HANDOFF_SCHEMA, readHandoff, validateHandoff } from "../../src/master/handoff";
import { type ExecRequest, type Host, Interpreter } from "../../src/master/interpreter";
import type { Listener } from "../../src/master/listeners";
import { Metrics } from "../../src/master/metrics";
import type { Cancel, Os } from "../../src/master/os";
import { ScriptedClock, T0 } from "../scripted-clock";
import { checkChildren, type Holdings, Reexec } from "../../src/master/reexec";

/** What systemd had been told, as the handoff carries it. */
const SD_TOLD = { ready: true, reloading: true, stopping: false, lastCrash: null, note: null };

const PREFLIGHT_PID = 900;

/** An Os whose clock moves only when the test says, whose children are made up, and whose execve records what it was given. */
class ScriptedOs extends ScriptedClock implements Os {
  /** Exits waitpid will report, in order. */
  exits: Array<{ pid: number; status: ExitStatus }> = [];
  /** What the preflight child prints on its stdout. */
  preflightSays = `${JSON.stringify({ einhorn: "9.9.9-next", handoffSchema: HANDOFF_SCHEMA, stateSchema: 1 })}\n`;
  spawned: Array<{ file: string; argv: string[]; env: string[]; doc: Handoff | null }> = [];
  /** Every execve asked for: its file, argv and environment, the document on --with-state-fd, and which descriptors it would have kept. */
  execs: Array<{ file: string; argv: string[]; env: string[]; doc: Handoff; inheritable: number[] }> = [];
  /** Descriptors to look at when the exec comes (those the test handed over). */
  watched: number[] = [];
  execThrows: Error | null = null;
  children = new Map<number, ChildCheck>();

  override every = (): Cancel => { throw new Error("no repeating timers on this path"); };
  spawn = (file: string, argv: string[], env: string[], opts: SpawnOptions): number => {
    // The preflight: stdout and stderr go to the master's memfd; the document it checks is on a descriptor the environment names.
    const out = opts.dup2![0]![0];
    writeSync(out, this.preflightSays);
    const docFd = env.find((e) => e.startsWith(`${ENV.UPGRADE_CHECK_STATE_FD}=`))?.split("=")[1];
    this.spawned.push({ file, argv, env, doc: docFd === undefined ? null : validateHandoff(readHandoff(Number(docFd))) });
    return PREFLIGHT_PID;
  };
  kill = (_pid: number, _signal: SignalName): boolean => true;
  wait = (): { pid: number; status: ExitStatus } | null => this.exits.shift() ?? null;
  check = (pid: number): ChildCheck => this.children.get(pid) ?? { kind: "running" };
  handOverChildren = (): HandedPidfd[] => [];
  adoptChildren = (): void => {};
  exec = (file: string, argv: string[], env: string[]): never => {
    const fd = Number(argv[argv.indexOf("--with-state-fd") + 1]);
    this.execs.push({ file, argv, env, doc: validateHandoff(readHandoff(fd)), inheritable: [fd, ...this.watched].filter((d) => !cloexec(d)) });
    if (this.execThrows) throw this.execThrows;
    // A real execve does not return; here the test goes on as the old image would never see.
    return undefined as never;
  };
  exit = (code: number): never => { throw new Error(`exit ${code}: not on this path`); };

}

/** Whether `fd` is close-on-exec, as the kernel reports it (O_CLOEXEC is 02000000 in fdinfo's octal flags). */
function cloexec(fd: number): boolean {
  const flags = /^flags:\s*([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "latin1"))![1]!;
  return (parseInt(flags, 8) & 0o2000000) !== 0;
}

/** The Master's part of the Host on this path: runPreflight, exec, cancelExec and cancelPreflight go to the Reexec; the rest is recorded. */
class ReexecHost implements Host {
  reexec!: Reexec;
  nextPid = 500;
  notes: string[] = [];
  observed: Event["type"][] = [];
  spawnWorker(): number { return this.nextPid++; }
  enroll(requestId: number, kind: ReexecKind): void { this.notes.push(`enroll ${requestId} ${kind}`); }
  refuse(requestId: number, message: string): void { this.notes.push(`refuse ${requestId}: ${message}`); }
  notify(kind: ReexecKind, message: string, final: boolean, error = false): void {
    this.notes.push(`${kind}${final ? " final" : ""}${error ? " error" : ""}: ${message}`);
  }
  runPreflight(kind: ReexecKind): void { this.reexec.runPreflight(kind); }
  exec(pending: ExecRequest): void { this.reexec.exec(pending); }
  cancelExec(): void { this.reexec.cancelExec(); }
  cancelPreflight(): void { this.reexec.cancelPreflight(); }
  inputWaiting(): boolean { return false; }
  observe(e: Event, _before: State, _after: State, _effects: Effect[], _now: number): void { this.observed.push(e.type); }
  leave(): void {}
}

const quiet = { info: () => {}, warn: () => {}, error: () => {}, debug: () => {} };

const dir = mkdtempSync(join(tmpdir(), "einhorn-reexec-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Descriptors a test opened, closed after it. */
let opened: number[] = [];
afterEach(() => {
  for (const fd of opened) { try { sock.close(fd); } catch { /* closed by the test */ } }
  opened = [];
});
function pair(): [number, number] {
  const p = sock.socketpair();
  opened.push(...p);
  return p;
}

let configs = 0;
const START_ENV = { PATH: "/usr/bin:/bin", KEEP: "kept", SECRET: "dropped" };

/** A master with 2 workers of generation 0, a listener, a command socket and one waiting client, over a scripted Os. */
function setUp() {
  const configFile = join(dir, `einhorn-${++configs}.yaml`);
  writeFileSync(configFile, "number: 2\nprogram: /bin/true\n");
  const config: MasterConfig = parseMasterArgs(["--config", configFile, "--drop-env-var", "SECRET"]);
  const [listenerFd] = pair();
  const [commandFd] = pair();
  const [clientFd] = pair();
  const listeners: Listener[] = [{ fd: listenerFd, spec: parseBindSpec("127.0.0.1:0"), bound: { family: "inet", host: "127.0.0.1", port: 4321 }, unixPath: null }];
  const client: HandedConnection = { fd: clientFd, waiting: { requestId: "req-1" }, partialIn: "", pendingOut: "", format: "json", spoke: true };
  const os = new ScriptedOs();
  os.watched = [listenerFd, commandFd, clientFd];
  const host = new ReexecHost();
  const spec: WorkerSpec = { ...DEFAULT_SPEC, program: ["/bin/true"], programPath: "/bin/true", env: START_ENV };
  const settings: Settings = { ...DEFAULT_SETTINGS, number: config.number, ackMode: { kind: "manual" }, maxUnacked: 10 };
  const loop = new Interpreter(os, host, quiet, initialState(settings, T0, spec));
  /** The exec waits for the signal batch to drain (SignalSource.execWhenDrained); the test says when it has. */
  let drained: (() => void) | null = null;
  const holdings: Holdings = { listeners, commandFd, commandPath: { path: "/run/einhorn.sock", dev: 1, ino: 2 }, pidfile: null, metrics: { fd: null, counters: new Metrics().toJSON() }, sdNotify: SD_TOLD };
  host.reexec = new Reexec({
    os,
    log: quiet,
    config,
    selfCommand: [process.execPath],
    state: () => loop.state,
    dispatch: (e) => loop.dispatch(e),
    notify: (kind, message, final) => host.notify(kind, message, final),
    exited: () => loop.exited,
    whenDrained: (thunk) => { drained = thunk; },
    cancelDrained: () => { drained = null; },
    watchChild: (pid, onExit) => loop.watchChild(pid, onExit),
    unwatchChild: (pid) => loop.unwatchChild(pid),
    holdings: () => holdings,
    connections: () => [client],
    capture: null,
  }, { startEnv: START_ENV, reexecs: 2 });
  loop.dispatch({ type: "start" });
  /** Ask for an upgrade, let the preflight exit with `code`, and let its verdict reach the core. */
  const upgradeThroughPreflight = (code = 0) => {
    loop.dispatch({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: 1 });
    os.exits.push({ pid: PREFLIGHT_PID, status: { code, signal: null } });
    loop.reap();
    os.advance(0);
  };
  const drain = () => { const run = drained; drained = null; run?.(); };
  return { os, host, loop, config, configFile, listenerFd, commandFd, clientFd, upgradeThroughPreflight, drain, pending: () => drained !== null };
}

describe("the re-exec path over a scripted Os", () => {
  test("preflight, then exec: the next image gets the state with its generations, the re-read config, the listeners and the clients", () => {
    const m = setUp();
    writeFileSync(m.configFile, "number: 3\nprogram: /bin/true\n");
    m.upgradeThroughPreflight();

    // The preflight ran the next image's command with --upgrade-check, in the restored environment, and checked the same document without descriptors.
    expect(m.os.spawned.length).toBe(1);
    const preflight = m.os.spawned[0]!;
    expect(preflight.argv).toEqual([process.execPath, "--upgrade-check"]);
    expect(preflight.env).toContain("KEEP=kept");
    expect(preflight.env.some((e) => e.startsWith("SECRET="))).toBe(false);
    expect(preflight.doc!.connections).toEqual([]);
    expect(preflight.doc!.state.settings.number).toBe(3);
    expect(m.host.notes).toContain(`upgrade: Config ${m.configFile} re-read; changes: number 2 -> 3`);
    expect(m.host.notes).toContain("upgrade: Preflight passed (new einhorn 9.9.9-next); re-executing the master");

    // Nothing is executed before the signals in flight are drained.
    expect(m.os.execs).toEqual([]);
    expect(m.pending()).toBe(true);
    m.drain();

    expect(m.os.execs.length).toBe(1);
    const ex = m.os.execs[0]!;
    const stateFd = Number(ex.argv[2]);
    opened.push(stateFd);
    expect(ex.file).toBe(process.execPath);
    expect(ex.argv).toEqual([process.execPath, "--with-state-fd", String(stateFd), "--", "/bin/true"]);
    expect(ex.env).toEqual(["PATH=/usr/bin:/bin", "KEEP=kept"]);
    // Every descriptor the document names, and the document's own, crosses the execve.
    expect(ex.inheritable.sort()).toEqual([stateFd, m.listenerFd, m.commandFd, m.clientFd].sort());

    const doc = ex.doc;
    expect(doc.state.generations[0]!.spec.program).toEqual(["/bin/true"]);
    expect(doc.state.workers.map((w) => w.pid)).toEqual(m.loop.state.workers.map((w) => w.pid));
    expect(doc.state.reexec?.phase).toBe("exec");
    // The re-read file's settings are patched into the state; the next image runs with its config.
    expect(doc.state.settings.number).toBe(3);
    expect(m.loop.state.settings.number).toBe(2);
    expect(doc.config.number).toBe(3);
    expect(doc.config.configFile).toBe(m.configFile);
    expect(doc.listeners).toEqual([{ fd: m.listenerFd, specText: "127.0.0.1:0", bound: { family: "inet", host: "127.0.0.1", port: 4321 }, unixPath: null }]);
    expect(doc.commandFd).toBe(m.commandFd);
    expect(doc.commandPath).toEqual({ dev: 1, ino: 2 });
    expect(doc.connections).toEqual([{ fd: m.clientFd, waiting: { requestId: "req-1" }, partialIn: "", pendingOut: "", format: "json", spoke: true }]);
    expect(doc.pending).toEqual({ kind: "upgrade", mode: "smooth", requestedAt: T0 });
    // The environment the first image started with, whole: each image drops --drop-env-var names itself.
    expect(doc.startEnv).toEqual(START_ENV);
    expect(doc.reexecs).toBe(3);
    expect(doc.sdNotify).toEqual(SD_TOLD); // what systemd was told crosses the execve
    expect(m.host.observed).not.toContain("exec-failed");
  });

  test("an exec that fails puts every descriptor back as it was, closes the document, and reports `exec-failed`", () => {
    const m = setUp();
    m.os.execThrows = new Error("execve /usr/bin/einhorn: ENOEXEC (Exec format error)");
    m.upgradeThroughPreflight();
    m.drain();

    expect(m.os.execs.length).toBe(1);
    const stateFd = Number(m.os.execs[0]!.argv[2]);
    // At the moment of the execve they were inheritable...
    expect(m.os.execs[0]!.inheritable.sort()).toEqual([stateFd, m.listenerFd, m.commandFd, m.clientFd].sort());
    // ...and after its failure close-on-exec again, and the document gone.
    for (const fd of [m.listenerFd, m.commandFd, m.clientFd]) expect(cloexec(fd)).toBe(true);
    expect(existsSync(`/proc/self/fd/${stateFd}`)).toBe(false);

    expect(m.host.observed.at(-1)).toBe("exec-failed");
    expect(m.host.notes.at(-1)).toBe("upgrade final error: Upgrade failed: could not re-execute the master: execve /usr/bin/einhorn: ENOEXEC (Exec format error). Nothing was changed; the current workers keep serving.");
    expect(m.loop.state.reexec).toBeNull();
  });

  test("a stop before the signals drained cancels the exec; one that comes due anyway is not performed", () => {
    const m = setUp();
    m.upgradeThroughPreflight();
    expect(m.pending()).toBe(true);
    m.loop.dispatch({ type: "signal", signal: "SIGTERM" });
    expect(m.pending()).toBe(false);
    expect(m.host.notes).toContain("upgrade final error: Upgrade abandoned: the master is stopping (SIGTERM)");

    // A marker already raised when the core changed its mind: the exec finds no exec under way.
    m.loop.dispatch({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: 2 });
    expect(m.host.notes.at(-1)).toBe("refuse 2: Upgrade refused: the master is stopping");
    m.host.reexec.exec({ kind: "upgrade", mode: "smooth", requestedAt: T0 });
    m.drain();
    expect(m.os.execs).toEqual([]);
  });

  test("a config file that cannot be used fails the upgrade before any preflight runs", () => {
    const m = setUp();
    writeFileSync(m.configFile, "number: 3\nprogram: /bin/true\nbind: 127.0.0.1:9\n");
    m.loop.dispatch({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: 1 });
    m.os.advance(0);
    expect(m.os.spawned).toEqual([]);
    expect(m.host.notes.at(-1)).toBe(`upgrade final error: Upgrade failed: config ${m.configFile}: bind changed from [] to ["127.0.0.1:9"], which only a restart of einhorn can apply. Nothing was changed; the current workers keep serving.`);
    expect(m.loop.state.reexec).toBeNull();
  });

  test("a preflight that fails: no exec, and the reason reaches the waiting client", () => {
    const m = setUp();
    m.os.preflightSays = "einhorn: cannot load the preload module\n";
    m.upgradeThroughPreflight(1);
    expect(m.pending()).toBe(false);
    expect(m.host.notes.at(-1)).toBe(`upgrade final error: Upgrade failed: preflight '${process.execPath} --upgrade-check' exited with status 1: einhorn: cannot load the preload module. Nothing was changed; the current workers keep serving.`);
  });
});

describe("checkChildren after a re-exec", () => {
  test("a worker reaped meanwhile comes back as `exited`, one whose pid is no longer our child as `vanished`; a failing check is logged", () => {
    const m = setUp();
    const [a, b, c] = [500, 501, 502];
    m.loop.dispatch({ type: "inc" });
    // (The core starts the third worker at its next tick.)
    m.os.advance(2_000);
    expect(m.loop.state.workers.map((w) => w.pid)).toEqual([a, b, c]);
    m.os.children.set(a, { kind: "exited", status: { code: 0, signal: null } });
    m.os.children.set(b, { kind: "gone", reason: "pid 501 is not a child of this process" });
    const errors: string[] = [];
    checkChildren({
      state: () => m.loop.state,
      dispatch: (e) => m.loop.dispatch(e),
      os: { check: (pid) => { if (pid === c) throw new Error("pidfd_open: EMFILE"); return m.os.check(pid); } },
      log: { error: (line) => errors.push(line) },
    });
    expect(m.host.observed.slice(-2)).toEqual(["exited", "vanished"]);
    expect(m.loop.state.workers.map((w) => w.pid)).not.toContain(a);
    expect(m.loop.state.workers.map((w) => w.pid)).not.toContain(b);
    expect(errors).toEqual(["Could not check worker 502 after the re-exec: pidfd_open: EMFILE"]);
  });
});

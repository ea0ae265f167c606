// systemd's notify protocol (sd_notify(3)) for the pool einhorn manages: a
// datagram to $NOTIFY_SOCKET tells systemd when the service is up, when it
// is reloading, what `systemctl status` shows, and that the master's event
// loop is alive (the watchdog). Policy (issue 24):
//
// - READY=1 once the first generation is up (every wanted worker ACKed, by
//   timer or manual ACK), never before: under Type=notify a pool that never
//   comes up makes systemd's start time out instead of reporting it healthy.
// - RELOADING=1 (with MONOTONIC_USEC=, as systemd 253's notify-reload wants)
//   while the pool is being replaced: from the moment an upgrade or reload
//   request is accepted (its preflight and the master's execve included)
//   until the new generation is up, or the upgrade failed safe; then
//   READY=1. A rollback after a bad bake is a rollout too: RELOADING=1 again,
//   READY=1 when the rolled-back generation is up.
// - The bake (--upgrade-bake) is not "reloading": the new generation is up
//   and serving, so READY=1 comes when it is up, and STATUS= says it is
//   baking. (Reloading until the bake ends would hold systemd's reload job,
//   and every job queued behind it, for the whole window.) A failed or
//   rolled-back upgrade is said in STATUS= until the next upgrade starts.
// - STOPPING=1 once the master stops (a signal, or `die` on the socket).
// - STATUS= is short, sent when it changes and at most once a second: what
//   systemd keeps is the last one, so a burst of changes collapses into it.
// - WATCHDOG=1 every half of WATCHDOG_USEC, from a timer on the master's own
//   event loop: a wedged loop stops the pings, and systemd acts on that. Only
//   when WATCHDOG_PID is absent or names this process (it is kept across
//   re-execs, so the new image re-reads the same values from its
//   environment).
// - MAINPID= is this pid, said once after each re-exec: the pid is kept, but
//   saying so costs nothing and answers a systemd that wondered.
// - Workers do not get NOTIFY_SOCKET (nor WATCHDOG_*): a worker speaking
//   sd_notify would tell systemd about itself as if it were the service.
//   --pass-notify-socket lets NOTIFY_SOCKET through, for NotifyAccess=all.
//
// What the previous image already told systemd crosses the execve in the
// handoff (SdNotifyDoc), so the new image neither repeats READY=1 nor misses
// the READY=1 that ends a reload.
import { monotonicMicros } from "../../ffi/clock";
import { SysError } from "../../ffi/errno";
import { close, MSG_DONTWAIT, MSG_NOSIGNAL, sendto, unixDatagramSocket } from "../../ffi/socket";
import { ackedCurrentCount } from "../core/pool";
import { type ExitRecord, exitThisStep, type State } from "../core/state";
import type { Effect, Event } from "../core/step";
import { ENV } from "../protocol-env";
import type { Cancel, Os } from "./os";

/** At most one STATUS= a second. */
export const STATUS_INTERVAL_MS = 1_000;
/** A STATUS= line longer than this is cut: `systemctl status` shows one line. */
export const STATUS_MAX_CHARS = 200;

export interface NotifyTarget {
  /** `/path` or `@abstract`. */
  socket: string;
  /** Ping interval (half of WATCHDOG_USEC), or null: no watchdog. */
  watchdogMs: number | null;
}

/**
 * What the environment asks for, by sd_notify(3)'s and sd_watchdog_enabled(3)'s
 * rules; `warnings` says once why something set is not used.
 */
export function readNotifyEnv(env: Record<string, string | undefined>, pid: number): { target: NotifyTarget | null; warnings: string[] } {
  const warnings: string[] = [];
  const socket = env[ENV.NOTIFY_SOCKET];
  if (!socket) return { target: null, warnings };
  if (!socket.startsWith("/") && !socket.startsWith("@")) {
    warnings.push(`${ENV.NOTIFY_SOCKET} is '${socket}', which is neither an absolute path nor an @abstract name; not notifying systemd`);
    return { target: null, warnings };
  }
  let watchdogMs: number | null = null;
  const usec = env[ENV.WATCHDOG_USEC];
  const forPid = env[ENV.WATCHDOG_PID];
  if (usec !== undefined && (forPid === undefined || forPid === String(pid))) {
    if (/^\d+$/.test(usec) && Number(usec) > 0) watchdogMs = Math.max(1, Math.floor(Number(usec) / 2000));
    else warnings.push(`${ENV.WATCHDOG_USEC} is '${usec}', not a positive number of microseconds; not pinging the watchdog`);
  }
  return { target: { socket, watchdogMs }, warnings };
}

/** The environment workers inherit, from the master's: the notify variables are the master's own. */
export function workerNotifyEnv(env: Record<string, string>, passNotifySocket: boolean): Record<string, string> {
  const out = { ...env };
  if (!passNotifySocket) delete out[ENV.NOTIFY_SOCKET];
  // Meant for the master's pid either way.
  delete out[ENV.WATCHDOG_USEC];
  delete out[ENV.WATCHDOG_PID];
  return out;
}

/** What the pool is, as systemd's service states see it. */
export type Phase = "starting" | "ready" | "reloading" | "stopping";

export function phaseOf(s: State): Phase {
  if (s.stopping) return "stopping";
  if (s.reexec || s.upgrade) return "reloading";
  return ackedCurrentCount(s) >= s.settings.number ? "ready" : "starting";
}

export interface Crash { index: number; pid: number; how: string; at: number }

/** What this master has told systemd, and what STATUS= remembers; crosses the execve in the handoff. */
export interface SdNotifyDoc {
  ready: boolean;
  reloading: boolean;
  stopping: boolean;
  lastCrash: Crash | null;
  /** A failed or rolled-back upgrade (or reload), said until the next one starts. */
  note: string | null;
}

const utcTime = (ms: number) => new Date(ms).toISOString().slice(11, 19);
const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/**
 * The gist of a core message for STATUS=: its first clause (what follows a
 * full stop, a semicolon or a parenthesis is detail for the log), cut to fit.
 */
function clause(message: string, max = 100): string {
  const first = message.split(/\.\s+(?=[A-Z])|;\s|\s\(/)[0]!.replace(/\.$/, "");
  return first.length > max ? `${first.slice(0, max - 1)}…` : first;
}

/** The STATUS= text for `s`: short, and the same as long as nothing it shows changed. */
export function statusText(s: State, doc: Pick<SdNotifyDoc, "ready" | "lastCrash" | "note">): string {
  const want = s.settings.number;
  const up = ackedCurrentCount(s);
  const parts: string[] = [];
  if (s.stopping) parts.push(`Stopping (${s.stopping.signal}): ${plural(s.workers.length, "worker")} left`);
  else if (s.upgrade?.rollback) parts.push(`Rolling back as version ${s.version} (the spec of version ${s.generations[String(s.version)]?.rollbackOf ?? "?"}): ${up}/${want} up`);
  else if (s.upgrade) parts.push(`Upgrading to version ${s.version} (${s.upgrade.mode}): ${up}/${want} new workers up, ${s.workers.length - s.workers.filter((w) => w.version === s.version).length} old`);
  else parts.push(`${doc.ready ? "" : "Starting: "}${up}/${want} workers up, version ${s.version}`);
  if (s.reexec && !s.stopping) {
    const what = s.reexec.kind === "upgrade" ? "upgrade" : "reload";
    parts.push(s.reexec.phase === "preflight" ? `${what} requested: checking the next master` : `${what}: re-executing the master`);
  }
  if (s.bake && !s.stopping) parts.push(`baking version ${s.bake.version} (${Math.round((s.bake.until - s.bake.since) / 1000)}s window, ${plural(s.bake.deaths, "unasked exit")})`);
  if (doc.note) parts.push(doc.note);
  const c = doc.lastCrash;
  if (c) parts.push(`last crash: index ${c.index} (pid ${c.pid}) ${c.how} at ${utcTime(c.at)} UTC`);
  const text = parts.join("; ");
  return text.length > STATUS_MAX_CHARS ? `${text.slice(0, STATUS_MAX_CHARS - 1)}…` : text;
}

/** How a worker's exit reads in STATUS=. */
function exitHow(r: ExitRecord): string {
  if (r.vanished) return "vanished";
  if (r.signal) return `killed by ${r.signal}`;
  return r.code === null ? "killed by a signal" : `exited with status ${r.code}`;
}

/**
 * What happened in one core step that STATUS= remembers beyond the state: a
 * worker's unasked exit, and how an upgrade or reload ended. Pure.
 */
export function remember(doc: SdNotifyDoc, e: Event, before: State, after: State, effects: Effect[], now: number): SdNotifyDoc {
  let { lastCrash, note } = doc;
  const exit = exitThisStep(before, after);
  if (exit && exit.asked === null) lastCrash = { index: exit.index, pid: exit.pid, how: exitHow(exit), at: now };
  // A new request: the last one's outcome is history.
  if (!before.reexec && after.reexec) note = null;
  for (const fx of effects) {
    if (after.stopping) break;
    if (fx.type === "upgrade-finished") note = fx.ok ? null : clause(fx.message);
    // A preflight or exec that failed ends the request here (the upgrade never started).
    else if (fx.type === "notify" && fx.final && fx.error && (e.type === "preflight-done" || e.type === "exec-failed")) note = clause(fx.message);
  }
  return { ...doc, lastCrash, note };
}

/** The state messages (READY=1, RELOADING=1, STOPPING=1) that move systemd from what it was told to `phase`. */
export function stateLines(told: Pick<SdNotifyDoc, "ready" | "reloading" | "stopping">, phase: Phase): { lines: string[]; told: Pick<SdNotifyDoc, "ready" | "reloading" | "stopping"> } {
  if (phase === "stopping") return told.stopping ? { lines: [], told } : { lines: ["STOPPING=1"], told: { ...told, stopping: true } };
  if (!told.ready) {
    // Nothing before the first READY=1: systemd is still starting the service.
    return phase === "ready" ? { lines: ["READY=1"], told: { ...told, ready: true, reloading: false } } : { lines: [], told };
  }
  if (phase === "reloading" && !told.reloading) return { lines: ["RELOADING=1", "MONOTONIC_USEC="], told: { ...told, reloading: true } };
  if (phase !== "reloading" && told.reloading) return { lines: ["READY=1"], told: { ...told, reloading: false } };
  return { lines: [], told };
}

export interface NotifierLog {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
}

/** Sends one datagram; throws a SysError. */
export type Send = (text: string) => void;

/** A Send over a close-on-exec, non-blocking AF_UNIX datagram socket (a stuck systemd must not block the master). */
export function datagramSend(target: string): { send: Send; close(): void } {
  let fd: number | null = null;
  return {
    send(text) {
      fd ??= unixDatagramSocket();
      sendto(fd, Buffer.from(text), MSG_NOSIGNAL | MSG_DONTWAIT, target);
    },
    close() {
      if (fd !== null) { try { close(fd); } catch { /* already closed */ } fd = null; }
    },
  };
}

/**
 * The master's side of sd_notify: fed every core step (observe), it sends
 * what changed. Does nothing without NOTIFY_SOCKET.
 */
export class SdNotifier {
  private doc: SdNotifyDoc = { ready: false, reloading: false, stopping: false, lastCrash: null, note: null };
  private readonly target: NotifyTarget | null;
  private readonly transport: { send: Send; close(): void } | null;
  private last: State | null = null;
  private statusSent: string | null = null;
  private statusAt = -Infinity;
  private flushTimer: Cancel | null = null;
  private watchdog: Cancel | null = null;
  /** After a re-exec: MAINPID= goes out with the first message. */
  private sayPid = false;
  /** Error codes already warned about (one warning each, not one per ping). */
  private readonly warned = new Set<string>();

  constructor(
    env: Record<string, string | undefined>,
    private readonly pid: number,
    private readonly os: Pick<Os, "now" | "after" | "every">,
    private readonly log: NotifierLog,
    transport?: (target: string) => { send: Send; close(): void },
    private readonly monotonicUsec: () => bigint = monotonicMicros,
  ) {
    const r = readNotifyEnv(env, pid);
    for (const w of r.warnings) log.warn(w);
    this.target = r.target;
    this.transport = r.target ? (transport ?? datagramSend)(r.target.socket) : null;
  }

  /** What crosses the execve: what systemd was told. */
  toJSON(): SdNotifyDoc {
    return { ...this.doc };
  }

  /** Continue from the previous image's document (absent from einhorns before sd_notify: nothing told). */
  restore(doc: Partial<SdNotifyDoc> | null | undefined): void {
    if (doc) this.doc = { ...this.doc, ...doc };
    this.sayPid = true;
  }

  /**
   * Start the watchdog; after a re-exec, say MAINPID= now. The first ping
   * goes at once: after a re-exec, the previous image's last ping was just
   * before the execve, and waiting a whole interval more would bring a short
   * WatchdogSec= close to firing during every upgrade.
   */
  start(): void {
    if (!this.target) return;
    this.log.debug(`Notifying systemd at ${this.target.socket}${this.target.watchdogMs ? `; watchdog ping every ${this.target.watchdogMs} ms` : ""}`);
    const first = [...(this.target.watchdogMs ? ["WATCHDOG=1"] : []), ...(this.sayPid ? [`MAINPID=${this.pid}`] : [])];
    if (first.length) this.sendLines(first);
    if (this.target.watchdogMs) this.watchdog = this.os.every(this.target.watchdogMs, () => this.trySend("WATCHDOG=1"));
  }

  stop(): void {
    this.watchdog?.();
    this.watchdog = null;
    this.flushTimer?.();
    this.flushTimer = null;
    this.transport?.close();
  }

  /** One core step (Host.observe). */
  observe(e: Event, before: State, after: State, effects: Effect[], now: number): void {
    if (!this.target) return;
    this.doc = remember(this.doc, e, before, after, effects, now);
    this.last = after;
    this.sync(now);
    // The master is about to execve: a ping now leaves the whole interval for
    // the exec and the new image's start.
    if (this.watchdog && effects.some((fx) => fx.type === "exec")) this.trySend("WATCHDOG=1");
  }

  /** Send what is due: state changes at once, STATUS= when the interval allows (else later, from a timer). */
  private sync(now: number): void {
    const s = this.last;
    if (!s) return;
    const { lines, told } = stateLines(this.doc, phaseOf(s));
    const status = statusText(s, { ...this.doc, ...told });
    const statusDue = status !== this.statusSent && now >= this.statusAt + STATUS_INTERVAL_MS;
    const out = lines.map((l) => (l === "MONOTONIC_USEC=" ? `MONOTONIC_USEC=${this.monotonicUsec()}` : l));
    if (statusDue) out.push(`STATUS=${status}`);
    if (out.length) {
      if (this.sendLines(out)) {
        this.doc = { ...this.doc, ...told };
        if (statusDue) { this.statusSent = status; this.statusAt = now; }
        for (const l of lines) this.log.debug(`Told systemd ${l.replace(/=$/, "")}`);
      } else {
        // Tried again in a while (systemd busy, or gone for now).
        this.schedule(now + STATUS_INTERVAL_MS);
        return;
      }
    }
    if (status !== this.statusSent) this.schedule(this.statusAt + STATUS_INTERVAL_MS);
  }

  private schedule(at: number): void {
    if (this.flushTimer) return;
    this.flushTimer = this.os.after(Math.max(0, at - this.os.now()) + 1, () => {
      this.flushTimer = null;
      this.sync(this.os.now());
    });
  }

  private sendLines(lines: string[]): boolean {
    if (this.sayPid && !lines.some((l) => l.startsWith("MAINPID="))) lines = [...lines, `MAINPID=${this.pid}`];
    const ok = this.trySend(lines.join("\n"));
    if (ok) this.sayPid = false;
    return ok;
  }

  private trySend(text: string): boolean {
    try {
      this.transport!.send(text);
      return true;
    } catch (e) {
      const code = e instanceof SysError ? e.code : (e as Error).message;
      if (!this.warned.has(code)) {
        this.warned.add(code);
        this.log.warn(`Could not notify systemd at ${this.target!.socket}: ${(e as Error).message}`);
      }
      return false;
    }
  }
}

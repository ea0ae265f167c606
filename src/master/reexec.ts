// The way to the master's next image. An upgrade or reload re-reads the
// configuration (next-config.ts), runs the next image's command with
// --upgrade-check (preflight.ts), then writes everything the master holds
// into the handoff document (handoff.ts) and execve's the next image with
// it. This piece sees the rest of the master through a narrow view;
// processes, time and the execve itself go through the Os, so a test runs
// this path over a scripted one (test/unit/reexec.test.ts). The other side,
// the next image taking the document up, is Master.resume.
import { memfdCreate } from "../../ffi/process";
import * as sock from "../../ffi/socket";
import type { State } from "../core/state";
import type { Event, ReexecKind } from "../core/step";
import type { Logger } from "../logging";
import { einhornVersionLabel } from "../version";
import { CONFIG_SCHEMA, type MasterConfig } from "./config";
import type { OwnedPath } from "./files";
import { type HandedConnection, type Handoff, handedFds, HANDOFF_SCHEMA, writeHandoff } from "./handoff";
import type { ExecRequest } from "./interpreter";
import type { Listener } from "./listeners";
import type { MetricsDoc } from "./metrics";
import type { SdNotifyDoc } from "./sd-notify";
import { NextConfig } from "./next-config";
import type { Os } from "./os";
import { type PreflightResult, runPreflight as startPreflight, type PreflightOptions } from "./preflight";
import { shellSplit } from "../shell-split";
import { resolveProgram } from "./spawner";
import type { OutputCapture } from "./worker-output";

/** CPU time this process has used (all threads, all images since the first exec), in microseconds. */
export const cpuMicros = (): number => { const u = process.cpuUsage(); return u.user + u.system; };

/** What the rest of the master holds that crosses the execve, as it is at the moment the document is written. */
export interface Holdings {
  listeners: Listener[];
  commandFd: number;
  /** The command socket and pidfile this master created (the next image removes them at exit while they are still ours). */
  commandPath: OwnedPath | null;
  pidfile: OwnedPath | null;
  /** --metrics: the listening descriptor and the counters. */
  metrics: { fd: number | null; counters: MetricsDoc };
  /** What systemd has been told (sd-notify.ts), so the next image neither repeats nor misses a line. */
  sdNotify: SdNotifyDoc;
}

/** What the way to the next image needs to see of the master. */
export interface ReexecView {
  os: Os;
  log: Pick<Logger, "info">;
  config: MasterConfig;
  /** How to run this einhorn binary: the next image, unless --reexec-as says otherwise. */
  selfCommand: string[];
  state(): State;
  dispatch(e: Event): void;
  /** A message to the clients waiting on `kind` (see Waiters.notify). */
  notify(kind: ReexecKind, message: string, final: boolean): void;
  /** True once an `exit` effect ran: an exec that comes due after that is not performed. */
  exited(): boolean;
  /** Run `thunk` once every signal sent before now has been acted on (SignalSource.execWhenDrained). */
  whenDrained(thunk: () => void): void;
  /** Forget a `thunk` not yet run (SignalSource.cancelExec). */
  cancelDrained(): void;
  /** The preflight is not a worker: its exit goes to its own callback (Interpreter.watchChild). */
  watchChild: PreflightOptions["watchChild"];
  unwatchChild: PreflightOptions["unwatchChild"];
  holdings(): Holdings;
  /** The command connections that can cross the execve, as the document records them. */
  connections(): HandedConnection[];
  /** --worker-output: its streams and queued lines cross too (null for inherit). */
  capture: Pick<OutputCapture, "handOver" | "takeBack"> | null;
}

/** How this master came to be: what every image restores, and how many images came before this one. */
export interface Lineage {
  /** The environment the first image started with (every re-exec restores it, minus --drop-env-var). */
  startEnv: Record<string, string>;
  reexecs: number;
}

export class Reexec {
  /** The configuration the next image gets (--config re-read by the current upgrade or reload). */
  private readonly nextConfig: NextConfig;

  constructor(private readonly v: ReexecView, private readonly lineage: Lineage) {
    this.nextConfig = new NextConfig(v.config);
  }

  /** How many times this master re-executed itself before this image. */
  get reexecs(): number {
    return this.lineage.reexecs;
  }

  /** The command that starts the next master image: --reexec-as, else this same binary. */
  private reexecCommand(): string[] {
    return this.v.config.reexecAs ? shellSplit(this.v.config.reexecAs) : this.v.selfCommand;
  }

  /** The environment the master started with, minus --drop-env-var names. */
  private restoredEnv(): Record<string, string> {
    const env = { ...this.lineage.startEnv };
    for (const name of this.v.config.dropEnvVars) delete env[name];
    return env;
  }

  /**
   * The `run-preflight` effect: re-read --config FILE (a file that cannot be
   * used fails the request before anything changes), then run the next
   * image's command with --upgrade-check (preflight.ts).
   */
  runPreflight(kind: ReexecKind): void {
    const done = (r: PreflightResult) => {
      this.stopPreflight = null;
      this.v.dispatch(r.ok ? { type: "preflight-done", ok: true, detail: r.detail } : { type: "preflight-done", ok: false, reason: r.reason });
    };
    let changes: string[];
    try {
      changes = this.nextConfig.reread();
    } catch (e) {
      done({ ok: false, reason: (e as Error).message });
      return;
    }
    if (changes.length) {
      const changed = `Config ${this.v.config.configFile} re-read; changes: ${changes.join(", ")}`;
      this.v.log.info(changed);
      this.v.notify(kind, changed, false);
    }
    const r = this.v.state().reexec;
    const pending: NonNullable<Handoff["pending"]> = r?.kind === "reload"
      ? { kind: "reload", requestedAt: r.requestedAt }
      : { kind: "upgrade", mode: r?.mode ?? "smooth", requestedAt: r?.requestedAt ?? this.v.os.now() };
    this.stopPreflight = startPreflight({
      cmd: this.reexecCommand(),
      env: this.restoredEnv(),
      // The module the next generation will run: the re-read configuration's.
      preload: this.nextConfig.config.preload,
      // What the exec would hand over, without its descriptors: the next
      // binary reads it as it would after the exec, so a document it cannot
      // continue from fails the upgrade here, while this image still runs.
      handoff: JSON.stringify(this.handoffDoc(pending, [])),
      os: this.v.os,
      watchChild: this.v.watchChild,
      unwatchChild: this.v.unwatchChild,
    }, done);
  }

  /**
   * The `exec` effect: hand everything to the next image and execve it, at a
   * moment when no signal is in flight: at the end of the signal batch that
   * carries a marker raised now (signal-source.ts), so every signal sent
   * before has been acted on by this image (a stop cancels the exec), and
   * every later one stays pending across the execve for the next image.
   */
  exec(pending: ExecRequest): void {
    this.v.whenDrained(() => {
      if (this.v.exited() || this.v.state().reexec?.phase !== "exec") return;
      try {
        this.execNow(pending.kind === "upgrade" ? { kind: "upgrade", mode: pending.mode ?? "smooth", requestedAt: pending.requestedAt } : { kind: "reload", requestedAt: pending.requestedAt });
      } catch (e) {
        this.v.dispatch({ type: "exec-failed", reason: (e as Error).message });
      }
    });
  }

  /** The `cancel-exec` effect: an exec not yet performed is not. */
  cancelExec(): void {
    this.v.cancelDrained();
  }

  /** Ends the preflight in progress, if any (see cancelPreflight). */
  private stopPreflight: (() => void) | null = null;

  /** The `cancel-preflight` effect: a stop came while the preflight ran; it is killed, not left behind by the master. */
  cancelPreflight(): void {
    this.stopPreflight?.();
    this.stopPreflight = null;
  }

  /** The handoff document, as the next image will read it (the capture is added at the exec). */
  private handoffDoc(pending: NonNullable<Handoff["pending"]>, connections: HandedConnection[]): Handoff {
    const held = this.v.holdings();
    return {
      schema: HANDOFF_SCHEMA,
      writerVersion: einhornVersionLabel(),
      writtenAt: this.v.os.now(),
      // With --config, what the re-read file says (its settings patched into the state).
      state: this.nextConfig.state(this.v.state()),
      config: this.nextConfig.config,
      configSchema: CONFIG_SCHEMA,
      startEnv: this.lineage.startEnv,
      listeners: held.listeners.map((l) => ({ fd: l.fd, specText: l.spec.text, bound: l.bound, unixPath: l.unixPath })),
      commandFd: held.commandFd,
      lock: null,
      commandPath: held.commandPath ? { dev: held.commandPath.dev, ino: held.commandPath.ino } : null,
      pidfile: held.pidfile ? { dev: held.pidfile.dev, ino: held.pidfile.ino } : null,
      connections,
      pending,
      reexecs: this.lineage.reexecs + 1,
      // Read by einhorns from before the signalfd: an empty mask and list
      // make them unblock every signal and replay none.
      signalMask: "",
      signals: [],
      pidfds: this.v.os.handOverChildren(),
      metrics: held.metrics,
      cpuAtExecUs: cpuMicros(),
      sdNotify: held.sdNotify,
    };
  }

  private execNow(pending: NonNullable<Handoff["pending"]>): void {
    const cmd = this.reexecCommand();
    const env = this.restoredEnv();
    const file = resolveProgram(cmd[0]!, env.PATH);
    const conns = this.v.connections();
    const doc = this.handoffDoc(pending, conns);
    const stateFd = memfdCreate("einhorn-handoff");
    const argv = [...cmd, "--with-state-fd", String(stateFd), "--", ...doc.config.program];
    this.v.log.info(`Re-executing: ${argv.join(" ")}`);
    // Last: the capture's queued lines (this log line included) and its streams move into the handoff.
    const capture = this.v.capture?.handOver() ?? null;
    doc.capture = capture;
    const keep = [stateFd, ...handedFds(doc)];
    try {
      writeHandoff(doc, stateFd);
      for (const fd of keep) sock.setCloexec(fd, false);
      this.v.os.exec(file, argv, Object.entries(env).map(([k, v]) => `${k}=${v}`));
    } catch (e) {
      // Still the old image: put every descriptor back as it was.
      for (const fd of keep) { try { sock.setCloexec(fd, true); } catch { /* closed meanwhile */ } }
      try { sock.close(stateFd); } catch { /* already closed */ }
      if (capture) this.v.capture!.takeBack(capture);
      throw e;
    }
  }
}

/** What checking the workers after a re-exec needs to see of the master. */
export interface ChildrenView {
  state(): State;
  dispatch(e: Event): void;
  os: Pick<Os, "check">;
  log: Pick<Logger, "error">;
}

/**
 * After a re-exec, find out which workers are still running children of
 * this process. A --reexec-as wrapper that ran for a while may have reaped
 * some (their exit status is lost with it), and their pids may since name
 * other processes: those workers are dropped, and replaced as usual.
 */
export function checkChildren(v: ChildrenView): void {
  for (const w of [...v.state().workers]) {
    let r;
    try {
      r = v.os.check(w.pid);
    } catch (e) {
      v.log.error(`Could not check worker ${w.pid} after the re-exec: ${(e as Error).message}`);
      continue;
    }
    if (r.kind === "exited") v.dispatch({ type: "exited", pid: w.pid, code: r.status.code, signal: r.status.signal });
    else if (r.kind === "gone") v.dispatch({ type: "vanished", pid: w.pid, reason: r.reason });
  }
}

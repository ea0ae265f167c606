// The I/O shell around the decision core. It is the only code that touches
// processes: it turns signals, timers, child exits and command-socket lines
// into core events, and performs the effects the core returns, in order.
// The Master sets up (start) or takes over (resume) what a master holds, and
// hands each concern to its piece, which sees only a narrow view of it:
// worker-launch.ts (starting workers), command-clients.ts (the command
// socket's clients), reexec.ts (the way to the next image) and
// housekeeping.ts (the repeating timers).
import { rmSync } from "node:fs";
import { SysError } from "../../ffi/errno";
import { getpid, prctl, PR_SET_CHILD_SUBREAPER, setpriority, setProcessName } from "../../ffi/process";
import { formatSockAddr } from "../../ffi/sockaddr";
import * as sock from "../../ffi/socket";
import { initialState, type State, upgradeState } from "../core/state";
import type { SignalName } from "../signal-names";
import type { Effect, Event, ReexecKind } from "../core/step";
import type { MasterConfig } from "./config";
import { createLogger, type Logger } from "../logging";
import { einhornVersionLabel } from "../version";
import { parseBindSpec } from "../config/bind-spec";
import { defaultTimeouts, describeChangedTimeouts, type Timeouts } from "../config/timeouts";
import { ENV } from "../protocol-env";
import { type Handoff, readHandoff, validateHandoff as validateHandoffDoc } from "./handoff";
import type { SystemdSockets } from "./systemd";
import { CommandClients } from "./command-clients";
import { StartError, StopDuringStart } from "./errors";
import { fsErrorText, type OwnedPath, ownedPath, removeOwnFile, writePidfile } from "./files";
import { createCommandSocket, type Listener, openListener } from "./listeners";
import { StartupSignals, stopDuringStartExitCode, untilStopSignal } from "./startup";
import { fsPath } from "../../ffi/os-string";
import { nonblockingWriter } from "../../ffi/io";
import { LineSink } from "./line-sink";
import { OutputCapture } from "./worker-output";
import { health, Metrics, renderMetrics } from "./metrics";
import { isLoopbackAddress, MetricsServer } from "./metrics-server";
import { masterFds, readProc, uptimeSeconds } from "./proc-stats";
import { SignalSource } from "./signal-source";
import { type ExecRequest, type Host, Interpreter } from "./interpreter";
import { type Os, systemOs } from "./os";
import { Housekeeping } from "./housekeeping";
import { checkChildren, cpuMicros, type Lineage, Reexec } from "./reexec";
import { WorkerLaunch } from "./worker-launch";
import { SdNotifier } from "./sd-notify";

export interface MasterOptions {
  config: MasterConfig;
  selfCommand: string[];
  /** The environment the master was started with (restored on re-exec). */
  env: Record<string, string | undefined>;
  /** Sockets passed by systemd socket activation, for `-b systemd:NAME`. */
  systemd?: SystemdSockets | null;
  /** The operating system (tests pass a scripted one); default: the real one. */
  os?: Os;
  /** The master's safety timeouts (EINHORN_TIMEOUTS, src/config/timeouts.ts); default: production's. */
  timeouts?: Timeouts;
}

/** Read and check the handoff document on `fd` (a master continuing after its own execve). */
export function loadHandoff(fd: number): Handoff {
  const doc = readHandoff(fd);
  return validateHandoffDoc(doc);
}

/**
 * The master process: sets up (start) or takes over (resume) its sockets,
 * files and state, then runs the Interpreter over them. It is the
 * Interpreter's Host: what the core's effects do to workers, clients and the
 * next image, its pieces do; its files are here; processes and time go
 * through the Os.
 */
export class Master implements Host {
  readonly log: Logger;
  private readonly os: Os;
  /** Feeds the core and performs its effects; exists once the state does. */
  private loop!: Interpreter;
  private readonly cfg: MasterConfig;
  private listeners: Listener[] = [];
  /** The command socket and pidfile this master created (removed at exit while they are still ours). */
  private commandPath: OwnedPath | null = null;
  private pidfile: OwnedPath | null = null;
  /** The repeating timers (reap safety net, once-a-second checks), stopped at exit (housekeeping.ts). */
  private readonly housekeeping: Housekeeping;
  private readonly pid = getpid();
  private signals: SignalSource | null = null;
  /** The command socket's server, connections and waiting clients (command-clients.ts). */
  private readonly commands: CommandClients;
  /** The way to the next image (reexec.ts); made once start or resume knows this master's lineage. */
  private reexec!: Reexec;
  /** Starts workers from their generation's spec (worker-launch.ts). */
  private readonly launch: WorkerLaunch;
  /** sd_notify (sd-notify.ts): does nothing unless systemd set NOTIFY_SOCKET. */
  private readonly sdNotify: SdNotifier;
  private readonly timeouts: Timeouts;

  constructor(private readonly opts: MasterOptions) {
    this.cfg = opts.config;
    this.timeouts = opts.timeouts ?? defaultTimeouts();
    this.capture = this.makeCapture();
    this.log = createLogger("master", this.cfg.logFormat, this.cfg.verbosity, this.capture?.logWrite);
    this.os = opts.os ?? systemOs(this.log);
    this.sdNotify = new SdNotifier(opts.env, this.pid, this.os, this.log);
    this.launch = new WorkerLaunch({
      state: () => this.state,
      os: this.os,
      log: this.log,
      config: this.cfg,
      selfCommand: opts.selfCommand,
      env: opts.env,
      listeners: () => this.listeners,
      capture: this.capture,
      adoptConnection: (fd) => this.commands.adoptConnection(fd),
    });
    this.commands = new CommandClients({
      state: () => this.state,
      started: () => this.loop !== undefined,
      dispatch: (e) => this.dispatch(e),
      log: this.log,
      now: () => this.os.now(),
      config: this.cfg,
      masterPid: this.pid,
      path: opts.env.PATH,
      listeners: () => this.listeners,
      reexecs: () => this.reexecs,
      timeouts: this.timeouts,
    });
    this.housekeeping = new Housekeeping({
      state: () => this.state,
      dispatch: (e) => this.dispatch(e),
      notify: (kind, message, final) => this.notify(kind, message, final),
      exited: () => this.loop.exited,
      reap: () => this.loop.reap(),
      os: this.os,
      log: this.log,
      config: this.cfg,
      timeouts: this.timeouts,
    });
  }

  /** The way to the next image, for a master of this lineage (a fresh start's, or the one a handoff carries). */
  private makeReexec(lineage: Lineage): Reexec {
    return new Reexec({
      os: this.os,
      log: this.log,
      config: this.cfg,
      selfCommand: this.opts.selfCommand,
      state: () => this.state,
      dispatch: (e) => this.dispatch(e),
      notify: (kind, message, final) => this.notify(kind, message, final),
      exited: () => this.loop.exited,
      whenDrained: (thunk) => this.signals!.execWhenDrained(thunk),
      cancelDrained: () => this.signals?.cancelExec(),
      watchChild: (pid, onExit) => this.loop.watchChild(pid, onExit),
      unwatchChild: (pid) => this.loop.unwatchChild(pid),
      holdings: () => ({
        listeners: this.listeners,
        commandFd: this.commands.fd!,
        commandPath: this.commandPath,
        pidfile: this.pidfile,
        metrics: { fd: this.metricsFd, counters: this.metrics.toJSON() },
        sdNotify: this.sdNotify.toJSON(),
      }),
      connections: () => this.commands.handOver(),
      capture: this.capture,
    }, lineage);
  }

  get state(): State {
    return this.loop.state;
  }

  /** How many times this master re-executed itself (the Reexec keeps the count). */
  private get reexecs(): number {
    return this.reexec.reexecs;
  }

  dispatch(e: Event): void {
    this.loop.dispatch(e);
  }

  /** --worker-output prefix|json: the capture (null for inherit, the default). */
  private readonly capture: OutputCapture | null;

  private makeCapture(): OutputCapture | null {
    const mode = this.cfg.workerOutput;
    if (mode === "inherit") return null;
    return new OutputCapture(mode, this.cfg.logFormat !== "plain", (fd, stream) => new LineSink(nonblockingWriter(fd), {
      onDropped: (n) => this.log.warn(`Dropped ${n} line${n === 1 ? "" : "s"} of worker output: the master's ${stream} is not keeping up (${this.capture?.droppedLines} dropped in all)`),
      onBroken: (e) => { if (stream === "stdout") this.log.error(`Captured worker output cannot be written to the master's stdout any more (${e.message}); dropping it from now on`); },
    }), (level, message) => this.log[level](message));
  }

  // --- start-up ----------------------------------------------------------------

  async start(): Promise<void> {
    const cfg = this.cfg;
    this.reexec = this.makeReexec({ startEnv: Object.fromEntries(Object.entries(this.opts.env).filter((e): e is [string, string] => e[1] !== undefined)), reexecs: 0 });
    // A stop signal at any moment of start-up ends it at once (see startup.ts).
    const signals = new StartupSignals(this.log);
    const stopRequested = signals.stopRequested;
    try {
      // The command socket first: a second master on the same path is
      // refused before it binds anything or touches the pidfile.
      const commandFd = await this.openCommandSocket(stopRequested);
      this.pidfile = cfg.pidfile === null ? null : writePidfile(cfg.pidfile);
      if (cfg.nice.master !== null) setpriority(0, cfg.nice.master);
      if (cfg.subreaper || this.pid === 1) {
        // Orphaned grandchildren of the workers are reparented to us and reaped like any child.
        prctl(PR_SET_CHILD_SUBREAPER, 1);
        this.log.debug(`Acting as child subreaper${this.pid === 1 ? " (running as PID 1)" : ""}`);
      }
      for (const spec of cfg.binds) {
        const l = await untilStopSignal(openListener(spec, cfg.backlog, this.opts.systemd ?? null), stopRequested);
        this.listeners.push(l);
        const asked = spec.address.kind === "tcp" && spec.address.port === 0 ? ` (port 0 asked; the kernel chose ${formatSockAddr(l.bound)})` : "";
        this.log.info(`Bound ${spec.text} on fd ${l.fd} as ${formatSockAddr(l.bound)}${asked}${spec.nonblock ? ", non-blocking" : ""}`);
      }
      if (cfg.metrics) await this.openMetricsSocket(cfg.metrics);
      signals.check();
      try {
        this.commands.serve(commandFd);
      } catch (e) {
        throw new StartError(`cannot serve the command socket ${cfg.socketPath}: ${(e as Error).message}`, 1, { cause: e });
      }
    } catch (e) {
      signals.dispose();
      this.cleanupFiles();
      if (e instanceof StopDuringStart) {
        this.log.info(`Received ${e.signal} during start-up; stopping before any worker started`);
        this.os.exit(stopDuringStartExitCode(e.signal));
      }
      if (e instanceof SysError) throw new StartError(e.message, 1, { cause: e });
      throw e;
    }
    this.loop = new Interpreter(this.os, this, this.log, initialState({
      number: cfg.number,
      seconds: cfg.seconds,
      ackMode: cfg.ackMode,
      maxUnacked: cfg.maxUnacked,
      maxUpgradeAdditional: cfg.maxUpgradeAdditional,
      signalTimeout: cfg.signalTimeout,
      upgradeMaxDeaths: cfg.upgradeMaxDeaths,
      ackTimeout: cfg.ackTimeout,
      verbosity: cfg.verbosity,
      upgradeBake: cfg.upgradeBake,
    }, this.os.now(), this.launch.candidateSpec()));
    signals.dispose();
    try {
      this.boot();
    } catch (e) {
      // Out of descriptors (EMFILE) for the signal descriptor, say: a start-up failure like any other.
      this.cleanupFiles();
      throw new StartError(`cannot set up the master's signal handling: ${fsErrorText(e)}`, 1, { cause: e });
    }
    this.log.info(`Master ${this.pid} starting ${cfg.number} worker(s) of: ${cfg.preload ? `preload ${cfg.preload} ` : ""}${cfg.program.join(" ")}`);
    const changed = describeChangedTimeouts(this.timeouts);
    if (changed) this.log.warn(`Safety timeouts changed by ${ENV.TIMEOUTS}: ${changed} (see docs/operations.md)`);
    this.dispatch({ type: "start" });
  }

  /**
   * Continue as the next image of a master that re-executed itself: adopt its
   * lock, sockets, command socket and client connections from the handoff,
   * then carry on with what it asked for (the rollout of an upgrade).
   */
  async resume(doc: Handoff): Promise<void> {
    const t0 = this.os.now();
    this.reexec = this.makeReexec({ startEnv: doc.startEnv, reexecs: doc.reexecs });
    this.sdNotify.restore(doc.sdNotify);
    this.metrics.restore(doc.metrics?.counters);
    if (doc.metrics?.fd != null) {
      try {
        sock.setCloexec(doc.metrics.fd, true);
        this.metricsFd = doc.metrics.fd;
      } catch (e) {
        this.log.error(`The metrics socket (fd ${doc.metrics.fd}) did not survive the re-exec (${(e as Error).message}); /metrics is not served until the master restarts`);
      }
    }
    // A descriptor the exec did not keep (an older einhorn's extra self-exec
    // closed it) costs what it carried, never the master.
    if (this.capture && doc.capture) {
      this.capture.adopt(doc.capture, (s, e) => this.log.warn(`Captured ${s.stream} of worker ${s.pid} could not be kept across the re-exec (${e.message}); its output goes unread`));
    }
    // PR_SET_CHILD_SUBREAPER survives execve, but say it again rather than rely on it.
    if (this.cfg.subreaper || this.pid === 1) prctl(PR_SET_CHILD_SUBREAPER, 1);
    // An older image held its lockfile for life; this one holds it only while creating the command socket.
    if (doc.lock) { try { sock.close(doc.lock.fd); } catch { /* already closed */ } }
    // (A handoff from before inodes were recorded: what the paths lead to now is ours.)
    this.commandPath = doc.commandPath ? { path: this.cfg.socketPath, ...doc.commandPath } : ownedPath(this.cfg.socketPath);
    const pidfile = this.cfg.pidfile;
    this.pidfile = pidfile === null ? null : doc.pidfile ? { path: pidfile, ...doc.pidfile } : ownedPath(pidfile);
    for (const l of doc.listeners) {
      sock.setCloexec(l.fd, true);
      this.listeners.push({ fd: l.fd, spec: parseBindSpec(l.specText), bound: l.bound, unixPath: l.unixPath });
    }
    sock.setCloexec(doc.commandFd, true);
    this.commands.serve(doc.commandFd);
    // This image's configuration is the candidate an upgrade rolls out; the
    // generations already running keep the specs the state carries.
    const candidate = this.launch.candidateSpec();
    this.loop = new Interpreter(this.os, this, this.log, upgradeState(doc.state, t0, (message) => this.log.warn(message), candidate));
    // Verbosity changed with quieter/louder lives in the state, not in the options.
    this.log.setVerbosity(this.state.settings.verbosity);
    this.os.adoptChildren(doc.pidfds);
    this.boot();
    // The signals stay blocked: the signalfd reads those pending since before the exec.
    await this.commands.adopt(doc.connections, doc.pending?.kind ?? null);
    // Signals sent during the exec are pending: act on them before the
    // pending upgrade starts rolling (a stop then abandons it). An einhorn
    // from before the signalfd handed over the ones it caught instead; a
    // HUP among those asked for the upgrade happening now.
    this.signals!.drainNow();
    const handed = doc.signals.filter((sig) => sig !== "SIGHUP" || !doc.pending);
    for (const sig of handed) if (sig !== "SIGHUP") this.onSignal(sig);
    // CPU from writing the handoff to here (the exec, the new runtime's start,
    // loading this image, adopting everything): what one re-exec costs.
    const cpu = doc.cpuAtExecUs === undefined ? "" : `; the re-exec took ${((cpuMicros() - doc.cpuAtExecUs) / 1000).toFixed(1)} ms of CPU`;
    this.log.info(`Master ${this.pid} re-executed as einhorn ${einhornVersionLabel()} (was ${doc.writerVersion}); ${this.state.workers.length} worker(s) kept, ${doc.connections.length} command connection(s) kept${cpu}`);
    // The core rolls the pending upgrade, or ends the reload (an older writer's state does not say which: its handoff does).
    const older = (doc.state as Partial<State>).reexec === undefined && doc.pending;
    this.dispatch({
      type: "resumed", version: einhornVersionLabel(), pid: this.pid, spec: candidate,
      pending: older ? { kind: doc.pending!.kind, mode: doc.pending!.kind === "upgrade" ? doc.pending!.mode : null, requestedAt: doc.pending!.requestedAt } : null,
    });
    // After the pending upgrade started: a worker lost meanwhile is then
    // replaced by one of the new version, not of the old.
    checkChildren({ state: () => this.state, dispatch: (e) => this.dispatch(e), os: this.os, log: this.log });
    this.loop.reap();
    if (handed.includes("SIGHUP")) this.onSignal("SIGHUP");
  }

  /** What a fresh start and a resumed image share once sockets and state are in place. */
  private boot(): void {
    const cfg = this.cfg;
    if (this.metricsFd !== null) {
      this.metricsServer = new MetricsServer(this.metricsFd, {
        metrics: () => this.renderMetrics(),
        health: () => health(this.state),
      }, (level, m) => this.log[level](m), { headMs: this.timeouts["metrics-head"], answerMs: this.timeouts["metrics-answer"] });
      this.metricsServer.start();
    }
    if (cfg.commandName) {
      // Einhorn shows "einhorn: NAME" in ps. The kernel's process name is what
      // ps -e, top and pgrep show; it holds 15 bytes, so long names are cut.
      process.title = `einhorn: ${cfg.commandName}`;
      try { setProcessName(`einhorn: ${cfg.commandName}`); } catch { /* cosmetic */ }
    }
    this.launch.pinImage();
    this.installSignals();
  }

  // --- metrics -----------------------------------------------------------------------

  readonly metrics = new Metrics();
  private metricsFd: number | null = null;
  private metricsServer: MetricsServer | null = null;

  private async openMetricsSocket(hostPort: string): Promise<void> {
    // SO_REUSEADDR: a restarted master gets its port back at once.
    const l = await openListener(parseBindSpec(`${hostPort},r`), 128, null);
    this.metricsFd = l.fd;
    const where = formatSockAddr(l.bound);
    this.log.info(`Serving metrics on http://${where}/metrics and health on http://${where}/healthz`);
    if (!isLoopbackAddress(l.bound) && !this.cfg.metricsAllowRemote) {
      this.log.warn(`--metrics ${hostPort} is reachable from other hosts and /metrics needs no credentials to read; bind 127.0.0.1 or [::1], or pass --metrics-allow-remote if this is meant`);
    }
  }

  private renderMetrics(): string {
    const master = readProc("self");
    const workerRss = new Map<number, number>();
    const workerCpu = new Map<number, number>();
    for (const w of this.state.workers) {
      const r = readProc(w.pid);
      if (r) { workerRss.set(w.pid, r.rssBytes); workerCpu.set(w.pid, r.cpuSeconds); }
    }
    const bootTime = this.os.now() / 1000 - uptimeSeconds();
    return renderMetrics(this.metrics, {
      state: this.state,
      einhornVersion: einhornVersionLabel(),
      master: master ? { cpuSeconds: master.cpuSeconds, rssBytes: master.rssBytes, startTimeSeconds: Math.round(bootTime + master.startedSinceBoot) } : null,
      reexecs: this.reexecs,
      workerRss,
      workerCpu,
      fds: masterFds(),
      virtualMemoryBytes: master?.vmBytes ?? null,
      output: this.capture ? { captured: this.capture.capturedLines, dropped: this.capture.droppedLines } : null,
      maxMemoryBytes: this.cfg.maxMemory,
    });
  }

  /** The command socket, created under the lockfile (see createCommandSocket). */
  private async openCommandSocket(stopRequested: () => SignalName | null): Promise<number> {
    const { socketPath, lockfile } = this.cfg;
    const fd = await createCommandSocket(socketPath, lockfile, stopRequested, {
      waiting: (holder) => this.log.info(`Waiting for the lockfile ${lockfile}, held by ${holder ? `pid ${holder}` : "another process"}`),
      created: (owned) => { this.commandPath = owned; },
    });
    this.log.debug(`Command socket listening at ${socketPath} (fd ${fd})`);
    return fd;
  }

  // --- Host: what effects do beyond processes and time (see interpreter.ts) ---------

  /** The `spawn` effect: see worker-launch.ts. */
  spawnWorker(index: number, version: number): number {
    return this.launch.spawnWorker(index, version);
  }

  enroll(requestId: number, kind: ReexecKind): void {
    this.commands.enroll(requestId, kind);
  }

  refuse(requestId: number, message: string): void {
    this.commands.refuse(requestId, message);
  }

  notify(kind: ReexecKind, message: string, final: boolean, error = false): void {
    this.commands.notify(kind, message, final, error);
  }

  inputWaiting(): boolean {
    return this.commands.inputWaiting();
  }

  observe(e: Event, before: State, after: State, effects: Effect[], now: number): void {
    this.metrics.observe(e, before, after, effects, now);
    this.sdNotify.observe(e, before, after, effects, now);
  }

  /** The `run-preflight` effect: see reexec.ts. */
  runPreflight(kind: ReexecKind): void {
    this.reexec.runPreflight(kind);
  }

  /** The `exec` effect: see reexec.ts. */
  exec(pending: ExecRequest): void {
    this.reexec.exec(pending);
  }

  cancelExec(): void {
    this.reexec.cancelExec();
  }

  cancelPreflight(): void {
    this.reexec.cancelPreflight();
  }

  private installSignals(): void {
    this.signals = new SignalSource(this.log, (sig) => this.onSignal(sig));
    this.signals.start();
    // JSC starts its GC helper threads at the first collection; a runtime
    // that cannot create a thread later (RLIMIT_NPROC reached) aborts, so
    // have them made now, while starting.
    Bun.gc(true);
    this.housekeeping.start();
    this.sdNotify.start();
  }

  private onSignal(sig: SignalName): void {
    if (sig === "SIGCHLD") this.loop.reap();
    else this.dispatch({ type: "signal", signal: sig });
  }

  // --- leaving -----------------------------------------------------------------------

  /** Remove what this master created, and only that: each path only while it still leads to our inode. */
  private cleanupFiles(): void {
    removeOwnFile(this.commandPath);
    for (const l of this.listeners) if (l.unixPath) rmSync(fsPath(l.unixPath), { force: true });
    removeOwnFile(this.pidfile);
  }

  /** The `exit` effect's last words (the Interpreter then ends the process). */
  leave(code: number): void {
    this.housekeeping.stop();
    this.sdNotify.stop();
    this.commands.stop();
    this.cleanupFiles();
    if (this.capture) {
      for (const [stream, n] of Object.entries(this.capture.takeUnreported())) {
        if (n) this.log.warn(`Dropped ${n} line${n === 1 ? "" : "s"} of worker output: the master's ${stream} is not keeping up (${this.capture.droppedLines} dropped in all)`);
      }
    }
    this.log.info(`Exiting with status ${code}`);
    if (this.capture) {
      // Captured lines still queued get a short, bounded chance to go out.
      const until = this.os.now() + 500;
      while (this.capture.flush() > 0 && this.os.now() < until) Bun.sleepSync(5);
    }
  }
}

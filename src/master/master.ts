// The I/O shell around the decision core. It is the only code that touches
// processes: it turns signals, timers, child exits and command-socket lines
// into core events, and performs the effects the core returns, in order.
import { existsSync, realpathSync, rmSync } from "node:fs";
import { SysError } from "../../ffi/errno";
import { getpid, memfdCreate, prctl, PR_SET_CHILD_SUBREAPER, setpriority, setProcessName } from "../../ffi/process";
import { formatSockAddr } from "../../ffi/sockaddr";
import * as sock from "../../ffi/socket";
import { initialState, type State, upgradeState } from "../core/state";
import type { WorkerSpec } from "../core/generation";
import { specOf } from "../core/pool";
import type { SignalName } from "../signal-names";
import type { Effect, Event, ReexecKind, UpgradeMode } from "../core/step";
import { CONFIG_SCHEMA, type MasterConfig } from "./config";
import { createLogger, type Logger } from "../logging";
import { einhornVersionLabel } from "../version";
import { parseBindSpec } from "./bind-spec";
import { type Handoff, handedFds, HANDOFF_SCHEMA, readHandoff, validateHandoff as validateHandoffDoc, writeHandoff } from "./handoff";
import { type PreflightResult, runPreflight as startPreflight } from "./preflight";
import { shellSplit } from "./shell-split";
import type { SystemdSockets } from "./systemd";
import { CommandServer, type Connection } from "./command-server";
import { type CommandContext, handleLine } from "./commands";
import { StartError, StopDuringStart } from "./errors";
import { fsErrorText, type OwnedPath, ownedPath, removeOwnFile, writePidfile } from "./files";
import { createCommandSocket, type Listener, openListener } from "./listeners";
import { StartupSignals, stopDuringStartExitCode, untilStopSignal } from "./startup";
import { pinSelfImage, resolveProgram, spawnWorker, type WorkerPlan } from "./spawner";
import { buildStateReport } from "./state-report";
import { einhornStateYaml } from "./einhorn-state";
import { renderStatus, StatusCollector } from "./status-report";
import { AckWaitReporter } from "./ack-wait";
import { fsPath } from "../../ffi/os-string";
import { nonblockingWriter } from "../../ffi/io";
import { LineSink } from "./line-sink";
import { OutputCapture, type PreparedCapture } from "./worker-output";
import { health, Metrics, renderMetrics } from "./metrics";
import { type ConfigReload, rereadConfig } from "./config-reload";
import { MemoryGuard } from "./memory-guard";
import { isLoopbackHost, MetricsServer } from "./metrics-server";
import { masterFds, readProc, uptimeSeconds } from "./proc-stats";
import { SignalSource } from "./signal-source";
import { type ExecRequest, type Host, Interpreter } from "./interpreter";
import { type Cancel, type Os, systemOs } from "./os";
import { Waiters } from "./waiters";

/** A lost SIGCHLD would leave a dead worker unreplaced; this cheap poll is the safety net. */
const SAFETY_REAP_MS = 5_000;

/** CPU time this process has used (all threads, all images since the first exec), in microseconds. */
const cpuMicros = (): number => { const u = process.cpuUsage(); return u.user + u.system; };

export interface MasterOptions {
  config: MasterConfig;
  selfCommand: string[];
  /** The environment the master was started with (restored on re-exec). */
  env: Record<string, string | undefined>;
  /** Sockets passed by systemd socket activation, for `-b systemd:NAME`. */
  systemd?: SystemdSockets | null;
  /** The operating system (tests pass a scripted one); default: the real one. */
  os?: Os;
}

/** Read and check the handoff document on `fd` (a master continuing after its own execve). */
export function loadHandoff(fd: number): Handoff {
  const doc = readHandoff(fd);
  return validateHandoffDoc(doc);
}

/**
 * The master process: sets up (start) or takes over (resume) its sockets,
 * files and state, then runs the Interpreter over them. It is the
 * Interpreter's Host: what the core's effects do to clients, files and the
 * next image is here; processes and time go through the Os.
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
  private server: CommandServer | null = null;
  private commandFd: number | null = null;
  /** The repeating timers (reap safety net, housekeeping), stopped at exit. */
  private timers: Cancel[] = [];
  private readonly pid = getpid();
  private readonly waiters = new Waiters();
  private reexecs = 0;
  private startEnv: Record<string, string> = {};
  private signals: SignalSource | null = null;

  constructor(private readonly opts: MasterOptions) {
    this.cfg = opts.config;
    this.capture = this.makeCapture();
    this.log = createLogger("master", this.cfg.logFormat, this.cfg.verbosity, this.capture?.logWrite);
    this.os = opts.os ?? systemOs(this.log);
    this.commands = this.commandContext();
  }

  get state(): State {
    return this.loop.state;
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
    this.startEnv = Object.fromEntries(Object.entries(this.opts.env).filter((e): e is [string, string] => e[1] !== undefined));
    // A stop signal at any moment of start-up ends it at once (see startup.ts).
    const signals = new StartupSignals(this.log);
    const stopRequested = signals.stopRequested;
    try {
      // The command socket first: a second master on the same path is
      // refused before it binds anything or touches the pidfile.
      await this.openCommandSocket(stopRequested);
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
        this.serveCommands(this.commandFd!);
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
    }, this.os.now(), this.candidateSpec()));
    signals.dispose();
    try {
      this.boot();
    } catch (e) {
      // Out of descriptors (EMFILE) for the signal descriptor, say: a start-up failure like any other.
      this.cleanupFiles();
      throw new StartError(`cannot set up the master's signal handling: ${fsErrorText(e)}`, 1, { cause: e });
    }
    this.log.info(`Master ${this.pid} starting ${cfg.number} worker(s) of: ${cfg.preload ? `preload ${cfg.preload} ` : ""}${cfg.program.join(" ")}`);
    this.dispatch({ type: "start" });
  }

  /**
   * Continue as the next image of a master that re-executed itself: adopt its
   * lock, sockets, command socket and client connections from the handoff,
   * then carry on with what it asked for (the rollout of an upgrade).
   */
  async resume(doc: Handoff): Promise<void> {
    const t0 = this.os.now();
    this.startEnv = doc.startEnv;
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
    this.reexecs = doc.reexecs;
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
    this.commandFd = doc.commandFd;
    this.serveCommands(doc.commandFd);
    // This image's configuration is the candidate an upgrade rolls out; the
    // generations already running keep the specs the state carries.
    const candidate = this.candidateSpec();
    this.loop = new Interpreter(this.os, this, this.log, upgradeState(doc.state, t0, (message) => this.log.warn(message), candidate));
    // Verbosity changed with quieter/louder lives in the state, not in the options.
    this.log.setVerbosity(this.state.settings.verbosity);
    this.os.adoptChildren(doc.pidfds);
    this.boot();
    // The signals stay blocked: the signalfd reads those pending since before the exec.
    for (const c of doc.connections) {
      try {
        sock.setCloexec(c.fd, true);
        const conn = await this.server!.adoptConnection(c.fd);
        if (!conn) continue;
        if (c.format === "json") conn.format = "json";
        // A client that had not yet sent a whole line is still held to the first-line timeout (older images did not say: assume it spoke).
        conn.sentLine = c.spoke ?? true;
        conn.importBuffers(Buffer.from(c.partialIn, "base64"), Buffer.from(c.pendingOut, "base64"), this.os.now());
        if (c.waiting && doc.pending) this.waiters.adopt(conn, c.waiting.requestId, doc.pending.kind);
      } catch (e) {
        this.log.warn(`Could not keep command connection fd ${c.fd} across the re-exec: ${(e as Error).message}`);
      }
    }
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
    this.checkChildren();
    this.loop.reap();
    if (handed.includes("SIGHUP")) this.onSignal("SIGHUP");
  }

  /**
   * After a re-exec, find out which workers are still running children of
   * this process. A --reexec-as wrapper that ran for a while may have reaped
   * some (their exit status is lost with it), and their pids may since name
   * other processes: those workers are dropped, and replaced as usual.
   */
  private checkChildren(): void {
    for (const w of [...this.state.workers]) {
      let r;
      try {
        r = this.os.check(w.pid);
      } catch (e) {
        this.log.error(`Could not check worker ${w.pid} after the re-exec: ${(e as Error).message}`);
        continue;
      }
      if (r.kind === "exited") this.dispatch({ type: "exited", pid: w.pid, code: r.status.code, signal: r.status.signal });
      else if (r.kind === "gone") this.dispatch({ type: "vanished", pid: w.pid, reason: r.reason });
    }
  }

  /** What a fresh start and a resumed image share once sockets and state are in place. */
  private boot(): void {
    const cfg = this.cfg;
    if (this.metricsFd !== null) {
      this.metricsServer = new MetricsServer(this.metricsFd, {
        metrics: () => this.renderMetrics(),
        health: () => health(this.state),
      }, (level, m) => this.log[level](m));
      this.metricsServer.start();
    }
    if (cfg.commandName) {
      // Einhorn shows "einhorn: NAME" in ps. The kernel's process name is what
      // ps -e, top and pgrep show; it holds 15 bytes, so long names are cut.
      process.title = `einhorn: ${cfg.commandName}`;
      try { setProcessName(`einhorn: ${cfg.commandName}`); } catch { /* cosmetic */ }
    }
    this.selfExec = pinSelfImage();
    this.installSignals();
  }

  /** This binary's running image, pinned (see pinSelfImage); null without /proc. */
  private selfExec: string | null = null;

  /**
   * What this image's configuration says workers run: the spec of the first
   * generation at start, and after a re-exec the candidate an upgrade rolls
   * out (generations already running keep theirs). The program is looked up
   * in PATH and its symlinks resolved now, so a release behind a `current`
   * symlink that moves later is not picked up by respawns (an upgrade makes a
   * new spec). A program that cannot be found now gets its spawn's own error.
   */
  private candidateSpec(): WorkerSpec {
    const cfg = this.cfg;
    const env = Object.fromEntries(Object.entries(this.opts.env).filter((e): e is [string, string] => e[1] !== undefined));
    let programPath: string | null = null;
    if (!cfg.preload && cfg.program.length) {
      try { programPath = realpathSync(fsPath(resolveProgram(cfg.program[0]!, env.PATH))); } catch { /* reported by the spawn */ }
    }
    let cwd = "/";
    try { cwd = realpathSync(process.cwd()); } catch { /* a removed directory: recorded as / */ }
    return {
      program: cfg.program,
      programPath,
      preload: cfg.preload,
      cwd,
      env,
      retireSignal: cfg.retireSignal,
      killChildrenOnExit: cfg.killChildrenOnExit,
      commandSocketAsFd: cfg.commandSocketAsFd,
      listenFds: cfg.listenFds,
      nice: cfg.nice.worker,
    };
  }

  /** Generations whose recorded program was gone at a spawn (warned once each). */
  private readonly goneWarned = new Set<number>();

  /** How to start a worker of generation `version`, from its own spec. */
  private planFor(version: number): WorkerPlan {
    const spec = specOf(this.state, version);
    let programFile: string | undefined;
    if (spec.preload) {
      // With -p, every worker is this binary running the preload module; PROGRAM ARGS become its argv.
      programFile = this.selfExec ?? undefined;
    } else if (spec.programPath) {
      if (existsSync(fsPath(spec.programPath))) programFile = spec.programPath;
      else if (!this.goneWarned.has(version)) {
        this.goneWarned.add(version);
        this.log.warn(`Version ${version}'s program ${spec.programPath} is gone; starting its workers from '${spec.program[0]}' as given`);
      }
    }
    return {
      program: spec.preload ? [...this.opts.selfCommand, "_preload", spec.preload, "--", ...spec.program] : spec.program,
      programFile,
      listenFds: spec.listenFds,
      listenNames: this.listeners.map((l) => l.spec.name ?? "einhorn"),
      listenerFds: this.listeners.map((l) => l.fd),
      sockPath: this.cfg.socketPath,
      selfCommand: this.opts.selfCommand,
      ...(this.selfExec ? { selfExec: this.selfExec } : {}),
      killChildrenOnExit: spec.killChildrenOnExit,
      retireSignal: spec.retireSignal,
      workerNice: spec.nice,
      baseEnv: spec.env,
    };
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
    const host = parseBindSpec(hostPort).address;
    if (host.kind === "tcp" && !isLoopbackHost(host.host) && !this.cfg.metricsAllowRemote) {
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
  private async openCommandSocket(stopRequested: () => SignalName | null): Promise<void> {
    const { socketPath, lockfile } = this.cfg;
    this.commandFd = await createCommandSocket(socketPath, lockfile, stopRequested, {
      waiting: (holder) => this.log.info(`Waiting for the lockfile ${lockfile}, held by ${holder ? `pid ${holder}` : "another process"}`),
      created: (owned) => { this.commandPath = owned; },
    });
    this.log.debug(`Command socket listening at ${socketPath} (fd ${this.commandFd})`);
  }

  private serveCommands(fd: number): void {
    this.server = new CommandServer({
      onLine: (conn, line) => handleLine(this.commands, conn, line),
      // (Connections adopted on resume are served before the state is.)
      isWorker: (pid) => this.loop?.state.workers.some((w) => w.pid === pid) ?? false,
      onClose: (conn) => this.waiters.drop(conn),
      log: (level, message) => this.log[level](message),
    });
    this.server.listenFd(fd);
  }

  /** What command handlers may see and do; built once in the constructor (it reads the options). */
  private readonly commands: CommandContext;
  private readonly statusCollector = new StatusCollector();

  private commandContext(): CommandContext {
    return {
      state: () => this.state,
      dispatch: (e: Event) => this.dispatch(e),
      report: () => buildStateReport(this.state, {
        einhornVersion: einhornVersionLabel(),
        masterPid: this.pid,
        commandName: this.cfg.commandName,
        socketPath: this.cfg.socketPath,
        program: this.cfg.program,
        listeners: this.listeners,
        verbosity: this.state.settings.verbosity,
        reexecs: this.reexecs,
      }),
      einhornState: () => einhornStateYaml({
        state: this.state,
        config: this.cfg,
        listeners: this.listeners,
        reexecs: this.reexecs,
        commandFd: this.commandFd,
        connectionFds: [...(this.server?.connections ?? [])].map((c) => c.fd),
        which: (program) => resolveProgram(program, this.opts.env.PATH),
      }),
      status: (format) => {
        const data = this.statusCollector.collect(this.state, {
          masterPid: this.pid, einhornVersion: einhornVersionLabel(), commandName: this.cfg.commandName, socketPath: this.cfg.socketPath, listeners: this.listeners,
        }, this.os.now());
        return format === "json" ? JSON.stringify(data) : renderStatus(data);
      },
      masterPid: this.pid,
      commandName: this.cfg.commandName,
      einhornVersion: einhornVersionLabel(),
      setVerbosity: (v: number) => this.log.setVerbosity(v),
      upgrade: (conn: Connection, id: unknown, mode: UpgradeMode) => this.request("upgrade", mode, conn, id),
      reload: (conn: Connection, id: unknown) => this.request("reload", null, conn, id),
      log: (level: "debug" | "info" | "warn" | "error", message: string) => this.log[level](message),
    };
  }

  /** An upgrade or reload asked for on the command socket: the core decides (see requestReexec in core/step.ts). */
  private request(kind: ReexecKind, mode: UpgradeMode | null, conn: Connection, id: unknown): void {
    this.dispatch({ type: "reexec-requested", kind, mode, requestId: this.waiters.ask(conn, id) });
  }

  // --- Host: what effects do beyond processes and time (see interpreter.ts) ---------

  enroll(requestId: number, kind: ReexecKind): void {
    this.waiters.enroll(requestId, kind);
  }

  refuse(requestId: number, message: string): void {
    this.waiters.refuse(requestId, message);
  }

  notify(kind: ReexecKind, message: string, final: boolean, error = false): void {
    this.waiters.notify(kind, message, final, error);
  }

  inputWaiting(): boolean {
    return this.server?.inputWaiting() ?? false;
  }

  observe(e: Event, before: State, after: State, effects: Effect[], now: number): void {
    this.metrics.observe(e, before, after, effects, now);
  }

  cancelExec(): void {
    this.signals?.cancelExec();
  }

  /** The command that starts the next master image: --reexec-as, else this same binary. */
  private reexecCommand(): string[] {
    return this.cfg.reexecAs ? shellSplit(this.cfg.reexecAs) : this.opts.selfCommand;
  }

  /** The environment the master started with, minus --drop-env-var names. */
  private restoredEnv(): Record<string, string> {
    const env = { ...this.startEnv };
    for (const name of this.cfg.dropEnvVars) delete env[name];
    return env;
  }

  /** The configuration the next image gets (--config re-read by the current upgrade or reload). */
  private nextConfig: ConfigReload | null = null;

  /**
   * The `run-preflight` effect: re-read --config FILE (a file that cannot be
   * used fails the request before anything changes), then run the next
   * image's command with --upgrade-check (preflight.ts).
   */
  runPreflight(kind: ReexecKind): void {
    const done = (r: PreflightResult) => this.dispatch(r.ok ? { type: "preflight-done", ok: true, detail: r.detail } : { type: "preflight-done", ok: false, reason: r.reason });
    try {
      this.nextConfig = rereadConfig(this.cfg);
    } catch (e) {
      done({ ok: false, reason: (e as Error).message });
      return;
    }
    if (this.nextConfig.changes.length) {
      const changed = `Config ${this.cfg.configFile} re-read; changes: ${this.nextConfig.changes.join(", ")}`;
      this.log.info(changed);
      this.notify(kind, changed, false);
    }
    const r = this.state.reexec;
    const pending: NonNullable<Handoff["pending"]> = r?.kind === "reload"
      ? { kind: "reload", requestedAt: r.requestedAt }
      : { kind: "upgrade", mode: r?.mode ?? "smooth", requestedAt: r?.requestedAt ?? this.os.now() };
    startPreflight({
      cmd: this.reexecCommand(),
      env: this.restoredEnv(),
      preload: this.cfg.preload,
      // What the exec would hand over, without its descriptors: the next
      // binary reads it as it would after the exec, so a document it cannot
      // continue from fails the upgrade here, while this image still runs.
      handoff: JSON.stringify(this.handoffDoc(pending, [])),
      os: this.os,
      watchChild: (pid, onExit) => this.loop.watchChild(pid, onExit),
      unwatchChild: (pid) => this.loop.unwatchChild(pid),
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
    this.signals!.execWhenDrained(() => {
      if (this.loop.exited || this.state.reexec?.phase !== "exec") return;
      try {
        this.execNow(pending.kind === "upgrade" ? { kind: "upgrade", mode: pending.mode ?? "smooth", requestedAt: pending.requestedAt } : { kind: "reload", requestedAt: pending.requestedAt });
      } catch (e) {
        this.dispatch({ type: "exec-failed", reason: (e as Error).message });
      }
    });
  }

  /** The handoff document, as the next image will read it (the capture is added at the exec). */
  private handoffDoc(pending: NonNullable<Handoff["pending"]>, conns: Connection[]): Handoff {
    return {
      schema: HANDOFF_SCHEMA,
      writerVersion: einhornVersionLabel(),
      writtenAt: this.os.now(),
      // With --config, what the re-read file says (its settings patched into the state).
      state: this.nextConfig ? { ...this.state, settings: { ...this.state.settings, ...this.nextConfig.patch } } : this.state,
      config: this.nextConfig?.config ?? this.cfg,
      configSchema: CONFIG_SCHEMA,
      startEnv: this.startEnv,
      listeners: this.listeners.map((l) => ({ fd: l.fd, specText: l.spec.text, bound: l.bound, unixPath: l.unixPath })),
      commandFd: this.commandFd!,
      lock: null,
      commandPath: this.commandPath ? { dev: this.commandPath.dev, ino: this.commandPath.ino } : null,
      pidfile: this.pidfile ? { dev: this.pidfile.dev, ino: this.pidfile.ino } : null,
      connections: conns.map((c) => {
        const b = c.exportBuffers();
        const waiting = this.waiters.waitingOn(c);
        return { fd: c.fd, waiting: waiting ? { requestId: waiting.id ?? null } : null, partialIn: b.partialIn.toString("base64"), pendingOut: b.pendingOut.toString("base64"), format: c.format, spoke: c.sentLine };
      }),
      pending,
      reexecs: this.reexecs + 1,
      // Read by einhorns from before the signalfd: an empty mask and list
      // make them unblock every signal and replay none.
      signalMask: "",
      signals: [],
      pidfds: this.os.handOverChildren(),
      metrics: { fd: this.metricsFd, counters: this.metrics.toJSON() },
      cpuAtExecUs: cpuMicros(),
    };
  }

  private execNow(pending: NonNullable<Handoff["pending"]>): void {
    const cmd = this.reexecCommand();
    const env = this.restoredEnv();
    const file = resolveProgram(cmd[0]!, env.PATH);
    const conns = [...(this.server?.connections ?? [])].filter((c) => c.transferable);
    const doc = this.handoffDoc(pending, conns);
    const stateFd = memfdCreate("einhorn-handoff");
    const argv = [...cmd, "--with-state-fd", String(stateFd), "--", ...doc.config.program];
    this.log.info(`Re-executing: ${argv.join(" ")}`);
    // Last: the capture's queued lines (this log line included) and its streams move into the handoff.
    const capture = this.capture?.handOver() ?? null;
    doc.capture = capture;
    const keep = [stateFd, ...handedFds(doc)];
    try {
      writeHandoff(doc, stateFd);
      for (const fd of keep) sock.setCloexec(fd, false);
      this.os.exec(file, argv, Object.entries(env).map(([k, v]) => `${k}=${v}`));
    } catch (e) {
      // Still the old image: put every descriptor back as it was.
      for (const fd of keep) { try { sock.setCloexec(fd, true); } catch { /* closed meanwhile */ } }
      try { sock.close(stateFd); } catch { /* already closed */ }
      if (capture) this.capture!.takeBack(capture);
      throw e;
    }
  }

  private installSignals(): void {
    this.signals = new SignalSource(this.log, (sig) => this.onSignal(sig));
    this.signals.start();
    // JSC starts its GC helper threads at the first collection; a runtime
    // that cannot create a thread later (RLIMIT_NPROC reached) aborts, so
    // have them made now, while starting.
    Bun.gc(true);
    this.timers.push(this.os.every(SAFETY_REAP_MS, () => this.loop.reap()));
    this.timers.push(this.os.every(1_000, () => this.housekeeping()));
  }
  private readonly ackWait = new AckWaitReporter();
  private memoryGuard: MemoryGuard | null = null;

  /** Once a second: reports and checks that are not driven by the core's clock. */
  private housekeeping(): void {
    if (this.loop.exited) return;
    const report = this.ackWait.check(this.state, this.os.now());
    if (report) {
      this.log.warn(report);
      this.notify("upgrade", report, false);
    }
    if (this.cfg.maxMemory) {
      this.memoryGuard ??= new MemoryGuard(this.cfg.maxMemory);
      const replace = this.memoryGuard.check(this.state, (pid) => readProc(pid)?.rssBytes ?? null);
      if (replace) this.dispatch({ type: "replace", pid: replace.pid, reason: replace.reason });
    }
  }

  private onSignal(sig: SignalName): void {
    if (sig === "SIGCHLD") this.loop.reap();
    else this.dispatch({ type: "signal", signal: sig });
  }

  /** The `spawn` effect's work: the worker's command connection and output capture, then Os.spawn. */
  spawnWorker(index: number, version: number): number {
    let pair: [number, number] | null = null;
    let captured: PreparedCapture | null = null;
    try {
      const plan = this.planFor(version);
      if (specOf(this.state, version).commandSocketAsFd) pair = sock.socketpair();
      if (this.capture) captured = this.capture.output.prepare();
      const pid = spawnWorker((file, argv, env, opts) => this.os.spawn(file, argv, env, opts), plan, index, pair ? pair[1] : null, (e) => this.log.error(`Worker ${e.message}`), captured?.child ?? null);
      if (captured) this.capture!.output.attach(captured, pid, index);
      if (pair) {
        sock.close(pair[1]);
        const masterEnd = pair[0];
        this.server!.adoptConnection(masterEnd).catch((e) => {
          this.log.error(`Could not serve the command connection of worker ${pid}: ${(e as Error).message}`);
          try { sock.close(masterEnd); } catch { /* gone */ }
        });
      }
      return pid;
    } catch (e) {
      if (pair) for (const fd of pair) { try { sock.close(fd); } catch { /* already closed */ } }
      if (captured) this.capture!.output.abandon(captured);
      throw e;
    }
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
    for (const cancel of this.timers) cancel();
    this.server?.stop();
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

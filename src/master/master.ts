// The I/O shell around the decision core. It is the only code that touches
// processes: it turns signals, timers, child exits and command-socket lines
// into core events, and performs the effects the core returns, in order.
import { rmSync } from "node:fs";
import { SysError } from "../../ffi/errno";
import { getpid, kill, setpriority, waitpidNohang } from "../../ffi/process";
import { formatSockAddr } from "../../ffi/sockaddr";
import * as sock from "../../ffi/socket";
import { initialState, type State } from "../core/state";
import { type Effect, type Event, step, type UpgradeMode } from "../core/step";
import type { MasterConfig } from "../cli/master-options";
import { createLogger, type Logger } from "../logging";
import { EINHORN_VERSION } from "../version";
import { CommandServer, type Connection } from "./command-server";
import { handleLine } from "./commands";
import { StartError } from "./errors";
import { acquireLock, type HeldLock, removeOwnFile, writePidfile } from "./files";
import { bindUnix, clearStaleUnixSocket, type Listener, openListener } from "./listeners";
import { spawnWorker, type WorkerPlan } from "./spawner";
import { buildStateReport } from "./state-report";

/** A lost SIGCHLD would leave a dead worker unreplaced; this cheap poll is the safety net. */
const SAFETY_REAP_MS = 5_000;

export interface MasterOptions {
  config: MasterConfig;
  selfCommand: string[];
  /** The environment the master was started with (restored on re-exec). */
  env: Record<string, string | undefined>;
}

export class Master {
  state!: State;
  readonly log: Logger;
  private readonly cfg: MasterConfig;
  private listeners: Listener[] = [];
  private lock: HeldLock | null = null;
  private server: CommandServer | null = null;
  private commandFd: number | null = null;
  private plan!: WorkerPlan;
  private queue: Event[] = [];
  private draining = false;
  private wakeTimer: ReturnType<typeof setTimeout> | null = null;
  private safety: ReturnType<typeof setInterval> | null = null;
  private exiting = false;
  private readonly pid = getpid();
  private upgradeWaiters = new Set<{ conn: Connection; id: unknown }>();
  private refusedUpgrade: string | null = null;

  constructor(private readonly opts: MasterOptions) {
    this.cfg = opts.config;
    this.log = createLogger("master", this.cfg.logFormat, this.cfg.verbosity);
  }

  // --- start-up ----------------------------------------------------------------

  async start(): Promise<void> {
    const cfg = this.cfg;
    try {
      this.lock = acquireLock(cfg.lockfile);
      writePidfile(cfg.pidfile);
      if (cfg.nice.master !== null) setpriority(0, cfg.nice.master);
      for (const spec of cfg.binds) {
        const l = await openListener(spec, cfg.backlog);
        this.listeners.push(l);
        const asked = spec.address.kind === "tcp" && spec.address.port === 0 ? ` (port 0 asked; the kernel chose ${formatSockAddr(l.bound)})` : "";
        this.log.info(`Bound ${spec.text} on fd ${l.fd} as ${formatSockAddr(l.bound)}${asked}${spec.nonblock ? ", non-blocking" : ""}`);
      }
      this.openCommandSocket();
    } catch (e) {
      this.cleanupFiles();
      if (e instanceof SysError) throw new StartError(e.message);
      throw e;
    }
    if (cfg.commandName) process.title = `einhorn: ${cfg.commandName}`;
    this.plan = {
      program: cfg.program,
      listenerFds: this.listeners.map((l) => l.fd),
      sockPath: cfg.socketPath,
      selfCommand: this.opts.selfCommand,
      killChildrenOnExit: cfg.killChildrenOnExit,
      workerNice: cfg.nice.worker,
      baseEnv: this.opts.env,
    };
    this.state = initialState({
      number: cfg.number,
      seconds: cfg.seconds,
      ackMode: cfg.ackMode,
      maxUnacked: cfg.maxUnacked,
      maxUpgradeAdditional: cfg.maxUpgradeAdditional,
      signalTimeout: cfg.signalTimeout,
      upgradeMaxDeaths: cfg.upgradeMaxDeaths,
      ackTimeout: cfg.ackTimeout,
      verbosity: cfg.verbosity,
    }, Date.now());
    this.installSignals();
    this.log.info(`Master ${this.pid} starting ${cfg.number} worker(s) of: ${cfg.program.join(" ")}`);
    this.dispatch({ type: "start" });
  }

  private openCommandSocket(): void {
    const path = this.cfg.socketPath;
    clearStaleUnixSocket(path, "command socket");
    const fd = sock.socket("unix");
    try {
      bindUnix(fd, path, 0o600);
      sock.listen(fd, 128);
    } catch (e) {
      sock.close(fd);
      if (e instanceof SysError) throw new StartError(`cannot open the command socket: ${e.message}`);
      throw e;
    }
    this.commandFd = fd;
    this.server = new CommandServer({
      onLine: (conn, line) => handleLine(this.commandContext(), conn, line),
      onClose: (conn) => { for (const w of this.upgradeWaiters) if (w.conn === conn) this.upgradeWaiters.delete(w); },
      log: (level, message) => this.log[level](message),
    });
    this.server.listenFd(fd);
    this.log.debug(`Command socket listening at ${path} (fd ${fd})`);
  }

  private commandContext() {
    return {
      state: () => this.state,
      dispatch: (e: Event) => this.dispatch(e),
      report: () => buildStateReport(this.state, {
        einhornVersion: EINHORN_VERSION,
        masterPid: this.pid,
        commandName: this.cfg.commandName,
        socketPath: this.cfg.socketPath,
        program: this.cfg.program,
        listeners: this.listeners,
        verbosity: this.state.settings.verbosity,
        reexecs: 0,
      }),
      masterPid: this.pid,
      commandName: this.cfg.commandName,
      einhornVersion: EINHORN_VERSION,
      setVerbosity: (v: number) => this.log.setVerbosity(v),
      upgrade: (conn: Connection, id: unknown, mode: UpgradeMode) => this.requestUpgrade(conn, id, mode),
      reload: (conn: Connection, id: unknown) => conn.reply(id, "reload is not available yet: master re-execution lands with the upgrade work. Nothing was changed.", { error: true }),
      log: (level: "debug" | "info" | "warn" | "error", message: string) => this.log[level](message),
    };
  }

  private requestUpgrade(conn: Connection, id: unknown, _mode: UpgradeMode): void {
    conn.reply(id, "upgrade is not available yet: seamless upgrades land with the upgrade work. Nothing was changed.", { error: true });
  }

  private installSignals(): void {
    process.on("SIGCHLD", () => this.reap());
    process.on("SIGINT", () => this.onSignal("SIGINT"));
    process.on("SIGUSR2", () => this.onSignal("SIGUSR2"));
    process.on("SIGTERM", () => this.onSignal("SIGTERM"));
    process.on("SIGQUIT", () => this.onSignal("SIGQUIT"));
    process.on("SIGHUP", () => this.onSignal("SIGHUP"));
    this.safety = setInterval(() => this.reap(), SAFETY_REAP_MS);
  }

  private onSignal(sig: string): void {
    this.log.info(`Received ${sig}`);
    switch (sig) {
      case "SIGINT":
      case "SIGUSR2":
        this.dispatch({ type: "stop", signal: "SIGUSR2" });
        break;
      case "SIGTERM":
        this.dispatch({ type: "stop", signal: "SIGTERM" });
        break;
      case "SIGQUIT":
        this.dispatch({ type: "quit" });
        break;
      case "SIGHUP":
        this.log.warn("SIGHUP asks for a smooth upgrade, which is not available yet in this version; ignoring");
        break;
    }
  }

  // --- the event loop ------------------------------------------------------------

  dispatch(e: Event): void {
    this.queue.push(e);
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length && !this.exiting) {
        const ev = this.queue.shift()!;
        const r = step(this.state, ev, Date.now());
        this.state = r.state;
        for (const fx of r.effects) this.perform(fx);
        this.schedule(r.wakeAt);
      }
    } finally {
      this.draining = false;
    }
  }

  private schedule(wakeAt: number | null): void {
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    if (wakeAt === null || this.exiting) return;
    // +1 ms: a timer never fires early, so the core sees its deadline as reached.
    this.wakeTimer = setTimeout(() => this.dispatch({ type: "tick" }), Math.max(0, wakeAt - Date.now()) + 1);
  }

  private perform(fx: Effect): void {
    switch (fx.type) {
      case "log":
        this.log[fx.level](fx.message);
        break;
      case "spawn":
        this.spawn(fx.spawnId, fx.index);
        break;
      case "kill":
        try {
          if (!kill(fx.pid, fx.signal)) this.log.debug(`Worker ${fx.pid} was already gone when sent ${fx.signal}`);
        } catch (e) {
          this.log.error(`Could not send ${fx.signal} to ${fx.pid}: ${(e as Error).message}`);
        }
        break;
      case "upgrade-progress":
        for (const w of this.upgradeWaiters) w.conn.reply(w.id, fx.message, { wait: true });
        break;
      case "upgrade-refused":
        // Told to whoever asked for this upgrade (see requestUpgrade); the running one's waiters keep waiting.
        this.refusedUpgrade = fx.message;
        break;
      case "upgrade-finished":
        for (const w of this.upgradeWaiters) w.conn.reply(w.id, fx.message, { error: !fx.ok });
        this.upgradeWaiters.clear();
        break;
      case "exit":
        this.exit(fx.code);
        break;
    }
  }

  private spawn(spawnId: number, index: number): void {
    let pair: [number, number] | null = null;
    try {
      if (this.cfg.commandSocketAsFd) pair = sock.socketpair();
      const pid = spawnWorker(this.plan, index, pair ? pair[1] : null);
      if (pair) {
        sock.close(pair[1]);
        const masterEnd = pair[0];
        this.server!.adoptConnection(masterEnd).catch((e) => {
          this.log.error(`Could not serve the command connection of worker ${pid}: ${(e as Error).message}`);
          try { sock.close(masterEnd); } catch { /* gone */ }
        });
      }
      this.queue.push({ type: "spawned", spawnId, pid });
    } catch (e) {
      if (pair) for (const fd of pair) { try { sock.close(fd); } catch { /* already closed */ } }
      this.queue.push({ type: "spawn-failed", spawnId, reason: (e as Error).message });
    }
  }

  /** Collect every exited child (SIGCHLD coalesces, so loop until none is left). */
  reap(): void {
    for (;;) {
      let r;
      try {
        r = waitpidNohang(-1);
      } catch (e) {
        if (e instanceof SysError && e.code === "ECHILD") return;
        this.log.error(`waitpid failed: ${(e as Error).message}`);
        return;
      }
      if (!r) return;
      this.dispatch({ type: "exited", pid: r.pid, code: r.status.code, signal: r.status.signal });
    }
  }

  // --- leaving -----------------------------------------------------------------------

  private cleanupFiles(): void {
    if (this.commandFd !== null) rmSync(this.cfg.socketPath, { force: true });
    for (const l of this.listeners) if (l.unixPath) rmSync(l.unixPath, { force: true });
    removeOwnFile(this.cfg.pidfile);
    if (this.lock) removeOwnFile(this.lock.path);
  }

  exit(code: number): void {
    if (this.exiting) return;
    this.exiting = true;
    if (this.wakeTimer) clearTimeout(this.wakeTimer);
    if (this.safety) clearInterval(this.safety);
    this.server?.stop();
    this.cleanupFiles();
    this.log.info(`Exiting with status ${code}`);
    process.exit(code);
  }
}

// The command socket's clients as the master serves them: the server and its
// connections, the clients waiting on an upgrade or reload (waiters.ts), and
// what the command handlers of commands.ts may see and do. The connections
// cross the master's execve: handed over from here, adopted here by the next
// image.
import * as sock from "../../ffi/socket";
import type { State } from "../core/state";
import type { Event, ReexecKind, UpgradeMode } from "../core/step";
import type { Logger } from "../logging";
import type { Timeouts } from "../config/timeouts";
import { einhornVersionLabel } from "../version";
import { CommandServer, type Connection } from "./command-server";
import { type CommandContext, handleLine } from "./commands";
import type { MasterConfig } from "./config";
import { einhornStateYaml } from "./einhorn-state";
import type { HandedConnection } from "./handoff";
import type { Listener } from "./listeners";
import { resolveProgram } from "./spawner";
import { buildStateReport } from "./state-report";
import { renderStatus, StatusCollector } from "./status-report";
import { Waiters } from "./waiters";

/** What serving the command socket needs to see of the master. */
export interface ClientsView {
  state(): State;
  /** Whether the core's state exists yet: connections adopted on resume are served before it does. */
  started(): boolean;
  dispatch(e: Event): void;
  log: Logger;
  now(): number;
  config: MasterConfig;
  masterPid: number;
  /** The master's PATH, to say which file each program is (`state`). */
  path: string | undefined;
  listeners(): Listener[];
  /** How many times this master re-executed itself. */
  reexecs(): number;
  timeouts: Pick<Timeouts, "command-first-line" | "command-partial-line">;
}

export class CommandClients {
  private server: CommandServer | null = null;
  /** The command socket's listening descriptor, once served. */
  private listenFd: number | null = null;
  private readonly waiters = new Waiters();
  private readonly statusCollector = new StatusCollector();
  /** What command handlers may see and do; built once (it reads the view's constant parts). */
  private readonly commands: CommandContext;

  constructor(private readonly v: ClientsView) {
    this.commands = this.commandContext();
  }

  /** The command socket's descriptor (null until served). */
  get fd(): number | null {
    return this.listenFd;
  }

  /** Accept and serve clients on the listening socket `fd`. */
  serve(fd: number): void {
    this.listenFd = fd;
    this.server = new CommandServer({
      onLine: (conn, line) => handleLine(this.commands, conn, line),
      // (Connections adopted on resume are served before the state is.)
      isWorker: (pid) => this.v.started() && this.v.state().workers.some((w) => w.pid === pid),
      onClose: (conn) => this.waiters.drop(conn),
      log: (level, message) => this.v.log[level](message),
    }, { firstLineMs: this.v.timeouts["command-first-line"], partialLineMs: this.v.timeouts["command-partial-line"] });
    this.server.listenFd(fd);
  }

  private commandContext(): CommandContext {
    const v = this.v;
    const cfg = v.config;
    return {
      state: () => v.state(),
      dispatch: (e: Event) => v.dispatch(e),
      report: () => buildStateReport(v.state(), {
        einhornVersion: einhornVersionLabel(),
        masterPid: v.masterPid,
        commandName: cfg.commandName,
        socketPath: cfg.socketPath,
        program: cfg.program,
        listeners: v.listeners(),
        verbosity: v.state().settings.verbosity,
        reexecs: v.reexecs(),
      }),
      einhornState: () => einhornStateYaml({
        state: v.state(),
        config: cfg,
        listeners: v.listeners(),
        reexecs: v.reexecs(),
        commandFd: this.listenFd,
        connectionFds: [...(this.server?.connections ?? [])].map((c) => c.fd),
        which: (program) => resolveProgram(program, v.path),
      }),
      status: (format) => {
        const data = this.statusCollector.collect(v.state(), {
          masterPid: v.masterPid, einhornVersion: einhornVersionLabel(), commandName: cfg.commandName, socketPath: cfg.socketPath, listeners: v.listeners(),
        }, v.now());
        return format === "json" ? JSON.stringify(data) : renderStatus(data);
      },
      masterPid: v.masterPid,
      commandName: cfg.commandName,
      einhornVersion: einhornVersionLabel(),
      setVerbosity: (level: number) => v.log.setVerbosity(level),
      upgrade: (conn: Connection, id: unknown, mode: UpgradeMode) => this.request("upgrade", mode, conn, id),
      reload: (conn: Connection, id: unknown) => this.request("reload", null, conn, id),
      log: (level: "debug" | "info" | "warn" | "error", message: string) => v.log[level](message),
    };
  }

  /** An upgrade or reload asked for on the command socket: the core decides (see requestReexec in core/step.ts). */
  private request(kind: ReexecKind, mode: UpgradeMode | null, conn: Connection, id: unknown): void {
    this.v.dispatch({ type: "reexec-requested", kind, mode, requestId: this.waiters.ask(conn, id) });
  }

  // --- what the core's effects do to clients (the Host's part, see interpreter.ts) ---

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

  /** Serve an already connected descriptor (a worker's -g socketpair end) as a client. */
  adoptConnection(fd: number): Promise<Connection | null> {
    return this.server!.adoptConnection(fd);
  }

  // --- across the execve ---------------------------------------------------------------

  /** The connections that can cross the execve, as the handoff records them. */
  handOver(): HandedConnection[] {
    const conns = [...(this.server?.connections ?? [])].filter((c) => c.transferable);
    return conns.map((c) => {
      const b = c.exportBuffers();
      const waiting = this.waiters.waitingOn(c);
      return { fd: c.fd, waiting: waiting ? { requestId: waiting.id ?? null } : null, partialIn: b.partialIn.toString("base64"), pendingOut: b.pendingOut.toString("base64"), format: c.format, spoke: c.sentLine };
    });
  }

  /** In the next image: serve the connections the previous one handed over, those waiting on `pending` still waiting. */
  async adopt(connections: HandedConnection[], pending: ReexecKind | null): Promise<void> {
    for (const c of connections) {
      try {
        sock.setCloexec(c.fd, true);
        const conn = await this.server!.adoptConnection(c.fd);
        if (!conn) continue;
        if (c.format === "json") conn.format = "json";
        // A client that had not yet sent a whole line is still held to the first-line timeout (older images did not say: assume it spoke).
        conn.sentLine = c.spoke ?? true;
        conn.importBuffers(Buffer.from(c.partialIn, "base64"), Buffer.from(c.pendingOut, "base64"), this.v.now());
        if (c.waiting && pending) this.waiters.adopt(conn, c.waiting.requestId, pending);
      } catch (e) {
        this.v.log.warn(`Could not keep command connection fd ${c.fd} across the re-exec: ${(e as Error).message}`);
      }
    }
  }

  /** Stop accepting and close every connection (the master is leaving). */
  stop(): void {
    this.server?.stop();
  }
}

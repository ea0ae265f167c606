// The command socket's transport: framing, limits, credentials, back-pressure.
// What a command does lives in commands.ts; this file only guarantees that no
// client can crash, block or bloat the master.
import type { Socket, TCPSocketListener } from "bun";
import { readdirSync, readFileSync } from "node:fs";
import { dupCloexec, getPeerCred, readableNow, unreadBytes } from "../../ffi/socket";
import { geteuid, getrlimit, RLIMIT_NOFILE } from "../../ffi/process";
import { encodeMessage, MAX_LINE_BYTES, type Response, type WireFormat } from "../protocol";

/** Below this many free descriptors the master stops accepting command connections (see checkHeadroom). */
const DESCRIPTOR_RESERVE = 8;
const HEADROOM_CHECK_MS = 1_000;
const HEADROOM_CHECK_LOW_MS = 100;

/** Free descriptors: RLIMIT_NOFILE's soft limit minus those open (0 when even counting them fails). */
function descriptorHeadroom(): number {
  let open: number;
  try {
    open = readdirSync("/proc/self/fd").length;
  } catch {
    return 0; // listing /proc/self/fd needs a descriptor itself: none left
  }
  const { soft } = getrlimit(RLIMIT_NOFILE);
  return soft === Infinity ? Number.MAX_SAFE_INTEGER : soft - open;
}

/**
 * Client connections served at once, so descriptors and memory stay bounded.
 * At the limit a new connection first takes the place of the oldest one that
 * has never sent a whole line (an idle or silent client); only when every
 * connection is a real session is it refused. Workers' ACK and ping
 * connections (the peer is a worker, or a process a worker started) never
 * count and are never refused, so a flood of clients cannot hold up an
 * upgrade (docs/security.md, "Limits").
 */
export const MAX_CONNECTIONS = 512;
/**
 * How long a client may stay silent: a connection that has not sent a whole
 * line `firstLineMs` after connecting is closed, and so is one whose partial
 * line is older than `partialLineMs` (a client that went silent mid-line).
 * The values are the command-first-line and command-partial-line timeouts
 * (src/config/timeouts.ts).
 */
export interface SilenceLimits { firstLineMs: number; partialLineMs: number }
/** Output queued for one client that does not read; past this it is disconnected. */
export const MAX_PENDING_OUTPUT = 4 * 1024 * 1024;
/** Output queued for all clients together; past this the client with the most queued is disconnected. */
const MAX_TOTAL_PENDING_OUTPUT = 16 * 1024 * 1024;
/** Partial lines held for all clients together; past this the client adding to them is disconnected. */
export const MAX_TOTAL_PARTIAL_INPUT = 2 * 1024 * 1024;
const SWEEP_MS = 1_000;
/**
 * Back-pressure: while more than this is queued for a client that is not
 * reading, its further requests wait (reading from it pauses) instead of
 * each making another answer to queue. A client that keeps writing anyway
 * is disconnected once its waiting requests pass MAX_LINE_BYTES.
 */
const OUTPUT_PAUSE_BYTES = 256 * 1024;
/** How far up the process tree a connecting peer may be from a worker and still count as that worker. */
const WORKER_ANCESTRY_DEPTH = 4;

export interface ConnData { conn: Connection }

export class Connection {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private out: Buffer[] = [];
  private outBytes = 0;
  private partialSince: number | null = null;
  /** When the connection was accepted, and whether it has sent a whole line since. */
  openedAt = Date.now();
  sentLine = false;
  /** Whole lines received but not yet handled (the client is not reading its answers), and their size. */
  pendingLines: string[] = [];
  pendingBytes = 0;
  /** Reading from the socket is paused until the client reads what is queued. */
  paused = false;
  /** The peer is a worker (or a process a worker started): not counted against MAX_CONNECTIONS. */
  fromWorker = false;
  closed = false;
  /** A worker's -g connection, not a client's. */
  worker = false;
  /** How answers are encoded: Einhorn's YAML unless the client asked for JSON (REPLY_FORMAT_KEY). */
  format: WireFormat = "yaml";

  constructor(readonly socket: Socket<ConnData>, readonly peer: { pid: number; uid: number } | null, private readonly server: CommandServer) {}

  /** Send one message; `wait: true` tells the client more will follow for this request. */
  send(msg: Response): void {
    if (this.closed) return;
    this.write(Buffer.from(encodeMessage(msg, this.format)));
  }

  /**
   * Answer a request. `wait: true` says more messages follow for it; `error:
   * true` (an addition to Einhorn's protocol, ignored by its clients) says the
   * request failed, so scripts need not parse the text.
   */
  reply(requestId: unknown, message: string, opts: { wait?: boolean; error?: boolean } = {}): void {
    const msg: Response = { message };
    if (requestId !== undefined) msg.request_id = requestId;
    if (opts.wait) msg.wait = true;
    if (opts.error) msg.error = true;
    this.send(msg);
  }

  private write(data: Buffer): void {
    if (this.out.length === 0) {
      const n = this.socket.write(data);
      if (n === data.length) return;
      data = data.subarray(Math.max(0, n));
    }
    this.out.push(data);
    this.outBytes += data.length;
    this.server.outputQueued(data.length);
    if (this.outBytes > MAX_PENDING_OUTPUT) {
      this.server.log("warn", `Command client ${this.describe()} is not reading its answers (${this.outBytes} bytes queued); disconnecting it`);
      this.close(true);
    } else {
      this.server.checkOutputBudget();
    }
  }

  flush(): void {
    while (this.out.length && (!this.closed || this.endWhenFlushed)) {
      const head = this.out[0]!;
      const n = this.socket.write(head);
      if (n < head.length) {
        this.out[0] = head.subarray(Math.max(0, n));
        this.outBytes -= Math.max(0, n);
        this.server.outputQueued(-Math.max(0, n));
        return;
      }
      this.out.shift();
      this.outBytes -= head.length;
      this.server.outputQueued(-head.length);
    }
    if (this.endWhenFlushed && this.out.length === 0) this.socket.end();
    if (this.paused && this.outBytes <= OUTPUT_PAUSE_BYTES) this.server.resumeLines(this);
  }

  private endWhenFlushed = false;

  /** Close after what is queued has been written (or at once with `now`). */
  close(now = false): void {
    if (this.closed) return;
    this.closed = true;
    // Decided before release(), which keeps queued answers only when they are still to go out.
    const flushing = !now && this.out.length > 0;
    if (flushing) this.endWhenFlushed = true;
    this.release();
    this.server.forget(this);
    if (!flushing) this.socket.end();
  }

  /** The connection's descriptor (for handing it across the master's re-exec). */
  get fd(): number {
    return (this.socket as unknown as { fd?: number }).fd ?? -1;
  }

  /** Whether the connection can be handed to the next master image (not closing, known fd). */
  get transferable(): boolean {
    return !this.closed && !this.endWhenFlushed && this.fd >= 0;
  }

  /** Unfinished input and unwritten output, to carry across the re-exec. */
  exportBuffers(): { partialIn: Buffer; pendingOut: Buffer } {
    const waiting = this.pendingLines.length ? Buffer.from(`${this.pendingLines.join("\n")}\n`) : Buffer.alloc(0);
    return { partialIn: Buffer.concat([waiting, ...this.chunks]), pendingOut: Buffer.concat(this.out) };
  }

  importBuffers(partialIn: Buffer, pendingOut: Buffer, now: number): void {
    if (pendingOut.length) this.write(pendingOut);
    // Whole lines among them were waiting to be handled: they are, in order, on the next turn.
    if (partialIn.length) this.server.takeInput(this, partialIn, now);
  }

  /** Give back to the server's budgets what this connection holds (it is closing). */
  release(socketGone = false): void {
    this.server.partialHeld(-this.buffered);
    this.chunks = [];
    this.buffered = 0;
    this.pendingLines = [];
    this.pendingBytes = 0;
    if (this.endWhenFlushed && !socketGone) return; // its queued answers still go out
    this.server.outputQueued(-this.outBytes);
    this.out = [];
    this.outBytes = 0;
  }

  /** Bytes queued for this client. */
  get queuedOutput(): number {
    return this.outBytes;
  }

  describe(): string {
    return this.peer ? `pid ${this.peer.pid} uid ${this.peer.uid}` : "(unknown peer)";
  }

  /** Feed received bytes; returns complete lines. Enforces the line limit and the server's input budget. */
  feed(data: Buffer, now: number): string[] | "too-long" | "over-budget" {
    const before = this.buffered;
    const lines: string[] = [];
    let start = 0;
    for (let nl = data.indexOf(10, start); nl >= 0; nl = data.indexOf(10, start)) {
      const piece = data.subarray(start, nl);
      if (this.buffered + piece.length > MAX_LINE_BYTES) return this.fed(before, "too-long");
      this.chunks.push(piece);
      lines.push(Buffer.concat(this.chunks).toString("utf8").replace(/\r$/, ""));
      this.chunks = [];
      this.buffered = 0;
      this.partialSince = null;
      this.sentLine = true;
      start = nl + 1;
    }
    const rest = data.subarray(start);
    if (rest.length) {
      if (this.buffered + rest.length > MAX_LINE_BYTES) return this.fed(before, "too-long");
      if (this.server.partialBytes - before + this.buffered + rest.length > MAX_TOTAL_PARTIAL_INPUT) return this.fed(before, "over-budget");
      this.chunks.push(Buffer.from(rest));
      this.buffered += rest.length;
      this.partialSince ??= now;
    } else {
      this.partialSince = null;
    }
    return this.fed(before, lines);
  }

  private fed<T>(before: number, result: T): T {
    this.server.partialHeld(this.buffered - before);
    return result;
  }

  /** Silent too long (see SilenceLimits): the reason, or null. */
  stale(now: number): string | null {
    if (this.worker) return null;
    const { firstLineMs, partialLineMs } = this.server.limits;
    if (!this.sentLine && now - this.openedAt > firstLineMs) return `sent no whole line within ${firstLineMs / 1000}s of connecting`;
    if (this.partialSince !== null && now - this.partialSince > partialLineMs) return `left a line unfinished for ${partialLineMs / 1000}s`;
    return null;
  }
}

export interface CommandHandlers {
  onLine(conn: Connection, line: string): void;
  /** Whether `pid` is one of the master's workers (their ACKs and pings are never refused). */
  isWorker?(pid: number): boolean;
  onClose?(conn: Connection): void;
  log(level: "debug" | "info" | "warn" | "error", message: string): void;
}

export class CommandServer {
  private listener: TCPSocketListener<ConnData> | null = null;
  readonly connections = new Set<Connection>();
  private sweep: ReturnType<typeof setInterval> | null = null;
  private readonly myUid = geteuid();

  constructor(private readonly handlers: CommandHandlers, readonly limits: SilenceLimits) {}

  log(level: "debug" | "info" | "warn" | "error", message: string): void {
    this.handlers.log(level, message);
  }

  /** Connections from clients, not counting the workers' own (-g, ACKs and pings). */
  clientCount(): number {
    let n = 0;
    for (const c of this.connections) if (!c.worker && !c.fromWorker) n++;
    return n;
  }

  /**
   * Whether a connection waits to be accepted (poll on the listening socket)
   * or a connection has bytes not yet read (FIONREAD: a peer's end of stream,
   * which stays "readable", is not input). Nothing here waits.
   */
  inputWaiting(): boolean {
    try {
      if (!this.paused && this.sourceFd >= 0 && readableNow([this.sourceFd]).length > 0) return true;
    } catch { /* not listening any more */ }
    for (const c of this.connections) {
      if (c.paused || c.closed || c.fd < 0) continue;
      try {
        if (unreadBytes(c.fd) > 0) return true;
      } catch { /* closed meanwhile */ }
    }
    return false;
  }

  /** Bytes of partial lines held, and of answers queued, for all connections together. */
  partialBytes = 0;
  private outputBytes = 0;

  /**
   * Each chunk a client sends arrives as a fresh buffer, and the runtime
   * collects lazily: 500 clients each sending 60 KB grew the master by 40 MB
   * of garbage. When a budget has to close connections, ask for a
   * collection (at most once a second).
   */
  private lastGc = 0;
  collectSoon(): void {
    const now = Date.now();
    if (now - this.lastGc < 1_000) return;
    this.lastGc = now;
    setTimeout(() => Bun.gc(false), 50).unref?.();
  }

  partialHeld(delta: number): void {
    this.partialBytes += delta;
  }

  outputQueued(delta: number): void {
    this.outputBytes += delta;
  }

  /** Past MAX_TOTAL_PENDING_OUTPUT, disconnect the client with the most queued (the one not reading). */
  checkOutputBudget(): void {
    while (this.outputBytes > MAX_TOTAL_PENDING_OUTPUT) {
      let worst: Connection | null = null;
      for (const c of this.connections) if (!worst || c.queuedOutput > worst.queuedOutput) worst = c;
      if (!worst || worst.queuedOutput === 0) return;
      this.log("warn", `Command clients hold ${this.outputBytes} bytes of unread answers; disconnecting ${worst.describe()}, which holds ${worst.queuedOutput}`);
      worst.close(true);
    }
  }

  /** Whether `pid` is a worker, or a process a worker started (an ACK helper), up to WORKER_ANCESTRY_DEPTH levels up. */
  private isWorkerProcess(pid: number): boolean {
    const isWorker = this.handlers.isWorker;
    if (!isWorker) return false;
    for (let depth = 0, p = pid; depth <= WORKER_ANCESTRY_DEPTH && p > 1; depth++) {
      if (isWorker(p)) return true;
      try {
        // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
        const stat = readFileSync(`/proc/${p}/stat`, "latin1");
        p = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      } catch {
        return false;
      }
    }
    return false;
  }

  /** At the limit: close the oldest client connection that has never sent a whole line, to make room. */
  private evictSilent(): Connection | null {
    let oldest: Connection | null = null;
    for (const c of this.connections) {
      if (c.worker || c.fromWorker || c.sentLine) continue;
      if (!oldest || c.openedAt < oldest.openedAt) oldest = c;
    }
    if (!oldest) return null;
    oldest.reply(undefined, `Closed: ${MAX_CONNECTIONS} connections are open and this one has sent nothing for ${((Date.now() - oldest.openedAt) / 1000).toFixed(1)}s`, { error: true });
    oldest.close();
    return oldest;
  }

  forget(conn: Connection): void {
    if (this.connections.delete(conn)) this.handlers.onClose?.(conn);
  }

  private socketHandlers() {
    return {
      open: (socket: Socket<ConnData>) => this.accept(socket),
      data: (socket: Socket<ConnData>, data: Buffer) => this.receive(socket, data),
      drain: (socket: Socket<ConnData>) => socket.data?.conn?.flush(),
      // The socket is gone: whatever was still queued for it will never go out.
      close: (socket: Socket<ConnData>) => { const c = socket.data?.conn; if (c) { c.release(true); c.closed = true; this.forget(c); } },
      error: (_socket: Socket<ConnData>, err: Error) => { this.log("debug", `command connection error: ${err.message}`); },
    };
  }

  /**
   * Serve on an already bound and listening UNIX socket descriptor. Bun gets
   * a duplicate: the original stays the master's (it is what a re-exec hands
   * over), and accepting can be paused by stopping Bun's listener alone.
   */
  listenFd(fd: number): void {
    this.sourceFd = fd;
    this.startListening();
    this.sweep = setInterval(() => this.sweepStale(), SWEEP_MS);
    this.sweep.unref?.();
    this.scheduleHeadroomCheck(HEADROOM_CHECK_MS);
  }

  private sourceFd = -1;
  private paused = false;
  private headroomTimer: ReturnType<typeof setTimeout> | null = null;

  private startListening(): void {
    // `fd` is accepted by Bun.listen at run time but missing from its type definitions.
    const listen = Bun.listen as unknown as (o: { fd: number; socket: ReturnType<CommandServer["socketHandlers"]> }) => TCPSocketListener<ConnData>;
    this.listener = listen({ fd: dupCloexec(this.sourceFd), socket: this.socketHandlers() });
  }

  /**
   * Out of descriptors, accept(2) fails with EMFILE while the connection
   * stays queued, and Bun's accept loop retries at once, forever: a busy core
   * and nothing logged. So the master watches its own headroom (open
   * descriptors against RLIMIT_NOFILE) and stops accepting while it is short;
   * waiting clients stay in the kernel's queue and are served once it recovers.
   */
  private scheduleHeadroomCheck(ms: number): void {
    this.headroomTimer = setTimeout(() => this.checkHeadroom(), ms);
    this.headroomTimer.unref?.();
  }

  private checkHeadroom(): void {
    const left = descriptorHeadroom();
    if (!this.paused && left < DESCRIPTOR_RESERVE) {
      this.paused = true;
      this.listener?.stop(false);
      this.listener = null;
      this.log("warn", `Only ${Math.max(0, left)} file descriptors left (EMFILE risk): not accepting command connections until some are free; waiting clients stay queued`);
    } else if (this.paused && left >= 2 * DESCRIPTOR_RESERVE) {
      try {
        this.startListening();
        this.paused = false;
        this.log("info", `File descriptors are available again (${left} left): accepting command connections`);
      } catch (e) {
        this.log("warn", `Could not resume accepting command connections: ${(e as Error).message}`);
      }
    }
    // Look more often while short, to pause before a spin and resume promptly.
    this.scheduleHeadroomCheck(this.paused || left < 4 * DESCRIPTOR_RESERVE ? HEADROOM_CHECK_LOW_MS : HEADROOM_CHECK_MS);
  }

  /** Treat an already connected descriptor (one end of a socketpair handed to a worker with -g) as a client. */
  async adoptConnection(fd: number): Promise<Connection | null> {
    const connect = Bun.connect as unknown as (o: { fd: number; socket: ReturnType<CommandServer["socketHandlers"]> }) => Promise<Socket<ConnData>>;
    const socket = await connect({ fd, socket: this.socketHandlers() });
    const conn = socket.data?.conn ?? null;
    // A connection handed over by the previous image (a shell waiting on the
    // upgrade, an idle interactive session) or a worker's -g socket is not a
    // new client that has yet to speak: the first-line timeout is not for it.
    if (conn) conn.sentLine = true;
    return conn && !conn.closed ? conn : null;
  }

  private accept(socket: Socket<ConnData>): void {
    let peer: { pid: number; uid: number } | null = null;
    try {
      const fd = (socket as unknown as { fd?: number }).fd;
      if (typeof fd === "number" && fd >= 0) peer = getPeerCred(fd);
    } catch { /* not a UNIX socket: treated as unknown below */ }
    const conn = new Connection(socket, peer, this);
    socket.data = { conn };
    if (!peer || (peer.uid !== this.myUid && peer.uid !== 0)) {
      this.log("warn", `Refused a command connection from ${conn.describe()}: only uid ${this.myUid} or root may use this socket`);
      conn.reply(undefined, `Permission denied: uid ${peer?.uid ?? "unknown"} may not use this command socket`, { error: true });
      conn.close();
      return;
    }
    // A worker's -g connection (one end of a socketpair the master made, so
    // its peer is the master itself) is not a client: it never counts
    // against the limit, or a large -g pool would lock operators out.
    const own = peer !== null && peer.pid === process.pid;
    conn.worker = own;
    if (!own && this.clientCount() >= MAX_CONNECTIONS) {
      // A worker's ACK or ping always gets through; anyone else takes the place of a silent client, if there is one.
      if (this.isWorkerProcess(peer.pid)) {
        conn.fromWorker = true;
      } else {
        const evicted = this.evictSilent();
        if (evicted) {
          this.log("warn", `${MAX_CONNECTIONS} command connections open: closed ${evicted.describe()}, silent for ${((Date.now() - evicted.openedAt) / 1000).toFixed(1)}s, to serve ${conn.describe()}`);
        } else {
          this.log("warn", `Refused a command connection from ${conn.describe()}: ${MAX_CONNECTIONS} connections already open`);
          conn.reply(undefined, `Too many connections (${MAX_CONNECTIONS}); try again later`, { error: true });
          conn.close();
          return;
        }
      }
    }
    this.connections.add(conn);
  }

  private receive(socket: Socket<ConnData>, data: Buffer): void {
    const conn = socket.data?.conn;
    if (!conn || conn.closed) return;
    this.takeInput(conn, data, Date.now());
  }

  /** Frame `data` into lines and handle them, unless the client's answers are piling up (then they wait). */
  takeInput(conn: Connection, data: Buffer, now: number): void {
    const lines = conn.feed(data, now);
    if (lines === "too-long") {
      conn.reply(undefined, `Line too long: the limit is ${MAX_LINE_BYTES} bytes; closing this connection`, { error: true });
      conn.close();
      return;
    }
    if (lines === "over-budget") {
      this.collectSoon();
      this.log("warn", `Command clients hold ${this.partialBytes} bytes of unfinished lines (the limit is ${MAX_TOTAL_PARTIAL_INPUT}); closing ${conn.describe()}`);
      conn.reply(undefined, `The master holds too many unfinished lines (${MAX_TOTAL_PARTIAL_INPUT} bytes); closing this connection`, { error: true });
      conn.close();
      return;
    }
    for (const line of lines) {
      conn.pendingLines.push(line);
      conn.pendingBytes += line.length;
    }
    if (conn.pendingBytes > MAX_LINE_BYTES) {
      this.log("warn", `Command client ${conn.describe()} sends requests without reading the answers (${conn.queuedOutput} bytes queued); disconnecting it`);
      conn.close(true);
      return;
    }
    this.handlePending(conn);
  }

  /** The client read enough of its answers: handle what waited, and read from it again. */
  resumeLines(conn: Connection): void {
    this.handlePending(conn);
    if (conn.paused && !conn.closed && conn.queuedOutput <= OUTPUT_PAUSE_BYTES) {
      conn.paused = false;
      (conn.socket as unknown as { resume?: () => void }).resume?.();
    }
  }

  private handlePending(conn: Connection): void {
    while (conn.pendingLines.length && !conn.closed) {
      if (conn.queuedOutput > OUTPUT_PAUSE_BYTES) {
        if (!conn.paused) {
          conn.paused = true;
          (conn.socket as unknown as { pause?: () => void }).pause?.();
        }
        return;
      }
      const line = conn.pendingLines.shift()!;
      conn.pendingBytes -= line.length;
      if (line.trim() === "") continue;
      try {
        this.handlers.onLine(conn, line);
      } catch (e) {
        // A bug in one command must not take the master down.
        this.log("error", `Command failed unexpectedly: ${(e as Error).stack ?? e}`);
        conn.reply(undefined, `Internal error: ${(e as Error).message}`, { error: true });
      }
    }
  }

  private sweepStale(): void {
    const now = Date.now();
    for (const c of this.connections) {
      const why = c.stale(now);
      if (!why) continue;
      this.log("debug", `Closing command connection ${c.describe()}: it ${why}`);
      c.close(true);
    }
  }

  /** Stop accepting and drop every connection (master exit). */
  stop(): void {
    if (this.sweep) clearInterval(this.sweep);
    if (this.headroomTimer) clearTimeout(this.headroomTimer);
    this.listener?.stop(true);
    for (const c of [...this.connections]) c.close(true);
  }
}

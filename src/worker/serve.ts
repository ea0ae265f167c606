// serve(): an HTTP server on the socket einhorn hands the worker, with
// einhorn's lifecycle built in. Bun.serve cannot adopt a descriptor and
// node:http's listen({fd}) ignores it (see notes/bun-platform.md), so a
// node:net server accepts on the inherited fd and hands each connection to a
// node:http server. Holding the connections ourselves is also what makes the
// graceful drain exact: we know which ones are idle and which have a request
// in flight.
import http, { type IncomingMessage, type RequestListener, type ServerResponse } from "node:http";
import net from "node:net";
import { ENV } from "../protocol";
import { isWorkerEnv } from "./env";
import { EinhornWorkerError } from "./errors";
import { fetchListener, type FetchHandler } from "./fetch-bridge";
import { exitAfterGracefulShutdown, onGracefulShutdown } from "./graceful-shutdown";
import { ack } from "./master-link";
import { checkListeningFd, socketFdFrom } from "./sockets";

export interface ServeOptions {
  /** A fetch-style handler: Request in, Response out. Give this or `handler`. */
  fetch?: FetchHandler;
  /** A node:http request listener. Give this or `fetch`. */
  handler?: RequestListener;
  /** Which inherited socket to serve under einhorn: EINHORN_FD_{index}. Default 0 (the first -b). */
  index?: number;
  /** An explicit listening descriptor to serve; overrides `index` and is used with or without einhorn. */
  fd?: number;
  /** Outside einhorn: the port to bind. Default: the PORT environment variable, else 3000. 0 picks a free port. */
  port?: number;
  /** Outside einhorn: the address to bind. Default: all interfaces. */
  hostname?: string;
  /** Longest time a graceful shutdown waits for in-flight requests before closing their connections. Default 30 000 ms. */
  drainTimeoutMs?: number;
  /**
   * During a graceful shutdown, how long an idle keep-alive connection stays
   * open waiting for its next request (answered with `Connection: close`)
   * before it is closed. Closing it at once races with a client that is
   * sending on it at that instant, which the client sees as ECONNRESET.
   * Default 2000 ms.
   */
  idleCloseMs?: number;
  /** Under einhorn, send the ACK once listening. Default true. */
  ack?: boolean;
  /** Exit 0 once a SIGUSR2 shutdown has drained (and every onGracefulShutdown callback settled). Default true. */
  exitOnShutdown?: boolean;
  /** Options for the node:http server (timeouts, header limits, …). */
  httpOptions?: http.ServerOptions;
  /** Called with errors thrown by handlers and server errors. Default: log to stderr. */
  onError?: (error: unknown) => void;
}

export interface WorkerServer {
  /** The node:http server parsing requests (never listening itself). */
  readonly httpServer: http.Server;
  /** The node:net server accepting on the socket. */
  readonly netServer: net.Server;
  /** The inherited or given descriptor served; null when serve() bound a port itself. */
  readonly fd: number | null;
  /** The TCP port served, when known (null for UNIX sockets). */
  readonly port: number | null;
  /** Whether this process runs under einhorn. */
  readonly underEinhorn: boolean;
  /** Whether the ACK was sent (false outside einhorn or with `ack: false`). */
  readonly acked: boolean;
  /** Connections currently open. */
  connectionCount(): number;
  /**
   * Graceful drain: stop accepting, let in-flight requests finish (their
   * responses and any later ones on the same connection say `Connection:
   * close`), close idle connections; after `drainTimeoutMs`, close the rest.
   * Resolves when every connection is closed. Does not exit the process.
   */
  shutdown(): Promise<void>;
  /** Resolves once shutdown() has finished. */
  readonly closed: Promise<void>;
}

interface Conn {
  /** Requests received on this connection whose response has not finished. */
  inFlight: Set<ServerResponse>;
}

/** During a drain, a connection accepted at the last moment may stay this long without a request. */
const LATE_CONNECTION_GRACE_MS = 1000;

const log = (level: string, message: string) => console.error(`[einhorn worker ${process.pid}] ${level}: ${message}`);

function defaultPort(env: Record<string, string | undefined>): number {
  const raw = env.PORT;
  if (raw === undefined || raw === "") return 3000;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n > 65535) throw new EinhornWorkerError(`PORT is ${JSON.stringify(raw)}, expected a port number 0..65535`);
  return n;
}

function listenOn(server: net.Server, target: net.ListenOptions, describe: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => { server.off("listening", onListening); reject(new EinhornWorkerError(`cannot listen on ${describe}: ${e.message}`)); };
    const onListening = () => { server.off("error", onError); resolve(); };
    server.once("error", onError);
    server.once("listening", onListening);
    server.listen(target);
  });
}

export async function serve(opts: ServeOptions): Promise<WorkerServer> {
  if (!opts || (typeof opts.fetch !== "function") === (typeof opts.handler !== "function")) {
    throw new TypeError("serve() needs exactly one of `fetch` (Request => Response) or `handler` (a node:http request listener)");
  }
  const onError = opts.onError ?? ((e: unknown) => log("error", `request failed: ${(e as Error)?.stack ?? e}`));
  const drainTimeoutMs = opts.drainTimeoutMs ?? 30_000;
  const idleCloseMs = opts.idleCloseMs ?? 2_000;
  const underEinhorn = isWorkerEnv();

  // Which socket: an explicit fd, einhorn's, or (development) a port of our own.
  let fd: number | null = null;
  if (opts.fd !== undefined) fd = checkListeningFd(opts.fd, "serve({ fd })").fd;
  else if (underEinhorn) fd = socketFdFrom(opts.index ?? 0);
  else if (opts.index !== undefined && opts.index !== 0) throw new EinhornWorkerError(`serve({ index: ${opts.index} }): not running under einhorn, so there are no inherited sockets (${ENV.FD_COUNT} is not set)`);

  const conns = new Map<net.Socket, Conn>();
  let draining = false;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => { resolveClosed = r; });
  let drainTimer: ReturnType<typeof setTimeout> | null = null;
  let shutdownPromise: Promise<void> | null = null;

  const maybeDone = () => {
    if (!draining || conns.size > 0) return;
    if (drainTimer) clearTimeout(drainTimer);
    drainTimer = null;
    resolveClosed();
  };

  /**
   * A connection with nothing in flight, during a drain: close our side; the
   * client sees EOF. One that does not close its side in turn (some pooled
   * clients only notice EOF when they next use the socket) is destroyed after
   * idleCloseMs, so it cannot hold the worker until drainTimeoutMs.
   */
  const closeIdle = (sock: net.Socket) => {
    // Give node:http a turn first: a response marked `Connection: close` ends the socket itself.
    setImmediate(() => {
      if (sock.destroyed || conns.get(sock)?.inFlight.size !== 0) return;
      sock.end();
      setTimeout(() => { if (!sock.destroyed) sock.destroy(); }, idleCloseMs).unref();
    });
  };

  /**
   * During a drain, only the last response in flight on a connection says
   * `Connection: close`: node:http closes the socket after that response, so
   * marking an earlier one would drop the answers to requests pipelined
   * behind it (their handlers would run, their responses would be lost).
   */
  const markLastForClose = (c: Conn) => {
    let last: ServerResponse | undefined;
    for (const r of c.inFlight) last = r;
    for (const r of c.inFlight) {
      if (r.headersSent) continue;
      if (r === last) r.setHeader("Connection", "close");
      else if (r.getHeader("Connection") === "close") r.removeHeader("Connection");
    }
  };

  const userListener: RequestListener = opts.fetch
    ? fetchListener(opts.fetch, onError)
    : (req, res) => {
        try {
          const r = opts.handler!(req, res) as unknown;
          if (r instanceof Promise) r.catch((e) => failed(res, e));
        } catch (e) {
          failed(res, e);
        }
      };
  const failed = (res: ServerResponse, e: unknown) => {
    onError(e);
    if (!res.headersSent && !res.destroyed) {
      res.statusCode = 500;
      res.setHeader("content-type", "text/plain; charset=utf-8");
      res.end("Internal Server Error\n");
    } else if (!res.writableEnded) {
      res.destroy();
    }
  };

  const httpServer = http.createServer(opts.httpOptions ?? {}, (req: IncomingMessage, res: ServerResponse) => {
    const sock = req.socket as net.Socket;
    let conn = conns.get(sock);
    if (!conn) { conn = { inFlight: new Set() }; conns.set(sock, conn); }
    const c = conn;
    c.inFlight.add(res);
    if (draining) markLastForClose(c);
    const done = () => {
      if (!c.inFlight.delete(res)) return;
      if (draining && c.inFlight.size === 0) closeIdle(sock);
    };
    res.once("finish", done);
    res.once("close", done);
    userListener(req, res);
  });
  httpServer.on("error", (e) => onError(e));

  const netServer = net.createServer((sock) => {
    conns.set(sock, { inFlight: new Set() });
    sock.once("close", () => { conns.delete(sock); maybeDone(); });
    httpServer.emit("connection", sock);
    // Accepted in the instant the drain began: its requests get `Connection:
    // close`; if none arrives soon, close it rather than wait for the timeout.
    if (draining) setTimeout(() => closeIdle(sock), LATE_CONNECTION_GRACE_MS).unref();
  });

  if (fd !== null) {
    await listenOn(netServer, { fd } as net.ListenOptions, `fd ${fd}`);
  } else {
    const port = opts.port ?? defaultPort(process.env);
    const where = `${opts.hostname ?? "*"}:${port}`;
    await listenOn(netServer, { port, host: opts.hostname }, where);
  }
  netServer.on("error", (e) => onError(e));

  const addr = netServer.address();
  const port = addr && typeof addr === "object" ? addr.port : null;

  const shutdown = (): Promise<void> => {
    if (shutdownPromise) return shutdownPromise;
    draining = true;
    // Closes our copy of the listening descriptor: the other workers share the
    // socket and keep accepting; the kernel queue is theirs now.
    netServer.close();
    for (const [sock, c] of conns) {
      // Idle keep-alive connections get a moment: a client reusing one now
      // gets its answer (with `Connection: close`) instead of a reset.
      if (c.inFlight.size === 0) setTimeout(() => closeIdle(sock), idleCloseMs).unref();
      else markLastForClose(c);
    }
    drainTimer = setTimeout(() => {
      drainTimer = null;
      if (conns.size) log("warn", `graceful shutdown: ${conns.size} connection(s) still open after ${drainTimeoutMs} ms; closing them`);
      for (const sock of conns.keys()) sock.destroy();
      conns.clear();
      resolveClosed();
    }, drainTimeoutMs);
    maybeDone();
    shutdownPromise = closed;
    return closed;
  };

  const unregister = onGracefulShutdown(shutdown);
  if (opts.exitOnShutdown !== false) exitAfterGracefulShutdown();

  let acked = false;
  if (underEinhorn && opts.ack !== false) {
    try {
      acked = await ack();
    } catch (e) {
      unregister();
      netServer.close();
      httpServer.close();
      throw e;
    }
  }

  return {
    httpServer,
    netServer,
    fd,
    port,
    underEinhorn,
    get acked() { return acked; },
    connectionCount: () => conns.size,
    shutdown,
    closed,
  };
}

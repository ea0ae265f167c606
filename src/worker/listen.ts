// listen(server): put any node:http / node:https server (Express, Fastify,
// Koa, Hono's node adapter, a plain createServer) on the socket einhorn hands
// the worker, ACK once listening, and drain on SIGUSR2 without failing a
// request.
//
// The server never listens itself: a node:net server accepts on the inherited
// descriptor and hands each connection to it (`emit("connection")`). On Bun
// that is the only way (node:http's listen({fd}) ignores the fd there); on
// Node it is what makes the drain exact: closing the listener must not close
// idle keep-alive connections at once (Node >= 19's server.close() does), since
// a client may be sending its next request on one at that instant and would
// see a reset. Holding the connections ourselves, we know which are idle and
// which have a request in flight.
import type http from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import { ENV } from "../protocol-env";
import { isWorkerEnv } from "./env";
import { EinhornWorkerError, errorWithCode } from "./errors";
import { exitAfterGracefulShutdown, onGracefulShutdown } from "./graceful-shutdown";
import { ack } from "./master-link";
import { checkListeningFd, socketFdFrom } from "./sockets";

export interface ListenOptions {
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
  /** Called with server errors. Default: log to stderr. */
  onError?: (error: unknown) => void;
}

/** What serve() and listen() both hand back, whichever engine serves. */
export interface ServedSocket {
  /** The inherited or given descriptor served; null when a port was bound. */
  readonly fd: number | null;
  /** The TCP port served, when known (null for UNIX sockets). */
  readonly port: number | null;
  /** Whether this process runs under einhorn. */
  readonly underEinhorn: boolean;
  /** Whether the ACK was sent (false outside einhorn or with `ack: false`). */
  readonly acked: boolean;
  /** Resolves once shutdown() has finished. */
  readonly closed: Promise<void>;
}

export interface ListeningServer extends ServedSocket {
  /** The node:http / node:https server given to listen(). */
  readonly server: http.Server;
  /** The node:net server accepting on the socket. */
  readonly netServer: net.Server;
  /** Connections currently open. */
  connectionCount(): number;
  /**
   * Graceful drain: stop accepting, let in-flight requests finish (their
   * responses and any later ones on the same connection say `Connection:
   * close`), close idle connections; after `drainTimeoutMs`, close the rest.
   * Resolves when every connection is closed. Does not exit the process.
   */
  shutdown(): Promise<void>;
}

interface Conn {
  /** Requests received on this connection whose response has not finished. */
  inFlight: Set<ServerResponse>;
}

/** During a drain, a connection accepted at the last moment may stay this long without a request. */
const LATE_CONNECTION_GRACE_MS = 1000;

export const workerLog = (level: string, message: string) => console.error(`[einhorn worker ${process.pid}] ${level}: ${message}`);

/** Outside einhorn: PORT, else 3000. */
export function defaultPort(env: Record<string, string | undefined> = process.env): number {
  const raw = env.PORT;
  if (raw === undefined || raw === "") return 3000;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n > 65535) throw new EinhornWorkerError(`PORT is ${JSON.stringify(raw)}, expected a port number 0..65535`);
  return n;
}

/** The drain timings of ListenOptions, with their documented defaults (both engines use them). */
export function drainTimes(opts: { drainTimeoutMs?: number; idleCloseMs?: number }): { drainTimeoutMs: number; idleCloseMs: number } {
  return { drainTimeoutMs: opts.drainTimeoutMs ?? 30_000, idleCloseMs: opts.idleCloseMs ?? 2_000 };
}

/**
 * The start-up tail both engines share once they accept: `shutdown` runs on
 * SIGUSR2 (and the process exits after it unless `exitOnShutdown: false`),
 * then, under einhorn, the ACK goes out unless `ack: false`. When the ACK
 * cannot be sent, the shutdown hook is removed and `stopServing` closes the
 * listener before the error reaches the caller, so no half-started server
 * stays behind. Returns whether the ACK was sent.
 */
export async function hookShutdownThenAck(
  opts: { ack?: boolean; exitOnShutdown?: boolean },
  underEinhorn: boolean,
  shutdown: () => Promise<void>,
  stopServing: () => void,
): Promise<boolean> {
  const unregister = onGracefulShutdown(shutdown);
  if (opts.exitOnShutdown !== false) exitAfterGracefulShutdown();
  if (!underEinhorn || opts.ack === false) return false;
  try {
    return await ack();
  } catch (e) {
    unregister();
    stopServing();
    throw e;
  }
}

/** Which descriptor to serve: an explicit one, einhorn's n-th, or null (bind a port: development). */
export function chooseFd(opts: { fd?: number; index?: number }, what: string): number | null {
  if (opts.fd !== undefined) return checkListeningFd(opts.fd, `${what}({ fd })`).fd;
  if (isWorkerEnv()) return socketFdFrom(opts.index ?? 0);
  if (opts.index !== undefined && opts.index !== 0) {
    throw new EinhornWorkerError(`${what}({ index: ${opts.index} }): not running under einhorn, so there are no inherited sockets (${ENV.FD_COUNT} is not set)`);
  }
  return null;
}

function listenOn(server: net.Server, target: net.ListenOptions, describe: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (e: Error) => { server.off("listening", onListening); reject(new EinhornWorkerError(`cannot listen on ${describe}: ${errorWithCode(e)}`, { cause: e })); };
    const onListening = () => { server.off("error", onError); resolve(); };
    server.once("error", onError);
    server.once("listening", onListening);
    server.listen(target);
  });
}

/** Listen on `fd` (or bind a port when null) with a node:net server that hands connections to `onConnection`. */
async function acceptOn(fd: number | null, opts: { port?: number; hostname?: string }, onConnection: (s: net.Socket) => void): Promise<net.Server> {
  const netServer = net.createServer(onConnection);
  if (fd !== null) {
    await listenOn(netServer, { fd } as net.ListenOptions, `fd ${fd}`);
  } else {
    const port = opts.port ?? defaultPort(process.env);
    await listenOn(netServer, { port, host: opts.hostname }, `${opts.hostname ?? "*"}:${port}`);
  }
  return netServer;
}

export async function listen(server: http.Server, opts: ListenOptions = {}): Promise<ListeningServer> {
  if (!server || typeof server.emit !== "function" || typeof server.on !== "function") {
    throw new TypeError("listen(server): server must be a node:http or node:https Server (http.createServer(app), fastify.server, ...)");
  }
  if (server.listening) {
    throw new EinhornWorkerError("listen(server): the server is already listening; give listen() a server that has not been started (do not call server.listen() or app.listen() yourself)");
  }
  const onError = opts.onError ?? ((e: unknown) => workerLog("error", `server error: ${(e as Error)?.stack ?? e}`));
  const { drainTimeoutMs, idleCloseMs } = drainTimes(opts);
  const underEinhorn = isWorkerEnv();
  const fd = chooseFd(opts, "listen");
  // node:https servers take raw connections on "connection" too (they start the TLS handshake);
  // their requests then arrive on the TLS socket, which is what a request's `socket` is.
  // (Bun's https.Server is not a tls.Server.)
  const isTls = server instanceof tls.Server || server instanceof https.Server;
  if (isTls && typeof Bun !== "undefined") {
    // Bun's node:https does TLS only on a listener of its own: a connection
    // handed to it with emit("connection") is read as plain text.
    throw new EinhornWorkerError("listen(): on Bun a node:https server cannot take connections from an inherited socket (Bun's node:https serves TLS only on its own listener); terminate TLS in front of einhorn, or run this program on Node, where it works");
  }

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

  const track = (sock: net.Socket) => {
    if (conns.has(sock)) return conns.get(sock)!;
    const c: Conn = { inFlight: new Set() };
    conns.set(sock, c);
    sock.once("close", () => { conns.delete(sock); maybeDone(); });
    return c;
  };

  // Ahead of the application's own listener, so a response is marked before its handler can send it.
  server.prependListener("request", (req: IncomingMessage, res: ServerResponse) => {
    const sock = req.socket as net.Socket;
    const c = track(sock);
    c.inFlight.add(res);
    if (draining) markLastForClose(c);
    const done = () => {
      if (!c.inFlight.delete(res)) return;
      if (draining && c.inFlight.size === 0) closeIdle(sock);
    };
    res.once("finish", done);
    res.once("close", done);
  });
  if (isTls) server.on("secureConnection", (s: tls.TLSSocket) => { track(s); });
  server.on("error", (e) => onError(e));

  const netServer = await acceptOn(fd, opts, (sock) => {
    if (!isTls) track(sock);
    else sock.once("close", maybeDone);
    server.emit("connection", sock);
    // Accepted in the instant the drain began: its requests get `Connection:
    // close`; if none arrives soon, close it rather than wait for the timeout.
    if (draining) setTimeout(() => closeIdle(sock), LATE_CONNECTION_GRACE_MS).unref();
  });
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
      if (conns.size) workerLog("warn", `graceful shutdown: ${conns.size} connection(s) still open after ${drainTimeoutMs} ms; closing them`);
      for (const sock of conns.keys()) sock.destroy();
      conns.clear();
      resolveClosed();
    }, drainTimeoutMs);
    maybeDone();
    shutdownPromise = closed;
    return closed;
  };

  const acked = await hookShutdownThenAck(opts, underEinhorn, shutdown, () => netServer.close());

  return {
    server,
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

// serve({ fetch }) on Bun: Bun.serve, adopted onto einhorn's socket
// (bun-adopt.ts), with einhorn's lifecycle: ACK once accepting, and on
// SIGUSR2 a drain that fails no request:
//   1. stop accepting (the epoll registration goes; the shared socket stays
//      open for the other workers, and connections queued on it are theirs);
//   2. every response from then on says `Connection: close`, so clients on
//      keep-alive connections learn to reconnect with their next answer
//      instead of finding the connection closed under them;
//   3. after idleCloseMs, Bun.serve stops: it closes connections that stayed
//      idle and lets in-flight requests finish;
//   4. drainTimeoutMs bounds the whole drain; what is left is closed.
// Only this file and bun-adopt.ts touch bun:ffi; Node never loads them.
import { fstatSync } from "node:fs";
import { getsockname } from "../../ffi/socket";
import { adoptListener, findTemplateListener, stopAccepting, type Registration } from "./bun-adopt";
import type { FetchHandler } from "./fetch-bridge";
import { defaultPort, drainTimes, hookShutdownThenAck, workerLog } from "./listen";
import { isWorkerEnv } from "./env";
import { EinhornWorkerError, errorWithCode } from "./errors";
import { probeSocketInode } from "./socket-probe";
import type { ServeOptions, WorkerServer } from "./serve";

/** A copy of `res` that says `Connection: close` (a Response's own headers may be immutable). */
function closing(res: Response): Response {
  try {
    res.headers.set("Connection", "close");
    return res;
  } catch {
    const copy = new Response(res.body, res);
    copy.headers.set("Connection", "close");
    return copy;
  }
}

export async function serveWithBun(fd: number | null, handler: FetchHandler, opts: ServeOptions): Promise<WorkerServer | string> {
  const onError = opts.onError!;
  const { drainTimeoutMs, idleCloseMs } = drainTimes(opts);
  const underEinhorn = isWorkerEnv();

  if (fd !== null) {
    const info = probeSocketInode(fstatSync(fd).ino);
    if (!info || info.family === "unix") return "Bun.serve adopts TCP sockets only; this one is a UNIX socket";
  }

  let draining = false;
  // A response finished after the drain began says `Connection: close`, also
  // for a request that was already in flight then: its client must not reuse
  // the connection. A response produced synchronously costs one check.
  const markIfDraining = (res: Response): Response => (draining ? closing(res) : res);
  const call = handler as (r: Request, s: unknown) => Response | Promise<Response>;
  const fetch = (req: Request, srv: unknown): Response | Promise<Response> => {
    const r = call(req, srv);
    return r instanceof Response ? markIfDraining(r) : Promise.resolve(r).then(markIfDraining);
  };
  const error = (e: Error) => {
    onError(e);
    return new Response("Internal Server Error\n", { status: 500, headers: { "content-type": "text/plain; charset=utf-8" } });
  };

  let server: ReturnType<typeof Bun.serve>;
  let listenerFd: number | null = null;
  let reg: Registration | null = null;
  if (fd === null) {
    const port = opts.port ?? defaultPort(process.env);
    try {
      server = Bun.serve({ port, hostname: opts.hostname, fetch, error });
    } catch (e) {
      throw new EinhornWorkerError(`cannot listen on ${opts.hostname ?? "*"}:${port}: ${errorWithCode(e)}`, { cause: e });
    }
  } else {
    try {
      server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch, error });
    } catch (e) {
      return `Bun.serve could not start its template listener on 127.0.0.1: ${errorWithCode(e)}`;
    }
    const template = findTemplateListener(server.port!);
    let adopted: Registration | string;
    try {
      adopted = typeof template === "string" ? template : adoptListener(fd, template);
    } catch (e) {
      adopted = (e as Error).message;
    }
    if (typeof adopted === "string") {
      void server.stop(true);
      return adopted;
    }
    listenerFd = template as number;
    reg = adopted;
  }

  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => { resolveClosed = r; });
  let shutdownPromise: Promise<void> | null = null;

  const shutdown = (): Promise<void> => {
    if (shutdownPromise) return shutdownPromise;
    draining = true;
    if (listenerFd !== null && reg) {
      try {
        stopAccepting(listenerFd, reg);
      } catch (e) {
        workerLog("warn", `graceful shutdown: could not stop accepting on fd ${listenerFd} (${(e as Error).message}); stopping Bun.serve now`);
        void server.stop(false);
      }
    }
    const deadline = setTimeout(() => {
      if (server.pendingRequests > 0) workerLog("warn", `graceful shutdown: ${server.pendingRequests} request(s) still in flight after ${drainTimeoutMs} ms; closing their connections`);
      void server.stop(true);
      resolveClosed();
    }, drainTimeoutMs);
    setTimeout(async () => {
      // Idle keep-alive connections had idleCloseMs to bring a request (answered with Connection: close).
      await server.stop(false);
      clearTimeout(deadline);
      resolveClosed();
    }, fd === null ? 0 : idleCloseMs);
    shutdownPromise = closed;
    return closed;
  };

  const acked = await hookShutdownThenAck(opts, underEinhorn, shutdown, () => void server.stop(true));

  let port: number | null = server.port ?? null;
  if (fd !== null) {
    const a = getsockname(fd);
    port = a.family === "unix" ? null : a.port;
  }
  return {
    engine: "bun",
    httpServer: null,
    netServer: null,
    fd,
    port,
    underEinhorn,
    get acked() { return acked; },
    connectionCount: () => server.pendingRequests,
    shutdown,
    closed,
  };
}

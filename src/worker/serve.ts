// serve(): an HTTP server on the socket einhorn hands the worker, with
// einhorn's lifecycle built in (ACK once listening, drain on SIGUSR2).
//
// Two engines:
// - "bun": on Bun, a `fetch` handler is served by Bun.serve itself, which
//   is adopted onto the inherited socket (see bun-adopt.ts): Bun.serve's
//   own speed, einhorn's shared socket. Used whenever it can be; when the
//   adoption cannot be done safely (an unexpected runtime layout), serve()
//   says why on stderr and falls back to the next engine.
// - "node": node:http through listen() (listen.ts), on Node always, and for
//   `handler` (a node:http request listener) everywhere; a fetch handler is
//   bridged there by fetch-bridge.ts.
import http, { type RequestListener, type ServerResponse } from "node:http";
import type net from "node:net";
import { fetchListener, type FetchHandler } from "./fetch-bridge";
import { chooseFd, listen, workerLog, type ListenOptions, type ServedSocket } from "./listen";

export interface ServeOptions extends ListenOptions {
  /** A fetch-style handler: Request in, Response out. Give this or `handler`. */
  fetch?: FetchHandler;
  /** A node:http request listener. Give this or `fetch`. */
  handler?: RequestListener;
  /**
   * "auto" (default): Bun.serve on Bun for a `fetch` handler, node:http
   * otherwise. "node": always node:http.
   */
  engine?: "auto" | "node";
  /** Options for the node:http server (timeouts, header limits, …); the node engine only. */
  httpOptions?: http.ServerOptions;
  /** Called with errors thrown by handlers and server errors. Default: log to stderr. */
  onError?: (error: unknown) => void;
}

export interface WorkerServer extends ServedSocket {
  /** Which engine serves: Bun.serve on the adopted socket, or node:http. */
  readonly engine: "bun" | "node";
  /** The node:http server parsing requests (node engine; never listening itself), else null. */
  readonly httpServer: http.Server | null;
  /** The node:net server accepting on the socket (node engine), else null. */
  readonly netServer: net.Server | null;
  /** Connections currently open (node engine), or requests in flight (bun engine). */
  connectionCount(): number;
  /**
   * Graceful drain: stop accepting, let in-flight requests finish (their
   * responses say `Connection: close`), close idle connections; after
   * `drainTimeoutMs`, close the rest. Resolves when done. Does not exit the process.
   */
  shutdown(): Promise<void>;
}

export async function serve(opts: ServeOptions): Promise<WorkerServer> {
  if (!opts || (typeof opts.fetch !== "function") === (typeof opts.handler !== "function")) {
    throw new TypeError("serve() needs exactly one of `fetch` (Request => Response) or `handler` (a node:http request listener)");
  }
  if (opts.engine !== undefined && opts.engine !== "auto" && opts.engine !== "node") {
    throw new TypeError(`serve({ engine }): ${JSON.stringify(opts.engine)} is not an engine; use "auto" or "node"`);
  }
  const onError = opts.onError ?? ((e: unknown) => workerLog("error", `request failed: ${(e as Error)?.stack ?? e}`));

  if (opts.fetch && typeof Bun !== "undefined" && opts.engine !== "node") {
    const fd = chooseFd(opts, "serve");
    // Loaded only on Bun: it needs bun:ffi, which Node does not have.
    const { serveWithBun } = await import("./bun-serve");
    const served = await serveWithBun(fd, opts.fetch, { ...opts, onError });
    if (typeof served !== "string") return served;
    workerLog("warn", `serve(): serving through node:http instead of Bun.serve: ${served}`);
  }

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
  const listener: RequestListener = opts.fetch
    ? fetchListener(opts.fetch, onError)
    : (req, res) => {
        try {
          const r = opts.handler!(req, res) as unknown;
          if (r instanceof Promise) r.catch((e) => failed(res, e));
        } catch (e) {
          failed(res, e);
        }
      };
  const httpServer = http.createServer(opts.httpOptions ?? {}, listener);
  const l = await listen(httpServer, { ...opts, onError });
  return {
    engine: "node",
    httpServer,
    netServer: l.netServer,
    fd: l.fd,
    port: l.port,
    underEinhorn: l.underEinhorn,
    get acked() { return l.acked; },
    connectionCount: l.connectionCount,
    shutdown: l.shutdown,
    closed: l.closed,
  };
}


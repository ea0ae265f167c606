// Serving a fetch-style handler (Request in, Response out) from node:http:
// the IncomingMessage becomes a Request whose body streams from the socket,
// and the Response is written back with back-pressure. A body that is already
// complete in memory goes out with Content-Length; anything that streams goes
// out chunked as it is produced.
import type { IncomingMessage, ServerResponse } from "node:http";

export type FetchHandler = (req: Request) => Response | Promise<Response>;

function requestUrl(req: IncomingMessage): string {
  const path = req.url && req.url.startsWith("/") ? req.url : `/${req.url ?? ""}`;
  const host = req.headers.host;
  // Concatenate rather than resolve: resolving "//evil.example/x" against a
  // base would make it the URL's host, and the Host header would be ignored.
  if (host) {
    try {
      const u = new URL(`http://${host}${path}`);
      if (u.host === host.toLowerCase() || u.host === new URL(`http://${host}`).host) return u.href;
    } catch { /* a malformed Host header: fall back to the socket's address */ }
  }
  const addr = req.socket.localAddress ?? "localhost";
  const hostPart = addr.includes(":") ? `[${addr}]` : addr;
  return new URL(`http://${hostPart}:${req.socket.localPort ?? 80}${path}`).href;
}

function bodyStream(req: IncomingMessage): ReadableStream<Uint8Array> {
  const chunks = req[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { value, done } = await chunks.next();
      if (done) controller.close();
      else controller.enqueue(typeof value === "string" ? new TextEncoder().encode(value) : new Uint8Array(value));
    },
    cancel() {
      // The handler does not want the rest: read and drop it so the connection stays usable.
      req.resume();
    },
  });
}

/** The Request a fetch handler sees; `signal` aborts when the client goes away first. */
function toFetchRequest(req: IncomingMessage, signal: AbortSignal): Request {
  const headers = new Headers();
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    try {
      headers.append(raw[i]!, raw[i + 1]!);
    } catch { /* a header the fetch API does not accept is left out */ }
  }
  const method = req.method ?? "GET";
  const hasBody = method !== "GET" && method !== "HEAD";
  const init: RequestInit & { duplex?: "half" } = { method, headers, signal };
  if (hasBody) {
    init.body = bodyStream(req);
    init.duplex = "half";
  }
  return new Request(requestUrl(req), init);
}

function waitForDrain(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    if (res.destroyed) { resolve(); return; }
    const done = () => { res.off("drain", done); res.off("close", done); resolve(); };
    res.on("drain", done);
    res.on("close", done);
  });
}

/** Resolves true when `p` settles before the event loop's next turn (an in-memory body), else false. */
function settlesNow<T>(p: Promise<T>): Promise<boolean> {
  return new Promise((resolve) => {
    let decided = false;
    p.then(() => { if (!decided) { decided = true; resolve(true); } }, () => { if (!decided) { decided = true; resolve(true); } });
    setImmediate(() => { if (!decided) { decided = true; resolve(false); } });
  });
}

/**
 * Bodies whose chunks are all at hand are buffered up to this size and sent
 * with Content-Length; past it (or as soon as a chunk has to be waited for)
 * the body is streamed chunked.
 */
const MAX_BUFFERED_BODY = 8 * 1024 * 1024;

/** Write a fetch Response to a node ServerResponse. */
async function writeFetchResponse(res: ServerResponse, response: Response): Promise<void> {
  res.statusCode = response.status;
  if (response.statusText) res.statusMessage = response.statusText;
  for (const [name, value] of response.headers) {
    // Framing is node:http's: it sets Content-Length or chunked from the bytes
    // actually written. A copied length (e.g. from a fetch() whose body Bun
    // decompressed) would desynchronise a keep-alive connection.
    if (name === "set-cookie" || name === "content-length" || name === "transfer-encoding") continue;
    res.setHeader(name, value);
  }
  const cookies = response.headers.getSetCookie();
  if (cookies.length) res.setHeader("set-cookie", cookies);

  if (!response.body) {
    res.end();
    return;
  }
  const reader = response.body.getReader();
  const stop = () => { void reader.cancel().catch(() => {}); };
  res.once("close", stop);
  try {
    // Phase 1: collect chunks while each read completes at once (an in-memory body).
    const held: Uint8Array[] = [];
    let size = 0;
    let next = reader.read();
    let streaming = false;
    for (;;) {
      if (!(await settlesNow(next)) || size > MAX_BUFFERED_BODY) { streaming = true; break; }
      const r = await next;
      if (r.done) break;
      held.push(r.value);
      size += r.value.length;
      next = reader.read();
    }
    if (!streaming) {
      // The whole body was at hand: one write, and node:http adds Content-Length.
      res.end(held.length === 1 ? held[0] : Buffer.concat(held));
      return;
    }
    // Phase 2: stream. Send what we hold (or at least the headers) before waiting.
    if (held.length === 0) res.flushHeaders();
    for (const chunk of held) {
      if (res.destroyed) return; // the client left: 'drain' would never come
      if (!res.write(chunk)) await waitForDrain(res);
    }
    for (;;) {
      const { value, done } = await next;
      if (done) break;
      if (res.destroyed) return;
      if (!res.write(value)) await waitForDrain(res);
      next = reader.read();
    }
    res.end();
  } finally {
    res.off("close", stop);
  }
}

/** A node request listener that serves `handler`. */
export function fetchListener(handler: FetchHandler, onError: (e: unknown) => void) {
  return async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const aborter = new AbortController();
    res.once("close", () => { if (!res.writableFinished) aborter.abort(); });
    let response: Response;
    try {
      response = await handler(toFetchRequest(req, aborter.signal));
      if (!(response instanceof Response)) throw new TypeError(`the fetch handler returned ${Object.prototype.toString.call(response)}, not a Response`);
    } catch (e) {
      onError(e);
      if (!res.headersSent && !res.destroyed) {
        res.statusCode = 500;
        res.setHeader("content-type", "text/plain; charset=utf-8");
        res.end("Internal Server Error\n");
      }
      return;
    }
    try {
      await writeFetchResponse(res, response);
    } catch (e) {
      onError(e);
      if (!res.headersSent) {
        res.statusCode = 500;
        res.end("Internal Server Error\n");
      } else {
        res.destroy();
      }
    }
  };
}

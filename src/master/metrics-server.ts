// --metrics HOST:PORT: a small HTTP/1.x server inside the master for
// /metrics (Prometheus text format) and /healthz. It answers one request per
// connection and closes. Every connection is bounded in time, size and
// number, so a slow or hostile client costs the master a few kilobytes, never
// its event loop:
// - a request head must arrive whole within `headMs` (the metrics-head
//   timeout, src/config/timeouts.ts) and be at most MAX_HEAD_BYTES;
// - an answer the client does not read within `answerMs` (metrics-answer)
//   is abandoned;
// - at most MAX_CONNECTIONS at once: a new one past that closes the oldest
//   connection that has not sent its request yet (so idle connections cannot
//   lock scrapers out), or is itself closed when every slot is answering.
// The listening descriptor is the master's own (not Bun's), so it crosses the
// master's re-exec like the worker sockets do and the port never closes.
import type { Socket, TCPSocketListener } from "bun";
import type { SockAddr } from "../../ffi/sockaddr";
import { dupCloexec, setNonblocking } from "../../ffi/socket";

const MAX_HEAD_BYTES = 8 * 1024;
const MAX_CONNECTIONS = 64;

/**
 * Whether a --metrics listener, by the address it is bound to, is reachable
 * from this machine only. /metrics needs no credentials, so anything else is
 * warned about at start unless --metrics-allow-remote says it is meant. The
 * bound address, not the text given: a name that resolved to a loopback
 * address is loopback, and 0.0.0.0 or :: is every address.
 */
export function isLoopbackAddress(a: SockAddr): boolean {
  if (a.family === "unix") return true;
  if (a.family === "inet") return a.host.startsWith("127.");
  const h = a.host.toLowerCase();
  // An IPv4-mapped loopback address, as the kernel gives it back (::ffff:7f00:1) or as written (::ffff:127.0.0.1).
  return h === "::1" || /^::ffff:(127\.|7f[0-9a-f]{2}:)/.test(h);
}

export interface HttpAnswer { status: number; body: string; contentType?: string }

export interface MetricsRoutes {
  metrics(): string;
  health(): { ok: boolean; message: string };
}

const REASON: Record<number, string> = { 200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large", 503: "Service Unavailable" };
export const PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8";

/** The answer to one request head (pure: routes do the reading). */
export function answer(head: string, routes: MetricsRoutes): HttpAnswer & { head: boolean } {
  // The request line: up to the first line break, or all of it (a request without headers).
  const line = head.split(/\r?\n/, 1)[0]!;
  const m = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(line);
  if (!m) return { status: 400, body: "bad request: expected 'GET /metrics HTTP/1.1'\n", head: false };
  const [, method, target] = m;
  const isHead = method === "HEAD";
  if (method !== "GET" && !isHead) return { status: 405, body: `method ${method} not allowed: GET or HEAD\n`, head: false };
  const path = target!.split("?")[0];
  if (path === "/metrics") return { status: 200, body: routes.metrics(), contentType: PROMETHEUS_TEXT, head: isHead };
  if (path === "/healthz") {
    const h = routes.health();
    return { status: h.ok ? 200 : 503, body: `${h.message}\n`, head: isHead };
  }
  return { status: 404, body: `not found: ${path}; try /metrics or /healthz\n`, head: isHead };
}

interface Conn { head: Buffer[]; bytes: number; out: Buffer | null; timer: ReturnType<typeof setTimeout> | null; done: boolean }

export class MetricsServer {
  private listener: TCPSocketListener<Conn> | null = null;
  /** Open connections, oldest first. */
  private readonly conns = new Set<Socket<Conn>>();

  constructor(
    readonly fd: number,
    private readonly routes: MetricsRoutes,
    private readonly log: (level: "debug" | "warn", m: string) => void,
    private readonly limits: { headMs: number; answerMs: number },
  ) {}

  start(): void {
    setNonblocking(this.fd, true);
    const listen = Bun.listen as unknown as (o: { fd: number; socket: Record<string, unknown> }) => TCPSocketListener<Conn>;
    this.listener = listen({
      fd: dupCloexec(this.fd),
      socket: {
        open: (s: Socket<Conn>) => this.onOpen(s),
        data: (s: Socket<Conn>, d: Buffer) => this.onData(s, d),
        drain: (s: Socket<Conn>) => this.flush(s),
        close: (s: Socket<Conn>) => this.onClose(s),
        error: (s: Socket<Conn>) => this.onClose(s),
      },
    });
  }

  stop(): void {
    this.listener?.stop(true);
    this.listener = null;
  }

  private onOpen(s: Socket<Conn>): void {
    const c: Conn = { head: [], bytes: 0, out: null, timer: null, done: false };
    s.data = c;
    this.conns.add(s);
    if (this.conns.size > MAX_CONNECTIONS) {
      let victim: Socket<Conn> = s;
      for (const o of this.conns) if (o !== s && !o.data.done) { victim = o; break; }
      victim.terminate();
      this.onClose(victim);
      if (victim === s) return;
    }
    // One timer per connection: first the head deadline, then the lifetime.
    c.timer = setTimeout(() => s.terminate(), this.limits.headMs);
  }

  private onData(s: Socket<Conn>, d: Buffer): void {
    const c = s.data;
    if (!c || c.done) return; // one request per connection; anything after it is ignored
    c.head.push(d);
    c.bytes += d.length;
    const all = c.head.length === 1 ? c.head[0]! : Buffer.concat(c.head);
    c.head = [all];
    const end = all.indexOf("\r\n\r\n") >= 0 ? all.indexOf("\r\n\r\n") : all.indexOf("\n\n");
    // The limit is on the head, however it arrived: whole in one read, or in
    // pieces that have not ended it yet.
    if ((end < 0 ? c.bytes : end) > MAX_HEAD_BYTES) {
      this.respond(s, { status: 431, body: `request head larger than ${MAX_HEAD_BYTES} bytes\n`, head: false });
      return;
    }
    if (end < 0) return;
    let a: HttpAnswer & { head: boolean };
    try {
      a = answer(all.subarray(0, end).toString("latin1"), this.routes);
    } catch (e) {
      this.log("warn", `metrics: ${(e as Error).message}`);
      a = { status: 503, body: "internal error\n", head: false };
    }
    this.respond(s, a);
  }

  private respond(s: Socket<Conn>, a: HttpAnswer & { head: boolean }): void {
    const c = s.data;
    c.done = true;
    c.head = [];
    if (c.timer) clearTimeout(c.timer);
    c.timer = setTimeout(() => s.terminate(), this.limits.answerMs);
    const body = Buffer.from(a.body);
    const head = `HTTP/1.1 ${a.status} ${REASON[a.status] ?? "Status"}\r\nContent-Type: ${a.contentType ?? "text/plain; charset=utf-8"}\r\nContent-Length: ${body.length}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n`;
    c.out = a.head ? Buffer.from(head) : Buffer.concat([Buffer.from(head), body]);
    this.flush(s);
  }

  private flush(s: Socket<Conn>): void {
    const c = s.data;
    if (!c?.out) return;
    const n = s.write(c.out);
    c.out = n >= c.out.length ? null : c.out.subarray(Math.max(0, n));
    if (!c.out) s.end();
  }

  private onClose(s: Socket<Conn>): void {
    if (!this.conns.delete(s)) return;
    if (s.data?.timer) clearTimeout(s.data.timer);
  }
}

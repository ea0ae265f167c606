// HTTP load for the benchmarks: `wrk` when it is installed, else a built-in,
// bounded generator. Both return the same LoadResult shape.
//
// The built-in generator keeps a fixed number of keep-alive HTTP/1.1
// connections busy for a fixed time, each sending one GET after another, and
// counts every outcome: successes, errors by kind, latency percentiles and,
// on request, a time series of successes and errors per interval (for charts
// of what an upgrade does to traffic). Connections that the server closes
// (Connection: close, or idle close during a drain) are reopened; a request
// that was sent but got no answer is an error of its own kind, so a benchmark
// can tell a refused connection from a dropped request.
import { distribution, quantileSorted, round, sleep, sortedCopy, which } from "./harness";

export interface LoadOptions {
  url: string;
  durationMs: number;
  /** Fixed number of concurrent keep-alive connections. Default 16. */
  connections?: number;
  /** A request without a complete answer after this long is an error ("timeout"). Default 2000. */
  timeoutMs?: number;
  /** Record successes and errors per interval of this many ms (e.g. 100). Off by default. */
  seriesIntervalMs?: number;
  /** Pause after a failed connect before the next attempt, so a refusing port cannot make the loop spin. Default 10. */
  reconnectPauseMs?: number;
  /** Built-in only: called for every counted outcome (ms since the load began at its end, its latency, ok, error kind). */
  onSample?: (tMs: number, latencyMs: number, ok: boolean, kind: string | null) => void;
  /** Built-in only: ends the load early (for a window whose length is not known in advance); duration_ms is then the time it ran. */
  signal?: AbortSignal;
  /** wrk only: threads. Default 2. */
  threads?: number;
}

export interface SeriesPoint {
  /** Start of the interval, ms since the load began. */
  t_ms: number;
  ok: number;
  errors: number;
  /** Errors in this interval by kind (only kinds that occurred). */
  error_kinds?: Record<string, number>;
}

export interface LoadResult {
  tool: "builtin" | "wrk";
  tool_version?: string | null;
  url: string;
  connections: number;
  threads?: number;
  duration_ms: number;
  /** Requests answered with 2xx/3xx. */
  successes: number;
  /** Everything else, by kind: connect-refused, connect-error, reset, eof-before-response, eof-mid-response, timeout, bad-response, status-NNN (wrk: connect, read, write, timeout, non-2xx-3xx). */
  errors: Record<string, number>;
  error_total: number;
  /** Successes per second. */
  rps: number;
  latency_ms: { p50: number; p75: number; p90: number; p99: number; max: number; mean?: number; n?: number };
  /** Connection attempts, failed ones included (built-in only). */
  connects?: number;
  series?: SeriesPoint[];
  /** wrk's own output, for the record. */
  raw_output?: string;
}

// --- wrk ----------------------------------------------------------------------------

export function wrkPath(): string | null {
  return which("wrk");
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function parseDurationMs(text: string): number {
  const m = text.match(/^([\d.]+)(us|ms|s|m|h)$/);
  if (!m) throw new Error(`cannot read wrk duration '${text}'`);
  return Number(m[1]) * UNIT_MS[m[2]!]!;
}

/** Read wrk's `--latency` report. Exported for the record and for tests of the parser by hand. */
export function parseWrk(out: string): Omit<LoadResult, "tool" | "url" | "connections" | "threads"> {
  const pct = (p: string) => {
    const m = out.match(new RegExp(`^\\s+${p}%\\s+(\\S+)\\s*$`, "m"));
    return m ? round(parseDurationMs(m[1]!)) : NaN;
  };
  const req = out.match(/^\s*(\d+) requests in ([\d.]+\w+),/m);
  if (!req) throw new Error(`cannot read wrk's output:\n${out}`);
  const total = Number(req[1]);
  const durationMs = parseDurationMs(req[2]!);
  const errors: Record<string, number> = {};
  const sock = out.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  if (sock) {
    (["connect", "read", "write", "timeout"] as const).forEach((k, i) => { const n = Number(sock[i + 1]); if (n) errors[k] = n; });
  }
  const non2xx = out.match(/Non-2xx or 3xx responses: (\d+)/);
  if (non2xx) errors["non-2xx-3xx"] = Number(non2xx[1]);
  // wrk's request count includes non-2xx answers; socket errors are not requests.
  const successes = total - (errors["non-2xx-3xx"] ?? 0);
  const avg = out.match(/^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)/m);
  return {
    duration_ms: round(durationMs),
    successes,
    errors,
    error_total: Object.values(errors).reduce((a, b) => a + b, 0),
    rps: round(successes / (durationMs / 1000), 1),
    latency_ms: { p50: pct("50"), p75: pct("75"), p90: pct("90"), p99: pct("99"), max: avg ? round(parseDurationMs(avg[3]!)) : NaN, mean: avg ? round(parseDurationMs(avg[1]!)) : NaN },
    raw_output: out,
  };
}

export async function runWrk(opts: LoadOptions): Promise<LoadResult> {
  const wrk = wrkPath();
  if (!wrk) throw new Error("wrk is not installed");
  const threads = opts.threads ?? 2;
  const connections = opts.connections ?? 16;
  const seconds = Math.max(1, Math.round(opts.durationMs / 1000));
  const timeout = `${Math.max(1, Math.round((opts.timeoutMs ?? 2000) / 1000))}s`;
  const proc = Bun.spawn([wrk, `-t${threads}`, `-c${connections}`, `-d${seconds}s`, "--timeout", timeout, "--latency", opts.url], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  // Bounded: wrk stops itself after the duration; kill it if it does not.
  const killer = setTimeout(() => proc.kill("SIGKILL"), seconds * 1000 + 15_000);
  try {
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) throw new Error(`wrk exited with ${code}: ${err || out}`);
    return { tool: "wrk", tool_version: wrkVersion(), url: opts.url, connections, threads, ...parseWrk(out) };
  } finally {
    clearTimeout(killer);
    if (proc.exitCode === null) proc.kill("SIGKILL");
  }
}

let wrkVersionCache: string | null | undefined;
function wrkVersion(): string | null {
  if (wrkVersionCache !== undefined) return wrkVersionCache;
  const wrk = wrkPath();
  // `wrk -v` prints its version and usage, and exits non-zero.
  const r = wrk ? Bun.spawnSync([wrk, "-v"], { stdout: "pipe", stderr: "pipe" }) : null;
  wrkVersionCache = r ? (`${r.stdout}${r.stderr}`.match(/wrk [^\s]+/)?.[0] ?? null) : null;
  return wrkVersionCache;
}

// --- built-in generator -------------------------------------------------------------

/** Not an error: the connection was already closed when a request was to be written; reconnect. */
const CLOSED_BEFORE_WRITE = "closed-before-write";

type Outcome = { ok: true; status: number; close: boolean } | { ok: false; kind: string };

const CRLF2 = Buffer.from("\r\n\r\n");

/**
 * The response to one request, parsed incrementally: status line and headers,
 * then a body framed by Content-Length, chunked encoding, or (no framing) EOF.
 */
class ResponseParser {
  private buf: Buffer = Buffer.alloc(0);
  private status = 0;
  private headerEnd = -1;
  private contentLength = -1;
  private chunked = false;
  private close = false;
  private untilEof = false;
  received = 0;

  /** Feed bytes; returns the outcome once the response is complete. */
  feed(d: Uint8Array): Outcome | null {
    this.received += d.length;
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : Buffer.from(d);
    if (this.headerEnd < 0) {
      const i = this.buf.indexOf(CRLF2);
      if (i < 0) return this.buf.length > 65536 ? { ok: false, kind: "bad-response" } : null;
      const head = this.buf.subarray(0, i).toString("latin1");
      const lines = head.split("\r\n");
      const m = lines[0]!.match(/^HTTP\/1\.[01] (\d{3})/);
      if (!m) return { ok: false, kind: "bad-response" };
      this.status = Number(m[1]);
      for (const line of lines.slice(1)) {
        const c = line.indexOf(":");
        if (c < 0) continue;
        const name = line.slice(0, c).trim().toLowerCase();
        const value = line.slice(c + 1).trim().toLowerCase();
        if (name === "content-length") this.contentLength = Number(value);
        else if (name === "transfer-encoding" && value.includes("chunked")) this.chunked = true;
        else if (name === "connection" && value.includes("close")) this.close = true;
      }
      if (lines[0]!.startsWith("HTTP/1.0") && !/connection:\s*keep-alive/i.test(head)) this.close = true;
      this.headerEnd = i + 4;
      this.buf = this.buf.subarray(this.headerEnd);
      if (!this.chunked && this.contentLength < 0) {
        if (this.status === 204 || this.status === 304 || (this.status >= 100 && this.status < 200)) this.contentLength = 0;
        else { this.untilEof = true; this.close = true; }
      }
    }
    return this.bodyDone();
  }

  private bodyDone(): Outcome | null {
    if (this.untilEof) return null;
    if (!this.chunked) return this.buf.length >= this.contentLength ? this.done() : null;
    // Chunked: walk the chunks present; complete at the zero-size chunk and its trailer.
    let pos = 0;
    for (;;) {
      const eol = this.buf.indexOf("\r\n", pos);
      if (eol < 0) return null;
      const size = parseInt(this.buf.subarray(pos, eol).toString("latin1").split(";")[0]!, 16);
      if (!Number.isFinite(size)) return { ok: false, kind: "bad-response" };
      if (size === 0) {
        // The last chunk: "0\r\n", optional trailers, then an empty line.
        return this.buf.indexOf(CRLF2, eol) >= 0 ? this.done() : null;
      }
      const next = eol + 2 + size + 2;
      if (this.buf.length < next) return null;
      pos = next;
    }
  }

  /** The server closed the connection: the end of a body framed by EOF, or an error. */
  eof(): Outcome {
    if (this.untilEof && this.headerEnd >= 0) return this.done();
    return { ok: false, kind: this.received === 0 ? "eof-before-response" : "eof-mid-response" };
  }

  private done(): Outcome {
    if (this.status >= 200 && this.status < 400) return { ok: true, status: this.status, close: this.close };
    return { ok: false, kind: `status-${this.status}` };
  }
}

function errorKind(e: unknown, connecting: boolean): string {
  const code = (e as { code?: string })?.code ?? "";
  if (code === "ECONNREFUSED") return "connect-refused";
  if (code === "ECONNRESET" || code === "EPIPE") return connecting ? "connect-reset" : "reset";
  if (code === "ETIMEDOUT") return "timeout";
  return connecting ? "connect-error" : `socket-error${code ? `-${code}` : ""}`;
}

/** One keep-alive connection carrying one request at a time. */
class Connection {
  private parser: ResponseParser | null = null;
  private settle: ((o: Outcome) => void) | null = null;
  private socket: Awaited<ReturnType<typeof Bun.connect>> | null = null;
  closed = false;

  static async open(host: string, port: number): Promise<Connection> {
    const c = new Connection();
    c.socket = await Bun.connect({
      hostname: host,
      port,
      socket: {
        data: (_s, d) => c.onData(d),
        close: () => c.onEnd(null),
        end: () => c.onEnd(null),
        error: (_s, e) => c.onEnd(e),
      },
    });
    return c;
  }

  private onData(d: Uint8Array): void {
    if (!this.parser) return; // bytes nobody asked for: ignore
    const o = this.parser.feed(d);
    if (o) this.finish(o);
  }

  private onEnd(e: Error | null): void {
    this.closed = true;
    if (this.parser && this.settle) this.finish(e ? { ok: false, kind: errorKind(e, false) } : this.parser.eof());
  }

  private finish(o: Outcome): void {
    const s = this.settle;
    this.parser = null;
    this.settle = null;
    s?.(o);
  }

  request(bytes: Uint8Array, timeoutMs: number): Promise<Outcome> {
    return new Promise((resolve) => {
      this.parser = new ResponseParser();
      const timer = setTimeout(() => { this.finish({ ok: false, kind: "timeout" }); this.destroy(); }, timeoutMs);
      this.settle = (o) => { clearTimeout(timer); resolve(o); };
      // Closed before we wrote anything (an idle close we had not acted on): not a failed request.
      if (this.closed) { this.finish({ ok: false, kind: CLOSED_BEFORE_WRITE }); return; }
      try {
        this.socket!.write(bytes);
      } catch (e) {
        this.finish({ ok: false, kind: errorKind(e, false) });
      }
    });
  }

  destroy(): void {
    this.closed = true;
    try { this.socket?.end(); } catch { /* already gone */ }
  }
}

/** Fixed concurrency, fixed duration, bounded in time and memory (latencies of successes only). */
export async function runBuiltinLoad(opts: LoadOptions): Promise<LoadResult> {
  const url = new URL(opts.url);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || 80);
  const connections = opts.connections ?? 16;
  const timeoutMs = opts.timeoutMs ?? 2000;
  const pause = opts.reconnectPauseMs ?? 10;
  const req = new TextEncoder().encode(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUser-Agent: einhorn-bench\r\n\r\n`);
  const every = opts.seriesIntervalMs;
  const series: SeriesPoint[] = [];
  const point = (t: number): SeriesPoint => {
    const i = Math.floor(t / every!);
    while (series.length <= i) series.push({ t_ms: series.length * every!, ok: 0, errors: 0 });
    return series[i]!;
  };
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  let successes = 0;
  let connects = 0;
  const start = performance.now();
  let end = start + opts.durationMs;
  opts.signal?.addEventListener("abort", () => { end = Math.min(end, performance.now()); });

  const record = (o: Outcome, t0: number, t1: number) => {
    if (t1 > end) return; // finished after the window: not counted, as wrk does
    opts.onSample?.(t1 - start, t1 - t0, o.ok, o.ok ? null : o.kind);
    if (o.ok) {
      successes++;
      latencies.push(t1 - t0);
      if (every) point(t1 - start).ok++;
    } else {
      errors[o.kind] = (errors[o.kind] ?? 0) + 1;
      if (every) {
        const p = point(t1 - start);
        p.errors++;
        (p.error_kinds ??= {})[o.kind] = (p.error_kinds[o.kind] ?? 0) + 1;
      }
    }
  };

  const user = async () => {
    let conn: Connection | null = null;
    while (performance.now() < end) {
      if (!conn || conn.closed) {
        const t0 = performance.now();
        try {
          connects++;
          conn = await Connection.open(host, port);
        } catch (e) {
          record({ ok: false, kind: errorKind(e, true) }, t0, performance.now());
          conn = null;
          await sleep(pause);
          continue;
        }
      }
      const t0 = performance.now();
      const o = await conn.request(req, timeoutMs);
      if (!o.ok && o.kind === CLOSED_BEFORE_WRITE) { conn = null; continue; }
      record(o, t0, performance.now());
      if (!o.ok || o.close) { conn.destroy(); conn = null; }
    }
    conn?.destroy();
  };
  // Every user stops by itself at `end` (+ at most one request timeout).
  await Promise.all(Array.from({ length: connections }, user));
  const durationMs = round(end - start);
  const d = distribution(latencies);
  const p75 = round(quantileSorted(sortedCopy(latencies), 0.75));
  return {
    tool: "builtin",
    url: opts.url,
    connections,
    duration_ms: durationMs,
    successes,
    errors,
    error_total: Object.values(errors).reduce((a, b) => a + b, 0),
    rps: round(successes / (durationMs / 1000), 1),
    latency_ms: { p50: d.p50, p75, p90: d.p90, p99: d.p99, max: d.max, mean: d.mean, n: d.n },
    connects,
    ...(every ? { series } : {}),
  };
}

/** wrk when installed (and not asked otherwise), else the built-in generator. */
export async function runLoad(opts: LoadOptions & { tool?: "wrk" | "builtin" | "auto" }): Promise<LoadResult> {
  const tool = opts.tool ?? "auto";
  if (tool === "wrk" || (tool === "auto" && wrkPath() && !opts.seriesIntervalMs)) return runWrk(opts);
  return runBuiltinLoad(opts);
}

/** Which tool runLoad picks for these options. */
export function loadTool(opts: { tool?: "wrk" | "builtin" | "auto"; seriesIntervalMs?: number } = {}): "wrk" | "builtin" {
  const tool = opts.tool ?? "auto";
  if (tool === "wrk") return "wrk";
  if (tool === "builtin") return "builtin";
  return wrkPath() && !opts.seriesIntervalMs ? "wrk" : "builtin";
}

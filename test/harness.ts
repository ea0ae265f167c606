// Integration-test harness: every test gets its own temp dir (and so its own
// command socket, pidfile and lockfile), the compiled binary, ports chosen by
// the kernel, and a leak check. Every process a master starts inherits
// EINHORN_TEST_TAG; after a test, any live process carrying this test's tag
// is a leak: it is killed and the test fails.
import { expect } from "bun:test";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Socket, Subprocess } from "bun";
// Types only: the harness must not load master code.
import type { buildStateReport } from "../src/master/state-report";
import type { StatusData } from "../src/master/status-report";
import { loadAveragePerCore, MAX_LOAD_FACTOR } from "./load";

/** What `state json` answers, as the master's own report builder types it. */
export type StateReport = ReturnType<typeof buildStateReport>;
export type StateWorker = StateReport["workers"][number];
/** What `status json` answers. */
export type StatusReport = StatusData;

export const ROOT = resolve(import.meta.dir, "..");
/** The binary under test: the compiled one unless EINHORN_TEST_BIN names another. */
export const BIN = process.env.EINHORN_TEST_BIN ?? join(ROOT, "dist", "einhorn");
export const FIXTURES = join(ROOT, "test", "fixtures");
/** The Bun runtime from node_modules, for TypeScript worker fixtures. */
export const BUN = process.execPath;

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * How many times slower than on a quiet machine things run here right now:
 * the larger of the load average per core and how much longer a short
 * busy loop takes in wall time than in this process's CPU time (its share
 * of a core), between 1 and 10. Measured when asked, at most once a second
 * (a measurement costs 20 ms of CPU).
 *
 * Why: a wait in a test is on an event (waitFor, waitForOutput, an answer),
 * and its bound is a last resort against a hang. A bound that holds on a
 * quiet machine fails under load (the suite also runs beside other
 * sessions' suites, and its acceptance run is beside four busy loops), so
 * every bound in the harness is `bound(ms)`: ms on a quiet machine, more on
 * a busy one. EINHORN_TEST_LOAD=N fixes the factor (N >= 1) instead.
 */
export function loadFactor(): number {
  if (FIXED_LOAD >= 1) return FIXED_LOAD;
  const now = performance.now();
  if (measuredLoad && now - measuredLoad.at < 1_000) return measuredLoad.factor;
  const cpu0 = process.cpuUsage();
  const wall0 = performance.now();
  while (performance.now() - wall0 < 20) { /* spin: how much of a core do we get? */ }
  const cpu = process.cpuUsage(cpu0);
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const share = cpuMs > 0 ? (performance.now() - wall0) / cpuMs : 1;
  const factor = Math.min(MAX_LOAD_FACTOR, Math.max(loadAveragePerCore(), share));
  measuredLoad = { at: performance.now(), factor: Math.round(factor * 10) / 10 };
  return measuredLoad.factor;
}
let measuredLoad: { at: number; factor: number } | null = null;
// Read once and taken out of the environment: the masters and workers the
// tests start inherit it, and some tests compare a worker's environment
// with exactly what einhorn and the test put there.
const FIXED_LOAD = Number(process.env.EINHORN_TEST_LOAD);
const SUITE_RUN = process.env.EINHORN_TEST_SUITE === "1";
delete process.env.EINHORN_TEST_LOAD;
delete process.env.EINHORN_TEST_SUITE;

/** A last-resort bound of `ms` on a quiet machine, scaled by the load factor measured now. */
export function bound(ms: number): number {
  return Math.round(ms * loadFactor());
}

/**
 * A window in which something must not happen (no respawn, no second
 * report, no log line), or in which the master is left to settle before a
 * figure is read. There is no event to wait on, so this is the one wait on
 * the clock: `ms` on a quiet machine, scaled by the load factor (on a slow
 * machine the same window holds fewer of the master's ticks). Pacing inside
 * a test (a client's think time, a sampler's period) stays a plain sleep().
 */
export function quietFor(ms: number): Promise<void> {
  return sleep(bound(ms));
}

/**
 * A per-test time limit for bun test (`test(name, fn, within(60_000))`):
 * `ms` scaled by the load factor when the file starts, and at least twice
 * `ms` when the whole suite runs (scripts/test.ts sets EINHORN_TEST_SUITE),
 * since the bounds inside a test grow with the load as it runs.
 */
export function within(ms: number): number {
  return Math.round(ms * Math.max(loadFactor(), SUITE_RUN ? 2 : 1));
}

/**
 * Poll `fn` until it returns something (not undefined, null or false). The
 * bound is `timeoutMs` on a quiet machine; past it, the wait goes on while
 * the load factor measured then says the machine is slow enough to explain
 * it (up to `timeoutMs` × the factor).
 */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 10_000, everyMs = 25): Promise<NonNullable<T>> {
  const start = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== null && v !== false) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    const waited = Date.now() - start;
    if (waited > timeoutMs && waited > bound(timeoutMs)) {
      throw new Error(`timed out after ${waited} ms (a bound of ${timeoutMs} ms at load factor ${loadFactor()}) waiting for ${what}${last ? `: ${last}` : ""}`);
    }
    await sleep(everyMs);
  }
}

let counter = 0;
const tagsInUse = new Set<string>();
const cleanups: Array<() => Promise<void> | void> = [];

export function onCleanup(fn: () => Promise<void> | void): void {
  cleanups.push(fn);
}

/** Every temp dir tempDir() made and has not seen removed: the leak check's list. */
const madeDirs = new Set<string>();

export function tempDir(prefix = "einhorn-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  madeDirs.add(dir);
  onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Temp dirs made by tempDir() that still exist, removed now. After a test's
 * cleanups none may be left: one that is was made where no cleanup runs for
 * it (outside a test, or after its cleanups) or could not be removed.
 */
export function sweepTempDirs(): string[] {
  const left = [...madeDirs].filter((d) => existsSync(d));
  madeDirs.clear();
  for (const d of left) { try { rmSync(d, { recursive: true, force: true }); } catch { /* reported */ } }
  return left;
}

/** Pids of live processes whose environment carries EINHORN_TEST_TAG=tag. */
export function processesTagged(tag: string): number[] {
  const needle = `EINHORN_TEST_TAG=${tag}\0`;
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = readFileSync(`/proc/${entry}/environ`, "latin1");
      if (`${env}\0`.includes(needle)) {
        const stat = readFileSync(`/proc/${entry}/stat`, "latin1");
        if (!/\) Z /.test(stat)) found.push(Number(entry));
      }
    } catch { /* gone, or not ours to read */ }
  }
  return found;
}

/**
 * What the processes carrying `tag` are doing, one line each (state, what
 * the kernel has them wait in, pending and blocked signals, command line),
 * and the master's threads: printed when a master does not stop in time, so
 * a hang under load can be told apart from a lost signal or a slow child.
 */
export function describeProcesses(tag: string, masterPid: number): string {
  const pids = new Set([masterPid, ...processesTagged(tag)]);
  const rows = [...pids].map((pid) => processLine(pid));
  try {
    for (const tid of readdirSync(`/proc/${masterPid}/task`)) rows.push(`  thread ${processLine(tid, `/proc/${masterPid}/task/${tid}`)}`);
  } catch { /* the master is gone */ }
  return rows.join("\n");
}

/** One process (or thread, by its /proc directory) in one line: state, parent, what it waits in, its signals, its command line. */
function processLine(pid: number | string, base = `/proc/${pid}`): string {
  const field = (status: string, name: string) => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1]?.trim() ?? "?";
  const read = (path: string) => { try { return readFileSync(path, "latin1"); } catch { return ""; } };
  const st = read(`${base}/status`);
  if (!st) return `${pid}: gone`;
  const cmd = read(`${base}/cmdline`).split("\0").join(" ").trim().slice(0, 120);
  return `${pid}: ${field(st, "State")} PPid=${field(st, "PPid")} wchan=${read(`${base}/wchan`) || "?"} SigPnd=${field(st, "SigPnd")} ShdPnd=${field(st, "ShdPnd")} SigBlk=${field(st, "SigBlk")} ${cmd}`;
}

export interface Master {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  pid: number;
  dir: string;
  tag: string;
  sockPath: string;
  /** Everything the master wrote to stderr/stdout so far. */
  output(): string;
  waitForOutput(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Resolves with the exit code. */
  exited: Promise<number>;
  exitCode(): number | null;
}

export interface StartOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Directory for the default socket/pid/lock paths (TMPDIR of the master). */
  dir?: string;
  /** Run this binary instead of BIN (e.g. a copy the test replaces on disk). */
  bin?: string;
  /** Start the binary through this command (the binary and its arguments follow it). */
  wrap?: string[];
  /** Descriptors the master inherits at 3, 4, ... (as systemd passes sockets). */
  extraFds?: number[];
  /** The master's stdout: this descriptor instead of a pipe the harness reads (output() then holds stderr only). */
  stdoutFd?: number;
}

export function startMaster(args: string[], opts: StartOptions = {}): Master {
  const dir = opts.dir ?? tempDir();
  const tag = `t${process.pid}-${++counter}-${Date.now()}`;
  tagsInUse.add(tag);
  let out = "";
  const proc = Bun.spawn([...(opts.wrap ?? []), opts.bin ?? BIN, ...args], {
    cwd: opts.cwd ?? dir,
    env: { ...process.env, TMPDIR: dir, EINHORN_TEST_TAG: tag, ...opts.env },
    stdio: ["ignore", opts.stdoutFd ?? "pipe", "pipe", ...(opts.extraFds ?? [])],
  }) as unknown as Subprocess<"ignore", "pipe", "pipe">;
  let code: number | null = null;
  const pump = async (s: ReadableStream<Uint8Array>) => {
    const dec = new TextDecoder();
    for await (const chunk of s) out += dec.decode(chunk, { stream: true });
  };
  const pumps = Promise.all([opts.stdoutFd === undefined ? pump(proc.stdout) : Promise.resolve(), pump(proc.stderr)]);
  // Output pipes may stay open after the master exits (orphaned workers hold
  // them); give the readers a moment (scaled by load), not forever. The
  // readers go on after that: a test that needs a worker's last words waits
  // for them in output().
  const exited = proc.exited.then(async (c) => { await Promise.race([pumps.catch(() => {}), sleep(bound(300))]); code = c; return c; });
  const m: Master = {
    proc,
    pid: proc.pid,
    dir,
    tag,
    sockPath: join(dir, "einhorn.sock"),
    output: () => out,
    waitForOutput: (re, timeoutMs = 10_000) => waitFor(`master output ${re}`, () => out.match(re), timeoutMs),
    exited,
    exitCode: () => code,
  };
  onCleanup(async () => {
    // A test that ends with its master still running gets a graceful TERM
    // (workers get TERM too), then SIGKILL; the leak check runs after this.
    if (code === null) {
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), bound(3000));
      await exited;
      clearTimeout(t);
    }
  });
  return m;
}

/** Signal the master and wait for it to exit; returns its exit code. */
export async function stopMaster(m: Master, signal: NodeJS.Signals = "SIGINT", timeoutMs = 10_000): Promise<number> {
  if (m.exitCode() !== null) return m.exitCode()!;
  m.proc.kill(signal);
  const limit = bound(timeoutMs);
  const t = setTimeout(() => {
    // Say why before the evidence goes: what the master last logged.
    console.log(`master ${m.pid} did not exit within ${limit} ms of ${signal} (load factor ${loadFactor()}); killing it. Its last output:\n${m.output().slice(-4000)}\nIts processes:\n${describeProcesses(m.tag, m.pid)}`);
    m.proc.kill("SIGKILL");
  }, limit);
  const code = await m.exited;
  clearTimeout(t);
  return code;
}

/** Run the binary to completion (for bad-input cases). */
export async function runBinary(args: string[], opts: StartOptions & { timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const dir = opts.dir ?? tempDir();
  const tag = `t${process.pid}-${++counter}-${Date.now()}`;
  tagsInUse.add(tag);
  const proc = Bun.spawn([BIN, ...args], {
    cwd: opts.cwd ?? dir,
    env: { ...process.env, TMPDIR: dir, EINHORN_TEST_TAG: tag, ...opts.env },
    stdin: "ignore", stdout: "pipe", stderr: "pipe",
    timeout: bound(opts.timeoutMs ?? 15_000),
  });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

export type Answer = Record<string, unknown>;

/**
 * One command-socket connection, kept open as long as the test wants: the
 * harness's only command-socket client (command(), ask(), stateJson() and
 * sendMessage() run on it). Requests are answered in order; a request's
 * answers run up to the first one without `wait: true`. A connection that
 * closes or fails rejects every request still waiting, with what it got.
 * Opened before descriptors run short, it steers a master that accepts no
 * new connection.
 */
export class CommandConnection {
  private socket: Socket<undefined> | null = null;
  private buf = "";
  private readonly decoder = new TextDecoder();
  private readonly pending: Array<{ cmd: string; answers: Answer[]; done: (a: Answer[]) => void; fail: (e: Error) => void }> = [];
  private ended = false;
  private markClosed: () => void = () => {};
  /** Resolves once the connection is gone (either side closed it, or it failed). */
  readonly closed = new Promise<void>((r) => { this.markClosed = r; });

  private constructor(private readonly decode: (line: string) => unknown, private readonly encode: (msg: Record<string, unknown>) => string) {}

  static async open(sockPath: string): Promise<CommandConnection> {
    const { decodeLine, encodeMessage } = await import("../src/protocol");
    const c = new CommandConnection(decodeLine, (msg) => encodeMessage(msg));
    c.socket = await Bun.connect({
      unix: sockPath,
      socket: {
        data: (_s, d) => c.onData(d),
        close: () => c.onEnd(new Error("connection closed")),
        error: (_s, e) => c.onEnd(e),
      },
    });
    return c;
  }

  private onData(d: Uint8Array): void {
    this.buf += this.decoder.decode(d, { stream: true });
    for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
      const msg = this.decode(this.buf.slice(0, nl)) as Answer;
      this.buf = this.buf.slice(nl + 1);
      const head = this.pending[0];
      if (!head) continue;
      head.answers.push(msg);
      if (!msg.wait) { this.pending.shift(); head.done(head.answers); }
    }
  }

  private onEnd(e: Error): void {
    this.ended = true;
    for (const p of this.pending.splice(0)) p.fail(new Error(`${e.message} before the final answer to '${p.cmd}'; answers so far ${JSON.stringify(p.answers)}`));
    this.markClosed();
  }

  /** Write one message, framed as Einhorn's clients do (YAML), and wait for nothing: a worker message, or a request whose answers nobody reads. */
  send(message: Record<string, unknown>): void {
    this.socket!.write(this.encode(message));
  }

  /**
   * Every answer to one request (`id`, when given, goes with it). After a
   * timeout the answers still due to that request would go to the next one:
   * a test that goes on after one closes the connection.
   */
  askAll(cmd: string, args: string[] = [], timeoutMs = 10_000, id?: number): Promise<Answer[]> {
    return new Promise((resolvePromise, reject) => {
      if (this.ended) { reject(new Error(`connection closed before '${cmd}' was sent`)); return; }
      const limit = bound(timeoutMs);
      const entry = {
        cmd,
        answers: [] as Answer[],
        done: (a: Answer[]) => { clearTimeout(timer); resolvePromise(a); },
        fail: (e: Error) => { clearTimeout(timer); reject(e); },
      };
      const timer = setTimeout(() => {
        const at = this.pending.indexOf(entry);
        if (at >= 0) this.pending.splice(at, 1);
        reject(new Error(`no final answer to '${cmd}' within ${limit} ms (load factor ${loadFactor()}); got ${JSON.stringify(entry.answers)}`));
      }, limit);
      this.pending.push(entry);
      this.send({ command: cmd, args, ...(id === undefined ? {} : { id }) });
    });
  }

  /** The final answer to one request. */
  async ask(cmd: string, args: string[] = [], timeoutMs = 10_000): Promise<Answer> {
    const answers = await this.askAll(cmd, args, timeoutMs);
    return answers[answers.length - 1]!;
  }

  async state(): Promise<StateReport> {
    return JSON.parse(String((await this.ask("state", ["json"])).message)) as StateReport;
  }

  /** Close our end (see `closed` for when it is gone). */
  close(): void {
    this.socket!.end();
  }
}

/** Send one command over a connection of its own; the answers up to the first without `wait: true`. */
export async function command(sockPath: string, cmd: string, args: string[] = [], timeoutMs = 10_000): Promise<Answer[]> {
  const c = await CommandConnection.open(sockPath);
  try {
    return await c.askAll(cmd, args, timeoutMs, 1);
  } finally {
    c.close();
  }
}

/** Write one message that gets no answer (a worker's `worker:ack`, say) on a connection of its own; resolves once it is closed. */
export async function sendMessage(sockPath: string, message: Record<string, unknown>): Promise<void> {
  const c = await CommandConnection.open(sockPath);
  c.send(message);
  c.close();
  await c.closed;
}

/** The final message text of a command. */
export async function ask(sockPath: string, cmd: string, args: string[] = []): Promise<string> {
  const answers = await command(sockPath, cmd, args);
  return String(answers[answers.length - 1]!.message);
}

export async function stateJson(sockPath: string): Promise<StateReport> {
  return JSON.parse(await ask(sockPath, "state", ["json"])) as StateReport;
}

/**
 * Wait until exactly `n` workers are alive and every one has ACKed (all of
 * generation `version`, when given); the state at that moment.
 */
export async function ackedWorkers(sockPath: string, n: number, version?: number, timeoutMs = 20_000): Promise<StateReport> {
  const of = version === undefined ? "" : ` of version ${version}`;
  return waitFor(`${n} acked worker(s)${of} at ${sockPath}`, async () => {
    const s = await stateJson(sockPath);
    return s.workers.length === n && s.workers.every((w) => w.acked && (version === undefined || w.version === version)) ? s : null;
  }, timeoutMs);
}

/** The port of listener `i` in a state report; throws when it has none (a UNIX listener, or no such listener). */
export function listenerPort(s: StateReport, i = 0): number {
  const port = s.listeners[i]?.port;
  if (typeof port !== "number") throw new Error(`listener ${i} has no port: ${JSON.stringify(s.listeners[i])}`);
  return port;
}

export async function statusJson(sockPath: string): Promise<StatusReport> {
  return JSON.parse(await ask(sockPath, "status", ["json"])) as StatusReport;
}

/**
 * Connect (TCP, or a UNIX path) and read everything the server sends until it
 * closes; over TCP, failing after `timeoutMs` without data when given.
 * node:net, because Bun.connect reports ECONNRESET when a server writes and
 * closes before the connect callback runs.
 */
export async function fetchLine(port: number | string, host = "127.0.0.1", timeoutMs?: number): Promise<string> {
  if (typeof port === "string") {
    // Bun's UNIX-socket clients (Bun.connect and node:net alike) report
    // ECONNRESET from connect when the server writes and closes at once;
    // plain blocking syscalls have no such race.
    const sock = await import("../ffi/socket");
    const { readSync } = await import("node:fs");
    const fd = sock.socket("unix");
    try {
      sock.connect(fd, { family: "unix", path: port });
      const buf = Buffer.alloc(4096);
      let out = "";
      for (let n; (n = readSync(fd, buf)) > 0; ) out += buf.subarray(0, n).toString();
      return out;
    } finally {
      sock.close(fd);
    }
  }
  const net = await import("node:net");
  return new Promise((res, rej) => {
    let data = "";
    const c = net.createConnection({ host, port });
    c.setEncoding("utf8");
    if (timeoutMs !== undefined) {
      const limit = bound(timeoutMs);
      c.setTimeout(limit, () => { c.destroy(); rej(new Error(`timeout: nothing more within ${limit} ms from port ${port}`)); });
    }
    c.on("data", (d: string) => { data += d; });
    c.on("end", () => res(data));
    c.on("error", rej);
  });
}

/** A failed request, with its kind: ECONNRESET/EPIPE/EOF (cut off), ECONNREFUSED, TIMEOUT, ... */
export class RequestError extends Error {
  constructor(readonly kind: string, message: string) { super(`${kind}: ${message}`); }
}

export interface HttpReply {
  status: number;
  /** Header names in lower case. */
  headers: Record<string, string>;
  /** The body, de-chunked when the answer was chunked. */
  body: string;
  /** Every byte the server sent (latin1), head and body as they came. */
  raw: string;
}

/** The body of a chunked answer; null while incomplete. */
function dechunk(data: string): string | null {
  let out = "";
  for (let at = 0; ;) {
    const eol = data.indexOf("\r\n", at);
    if (eol < 0) return null;
    const size = parseInt(data.slice(at, eol), 16);
    if (!Number.isFinite(size)) return null;
    if (size === 0) return out;
    if (data.length < eol + 2 + size + 2) return null;
    out += data.slice(eol + 2, eol + 2 + size);
    at = eol + 2 + size + 2;
  }
}

/**
 * The one HTTP client of the tests: GET `path` on a fresh TCP connection,
 * by hand, so one request is one connection accepted by exactly one worker,
 * no pooled connection outlives the worker that accepted it, and a failure
 * keeps its kind (RequestError). It asks for `Connection: close` unless
 * `keepAlive`, when the server must decide to close. Resolves when the
 * server closes, with a complete answer (all of Content-Length, or the last
 * chunk); anything less is an EOF failure.
 */
export async function httpGet(port: number, opts: { path?: string; host?: string; keepAlive?: boolean; timeoutMs?: number } = {}): Promise<HttpReply> {
  const { path = "/", host = "127.0.0.1", keepAlive = false, timeoutMs = 15_000 } = opts;
  const net = await import("node:net");
  return new Promise((resolvePromise, reject) => {
    const c = net.createConnection({ host, port });
    let data = "";
    const fail = (kind: string, message: string) => { clearTimeout(timer); c.destroy(); reject(new RequestError(kind, message)); };
    const limit = bound(timeoutMs);
    const timer = setTimeout(() => fail("TIMEOUT", `no complete answer to GET ${path} within ${limit} ms`), limit);
    c.setEncoding("latin1");
    c.on("connect", () => c.write(`GET ${path} HTTP/1.1\r\nHost: ${host.includes(":") ? `[${host}]` : host}\r\n${keepAlive ? "" : "Connection: close\r\n"}\r\n`));
    c.on("data", (d: string) => { data += d; });
    c.on("error", (e: NodeJS.ErrnoException) => fail(e.code ?? e.name, e.message));
    c.on("end", () => {
      const split = data.indexOf("\r\n\r\n");
      const status = /^HTTP\/1\.[01] (\d{3}) /.exec(data);
      if (!status || split < 0) { fail("EOF", `connection closed after ${data.length} bytes, without a complete answer`); return; }
      const headers: Record<string, string> = {};
      for (const line of data.slice(0, split).split("\r\n").slice(1)) {
        const colon = line.indexOf(":");
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const rest = data.slice(split + 4);
      const length = Number(headers["content-length"] ?? NaN);
      const body = /chunked/i.test(headers["transfer-encoding"] ?? "") ? dechunk(rest) : rest;
      if (body === null || (Number.isFinite(length) && rest.length < length)) { fail("EOF", `connection closed after ${data.length} bytes, without a complete answer`); return; }
      clearTimeout(timer);
      c.destroy();
      resolvePromise({ status: Number(status[1]), headers, body: Buffer.from(body, "latin1").toString("utf8"), raw: data });
    });
  });
}

/**
 * The temp directory of this test file's process: test/setup.ts makes one
 * per file and points TMPDIR at it before any test runs, so that everything
 * a test, a master or a worker puts in "the temp directory" lands in one
 * place that belongs to this file alone, even with files running side by
 * side. The leak check below reads it; test/setup.ts removes it last.
 */
let fileTmp: string | null = null;
export function setFileTempDir(dir: string): void {
  fileTmp = dir;
}

/** Sockets this process has open, by the kernel's name ("socket:[inode]"). */
function openSockets(): Set<string> {
  const out = new Set<string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`);
      if (target.startsWith("socket:")) out.add(target);
    } catch { /* closed while listing */ }
  }
  return out;
}

/** Live (not zombie) children of this process. */
function liveChildren(): Set<number> {
  const out = new Set<number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1");
      const after = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (after[0] !== "Z" && Number(after[1]) === process.pid) out.add(Number(entry));
    } catch { /* gone */ }
  }
  return out;
}

/** What was there before the test: what the leak check compares against. */
let before: { sockets: Set<string>; children: Set<number>; tmp: Set<string> } | null = null;

/** Registered before every test by test/setup.ts. */
export function snapshotResources(): void {
  before = { sockets: openSockets(), children: liveChildren(), tmp: new Set(fileTmp ? readdirSync(fileTmp) : []) };
}

/**
 * Run this test's cleanups, then fail it for anything it left behind: a
 * process it started (any process carrying its EINHORN_TEST_TAG, or a child
 * of this process) still alive, a socket this process opened still open, an
 * entry it made in the file's temp directory (test/setup.ts) or a tempDir()
 * still there. What is found is also removed (killed, closed), so one leaky
 * test does not fail the next. Registered for every test file by
 * test/setup.ts (bunfig preload): a hook registered here would only apply
 * to the first file that imports this module, since a module is evaluated
 * once per `bun test` process.
 */
export async function cleanupAndCheckLeaks(): Promise<void> {
  for (const fn of cleanups.splice(0).reverse()) {
    try { await fn(); } catch { /* keep cleaning */ }
  }
  const leaked: string[] = [];
  for (const tag of tagsInUse) {
    // A worker the master just signalled may take a moment to go.
    let pids = processesTagged(tag);
    const deadline = Date.now() + bound(3000);
    while (pids.length && Date.now() < deadline) { await sleep(50); pids = processesTagged(tag); }
    for (const pid of pids) {
      // Say what it was before it goes.
      leaked.push(processLine(pid));
      try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
    }
  }
  tagsInUse.clear();
  const was = before;
  before = null;
  const children: string[] = [];
  const sockets: string[] = [];
  const tmpEntries: string[] = [];
  if (was) {
    // A child or a socket being closed may take a moment (an exit to reap, a close to run on the event loop).
    const deadline = Date.now() + bound(1000);
    const newChildren = () => [...liveChildren()].filter((p) => !was.children.has(p));
    const newSockets = () => [...openSockets()].filter((s) => !was.sockets.has(s));
    while ((newChildren().length || newSockets().length) && Date.now() < deadline) await sleep(25);
    for (const pid of newChildren()) {
      children.push(processLine(pid));
      try { process.kill(pid, "SIGKILL"); } catch { /* gone */ }
    }
    sockets.push(...newSockets());
    if (fileTmp) {
      for (const name of readdirSync(fileTmp)) {
        if (was.tmp.has(name)) continue;
        tmpEntries.push(name);
        rmSync(join(fileTmp, name), { recursive: true, force: true });
      }
    }
  }
  expect(leaked, "processes left running by this test").toEqual([]);
  expect(children, "child processes of the test left running").toEqual([]);
  expect(sweepTempDirs(), "temp dirs left behind by this test").toEqual([]);
  expect(tmpEntries, "files left in the temp directory by this test").toEqual([]);
  expect(sockets, "sockets the test left open").toEqual([]);
}

/** Whether the tests run as root (second-uid, tmpfs and ownership cases need it). */
export const IS_ROOT = process.getuid?.() === 0;

export interface OtherUser { name: string; uid: number; gid: number; as: string[] }

/**
 * A second local user to act as (`as` prefixes a command with setpriv), made
 * with useradd once per test process and deleted by `removeOtherUser` (only
 * when this process made it). Idempotent: an existing user of that name is
 * reused. Null when not root (the caller skips, saying why).
 */
let otherUser: (OtherUser & { created: boolean }) | null = null;
export function ensureOtherUser(): OtherUser | null {
  if (!IS_ROOT) return null;
  if (otherUser) return otherUser;
  const name = `einhorn-t${process.pid}`.slice(0, 31);
  const id = () => Bun.spawnSync(["id", "-u", name], { stdout: "pipe", stderr: "ignore" });
  let created = false;
  if (id().exitCode !== 0) {
    const r = Bun.spawnSync(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], { stderr: "pipe" });
    if (r.exitCode !== 0 && id().exitCode !== 0) throw new Error(`useradd ${name} failed: ${r.stderr.toString()}`);
    created = r.exitCode === 0;
  }
  const uid = Number(id().stdout.toString().trim());
  const gid = Number(Bun.spawnSync(["id", "-g", name], { stdout: "pipe" }).stdout.toString().trim());
  otherUser = { name, uid, gid, as: ["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--clear-groups"], created };
  return otherUser;
}

/** A directory anyone may write to (no sticky bit: fs.protected_symlinks does not apply there). */
export function worldWritableDir(): string {
  const dir = tempDir();
  chmodSync(dir, 0o777);
  return dir;
}

/** Run a command to completion; throw with its stderr if it fails. */
export function run(cmd: string[]): void {
  const r = Bun.spawnSync(cmd, { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed: ${r.stderr.toString()}`);
}

export function removeOtherUser(): void {
  if (otherUser?.created) Bun.spawnSync(["userdel", otherUser.name], { stderr: "ignore" });
  otherUser = null;
}

/** A python3 that `user` may run (pyenv shims under /root are not), or null. */
export function pythonFor(user: OtherUser): string | null {
  for (const p of ["/usr/bin/python3", "/usr/local/bin/python3", Bun.which("python3")]) {
    if (!p) continue;
    if (Bun.spawnSync([...user.as, p, "-c", "pass"], { cwd: "/", stderr: "ignore" }).exitCode === 0) return p;
  }
  return null;
}

// Shared plumbing for the benchmarks: the binary under test, machine facts,
// statistics, a per-run scratch directory, tracked processes that are always
// cleaned up, and a small command-socket client.
//
// Every master a benchmark starts gets its own directory (command socket,
// pidfile, lockfile, log) and an environment tag (EHBENCH_TAG). The tag is
// deliberately not EINHORN_*: einhorn strips those from what workers inherit,
// and the tag must reach the workers so that leftovers can be found in /proc
// and killed even if a master had to be SIGKILLed.
import type { Subprocess } from "bun";
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { availableParallelism, cpus, release, tmpdir, totalmem } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { decodeLine, escapeLine } from "../src/protocol";

export const ROOT = resolve(import.meta.dir, "..");
export const BENCH_DIR = import.meta.dir;
export const WORKERS_DIR = join(BENCH_DIR, "workers");
/** The Bun running the benchmarks (node_modules/.bin/bun), also used for Bun workers. */
export const BUN = process.execPath;
/** The binary under test. */
export const BIN = resolve(process.env.EINHORN_BIN ?? join(ROOT, "dist", "einhorn"));

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// --- statistics -----------------------------------------------------------------

/** Quantile with linear interpolation between closest ranks (numpy's default). `sorted` ascending. */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  if (n === 1) return sorted[0]!;
  const pos = (n - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export function sortedCopy(xs: ArrayLike<number>): Float64Array {
  return Float64Array.from(xs as ArrayLike<number>).sort();
}

export function median(xs: ArrayLike<number>): number {
  return quantileSorted(sortedCopy(xs), 0.5);
}

export interface Distribution { n: number; min: number; p50: number; p90: number; p99: number; max: number; mean: number }

export function distribution(xs: ArrayLike<number>): Distribution {
  const s = sortedCopy(xs);
  let sum = 0;
  for (const x of s) sum += x;
  return {
    n: s.length,
    min: round(s[0] ?? NaN),
    p50: round(quantileSorted(s, 0.5)),
    p90: round(quantileSorted(s, 0.9)),
    p99: round(quantileSorted(s, 0.99)),
    max: round(s[s.length - 1] ?? NaN),
    mean: round(s.length ? sum / s.length : NaN),
  };
}

/** Round for JSON: 3 decimals is microseconds for a value in ms. */
export function round(x: number, digits = 3): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export const fmtMs = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : ms >= 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(2)} ms`);
export const fmtMB = (kb: number) => `${(kb / 1024).toFixed(1)} MB`;

// --- machine --------------------------------------------------------------------

function firstMatch(text: string, re: RegExp): string | null {
  const m = text.match(re);
  return m ? m[1]!.trim() : null;
}

function readText(path: string): string {
  try { return readFileSync(path, "utf8"); } catch { return ""; }
}

/** Runs a short command; its trimmed stdout, or null when it cannot run. */
export function capture(cmd: string[], timeoutMs = 5000): string | null {
  try {
    const r = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
    if (r.exitCode !== 0) return null;
    return r.stdout.toString().trim();
  } catch {
    return null;
  }
}

export function which(name: string): string | null {
  return Bun.which(name);
}

export interface MachineInfo {
  cpu_model: string | null;
  cores: number;
  cores_online: number;
  memory_total_mb: number;
  kernel: string;
  os: string | null;
  bun_version: string;
  einhorn_version: string | null;
  // The binary is named by what it is (version and content hash), never by
  // where it lay on the measuring machine: a local path in a committed result
  // file tells a reader nothing and differs on every machine.
  einhorn_binary_bytes: number | null;
  einhorn_binary_sha256: string | null;
  /** Free text from BENCH_BINARY_NOTE, e.g. which commit the binary was built from. */
  einhorn_binary_note: string | null;
  repo_commit: string | null;
  repo_dirty: boolean | null;
  load_average_at_start: number[];
  /** This session's scheduler group and its nice (/proc/self/autogroup): "nice -20" means the run was given priority over the rest of a shared machine. */
  autogroup: string | null;
}

let machineCache: MachineInfo | null = null;

export function machineInfo(): MachineInfo {
  if (machineCache) return { ...machineCache, load_average_at_start: loadAverage() };
  const cpuinfo = readText("/proc/cpuinfo");
  let binStat = null;
  try { binStat = statSync(BIN); } catch { /* reported as null */ }
  const status = capture(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"]);
  machineCache = {
    cpu_model: firstMatch(cpuinfo, /^model name\s*:\s*(.+)$/m) ?? cpus()[0]?.model ?? null,
    cores: availableParallelism(),
    cores_online: cpus().length,
    memory_total_mb: Math.round(totalmem() / 1024 / 1024),
    kernel: release(),
    os: firstMatch(readText("/etc/os-release"), /^PRETTY_NAME="?([^"\n]+)"?$/m),
    bun_version: Bun.version,
    einhorn_version: capture([BIN, "--version"])?.split("\n")[0] ?? null,
    einhorn_binary_bytes: binStat?.size ?? null,
    einhorn_binary_sha256: binStat ? sha256File(BIN) : null,
    einhorn_binary_note: process.env.BENCH_BINARY_NOTE ?? null,
    repo_commit: capture(["git", "-C", ROOT, "rev-parse", "HEAD"]),
    repo_dirty: status === null ? null : status.length > 0,
    load_average_at_start: loadAverage(),
    autogroup: readText("/proc/self/autogroup").trim() || null,
  };
  return machineCache;
}

function sha256File(path: string): string | null {
  try {
    return new Bun.CryptoHasher("sha256").update(readFileSync(path)).digest("hex");
  } catch {
    return null;
  }
}

function loadAverage(): number[] {
  return readText("/proc/loadavg").split(" ").slice(0, 3).map(Number);
}

/** The real python3 executable: a pyenv-style shim would add its own start-up time to every worker. */
export function realPython(): string {
  const py = which("python3");
  if (!py) throw new Error("python3 is not installed; the Python ACK worker needs it");
  return capture([py, "-c", "import sys; print(sys.executable)"]) ?? py;
}

// --- /proc ------------------------------------------------------------------------

export const CLK_TCK = Number(capture(["getconf", "CLK_TCK"]) ?? 100);

/** Fields of /proc/PID/status in kB (VmRSS, VmHWM, RssAnon, RssFile, ...). */
export function procStatusKb(pid: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of readFileSync(`/proc/${pid}/status`, "utf8").split("\n")) {
    const m = line.match(/^(\w+):\s+(\d+) kB$/);
    if (m) out[m[1]!] = Number(m[2]);
    const t = line.match(/^Threads:\s+(\d+)$/);
    if (t) out.Threads = Number(t[1]);
  }
  return out;
}

/** utime + stime of a process (all its threads, living and dead), in ms. */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // The command name may contain spaces and parentheses: fields start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return ((utime + stime) * 1000) / CLK_TCK;
}

/** Time on CPU of the live threads, from /proc/PID/task/TID/schedstat, in ms (nanosecond resolution). */
export function schedCpuMs(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try { ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]); } catch { /* thread gone */ }
  }
  return ns / 1e6;
}

/**
 * CPU time of the whole machine (busy jiffies from /proc/stat) and of this
 * runner with every child it has reaped (its own utime+stime+cutime+cstime;
 * masters reap their workers, so workers count too once their master has
 * been reaped). The difference over a benchmark is what other processes on
 * the machine used meanwhile: noise, on a shared machine.
 */
export function cpuAccounting(): { machineBusyMs: number; oursMs: number; wallMs: number } {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  const busy = cpu[0]! + cpu[1]! + cpu[2]! + cpu[5]! + cpu[6]! + cpu[7]!;
  const stat = readFileSync("/proc/self/stat", "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ours = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  return { machineBusyMs: (busy * 1000) / CLK_TCK, oursMs: (ours * 1000) / CLK_TCK, wallMs: performance.now() };
}

/** Share of the machine's CPU capacity (all cores) used by processes other than this run, between two readings. */
export function othersCpuShare(a: ReturnType<typeof cpuAccounting>, b: ReturnType<typeof cpuAccounting>): number {
  const others = Math.max(0, b.machineBusyMs - a.machineBusyMs - (b.oursMs - a.oursMs));
  return others / ((b.wallMs - a.wallMs) * availableParallelism());
}

function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** Live processes whose environment carries EHBENCH_TAG=tag. */
function processesTagged(tag: string): number[] {
  const needle = `\0EHBENCH_TAG=${tag}\0`;
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const env = readFileSync(`/proc/${entry}/environ`, "latin1");
      if (`\0${env}\0`.includes(needle) && isAlive(Number(entry))) found.push(Number(entry));
    } catch { /* gone, or not ours */ }
  }
  return found;
}

/** Limits that bound how many workers can run at once. */
export function processLimits(): { ulimit_u: number | "unlimited" | null; pid_max: number | null; threads_max: number | null; processes_now: number } {
  const u = capture(["sh", "-c", "ulimit -u"]);
  const num = (p: string) => { const t = readText(p).trim(); return t ? Number(t) : null; };
  return {
    ulimit_u: u === null ? null : u === "unlimited" ? "unlimited" : Number(u),
    pid_max: num("/proc/sys/kernel/pid_max"),
    threads_max: num("/proc/sys/kernel/threads-max"),
    processes_now: readdirSync("/proc").filter((e) => /^\d+$/.test(e)).length,
  };
}

// --- scratch space and process tracking ----------------------------------------

let scratchRoot: string | null = null;
let dirCounter = 0;

/** A fresh directory under this run's scratch root (removed at the end of the run). */
export function scratchDir(label: string): string {
  scratchRoot ??= mkdtempSync(join(tmpdir(), "einhorn-bench-"));
  const dir = join(scratchRoot, `${String(++dirCounter).padStart(3, "0")}-${label.replace(/[^\w.-]+/g, "_")}`);
  mkdirSync(dir, { recursive: true });
  return dir;
}

export function removeScratch(): void {
  if (scratchRoot) rmSync(scratchRoot, { recursive: true, force: true });
  scratchRoot = null;
}

const RUN_TAG = `b${process.pid}-${Date.now().toString(36)}`;
let tagCounter = 0;

interface Tracked { proc: Subprocess; tag: string; label: string }
const tracked = new Set<Tracked>();

/** Notes about cleanup trouble (leftover processes, masters that ignored SIGTERM), for the results. */
export const cleanupNotes: string[] = [];

export interface Spawned {
  proc: Subprocess;
  pid: number;
  tag: string;
  logPath: string;
  log(): string;
  /** Stop it and everything carrying its tag; see stopProcess. */
  stop(graceMs?: number): Promise<StopReport>;
}

export interface StopReport { exitCode: number | null; signalled: "none" | "SIGTERM" | "SIGKILL"; leftovers: number; ms: number }

/**
 * Start a process with stdout+stderr going to a log file (never a pipe: a
 * master with a thousand workers writes more than a pipe holds), stdin closed,
 * a fresh tag in its environment, and tracking until it is stopped.
 */
export function spawnTracked(cmd: string[], opts: { dir: string; label: string; env?: Record<string, string>; cwd?: string }): Spawned {
  const tag = `${RUN_TAG}-${++tagCounter}`;
  const logPath = join(opts.dir, `${opts.label.replace(/[^\w.-]+/g, "_")}.log`);
  const fd = openSync(logPath, "a");
  let proc: Subprocess;
  try {
    proc = Bun.spawn(cmd, {
      cwd: opts.cwd ?? opts.dir,
      env: { ...process.env, TMPDIR: opts.dir, ...opts.env, EHBENCH_TAG: tag },
      stdin: "ignore",
      stdout: fd,
      stderr: fd,
    });
  } finally {
    closeSync(fd);
  }
  const t: Tracked = { proc, tag, label: opts.label };
  tracked.add(t);
  return {
    proc,
    pid: proc.pid,
    tag,
    logPath,
    log: () => readText(logPath),
    stop: async (graceMs = 5000) => {
      const r = await stopProcess(t, graceMs);
      tracked.delete(t);
      return r;
    },
  };
}

/**
 * SIGTERM, wait up to graceMs for the exit, then SIGKILL; afterwards SIGKILL
 * anything still carrying the tag (workers of a master that died hard).
 */
async function stopProcess(t: Tracked, graceMs: number): Promise<StopReport> {
  const started = performance.now();
  let signalled: StopReport["signalled"] = "none";
  if (t.proc.exitCode === null && t.proc.signalCode === null) {
    signalled = "SIGTERM";
    t.proc.kill("SIGTERM");
    const done = await Promise.race([t.proc.exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!done) {
      signalled = "SIGKILL";
      cleanupNotes.push(`${t.label} (pid ${t.proc.pid}) was still running ${graceMs} ms after SIGTERM; sent SIGKILL`);
      t.proc.kill("SIGKILL");
      await Promise.race([t.proc.exited, sleep(2000)]);
    }
  }
  // Workers get TERM from their master and may need a moment to go.
  let left = processesTagged(t.tag);
  const deadline = Date.now() + 2000;
  while (left.length && Date.now() < deadline) { await sleep(50); left = processesTagged(t.tag); }
  if (left.length) {
    cleanupNotes.push(`${t.label}: ${left.length} process(es) carrying its tag were still alive after it exited; sent SIGKILL`);
    for (const pid of left) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  }
  return { exitCode: t.proc.exitCode, signalled, leftovers: left.length, ms: round(performance.now() - started) };
}

/** Stop every tracked process (end of a benchmark, failure, or Ctrl-C). */
export async function stopAll(): Promise<void> {
  await Promise.all([...tracked].map(async (t) => {
    try { await stopProcess(t, 3000); } finally { tracked.delete(t); }
  }));
}

/** Last-resort synchronous cleanup (process exit): SIGKILL everything tracked and tagged. */
export function killAllNow(): void {
  for (const t of tracked) {
    try { t.proc.kill("SIGKILL"); } catch { /* gone */ }
    for (const pid of processesTagged(t.tag)) { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } }
  }
  tracked.clear();
}

// --- the master ---------------------------------------------------------------------

export interface MasterHandle extends Spawned {
  dir: string;
  sockPath: string;
  /** Date.now() just before the process was spawned (same clock as the master's timestamps). */
  spawnedAtMs: number;
  /** performance.now() just before the process was spawned. */
  spawnedAtPerf: number;
}

/**
 * Start the binary under test: `BIN -d SOCK -e PIDFILE -f LOCKFILE ARGS -- PROGRAM`.
 * All three paths are explicit so any Einhorn-compatible implementation keeps
 * its files in the run's directory. `opts.bin` replaces BIN by another
 * master's command (e.g. `ruby .../bin/einhorn` for the anchor, side by side).
 */
export function startMaster(args: string[], program: string[], opts: { label: string; env?: Record<string, string>; dir?: string; bin?: string[] }): MasterHandle {
  const dir = opts.dir ?? scratchDir(opts.label);
  const sockPath = join(dir, "einhorn.sock");
  const cmd = [...(opts.bin ?? [BIN]), "-d", sockPath, "-e", join(dir, "einhorn.pid"), "-f", join(dir, "einhorn.lock"), ...args, "--", ...program];
  const spawnedAtMs = Date.now();
  const spawnedAtPerf = performance.now();
  const s = spawnTracked(cmd, { dir, label: `master-${opts.label}`, env: opts.env });
  return { ...s, dir, sockPath, spawnedAtMs, spawnedAtPerf };
}

/** The master exited before it should have: an error carrying its log tail. */
function masterDied(m: MasterHandle, what: string): Error {
  const tail = m.log().split("\n").slice(-15).join("\n");
  return new Error(`the master (pid ${m.pid}) exited with ${m.proc.exitCode ?? m.proc.signalCode} while ${what}; log tail:\n${tail}`);
}

// --- command socket -----------------------------------------------------------------

export type Answer = Record<string, unknown>;

/** One request line as any Einhorn client writes it: JSON (valid YAML), `%`/newline escaped. */
export function requestLine(command: string, args: string[] = [], id: unknown = 1): string {
  return `${escapeLine(JSON.stringify({ command, args, id }))}\n`;
}

/** A connection to the command socket that can carry many requests, one after another. */
export class CommandConnection {
  private buf = "";
  private readonly dec = new TextDecoder();
  private waiter: ((line: string) => void) | null = null;
  private failer: ((e: Error) => void) | null = null;
  private lines: string[] = [];
  private closedWith: Error | null = null;

  private constructor(private socket: Awaited<ReturnType<typeof Bun.connect>>) {}

  static async open(path: string): Promise<CommandConnection> {
    let self!: CommandConnection;
    const socket = await Bun.connect({
      unix: path,
      socket: {
        data: (_s, d) => self.onData(d),
        close: () => self.onClose(new Error("the master closed the command connection")),
        error: (_s, e) => self.onClose(e),
        end: () => self.onClose(new Error("the master ended the command connection")),
      },
    });
    self = new CommandConnection(socket);
    return self;
  }

  private onData(d: Uint8Array): void {
    this.buf += this.dec.decode(d, { stream: true });
    let nl: number;
    while ((nl = this.buf.indexOf("\n")) >= 0) {
      this.lines.push(this.buf.slice(0, nl));
      this.buf = this.buf.slice(nl + 1);
    }
    if (this.waiter && this.lines.length) {
      const w = this.waiter;
      this.waiter = this.failer = null;
      w(this.lines.shift()!);
    }
  }

  private onClose(e: Error): void {
    this.closedWith ??= e;
    if (this.failer) {
      const f = this.failer;
      this.waiter = this.failer = null;
      f(e);
    }
  }

  /** The next answer line, undecoded. */
  nextLine(timeoutMs = 10_000): Promise<string> {
    if (this.lines.length) return Promise.resolve(this.lines.shift()!);
    if (this.closedWith) return Promise.reject(this.closedWith);
    return new Promise((res, rej) => {
      const t = setTimeout(() => { this.waiter = this.failer = null; rej(new Error(`no answer within ${timeoutMs} ms`)); }, timeoutMs);
      this.waiter = (l) => { clearTimeout(t); res(l); };
      this.failer = (e) => { clearTimeout(t); rej(e); };
    });
  }

  /** Write a pre-encoded request line and wait for the first answer line (raw). For timing. */
  async rawRoundtrip(line: string, timeoutMs = 10_000): Promise<string> {
    this.socket.write(line);
    return this.nextLine(timeoutMs);
  }

  /** A request; collects decoded answers until one without `wait: true`. */
  async request(command: string, args: string[] = [], timeoutMs = 10_000): Promise<Answer[]> {
    this.socket.write(requestLine(command, args));
    const answers: Answer[] = [];
    for (;;) {
      const a = decodeLine(await this.nextLine(timeoutMs)) as Answer;
      answers.push(a);
      if (!a || a.wait !== true) return answers;
    }
  }

  close(): void {
    this.socket.end();
  }
}

/** One request on a fresh connection. */
async function command(path: string, cmd: string, args: string[] = [], timeoutMs = 10_000): Promise<Answer[]> {
  const c = await CommandConnection.open(path);
  try {
    return await c.request(cmd, args, timeoutMs);
  } finally {
    c.close();
  }
}

export async function ask(path: string, cmd: string, args: string[] = [], timeoutMs = 10_000): Promise<string> {
  const answers = await command(path, cmd, args, timeoutMs);
  return String(answers[answers.length - 1]?.message ?? "");
}

/** What the benchmarks need from `state`: workers with pid, ack and spawn times (ms since the epoch). */
export interface WorkerView { pid: number; acked: boolean; ackedAtMs: number | null; spawnedAtMs: number | null; retiring: boolean }
export interface StateView { startedAtMs: number | null; workers: WorkerView[]; exitsTotal: number | null; listenPorts: number[]; raw: unknown }

const ms = (iso: unknown): number | null => (typeof iso === "string" ? Date.parse(iso) : null);

/**
 * Read the master's state. `state json` (this implementation's stable schema,
 * einhorn.state/1) first; any other Einhorn-compatible master is read from its
 * YAML `state` dump as far as it can be (children keyed by pid with an
 * `acked` flag, as Einhorn 1.1.1 writes them; Ruby symbol keys start with ':').
 */
export async function readState(path: string, timeoutMs = 10_000): Promise<StateView> {
  const text = await ask(path, "state", ["json"], timeoutMs);
  let doc: any = null;
  try { doc = JSON.parse(text); } catch { /* not our schema */ }
  if (doc && Array.isArray(doc.workers)) {
    const exits = doc.exits ? Object.values(doc.exits as Record<string, { total: number }>).reduce((a, e) => a + e.total, 0) : null;
    return {
      startedAtMs: ms(doc.master?.started_at),
      workers: doc.workers.map((w: any) => ({ pid: w.pid, acked: !!w.acked, ackedAtMs: ms(w.acked_at), spawnedAtMs: ms(w.spawned_at), retiring: !!w.retiring })),
      exitsTotal: exits,
      listenPorts: Array.isArray(doc.listeners) ? doc.listeners.map((l: any) => l.port).filter((p: unknown) => typeof p === "number") : [],
      raw: doc,
    };
  }
  return fromYamlState(text);
}

function fromYamlState(text: string): StateView {
  let doc: any;
  try {
    // Ruby's dump carries tags (!ruby/object:Set); read them as plain data.
    doc = parseYaml(text, { logLevel: "silent", strict: false, uniqueKeys: false });
  } catch (e) {
    throw new Error(`cannot read the master's state answer: ${(e as Error).message}`);
  }
  const get = (o: any, k: string) => (o && typeof o === "object" ? (o[k] ?? o[`:${k}`]) : undefined);
  const state = get(doc, "state") ?? doc;
  const children = get(state, "children") ?? {};
  const workers: WorkerView[] = [];
  for (const [pid, c] of Object.entries(children as Record<string, any>)) {
    const type = String(get(c, "type") ?? "worker").replace(/^:/, "");
    if (type !== "worker") continue;
    const spawned = get(c, "spawned_at");
    workers.push({ pid: Number(pid), acked: !!get(c, "acked"), ackedAtMs: null, spawnedAtMs: typeof spawned === "number" ? spawned * 1000 : null, retiring: !!get(c, "signaled")?.hash && Object.keys(get(c, "signaled").hash).length > 0 });
  }
  return { startedAtMs: null, workers, exitsTotal: null, listenPorts: [], raw: doc };
}

export const ackedCount = (s: StateView) => s.workers.filter((w) => w.acked && !w.retiring).length;

/**
 * Poll `state` until `pred` holds; returns the state and the wall time
 * (Date.now()) of the poll that saw it. Connection errors (the master not
 * listening yet) are retried; a master that exits is an error.
 */
export async function pollState(m: MasterHandle, pred: (s: StateView) => boolean, what: string, opts: { timeoutMs?: number; everyMs?: number } = {}): Promise<{ state: StateView; seenAtMs: number; polls: number }> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30_000);
  let polls = 0;
  let last: unknown = null;
  for (;;) {
    if (m.proc.exitCode !== null || m.proc.signalCode !== null) throw masterDied(m, `waiting for ${what}`);
    try {
      polls++;
      const state = await readState(m.sockPath, 10_000);
      const seenAtMs = Date.now();
      if (pred(state)) return { state, seenAtMs, polls };
      last = `${state.workers.length} workers, ${ackedCount(state)} acked`;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${opts.timeoutMs ?? 30_000} ms waiting for ${what} (last: ${last instanceof Error ? last.message : last})`);
    await sleep(opts.everyMs ?? 5);
  }
}

/** Wait until n workers are acked (and none retiring beyond them). */
export function waitForAcked(m: MasterHandle, n: number, opts: { timeoutMs?: number; everyMs?: number } = {}) {
  return pollState(m, (s) => ackedCount(s) >= n, `${n} acked workers`, opts);
}

// --- results ------------------------------------------------------------------------

/** One line of the summary table. */
export interface SummaryRow {
  measure: string;
  /** The headline figure (a median). */
  value: string;
  /** Spread, percentiles or sample counts. */
  detail?: string;
  /** Target, reference implementation or side-by-side comparison. */
  reference?: string;
}

export interface BenchContext {
  quick: boolean;
  /** Runs per measurement (each figure is the median over this many). */
  runs: number;
  log(message: string): void;
  /** Record something suspicious or notable; it lands in the JSON and the summary. */
  note(message: string): void;
}

export interface BenchOutput {
  parameters: Record<string, unknown>;
  samples: unknown;
  results: Record<string, unknown>;
  summary: SummaryRow[];
}

export interface Benchmark {
  name: string;
  /** What it measures, one sentence (README and results). */
  description: string;
  /** Default runs per measurement (full / quick). */
  runs: { full: number; quick: number };
  run(ctx: BenchContext): Promise<BenchOutput>;
}

export function ensureDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

// What `status` answers: the pool at a glance. `status json` is the data
// (schema einhorn.status/1, fields only ever added); `status` renders it as a
// table that fits 100 columns. `state` stays the full dump (state-report.ts).
import { formatSockAddr } from "../../ffi/sockaddr";
import { isAcked, isRetiring } from "../core/pool";
import { RETIRE_REASONS, type RetireReason, type State } from "../core/state";
import { specDigest } from "../core/generation";
import type { Listener } from "./listeners";
import { CpuMeter, formatBytes, formatDuration, readProc, uptimeSeconds } from "./proc-stats";
import { type SignalName, shortSignalName } from "../signal-names";

const STATUS_SCHEMA = "einhorn.status/1";
/** The table never gets wider than this. */
export const STATUS_WIDTH = 100;

export type WorkerStatusName = "starting" | "up" | "retiring";

export interface LastExit { code: number | null; signal: SignalName | null; at: string | null; ago_seconds: number | null }

export interface WorkerStatus {
  pid: number;
  index: number;
  version: number;
  state: WorkerStatusName;
  uptime_seconds: number;
  /** Percent of one core since the previous `status` (or over the worker's life at the first); null if unreadable. */
  cpu_percent: number | null;
  rss_bytes: number | null;
  /**
   * Unasked exits (crashes, exits on their own) of workers that held this
   * index before. An index is the lowest free one when a worker starts
   * (Einhorn's rule), so a crash's replacement may take another index:
   * `recent_exits` keeps every exit in view whatever index follows it.
   */
  restarts: number;
  /** Exits at this index that einhorn asked for (upgrade, dec, --max-memory, stop, signal). */
  retirements: number;
  last_exit: LastExit | null;
}

export interface RecentExit {
  at: string;
  ago_seconds: number;
  pid: number;
  index: number;
  generation: number;
  code: number | null;
  signal: SignalName | null;
  /** Einhorn asked it to leave (then `reason` says why); false: a crash or an exit on its own. */
  asked: boolean;
  reason: RetireReason | null;
  acked: boolean;
  /** Found gone without an exit status. */
  vanished: boolean;
}

export interface StatusData {
  schema: typeof STATUS_SCHEMA;
  master: {
    pid: number;
    einhorn_version: string;
    command_name: string | null;
    started_at: string;
    uptime_seconds: number;
    rss_bytes: number | null;
    cpu_percent: number | null;
    command_socket: string;
    sockets: string[];
    /** Generation new workers are started as. */
    version: number;
    workers_wanted: number;
    workers_up: number;
    upgrade: { mode: string; from_version: number; to_version: number; elapsed_seconds: number; new_up: number; waiting_for_ack: number[] } | null;
    stopping: { signal: SignalName; elapsed_seconds: number } | null;
    bake: { version: number; previous_version: number; remaining_seconds: number; unasked_exits: number; limit: number } | null;
    /** Worker exits since the master first started: unasked ones, and asked ones by reason. */
    exits: { unasked: number; asked: Record<RetireReason, number> };
  };
  /** Each generation still needed: its spec's digest and program, and whether new workers start as it. */
  generations: Array<{ version: number; live: boolean; digest: string; program: string[]; retire_signal: SignalName; rollback_of: number | null; workers: number }>;
  workers: WorkerStatus[];
  /** The last worker exits the master keeps (RECENT_EXITS), newest first. */
  recent_exits: RecentExit[];
}

/** How many recent exits the `status` table shows (`status json` has all the master keeps). */
export const RECENT_EXITS_SHOWN = 10;

export interface StatusRuntime {
  masterPid: number;
  einhornVersion: string;
  commandName: string | null;
  socketPath: string;
  listeners: Listener[];
}

/** Per-process readings: CPU % and RSS, or null when the process could not be read. */
export type Readings = Map<number, { cpuPercent: number; rssBytes: number } | null>;

const round1 = (x: number) => Math.round(x * 10) / 10;

/** The status data from the state and readings; pure (`now` in ms since the epoch). */
export function buildStatus(s: State, rt: StatusRuntime, readings: Readings, now: number): StatusData {
  const secs = (t: number) => round1(Math.max(0, (now - t) / 1000));
  const workers = [...s.workers].sort((a, b) => a.index - b.index || a.spawnedAt - b.spawnedAt).map((w): WorkerStatus => {
    const ex = s.exits[String(w.index)];
    const r = readings.get(w.pid) ?? null;
    return {
      pid: w.pid,
      index: w.index,
      version: w.version,
      state: isRetiring(w) ? "retiring" : isAcked(w) ? "up" : "starting",
      uptime_seconds: secs(w.spawnedAt),
      cpu_percent: r ? round1(r.cpuPercent) : null,
      rss_bytes: r ? r.rssBytes : null,
      restarts: ex?.unasked ?? 0,
      retirements: ex ? ex.total - ex.unasked : 0,
      last_exit: ex && ex.lastAt !== null
        ? { code: ex.lastCode, signal: ex.lastSignal, at: new Date(ex.lastAt).toISOString(), ago_seconds: secs(ex.lastAt) }
        : null,
    };
  });
  const m = readings.get(rt.masterPid) ?? null;
  const current = s.workers.filter((w) => w.version === s.version);
  return {
    schema: STATUS_SCHEMA,
    master: {
      pid: rt.masterPid,
      einhorn_version: rt.einhornVersion,
      command_name: rt.commandName,
      started_at: new Date(s.startedAt).toISOString(),
      uptime_seconds: secs(s.startedAt),
      rss_bytes: m ? m.rssBytes : null,
      cpu_percent: m ? round1(m.cpuPercent) : null,
      command_socket: rt.socketPath,
      sockets: rt.listeners.map((l) => formatSockAddr(l.bound)),
      version: s.version,
      workers_wanted: s.settings.number,
      workers_up: s.workers.filter((w) => isAcked(w) && !isRetiring(w)).length,
      upgrade: s.upgrade
        ? {
          mode: s.upgrade.mode,
          from_version: s.upgrade.fromVersion,
          to_version: s.version,
          elapsed_seconds: secs(s.upgrade.startedAt),
          new_up: current.filter((w) => isAcked(w) && !isRetiring(w)).length,
          waiting_for_ack: current.filter((w) => !isAcked(w) && !isRetiring(w)).map((w) => w.pid),
        }
        : null,
      stopping: s.stopping ? { signal: s.stopping.signal, elapsed_seconds: secs(s.stopping.since) } : null,
      bake: s.bake
        ? { version: s.bake.version, previous_version: s.bake.previous, remaining_seconds: round1(Math.max(0, (s.bake.until - now) / 1000)), unasked_exits: s.bake.deaths, limit: s.settings.upgradeMaxDeaths }
        : null,
      exits: { unasked: s.exitTotals.unasked, asked: { ...s.exitTotals.asked } },
    },
    generations: Object.values(s.generations).sort((a, b) => a.version - b.version).map((g) => ({
      version: g.version,
      live: g.version === s.version,
      digest: specDigest(g.spec),
      program: g.spec.preload ? ["-p", g.spec.preload, ...g.spec.program] : g.spec.program,
      retire_signal: g.spec.retireSignal,
      rollback_of: g.rollbackOf ?? null,
      workers: s.workers.filter((w) => w.version === g.version).length,
    })),
    workers,
    recent_exits: [...s.recentExits].reverse().map((r) => ({
      at: new Date(r.at).toISOString(), ago_seconds: secs(r.at), pid: r.pid, index: r.index, generation: r.version,
      code: r.code, signal: r.signal, asked: r.asked !== null, reason: r.asked, acked: r.acked, vanished: r.vanished ?? false,
    })),
  };
}

function describeRecent(r: RecentExit): string {
  const how = r.vanished ? "gone (no status)" : r.signal ? `killed by ${shortSignalName(r.signal)}` : r.code === null ? "killed by an unnamed signal" : `exited ${r.code}`;
  const why = r.asked ? `asked (${r.reason === "max_memory" ? "max-memory" : r.reason})` : `UNASKED${r.acked ? "" : ", before its ACK"}`;
  return `  ${r.at}  pid ${r.pid}  index ${r.index}  generation ${r.generation}  ${how}  ${why}`;
}

function describeExit(e: LastExit): string {
  const how = e.signal ? shortSignalName(e.signal) : e.code === null ? "an unnamed signal" : `code ${e.code}`;
  return e.ago_seconds === null ? how : `${how}, ${formatDuration(e.ago_seconds)} ago`;
}

/** Cut `text` to `width` columns, marking the cut. */
function fit(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, width - 3)}...`;
}

/**
 * Words joined by ", " onto lines no wider than STATUS_WIDTH, the first
 * starting with `lead` and the others indented to line up under it.
 */
function wrapList(lead: string, words: string[]): string[] {
  const lines: string[] = [];
  const indent = " ".repeat(lead.length);
  let line = lead;
  words.forEach((w0, i) => {
    const w = fit(w0, STATUS_WIDTH - lead.length - 1) + (i < words.length - 1 ? "," : "");
    const sep = line === lead || line === indent ? "" : " ";
    if (sep && line.length + 1 + w.length > STATUS_WIDTH) {
      lines.push(line);
      line = indent + w;
    } else {
      line += sep + w;
    }
  });
  lines.push(line);
  return lines;
}

const COLUMNS = [
  { head: "PID", width: 8, right: true },
  { head: "IDX", width: 4, right: true },
  { head: "VER", width: 4, right: true },
  { head: "STATE", width: 8, right: false },
  { head: "UPTIME", width: 7, right: true },
  { head: "CPU%", width: 6, right: true },
  { head: "RSS", width: 7, right: true },
  { head: "RESTARTS", width: 8, right: true },
  // What is left of 100 columns: 8 separating spaces and the columns above.
  { head: "LAST EXIT", width: 100 - 8 - (8 + 4 + 4 + 8 + 7 + 6 + 7 + 8), right: false },
] as const;

function row(cells: string[]): string {
  return cells.map((c, i) => {
    const col = COLUMNS[i]!;
    const t = fit(c, col.width);
    return col.right ? t.padStart(col.width) : t.padEnd(col.width);
  }).join(" ").trimEnd();
}

/** The `status` table: header lines about the master, then one row per worker. Every line fits STATUS_WIDTH. */
export function renderStatus(d: StatusData): string {
  const m = d.master;
  const name = m.command_name ? ` (${m.command_name})` : "";
  const lines = [
    fit(`einhorn ${m.einhorn_version}${name}: master ${m.pid}, up ${formatDuration(m.uptime_seconds)}, `
      + `RSS ${m.rss_bytes === null ? "?" : formatBytes(m.rss_bytes)}, CPU ${m.cpu_percent === null ? "?" : `${m.cpu_percent.toFixed(1)}%`}, `
      + `workers ${m.workers_up}/${m.workers_wanted} up, version ${m.version}`, STATUS_WIDTH),
    ...wrapList("sockets: ", m.sockets.length ? m.sockets : ["(none)"]),
    fit(`command socket: ${m.command_socket}`, STATUS_WIDTH),
  ];
  if (m.upgrade) {
    const u = m.upgrade;
    const waiting = u.waiting_for_ack.length ? `; waiting for ACKs from ${u.waiting_for_ack.join(", ")}` : "";
    lines.push(fit(`upgrade: ${u.mode}, version ${u.from_version} -> ${u.to_version}, ${u.new_up}/${m.workers_wanted} new up, `
      + `running ${formatDuration(u.elapsed_seconds)}${waiting}`, STATUS_WIDTH));
  }
  if (m.bake) {
    const b = m.bake;
    lines.push(fit(`bake: version ${b.version}, ${formatDuration(b.remaining_seconds)} left, ${b.unasked_exits}/${b.limit} unasked exits (more roll back to version ${b.previous_version})`, STATUS_WIDTH));
  }
  if (m.stopping) lines.push(fit(`stopping: sent ${m.stopping.signal} ${formatDuration(m.stopping.elapsed_seconds)} ago`, STATUS_WIDTH));
  for (const g of d.generations) {
    const tag = g.live ? "live" : g.workers ? "retiring" : "kept";
    const of = g.rollback_of !== null ? `, rollback to ${g.rollback_of}` : "";
    lines.push(fit(`generation ${g.version} (${tag}${of}): spec ${g.digest}, ${g.workers} worker${g.workers === 1 ? "" : "s"}, ${shortSignalName(g.retire_signal)} to retire: ${g.program.join(" ")}`, STATUS_WIDTH));
  }
  const asked = RETIRE_REASONS.filter((k) => m.exits.asked[k] > 0).map((k) => `${m.exits.asked[k]} ${k === "max_memory" ? "max-memory" : k}`);
  lines.push(fit(`exits: ${m.exits.unasked} unasked (the restarts); ${asked.length ? `asked: ${asked.join(", ")}` : "none asked"}`, STATUS_WIDTH));
  lines.push("");
  lines.push(row(COLUMNS.map((c) => c.head)));
  for (const w of d.workers) {
    lines.push(row([
      String(w.pid), String(w.index), String(w.version), w.state, formatDuration(w.uptime_seconds),
      w.cpu_percent === null ? "?" : w.cpu_percent.toFixed(1), w.rss_bytes === null ? "?" : formatBytes(w.rss_bytes),
      String(w.restarts), w.last_exit ? describeExit(w.last_exit) : "-",
    ]));
  }
  if (d.workers.length === 0) lines.push("(no workers)");
  if (d.recent_exits.length) {
    const shown = d.recent_exits.slice(0, RECENT_EXITS_SHOWN);
    lines.push("", `recent exits, newest first (${shown.length} of the last ${d.recent_exits.length}; all in 'status json'):`);
    for (const r of shown) lines.push(fit(describeRecent(r), STATUS_WIDTH));
  }
  return lines.join("\n");
}

/** Reads /proc for the master and every worker; keeps the CPU meter between calls. */
export class StatusCollector {
  private readonly cpu = new CpuMeter();

  readings(pids: number[]): Readings {
    const now = uptimeSeconds();
    const out: Readings = new Map();
    for (const pid of pids) {
      const s = readProc(pid);
      out.set(pid, s ? { cpuPercent: this.cpu.percent(pid, s, now), rssBytes: s.rssBytes } : null);
    }
    this.cpu.forget(new Set(pids));
    return out;
  }

  collect(s: State, rt: StatusRuntime, now: number): StatusData {
    return buildStatus(s, rt, this.readings([rt.masterPid, ...s.workers.map((w) => w.pid)]), now);
  }
}

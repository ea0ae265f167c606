// The master's counters and what /metrics and /healthz answer. Counters are
// derived from the core's steps (observe: the event, the state before and
// after, the effects), so the decision core stays free of bookkeeping for
// monitoring; they cross the master's re-exec in the handoff (toJSON/restore)
// so a scrape after an upgrade continues the same series.
import { isAcked, isRetiring } from "../core/pool";
import { exitThisStep, RETIRE_REASONS, type State } from "../core/state";
import type { SignalName } from "../signal-names";
import type { Effect, Event } from "../core/step";

/** ACK latency buckets, seconds (upper bounds; +Inf is implied). */
const ACK_BUCKETS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
/** Upgrade duration buckets, seconds. */
const UPGRADE_BUCKETS = [0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900];

/** 2: exits keyed by cause, signal and code (1: by cause alone). */
const METRICS_SCHEMA = 2;

export class Histogram {
  counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: number[]) {
    this.counts = buckets.map(() => 0);
  }
  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]!++;
  }
  toJSON() {
    return { buckets: this.buckets, counts: this.counts, sum: this.sum, count: this.count };
  }
  restore(j: { buckets?: number[]; counts?: number[]; sum?: number; count?: number } | undefined): void {
    // Only a document with the same buckets can be continued.
    if (!j || JSON.stringify(j.buckets) !== JSON.stringify(this.buckets) || j.counts?.length !== this.buckets.length) return;
    this.counts = [...j.counts];
    this.sum = j.sum ?? 0;
    this.count = j.count ?? 0;
  }
}

export type SpawnCause = "initial" | "respawn" | "upgrade" | "max_memory";
export type ExitCause = "retired" | "died_before_ack" | "died";

/**
 * The key of einhorn_worker_exits_total's series: cause, signal, code. The
 * label values are bounded: three causes, the signal names Linux has (or
 * "none" for an exit with a status), the statuses 0-255 (or "none" when a
 * signal killed it), and "unknown" for a worker found gone without a status
 * or counted by an einhorn that did not record how.
 */
export function exitKey(cause: ExitCause, signal: SignalName | null | "unknown", code: number | null | "unknown"): string {
  const sig = signal ?? (code === null ? "unnamed" : "none");
  return `${cause}\0${sig}\0${code === null ? "none" : String(code)}`;
}
/** rolled_back: the new generation came up, then failed its bake (--upgrade-bake) and was rolled back. */
export type UpgradeResult = "success" | "failure" | "rolled_back";

export interface MetricsDoc {
  schema: number;
  spawns: Record<string, number>;
  spawnFailures: number;
  exits: Record<string, number>;
  restarts: number;
  upgradesStarted: number;
  upgrades: Record<string, number>;
  lastUpgradeSeconds: number | null;
  maxMemoryReplacements: number;
  ack: ReturnType<Histogram["toJSON"]>;
  upgradeDuration: ReturnType<Histogram["toJSON"]>;
}

/** What the renderer needs beyond the counters, read at scrape time. */
export interface Live {
  state: State;
  einhornVersion: string;
  /** Master process: CPU seconds, RSS bytes, start time (unix seconds). */
  master: { cpuSeconds: number; rssBytes: number; startTimeSeconds: number } | null;
  reexecs: number;
  workerRss: Map<number, number>;
  /** CPU seconds (user and system) of each live worker, by pid. */
  workerCpu: Map<number, number>;
  /** The master's open descriptors and RLIMIT_NOFILE (soft), when readable. */
  fds: { open: number; max: number } | null;
  /** The master's virtual memory size, bytes, when readable. */
  virtualMemoryBytes: number | null;
  output: { captured: number; dropped: number } | null;
  /** Spawning a replacement because of --max-memory. */
  maxMemoryBytes: number | null;
}

export class Metrics {
  spawns: Record<string, number> = { initial: 0, respawn: 0, upgrade: 0, max_memory: 0 };
  spawnFailures = 0;
  /** By exitKey (cause, signal, code). */
  exits: Record<string, number> = {};
  restarts = 0;
  upgradesStarted = 0;
  upgrades: Record<string, number> = { success: 0, failure: 0, rolled_back: 0 };
  lastUpgradeSeconds: number | null = null;
  maxMemoryReplacements = 0;
  readonly ack = new Histogram(ACK_BUCKETS);
  readonly upgradeDuration = new Histogram(UPGRADE_BUCKETS);
  /** Account for one step of the core. */
  observe(e: Event, before: State, after: State, effects: Effect[], now: number): void {
    for (const fx of effects) {
      if (fx.type === "spawn") {
        const cause: SpawnCause = !before.started ? "initial" : after.upgrade || before.upgrade ? "upgrade" : after.replacement ? "max_memory" : "respawn";
        this.spawns[cause] = (this.spawns[cause] ?? 0) + 1;
      } else if (fx.type === "upgrade-finished") {
        const result: UpgradeResult = fx.rolledBack ? "rolled_back" : fx.ok ? "success" : "failure";
        this.upgrades[result] = (this.upgrades[result] ?? 0) + 1;
        if (fx.ok && before.upgrade && !before.upgrade.rollback) {
          const secs = (now - before.upgrade.startedAt) / 1000;
          this.lastUpgradeSeconds = secs;
          this.upgradeDuration.observe(secs);
        }
      }
    }
    // A baked upgrade's duration ends when its workers are up, not when its bake does.
    if (before.upgrade && !before.upgrade.rollback && !after.upgrade && !before.bake && after.bake) {
      const secs = (now - before.upgrade.startedAt) / 1000;
      this.lastUpgradeSeconds = secs;
      this.upgradeDuration.observe(secs);
    }
    if (e.type === "replace" && after.replacement && !before.replacement) this.maxMemoryReplacements++;
    // A rollout starts whichever event led to it (the core starts one when the re-executed master resumes).
    // (A rollback's rollout is counted as the rollback it is, in upgrades{result="rolled_back"}.)
    if (after.upgrade && !after.upgrade.rollback && (!before.upgrade || before.upgrade.startedAt !== after.upgrade.startedAt || before.version !== after.version)) this.upgradesStarted++;
    if (e.type === "spawn-failed") this.spawnFailures++;
    const exit = exitThisStep(before, after);
    if (exit) {
      const cause: ExitCause = exit.asked !== null ? "retired" : exit.acked ? "died" : "died_before_ack";
      const key = exit.vanished ? exitKey(cause, "unknown", "unknown") : exitKey(cause, exit.signal, exit.code);
      this.exits[key] = (this.exits[key] ?? 0) + 1;
      if (cause !== "retired") this.restarts++;
    }
    // ACKs: workers that were not ACKed before this step and are now.
    const wasUnacked = new Set(before.workers.filter((w) => w.ackedAt === null).map((w) => w.pid));
    if (wasUnacked.size) {
      for (const w of after.workers) {
        if (w.ackedAt !== null && wasUnacked.has(w.pid)) this.ack.observe(Math.max(0, (w.ackedAt - w.spawnedAt) / 1000));
      }
    }
  }

  toJSON(): MetricsDoc {
    return {
      schema: METRICS_SCHEMA,
      spawns: this.spawns,
      spawnFailures: this.spawnFailures,
      exits: this.exits,
      restarts: this.restarts,
      upgradesStarted: this.upgradesStarted,
      upgrades: this.upgrades,
      lastUpgradeSeconds: this.lastUpgradeSeconds,
      maxMemoryReplacements: this.maxMemoryReplacements,
      ack: this.ack.toJSON(),
      upgradeDuration: this.upgradeDuration.toJSON(),
    };
  }

  /** Continue the counters of the previous image (a newer schema is ignored: counters restart). */
  restore(d: Partial<MetricsDoc> | null | undefined): void {
    if (!d || typeof d !== "object" || (d.schema ?? 0) > METRICS_SCHEMA) return;
    Object.assign(this.spawns, d.spawns ?? {});
    this.spawnFailures = d.spawnFailures ?? 0;
    // Schema 1 counted exits by cause alone: how they ended is unknown.
    for (const [k, v] of Object.entries(d.exits ?? {})) {
      const key = (d.schema ?? 0) < 2 ? exitKey(k as ExitCause, "unknown", "unknown") : k;
      this.exits[key] = (this.exits[key] ?? 0) + v;
    }
    this.restarts = d.restarts ?? 0;
    this.upgradesStarted = d.upgradesStarted ?? 0;
    Object.assign(this.upgrades, d.upgrades ?? {});
    this.lastUpgradeSeconds = d.lastUpgradeSeconds ?? null;
    this.maxMemoryReplacements = d.maxMemoryReplacements ?? 0;
    this.ack.restore(d.ack);
    this.upgradeDuration.restore(d.upgradeDuration);
  }
}

const esc = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
const num = (v: number) => (Number.isFinite(v) ? String(v) : v > 0 ? "+Inf" : v < 0 ? "-Inf" : "NaN");

/** Prometheus text exposition format, version 0.0.4. */
export function renderMetrics(m: Metrics, live: Live): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string, samples: Array<[Record<string, string> | null, number]>) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, v] of samples) {
      const l = labels && Object.keys(labels).length ? `{${Object.entries(labels).map(([k, x]) => `${k}="${esc(x)}"`).join(",")}}` : "";
      out.push(`${name}${l} ${num(v)}`);
    }
  };
  const histogram = (name: string, help: string, h: Histogram) => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
    h.buckets.forEach((b, i) => out.push(`${name}_bucket{le="${num(b)}"} ${h.counts[i]}`));
    out.push(`${name}_bucket{le="+Inf"} ${h.count}`, `${name}_sum ${num(h.sum)}`, `${name}_count ${h.count}`);
  };
  const s = live.state;

  // Label names keep one meaning each: `version` is einhorn's release (here
  // only), `generation` a worker generation. No series is labelled with a
  // pid: pids change with every restart and upgrade, and each would be a new
  // series in Prometheus for ever (`status` has the pids). Per-worker series
  // are by index, which stays below the number of workers plus the surge.
  family("einhorn_build_info", "gauge", "Always 1; version: the einhorn release the master runs.", [[{ version: live.einhornVersion }, 1]]);
  // Workers by state and generation; every state appears for the current generation, so a dashboard always has the series.
  const byKey = new Map<string, number>();
  for (const st of ["starting", "up", "retiring"]) byKey.set(`${st}\0${s.version}`, 0);
  for (const w of s.workers) {
    const st = isRetiring(w) ? "retiring" : isAcked(w) ? "up" : "starting";
    const k = `${st}\0${w.version}`;
    byKey.set(k, (byKey.get(k) ?? 0) + 1);
  }
  family("einhorn_workers", "gauge", "Live workers by state (starting: not ACKed yet; up: ACKed; retiring: asked to leave) and generation.",
    [...byKey].map(([k, v]) => { const [state, generation] = k.split("\0"); return [{ state: state!, generation: generation! }, v]; }));
  family("einhorn_workers_wanted", "gauge", "Number of workers asked for (-n, inc, dec, set_workers).", [[null, s.settings.number]]);
  family("einhorn_generation", "gauge", "Generation new workers are started as.", [[null, s.version]]);
  family("einhorn_worker_spawns_total", "counter", "Workers started, by cause.", Object.entries(m.spawns).map(([cause, v]) => [{ cause }, v]));
  family("einhorn_worker_spawn_failures_total", "counter", "Workers that could not be started at all.", [[null, m.spawnFailures]]);
  family("einhorn_worker_exits_total", "counter", "Workers that exited, by cause (retired: asked to leave; died_before_ack; died: after its ACK), the signal that ended it (none: it exited) and its exit status (none: a signal ended it).",
    Object.entries(m.exits).map(([k, v]) => { const [cause, signal, code] = k.split("\0"); return [{ cause: cause!, signal: signal!, code: code! }, v]; }));
  family("einhorn_worker_retirements_total", "counter", "Exits einhorn asked for, by reason: upgrade (an upgrade, rollback or failed upgrade retiring a generation), dec, max_memory, stop, signal.",
    RETIRE_REASONS.map((reason) => [{ reason }, s.exitTotals.asked[reason] ?? 0]));
  family("einhorn_worker_restarts_total", "counter", "Workers replaced because they exited without being asked to.", [[null, m.restarts]]);
  histogram("einhorn_worker_ack_latency_seconds", "Time from a worker's start to its ACK.", m.ack);
  family("einhorn_upgrades_started_total", "counter", "Upgrades started (after the master's re-exec).", [[null, m.upgradesStarted]]);
  family("einhorn_upgrades_total", "counter", "Upgrades finished, by result.", Object.entries(m.upgrades).map(([result, v]) => [{ result }, v]));
  family("einhorn_upgrade_in_progress", "gauge", "1 while an upgrade rolls out.", [[null, s.upgrade ? 1 : 0]]);
  family("einhorn_upgrade_bake_in_progress", "gauge", "1 while an upgraded generation is baking (--upgrade-bake), its predecessor kept to roll back to.", [[null, s.bake ? 1 : 0]]);
  family("einhorn_rollbacks_total", "counter", "Upgrades rolled back after a bad bake (--upgrade-bake).", [[null, m.upgrades.rolled_back ?? 0]]);
  histogram("einhorn_upgrade_duration_seconds", "Duration of successful upgrades, from the rollout's start to the last new worker's ACK.", m.upgradeDuration);
  if (m.lastUpgradeSeconds !== null) family("einhorn_last_upgrade_duration_seconds", "gauge", "Duration of the last successful upgrade.", [[null, m.lastUpgradeSeconds]]);
  family("einhorn_master_reexecs_total", "counter", "Times the master re-executed itself (upgrade, reload).", [[null, live.reexecs]]);
  family("einhorn_max_memory_replacements_total", "counter", "Workers replaced for staying above --max-memory.", [[null, m.maxMemoryReplacements]]);
  if (live.maxMemoryBytes !== null) family("einhorn_max_memory_bytes", "gauge", "The --max-memory limit.", [[null, live.maxMemoryBytes]]);
  const perWorker = (readings: Map<number, number>) =>
    s.workers.filter((w) => readings.has(w.pid)).map((w): [Record<string, string>, number] => [{ index: String(w.index), generation: String(w.version) }, readings.get(w.pid)!]);
  family("einhorn_worker_resident_memory_bytes", "gauge", "Resident memory of each live worker, by index and generation.", perWorker(live.workerRss));
  family("einhorn_worker_cpu_seconds_total", "counter", "CPU time (user and system) of each live worker, by index and generation; starts over with each new worker at the index.", perWorker(live.workerCpu));
  if (live.output) {
    family("einhorn_worker_output_lines_total", "counter", "Lines of worker output captured (--worker-output).", [[null, live.output.captured]]);
    family("einhorn_worker_output_dropped_lines_total", "counter", "Captured lines dropped because the master's own output was not keeping up.", [[null, live.output.dropped]]);
  }
  if (live.master) {
    family("process_cpu_seconds_total", "counter", "CPU time of the master (user and system).", [[null, live.master.cpuSeconds]]);
    family("process_resident_memory_bytes", "gauge", "Resident memory of the master.", [[null, live.master.rssBytes]]);
    family("process_start_time_seconds", "gauge", "When the master process started, unix seconds.", [[null, live.master.startTimeSeconds]]);
  }
  if (live.virtualMemoryBytes !== null) family("process_virtual_memory_bytes", "gauge", "Virtual memory size of the master.", [[null, live.virtualMemoryBytes]]);
  if (live.fds) {
    family("process_open_fds", "gauge", "Open file descriptors of the master.", [[null, live.fds.open]]);
    family("process_max_fds", "gauge", "The master's limit on open file descriptors (RLIMIT_NOFILE).", [[null, live.fds.max]]);
  }
  return `${out.join("\n")}\n`;
}

/**
 * /healthz: healthy when the wanted number of workers is up and no upgrade is
 * failing. Not healthy: the master is stopping; fewer workers are up (ACKed,
 * not retiring, any version) than wanted; or an upgrade is rolling out whose
 * new workers have died before ACKing. A failed upgrade that was rolled back,
 * with the old workers serving, is healthy again (the failure is in
 * einhorn_upgrades_total{result="failure"} and in the upgrade's own answer).
 */
export function health(s: State): { ok: true; message: string } | { ok: false; message: string } {
  const up = s.workers.filter((w) => isAcked(w) && !isRetiring(w)).length;
  if (s.stopping) return { ok: false, message: `stopping (${s.stopping.signal})` };
  if (s.upgrade && s.upgrade.deathsBeforeAck > 0) {
    return { ok: false, message: `upgrade to version ${s.version} failing: ${s.upgrade.deathsBeforeAck} new worker(s) in a row died before ACKing` };
  }
  if (up < s.settings.number) return { ok: false, message: `${up} of ${s.settings.number} workers up` };
  const doing = s.upgrade?.rollback ? `, rolling back to version ${s.generations[String(s.version)]?.rollbackOf ?? "?"}'s spec as version ${s.version}`
    : s.upgrade ? `, upgrade to version ${s.version} rolling out`
    : s.bake ? `, version ${s.version} baking (${s.bake.deaths} of at most ${s.settings.upgradeMaxDeaths} unasked exits)` : "";
  return { ok: true, message: `ok: ${up} of ${s.settings.number} workers up${doing}` };
}

// The master's whole state as plain, serialisable data. It crosses the
// master's own execve as a JSON document, so every field is JSON-safe, and
// `schema` says which layout wrote it: `upgradeState` (below) fills in what
// an older writer did not know about.

import { parseSignal, signalFromNumber, type SignalName } from "../signal-names";
import { DEFAULT_SPEC, type Generation, type WorkerSpec } from "./generation";

/**
 * 2: generations carry their worker spec (State.generations) and the retire
 * signal moved from the settings into it; a bake window (State.bake).
 */
export const STATE_SCHEMA = 2;

export type AckMode = { kind: "timer"; seconds: number } | { kind: "manual" };

export interface Settings {
  /** Wanted number of workers of the current version. */
  number: number;
  /** Base respawn interval, seconds (> 0). */
  seconds: number;
  ackMode: AckMode;
  /** At most this many new, unacknowledged workers at once. */
  maxUnacked: number;
  /** During an upgrade, at most number + this many workers alive; null: no cap. */
  maxUpgradeAdditional: number | null;
  /** Seconds after a retiring signal before SIGKILL; null: never escalate. */
  signalTimeout: number | null;
  /** A new generation whose workers die this many times in a row before ACKing fails the upgrade. */
  upgradeMaxDeaths: number;
  /** A new worker not ACKed this many seconds after spawn fails the upgrade; null: wait forever. */
  ackTimeout: number | null;
  /** 0 debug, 1 info, 2 errors only (Einhorn's scale). */
  verbosity: number;
  /**
   * Seconds an upgrade's new generation is watched once it is all up, with
   * the previous generation's spec kept to roll back to; 0: no bake.
   */
  upgradeBake: number;
}

export interface SignalRecord { signal: SignalName; at: number }

export interface Worker {
  pid: number;
  index: number;
  version: number;
  spawnedAt: number;
  ackedAt: number | null;
  /** Every signal einhorn sent this worker, oldest first. */
  signals: SignalRecord[];
  /** Why einhorn first asked this worker to leave (absent: never asked, or an older writer's worker). */
  retireReason?: RetireReason;
  /** A warning said this worker outlived RETIRE_GRACE_SECONDS after being asked to leave (said once). */
  retireWarned?: boolean;
  lastPing: { at: number; requestId: unknown } | null;
}

/** A spawn the core asked for and the shell has not yet reported back. */
export interface PendingSpawn { spawnId: number; index: number; version: number }

/**
 * Why a worker was asked to leave: an upgrade (or rollback, or failed
 * upgrade) retiring the other generation, `dec`/`set_workers` lowering the
 * number, --max-memory replacing it, the master stopping, or a retiring
 * signal sent on request (`signal TERM`).
 */
export type RetireReason = "upgrade" | "dec" | "max_memory" | "stop" | "signal";
export const RETIRE_REASONS: readonly RetireReason[] = ["upgrade", "dec", "max_memory", "stop", "signal"];

/**
 * Exits at one index. `unasked`: those nobody asked for (crashes, exits on
 * their own): the restarts. An older writer did not tell them apart: its
 * records count every exit as unasked.
 */
export interface ExitCounts { total: number; beforeAck: number; unasked: number; lastCode: number | null; lastSignal: SignalName | null; lastAt: number | null }

/** One worker exit, for `status`'s recent exits: a crash stays visible whatever index its replacement takes. */
export interface ExitRecord {
  at: number;
  pid: number;
  index: number;
  /** The worker's generation. */
  version: number;
  code: number | null;
  signal: SignalName | null;
  /** Why einhorn asked it to leave; null: it exited unasked. */
  asked: RetireReason | null;
  /** It had ACKed. */
  acked: boolean;
  /** Found gone without an exit status (see the `vanished` event). */
  vanished?: boolean;
}

/** How many exits State.recentExits keeps (newest last). */
export const RECENT_EXITS = 20;

/** Every exit since the master started, unasked ones apart and asked ones by reason. */
export interface ExitTotals { unasked: number; asked: Record<RetireReason, number> }

/**
 * The worker exit the core recorded in the step from `before` to `after`, or
 * null. The core decides once whether an exit was asked for (and why) and
 * whether the worker had ACKed; what reports exits (metrics, sd_notify's
 * STATUS=) reads that record instead of deciding again.
 */
export function exitThisStep(before: State, after: State): ExitRecord | null {
  const total = (t: ExitTotals) => Object.values(t.asked).reduce((a, b) => a + b, t.unasked);
  return total(after.exitTotals) > total(before.exitTotals) ? after.recentExits.at(-1) ?? null : null;
}

export const noExitTotals = (): ExitTotals => ({ unasked: 0, asked: { upgrade: 0, dec: 0, max_memory: 0, stop: 0, signal: 0 } });

export interface Upgrade {
  mode: "smooth" | "fleet";
  startedAt: number;
  fromVersion: number;
  /** New-generation workers that died before ACKing during this upgrade, in a row. */
  deathsBeforeAck: number;
  /** This rollout is a rollback: it runs `fromVersion`'s predecessor's spec again (no bake follows it). */
  rollback?: boolean;
}

/**
 * The window after an upgrade's new generation came up in which its
 * unasked exits are counted; past --upgrade-max-deaths of them, the previous
 * generation's spec is rolled out again (a rollback).
 */
export interface Bake {
  /** The generation being watched. */
  version: number;
  /** The generation it replaced: its spec is what a rollback runs. */
  previous: number;
  since: number;
  until: number;
  /** Exits of the watched generation's workers that nobody asked for, in the window. */
  deaths: number;
}

export interface Stopping {
  /** Signal sent to every worker. */
  signal: SignalName;
  since: number;
}

/**
 * A worker being replaced the graceful way (--max-memory): one more worker of
 * the current version is started for it, and it is retired once that one and
 * the others make up the wanted number of ACKed workers. One at a time.
 */
export interface Replacement { pid: number; reason: string }

/**
 * Replacements (--max-memory) in a row, for their backoff: the next one
 * starts no sooner than `lastAt` + backoffMs(seconds, streak), the crash
 * loop's formula. A replacement asked for more than REPLACE_STREAK_RESET_SECONDS
 * after the last one starts a new streak.
 */
export interface ReplaceBackoff { streak: number; lastAt: number }

/**
 * An upgrade or reload between its request and the new master image: its
 * preflight runs, then the exec is under way (this crosses the execve, and
 * the new image's `resumed` ends it).
 */
export interface Reexec {
  kind: "upgrade" | "reload";
  /** The rollout the upgrade starts once the new image runs (null for a reload). */
  mode: "smooth" | "fleet" | null;
  requestedAt: number;
  phase: "preflight" | "exec";
}

export interface State {
  schema: number;
  settings: Settings;
  /** Generation new workers are spawned as (the live one, or the one an upgrade rolls out). */
  version: number;
  /**
   * The spec of every generation still needed, by version: the current one,
   * those with live workers or spawns in flight, an upgrade's fallback and a
   * bake's previous generation. Others are dropped (see pruneGenerations).
   */
  generations: Record<string, Generation>;
  /** An upgrade's new generation under watch after it came up (null: none). */
  bake: Bake | null;
  /** Highest generation ever used, so a failed upgrade's number is never reused. */
  lastVersion: number;
  workers: Worker[];
  pending: PendingSpawn[];
  nextSpawnId: number;
  /** Deaths before ACK since the last ACK: drives the respawn backoff. */
  consecutiveDeaths: number;
  lastSpawnAt: number | null;
  /** The first full spawn at start-up has been made. */
  started: boolean;
  stopping: Stopping | null;
  reexec: Reexec | null;
  upgrade: Upgrade | null;
  /** Exit history per child index, for `state`. */
  exits: Record<string, ExitCounts>;
  /** The last RECENT_EXITS worker exits, oldest first (absent from older writers: none). */
  recentExits: ExitRecord[];
  /** Exits counted since the first start (absent from older writers: zero). */
  exitTotals: ExitTotals;
  /** When the master (first incarnation) started. */
  startedAt: number;
  /** A graceful replacement in progress (absent from older writers: none). */
  replacement: Replacement | null;
  /** The backoff of replacements in a row (absent from older writers: none). */
  replaceBackoff: ReplaceBackoff | null;
}

export function initialState(settings: Settings, now: number, spec: WorkerSpec = DEFAULT_SPEC): State {
  return {
    schema: STATE_SCHEMA,
    settings,
    version: 0,
    generations: { 0: { version: 0, spec, createdAt: now } },
    bake: null,
    lastVersion: 0,
    workers: [],
    pending: [],
    nextSpawnId: 1,
    consecutiveDeaths: 0,
    lastSpawnAt: null,
    started: false,
    stopping: null,
    reexec: null,
    upgrade: null,
    exits: {},
    recentExits: [],
    exitTotals: noExitTotals(),
    startedAt: now,
    replacement: null,
    replaceBackoff: null,
  };
}

export const DEFAULT_SETTINGS: Settings = {
  number: 1,
  seconds: 1,
  ackMode: { kind: "timer", seconds: 1 },
  maxUnacked: 1,
  maxUpgradeAdditional: null,
  signalTimeout: null,
  upgradeMaxDeaths: 3,
  ackTimeout: null,
  verbosity: 1,
  upgradeBake: 0,
};

/**
 * Accept a state document written by this or an older version of einhorn:
 * fields it lacks get defaults. A newer schema than ours is refused, because
 * we could not know what its extra fields mean for the decisions we make.
 *
 * Signal names are read with the one parser (an older writer may have
 * recorded an alias, SIGIOT say: it reads as SIGABRT). What to do with one
 * that is not a signal name at all depends on what it is for:
 * - a name that decides what the master does next (the retire signal, the
 *   signal of a stop under way) refuses the document, naming the field and
 *   the value: every einhorn wrote those from a closed list, so an unreadable
 *   one means a document we do not understand (like a newer schema), and a
 *   guess could send workers a signal they do not take as "leave" (the
 *   upgrade's preflight reads the same document first, so such a refusal
 *   fails the upgrade before the exec, not after);
 * - a record of what happened (a worker's signal history, the signal that
 *   last killed an index) is dropped with a warning through `warn`: it only
 *   feeds `state` and the escalation clock of a worker already asked to
 *   leave, and refusing the document after an execve would end a master
 *   whose workers are serving.
 */
export function upgradeState(doc: unknown, now: number, warn: (message: string) => void = () => {}, fallbackSpec: WorkerSpec = DEFAULT_SPEC): State {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error("state document is not a mapping");
  const d = doc as Partial<State> & { settings?: Partial<Settings> & { retireSignal?: unknown } };
  const schema = typeof d.schema === "number" ? d.schema : 0;
  if (schema > STATE_SCHEMA) throw new Error(`state schema ${schema} is newer than this einhorn understands (${STATE_SCHEMA})`);
  // Schema 1 kept the retire signal among the settings; it now belongs to each generation's spec.
  const { retireSignal: oldRetire, ...oldSettings } = d.settings ?? {};
  const settings: Settings = { ...DEFAULT_SETTINGS, ...oldSettings };
  const base = initialState(settings, now);
  const workers = (d.workers ?? []).map((w) => ({
    pid: w.pid, index: w.index ?? 0, version: w.version ?? 0, spawnedAt: w.spawnedAt ?? now,
    ackedAt: w.ackedAt ?? null, lastPing: w.lastPing ?? null,
    signals: (w.signals ?? []).flatMap((r): SignalRecord[] => {
      const signal = recordedSignal(r.signal, `worker ${w.pid}'s signal history`, warn);
      return signal === null ? [] : [{ signal, at: r.at }];
    }),
    ...(w.retireWarned ? { retireWarned: true } : {}),
    ...(w.retireReason ? { retireReason: w.retireReason } : {}),
  }));
  const exits = Object.fromEntries(Object.entries(d.exits ?? {}).map(([index, c]) => [index, {
    ...c, unasked: c.unasked ?? c.total, lastSignal: c.lastSignal === null || c.lastSignal === undefined ? null : recordedSignal(c.lastSignal, `the last exit of index ${index}`, warn),
  }]));
  const version = d.version ?? 0;
  const generations: Record<string, Generation> = {};
  for (const [key, g] of Object.entries(d.generations ?? {})) {
    if (!g || typeof g !== "object" || !g.spec) throw new Error(`the handed-over state's generation ${key} has no spec`);
    generations[key] = {
      ...g,
      version: Number(key),
      spec: { ...DEFAULT_SPEC, ...g.spec, retireSignal: decidingSignal(g.spec.retireSignal, `generations.${key}.spec.retireSignal`) },
    };
  }
  // A writer from before generations knew one spec, its configuration's: every
  // generation it still had runs what the caller says (the next image's
  // configuration, as those einhorns did), with the retire signal it recorded.
  const fallback = { ...fallbackSpec, ...(oldRetire !== undefined ? { retireSignal: decidingSignal(oldRetire, "settings.retireSignal") } : {}) };
  const needed = new Set<number>([version, ...workers.map((w) => w.version), ...(d.upgrade ? [d.upgrade.fromVersion] : [])]);
  for (const v of needed) generations[String(v)] ??= { version: v, spec: fallback, createdAt: now };
  return {
    ...base,
    ...d,
    schema: STATE_SCHEMA,
    settings: base.settings,
    version,
    generations,
    bake: d.bake ?? null,
    workers,
    pending: [],
    lastVersion: d.lastVersion ?? d.version ?? 0,
    // A writer that did not record `started` but had workers was past its first start.
    started: d.started ?? workers.length > 0,
    exits,
    recentExits: (d.recentExits ?? []).slice(-RECENT_EXITS),
    exitTotals: { unasked: d.exitTotals?.unasked ?? 0, asked: { ...noExitTotals().asked, ...(d.exitTotals?.asked ?? {}) } },
    stopping: d.stopping ? { since: d.stopping.since, signal: decidingSignal(d.stopping.signal, "stopping.signal") } : null,
    replacement: d.replacement ?? null,
    replaceBackoff: d.replaceBackoff ?? null,
    reexec: d.reexec ?? null,
  };
}

const describeValue = (v: unknown) => (typeof v === "string" ? `'${v}'` : JSON.stringify(v) ?? String(v));

function decidingSignal(v: unknown, field: string): SignalName {
  const name = typeof v === "string" ? parseSignal(v) : null;
  if (name === null) throw new Error(`the handed-over state's ${field} is ${describeValue(v)}, which is not a signal name (like SIGUSR2 or SIGTERM)`);
  return name;
}

function recordedSignal(v: unknown, what: string, warn: (message: string) => void): SignalName | null {
  // Einhorns before the one signal table wrote a signal Node had no name for
  // (a real-time one) as "SIG<number>".
  const numbered = typeof v === "string" ? /^SIG(\d+)$/.exec(v) : null;
  const name = numbered ? signalFromNumber(Number(numbered[1])) : typeof v === "string" ? parseSignal(v) : null;
  if (name === null) warn(`Dropped ${describeValue(v)} from ${what} in the handed-over state: not a signal name`);
  return name;
}

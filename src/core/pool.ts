// Read-only questions about the worker pool. Every decision in step.ts is
// phrased with these, so the policy reads close to Einhorn's own wording.
import type { SignalName } from "../signal-names";
import type { State, Worker } from "./state";
import type { WorkerSpec } from "./generation";

/**
 * Signals that ask a worker to go away. Only these make a worker "retiring"
 * and only these are escalated to SIGKILL after the signal timeout: a worker
 * sent HUP to reopen its logs is still a serving worker.
 */
export const RETIRING_SIGNALS: ReadonlySet<SignalName> = new Set<SignalName>(["SIGUSR2", "SIGTERM", "SIGINT", "SIGQUIT", "SIGKILL"]);

/** What --retire-signal may name: the retiring signals a worker can handle (not KILL). */
export const RETIRE_SIGNAL_CHOICES = ["SIGUSR2", "SIGTERM", "SIGQUIT", "SIGINT"] as const satisfies readonly SignalName[];

/**
 * A worker still alive this long after it was asked to leave gets a warning
 * naming it (once): the usual cause is a server that gives the retire signal
 * another meaning (gunicorn and puma re-exec on USR2) and never leaves. With
 * -t, the escalation to SIGKILL is warned about again when it happens.
 */
export const RETIRE_GRACE_SECONDS = 30;

/**
 * When a worker was first asked to leave, and with what: its first retiring
 * signal or, once the master is stopping, the stop signal, whatever it is
 * (`die USR1` asks every worker to leave too, and -t escalates after it).
 */
export function askedToLeave(s: State, w: Worker): { signal: SignalName; at: number } | undefined {
  const retiring = w.signals.find((x) => RETIRING_SIGNALS.has(x.signal));
  const stop = s.stopping;
  // The stop signal is not sent again to a worker that already had it: its clock starts at the stop.
  const sent = stop ? w.signals.find((x) => x.signal === stop.signal) : undefined;
  const byStop = stop && sent ? { signal: stop.signal, at: Math.max(sent.at, stop.since) } : undefined;
  if (!retiring) return byStop;
  return byStop && byStop.at < retiring.at ? byStop : retiring;
}

export const isRetiring = (w: Worker): boolean => w.signals.some((s) => RETIRING_SIGNALS.has(s.signal));
export const wasSent = (w: Worker, signal: SignalName): boolean => w.signals.some((s) => s.signal === signal);
export const isAcked = (w: Worker): boolean => w.ackedAt !== null;

export const currentWorkers = (s: State): Worker[] => s.workers.filter((w) => w.version === s.version);
export const otherVersionWorkers = (s: State): Worker[] => s.workers.filter((w) => w.version !== s.version);
export const pendingOfCurrent = (s: State): number => s.pending.filter((p) => p.version === s.version).length;

/** Current-version workers not yet ACKed and not retiring, plus spawns in flight. */
export function unackedCount(s: State): number {
  return currentWorkers(s).filter((w) => !isAcked(w) && !isRetiring(w)).length + pendingOfCurrent(s);
}

/** Reference rule: missing = number - workers of the current version (retiring ones included). */
export function missingCount(s: State): number {
  return s.settings.number - currentWorkers(s).length - pendingOfCurrent(s);
}

export function ackedCurrentCount(s: State): number {
  return currentWorkers(s).filter((w) => isAcked(w) && !isRetiring(w)).length;
}

/** Smallest index not held by any live worker (any generation) or spawn in flight. */
export function freeIndex(s: State): number {
  const taken = new Set<number>([...s.workers.map((w) => w.index), ...s.pending.map((p) => p.index)]);
  let i = 0;
  while (taken.has(i)) i++;
  return i;
}

export const BACKOFF_CAP_SECONDS = 30;

/**
 * A worker found over --max-memory this soon after it started is taken as a
 * program whose normal size is above the limit, not as one that grew.
 */
export const YOUNG_OVER_LIMIT_SECONDS = 10;

/** Replacements further apart than this are not "in a row": twice the backoff's cap, so a loop at the cap stays one. */
export const REPLACE_STREAK_RESET_SECONDS = 2 * BACKOFF_CAP_SECONDS;

/** Reference backoff: seconds * 1.5^deaths, capped at 30 s. In milliseconds. */
export function backoffMs(seconds: number, deaths: number): number {
  return Math.min(seconds * 1.5 ** deaths, BACKOFF_CAP_SECONDS) * 1000;
}

/**
 * Milliseconds that must pass after the last spawn before the next one.
 * Policy (an improvement on the original, which waits `seconds` between every
 * spawn): while an upgrade rolls out and nothing has died before ACKing, the
 * next new worker starts as soon as max_unacked allows, so a rollout is paced
 * by the workers' ACKs rather than by a clock. Replacing dead workers keeps
 * the reference interval, which is what stops a crash loop from spinning.
 */
export function spawnIntervalMs(s: State): number {
  if (s.upgrade && s.consecutiveDeaths === 0) return 0;
  return backoffMs(s.settings.seconds, s.consecutiveDeaths);
}

/**
 * A fleet rollout that nothing has died in yet: every new worker starts at
 * once, unpaced by max_unacked or the respawn interval.
 */
export function isFleetRollout(s: State): boolean {
  return s.upgrade?.mode === "fleet" && s.consecutiveDeaths === 0;
}

/**
 * 1 while a graceful replacement (State.replacement) still needs its worker's
 * successor: the worker is alive, of the current version and not retiring.
 * Replenishing wants one worker more, and culling tolerates one more, until then.
 */
export function replacementExtra(s: State): number {
  const r = s.replacement;
  if (!r) return 0;
  const w = s.workers.find((x) => x.pid === r.pid);
  return w && w.version === s.version && !isRetiring(w) ? 1 : 0;
}

export function findWorker(s: State, pid: number): Worker | undefined {
  return s.workers.find((w) => w.pid === pid);
}

/** The spec of generation `version` (every live worker's and pending spawn's generation has one: see State.generations). */
export function specOf(s: State, version: number): WorkerSpec {
  const g = s.generations[String(version)];
  if (!g) throw new Error(`no spec for generation ${version} (known: ${Object.keys(s.generations).join(", ") || "none"})`);
  return g.spec;
}

/** What asks a worker of generation `version` to leave: its own spec's retire signal. */
export function retireSignalOf(s: State, version: number): SignalName {
  return specOf(s, version).retireSignal;
}

// No silent waits: while an upgrade waits for new workers to ACK, say every
// so often (the ack-wait-report timeout, src/config/timeouts.ts) which ones,
// for how long, and what would end the wait. The master logs the report and
// sends it to every shell waiting on the upgrade (as a `wait: true` progress
// answer).
import { isAcked, isRetiring } from "../core/pool";
import type { State } from "../core/state";

/** Remembers when it last reported, per upgrade; `check` once a second or so. */
export class AckWaitReporter {
  private upgradeStartedAt: number | null = null;
  private lastAt = 0;

  constructor(private readonly everyMs: number) {}

  /** The report due at `now`, or null. */
  check(s: State, now: number): string | null {
    const up = s.upgrade;
    if (!up) { this.upgradeStartedAt = null; return null; }
    if (this.upgradeStartedAt !== up.startedAt) {
      // A new (or superseding) upgrade: the first report comes one period after its start.
      this.upgradeStartedAt = up.startedAt;
      this.lastAt = up.startedAt;
    }
    if (now - this.lastAt < this.everyMs) return null;
    const waiting = s.workers.filter((w) => w.version === s.version && !isAcked(w) && !isRetiring(w));
    const pending = s.pending.filter((p) => p.version === s.version).length;
    if (waiting.length === 0 && pending === 0) return null;
    this.lastAt = now;
    return ackWaitMessage(s, now);
  }
}

function ackWaitMessage(s: State, now: number): string {
  const up = s.upgrade!;
  const secs = (t: number) => `${Math.floor((now - t) / 1000)}s`;
  const waiting = s.workers
    .filter((w) => w.version === s.version && !isAcked(w) && !isRetiring(w))
    .sort((a, b) => a.spawnedAt - b.spawnedAt);
  const acked = s.workers.filter((w) => w.version === s.version && isAcked(w) && !isRetiring(w)).length;
  const who = waiting.length
    ? `worker${waiting.length === 1 ? "" : "s"} ${waiting.map((w) => `${w.pid} (index ${w.index}, ${secs(w.spawnedAt)})`).join(", ")} not ACKed yet`
    : "new workers still starting";
  const t = s.settings.ackTimeout;
  const hint = t === null
    ? "Without --ack-timeout the upgrade waits for ever; set it (or 'config ack_timeout=SECONDS') to fail an upgrade whose workers never ACK"
    : `With --ack-timeout ${t}s, a worker not ACKed ${t}s after it started fails the upgrade`;
  return `Upgrade to version ${s.version} waiting ${secs(up.startedAt)} for ACKs: ${who}; ${acked} of ${s.settings.number} new workers up. ${hint}.`;
}

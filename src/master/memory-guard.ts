// --max-memory SIZE: a worker whose resident memory stays above SIZE is
// replaced the graceful way (the core's "replace" event: its successor
// starts and ACKs first, then it gets the retire signal). "Stays above"
// means ABOVE_CHECKS readings in a row, one per second, so a short spike does
// not cost a worker. One replacement at a time: while one runs (or an
// upgrade, or a stop) nothing new is asked for.
import { isAcked, isRetiring } from "../core/pool";
import type { State } from "../core/state";
import { formatBytes } from "./proc-stats";

const ABOVE_CHECKS = 3;

export class MemoryGuard {
  private over = new Map<number, number>();

  constructor(readonly limitBytes: number, private readonly checks = ABOVE_CHECKS) {}

  /** One reading per candidate worker; the replacement to ask for now, if any. */
  check(s: State, rssOf: (pid: number) => number | null): { pid: number; reason: string } | null {
    // A generation over the limit from its start was reported once by the core; its workers are not asked about again.
    const candidates = s.workers.filter((w) => w.version === s.version && isAcked(w) && !isRetiring(w) && !s.generations[String(w.version)]?.overLimitAtStart);
    const seen = new Set<number>();
    let worst: { pid: number; rss: number } | null = null;
    for (const w of candidates) {
      seen.add(w.pid);
      const rss = rssOf(w.pid);
      if (rss === null || rss <= this.limitBytes) { this.over.delete(w.pid); continue; }
      const n = (this.over.get(w.pid) ?? 0) + 1;
      this.over.set(w.pid, n);
      if (n >= this.checks && (!worst || rss > worst.rss)) worst = { pid: w.pid, rss };
    }
    for (const pid of this.over.keys()) if (!seen.has(pid)) this.over.delete(pid);
    if (!worst || s.replacement || s.upgrade || s.stopping) return null;
    this.over.delete(worst.pid);
    return { pid: worst.pid, reason: `RSS ${formatBytes(worst.rss)} above --max-memory ${formatBytes(this.limitBytes)} for ${this.checks} checks in a row` };
  }
}

// The clock and timers of the scripted Os the shell's unit tests drive the
// Interpreter with (interpreter, reexec, housekeeping): time moves only when
// the test calls advance(), and timers fire in time order as it passes them.
// Each test's Os extends it with the process calls it scripts.
import type { Cancel } from "../src/master/os";

export const T0 = 1_700_000_000_000;

interface Timer { at: number; fn: () => void; live: boolean; every: number | null }

export class ScriptedClock {
  t: number;
  private readonly timers: Timer[] = [];
  /** Every delay a one-shot timer was armed with. */
  readonly delays: number[] = [];

  constructor(t0 = T0) {
    this.t = t0;
  }

  now = (): number => this.t;
  after = (ms: number, fn: () => void): Cancel => { this.delays.push(ms); return this.add(ms, fn, null); };
  every = (ms: number, fn: () => void): Cancel => this.add(ms, fn, ms);

  private add(ms: number, fn: () => void, every: number | null): Cancel {
    const timer: Timer = { at: this.t + ms, fn, live: true, every };
    this.timers.push(timer);
    return () => { timer.live = false; };
  }

  /** Timers still armed (one-shot and repeating). */
  get armed(): number {
    return this.timers.filter((t) => t.live).length;
  }

  /** Repeating timers still armed. */
  get armedRepeating(): number {
    return this.timers.filter((t) => t.live && t.every !== null).length;
  }

  /** Move the clock forward by `ms`, firing every timer that falls due, in time order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.live && t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.t = Math.max(this.t, due.at);
      if (due.every !== null) due.at += due.every;
      else due.live = false;
      due.fn();
    }
    this.t = end;
  }
}

// The master's repeating timers: the safety net that reaps children whose
// SIGCHLD was lost, and the once-a-second reports and checks that the
// core's own clock (its `wakeAt`) does not drive: a rollout stuck on
// workers that have not ACKed, and --max-memory.
import type { State } from "../core/state";
import type { Event, ReexecKind } from "../core/step";
import type { Logger } from "../logging";
import { AckWaitReporter } from "./ack-wait";
import type { MasterConfig } from "./config";
import { MemoryGuard } from "./memory-guard";
import type { Cancel, Os } from "./os";
import type { Timeouts } from "../config/timeouts";
import { readProc } from "./proc-stats";

/** A lost SIGCHLD would leave a dead worker unreplaced; this cheap poll is the safety net. */
const SAFETY_REAP_MS = 5_000;

/** What the housekeeping timers need to see of the master. */
export interface HousekeepingView {
  state(): State;
  dispatch(e: Event): void;
  /** A message to the clients waiting on `kind` (see Waiters.notify). */
  notify(kind: ReexecKind, message: string, final: boolean): void;
  /** True once an `exit` effect ran: nothing more is reported or asked of the core. */
  exited(): boolean;
  /** Collect every exited child (Interpreter.reap). */
  reap(): void;
  os: Pick<Os, "every" | "now">;
  log: Pick<Logger, "warn">;
  config: Pick<MasterConfig, "maxMemory">;
  timeouts: Pick<Timeouts, "ack-wait-report" | "max-memory-young">;
}

export class Housekeeping {
  private timers: Cancel[] = [];
  private readonly ackWait: AckWaitReporter;
  private memoryGuard: MemoryGuard | null = null;

  constructor(private readonly v: HousekeepingView) {
    this.ackWait = new AckWaitReporter(v.timeouts["ack-wait-report"]);
  }

  /** Arm the timers (once the master has its state and signals). */
  start(): void {
    this.timers.push(this.v.os.every(SAFETY_REAP_MS, () => this.v.reap()));
    this.timers.push(this.v.os.every(1_000, () => this.housekeeping()));
  }

  /** Disarm them (the master is leaving). */
  stop(): void {
    for (const cancel of this.timers) cancel();
  }

  /** Once a second: reports and checks that are not driven by the core's clock. */
  private housekeeping(): void {
    if (this.v.exited()) return;
    const report = this.ackWait.check(this.v.state(), this.v.os.now());
    if (report) {
      this.v.log.warn(report);
      this.v.notify("upgrade", report, false);
    }
    if (this.v.config.maxMemory) {
      this.memoryGuard ??= new MemoryGuard(this.v.config.maxMemory);
      const replace = this.memoryGuard.check(this.v.state(), (pid) => readProc(pid)?.rssBytes ?? null);
      if (replace) this.v.dispatch({ type: "replace", pid: replace.pid, reason: replace.reason, youngSeconds: this.v.timeouts["max-memory-young"] / 1000 });
    }
  }
}

// The heart of the I/O shell: it feeds events to the decision core one at a
// time, carries out the effects each step returns, in order, and wakes the
// core at the `wakeAt` it asked for. Processes and time go through the Os
// seam (os.ts); what effects do to clients, files and the next image goes
// through the Host (the Master). Nothing here decides anything: every
// "what next" is step()'s (src/core/step.ts).
//
// Policies recorded here:
// - Events raised while a step's effects run (a spawn's `spawned`, a reap's
//   `exited`) queue behind it; the queue drains before the loop returns, so
//   the core sees one event at a time, in the order they happened.
// - The shell stops feeding the core once an `exit` effect ran.
import type { ExitStatus } from "../../ffi/process";
import type { State } from "../core/state";
import { type Effect, type Event, type ReexecKind, step } from "../core/step";
import type { Logger } from "../logging";
import type { Cancel, Os } from "./os";

/**
 * The longest delay a timer can be armed with: setTimeout fires at once (1 ms)
 * beyond 2^31-1 ms, about 24.8 days, and `-m 3000000` or `config
 * signal_timeout=3e9` ask for more. A wake further off is armed at this, and
 * the tick that finds nothing due arms the rest.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** How long a due timer may wait for readable input to be handled first (see onWake). */
export const INPUT_FIRST_MAX_MS = 500;

export type ExecRequest = Extract<Effect, { type: "exec" }>["pending"];

/** What effects do beyond processes and time: the master's clients, its files and the next image. */
export interface Host {
  /** Start worker `index` of generation `version`, from that generation's spec (through Os.spawn): its pid; throws when it cannot. */
  spawnWorker(index: number, version: number): number;
  /** Requester `requestId` now waits for messages about `kind`. */
  enroll(requestId: number, kind: ReexecKind): void;
  /** Tell requester `requestId` its request was refused. */
  refuse(requestId: number, message: string): void;
  /** A message to every client waiting on `kind`; `final` ends their wait. */
  notify(kind: ReexecKind, message: string, final: boolean, error: boolean): void;
  /** Start the preflight; its verdict comes back as a `preflight-done` event. */
  runPreflight(kind: ReexecKind): void;
  /** Hand over and execve (when no signal is in flight); a failure comes back as `exec-failed`. */
  exec(pending: ExecRequest): void;
  /** Forget an exec not yet performed. */
  cancelExec(): void;
  /** Kill a preflight still running; its verdict is dropped. */
  cancelPreflight(): void;
  /** Is client input waiting to be read? (see onWake) */
  inputWaiting(): boolean;
  /** Every step, before its effects run (metrics). */
  observe(e: Event, before: State, after: State, effects: Effect[], now: number): void;
  /** Last words before the process ends with `code`: close sockets, remove files, flush output. */
  leave(code: number): void;
}

export class Interpreter {
  private queue: Event[] = [];
  private draining = false;
  private exiting = false;
  private cancelWake: Cancel | null = null;
  /** Children that are not workers (the preflight), with what to do when they exit. */
  private readonly sideChildren = new Map<number, (status: ExitStatus) => void>();

  constructor(
    private readonly os: Os,
    private readonly host: Host,
    private readonly log: Pick<Logger, "debug" | "info" | "warn" | "error">,
    public state: State,
  ) {}

  /** True once an `exit` effect ran: nothing more reaches the core. */
  get exited(): boolean {
    return this.exiting;
  }

  /** Step the core with `e` (and whatever it and its effects raise), then schedule the next tick. */
  dispatch(e: Event): void {
    this.queue.push(e);
    if (this.draining) return;
    this.draining = true;
    try {
      while (this.queue.length && !this.exiting) {
        const ev = this.queue.shift()!;
        const now = this.os.now();
        const r = step(this.state, ev, now);
        this.host.observe(ev, this.state, r.state, r.effects, now);
        this.state = r.state;
        for (const fx of r.effects) this.perform(fx);
        this.schedule(r.wakeAt);
      }
    } finally {
      this.draining = false;
    }
  }

  /** Have the reaper call `onExit` instead of the core when `pid` (not a worker) exits. */
  watchChild(pid: number, onExit: (status: ExitStatus) => void): void {
    this.sideChildren.set(pid, onExit);
  }

  unwatchChild(pid: number): void {
    this.sideChildren.delete(pid);
  }

  /** Collect every exited child (SIGCHLD coalesces, so loop until none is left). */
  reap(): void {
    for (;;) {
      let r;
      try {
        r = this.os.wait();
      } catch (e) {
        this.log.error(`waitpid failed: ${(e as Error).message}`);
        return;
      }
      if (!r) return;
      const side = this.sideChildren.get(r.pid);
      if (side) side(r.status);
      else this.dispatch({ type: "exited", pid: r.pid, code: r.status.code, signal: r.status.signal });
    }
  }

  /**
   * The `exit` effect. A side child still running (a preflight, when a stop
   * came during it) is killed first: the master leaves no process of its
   * own making behind (workers are the core's business: it exits only once
   * they are gone, or after QUIT was passed on to them).
   */
  exit(code: number): void {
    if (this.exiting) return;
    this.exiting = true;
    this.cancelWake?.();
    this.cancelWake = null;
    try {
      for (const pid of this.sideChildren.keys()) {
        try {
          this.os.kill(pid, "SIGKILL");
        } catch (e) {
          this.log.warn(`Could not stop child ${pid} before exiting: ${(e as Error).message}`);
        }
      }
      this.host.leave(code);
    } catch (e) {
      // A master that cannot say its last words still ends: alive but deaf to the core would be worse.
      this.log.error(`While exiting: ${(e as Error).message}`);
    } finally {
      this.os.exit(code);
    }
  }

  private perform(fx: Effect): void {
    switch (fx.type) {
      case "log":
        this.log[fx.level](fx.message);
        break;
      case "spawn":
        this.spawn(fx.spawnId, fx.index, fx.version);
        break;
      case "kill":
        try {
          if (!this.os.kill(fx.pid, fx.signal)) this.log.debug(`Worker ${fx.pid} was already gone when sent ${fx.signal}`);
        } catch (e) {
          this.log.error(`Could not send ${fx.signal} to ${fx.pid}: ${(e as Error).message}`);
        }
        break;
      case "upgrade-finished":
        this.host.notify("upgrade", fx.message, true, !fx.ok);
        break;
      case "enroll":
        this.host.enroll(fx.requestId, fx.kind);
        break;
      case "refuse":
        this.host.refuse(fx.requestId, fx.message);
        break;
      case "notify":
        this.host.notify(fx.kind, fx.message, fx.final, fx.error);
        break;
      case "run-preflight":
        this.host.runPreflight(this.state.reexec?.kind ?? "upgrade");
        break;
      case "exec":
        this.host.exec(fx.pending);
        break;
      case "cancel-exec":
        this.host.cancelExec();
        break;
      case "cancel-preflight":
        this.host.cancelPreflight();
        break;
      case "exit":
        this.exit(fx.code);
        break;
    }
  }

  /** The `spawn` effect; its outcome queues behind the current step. */
  private spawn(spawnId: number, index: number, version: number): void {
    try {
      const pid = this.host.spawnWorker(index, version);
      this.queue.push({ type: "spawned", spawnId, pid, at: this.os.now() });
    } catch (e) {
      this.queue.push({ type: "spawn-failed", spawnId, reason: (e as Error).message });
    }
  }

  private schedule(wakeAt: number | null): void {
    this.cancelWake?.();
    this.cancelWake = null;
    if (wakeAt === null || this.exiting) return;
    // +1 ms: a timer never fires early, so the core sees its deadline as reached.
    this.cancelWake = this.os.after(Math.min(MAX_TIMER_MS, Math.max(0, wakeAt - this.os.now()) + 1), () => this.onWake(this.os.now()));
  }

  /**
   * Input before timers. A timer that fires late (the master was stopped,
   * or busy) may find ACKs and other requests already waiting in its
   * sockets, sent before the deadline it is about to enforce: an upgrade
   * would fail for ACKs it had received. So while input is readable, the
   * tick waits a turn of the event loop (1 ms) for it to be handled, for at
   * most INPUT_FIRST_MAX_MS, so that a flood cannot hold timers off.
   */
  private onWake(firstAt: number): void {
    this.cancelWake = null;
    if (!this.exiting && this.os.now() - firstAt < INPUT_FIRST_MAX_MS && this.host.inputWaiting()) {
      this.cancelWake = this.os.after(1, () => this.onWake(firstAt));
      return;
    }
    this.dispatch({ type: "tick" });
  }
}

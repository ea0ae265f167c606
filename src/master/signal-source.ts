// How the master learns of signals, so that none is ever lost, not even
// across its own execve (docs/architecture.md, "Signals", tells the story).
//
// Every handled signal is blocked in every thread from the first instruction
// of a master image (the start-up self-exec gives the runtime's threads that
// mask; a re-executed image inherits it) and is never unblocked. Pending
// signals are read from a signalfd that Bun's event loop watches. Bun waits
// for events in epoll_pwait2 with an empty signal mask, so a signal sent
// while the loop sleeps is still delivered to the main thread: its handler is
// raise(3), which makes it pending again on that thread (blocked once the
// wait returns) and so readable from the signalfd like any other.
//
// The master only execs at the end of a batch read from the signalfd (see
// execWhenDrained): every signal the kernel handed to this image has been
// acted on by then, and every later one is still pending, which the kernel
// keeps across execve for the next image.
//
// Where this cannot be set up (the start-up self-exec failed, so some thread
// does not block the signals; or signalfd itself fails), the master falls
// back to process.on handlers with the signals unblocked, and says why:
// a signal that arrives during a re-exec may then be lost.
import { readdirSync, readFileSync } from "node:fs";
import { blockSignals, getpid, signalsBlocked, unblockSignals } from "../../ffi/process";
import { ignoreSignal, parseSignalRecords, raiseSignal, readSignalfd, reraiseOnDelivery, signalfd, type SignalRecord } from "../../ffi/signalfd";
import { close } from "../../ffi/socket";
import { masterSignals } from "../core/master-signals";
import type { Logger } from "../logging";
import { type SignalName, signalFromNumber, signalNumber } from "../signal-names";

/** Signals the master reads: CHLD (the shell reaps) and every one the core acts on (core/master-signals.ts). */
export const HANDLED_SIGNALS: readonly SignalName[] = ["SIGCHLD", ...masterSignals(() => true)];
/**
 * The master's own "now is a safe moment to exec" marker: a real-time signal
 * (they queue, so it never merges with another) raised at the main thread.
 */
export const EXEC_MARKER = signalNumber("SIGRTMAX");
const SI_TKILL = -6;

export const handledSignalNumbers = (): number[] => HANDLED_SIGNALS.map(signalNumber);
/** What a master image blocks on its main thread: the handled signals and the marker. */
export const blockedSignalNumbers = (): number[] => [...handledSignalNumbers(), EXEC_MARKER];

/**
 * Threads of this process other than the main one that do not block every
 * handled signal. (The marker is raised at the main thread only, so other
 * threads need not block it; masks inherited from older images lack it.)
 */
export function signalTakingThreads(): string[] {
  const bits = handledSignalNumbers().reduce((m, n) => m | (1n << BigInt(n - 1)), 0n);
  const found: string[] = [];
  for (const tid of readdirSync("/proc/self/task")) {
    if (tid === String(process.pid)) continue;
    try {
      const status = readFileSync(`/proc/self/task/${tid}/status`, "latin1");
      const blk = BigInt(`0x${/^SigBlk:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? "0"}`);
      if ((blk & bits) !== bits) found.push(`${tid} (${/^Name:\s*(.*)$/m.exec(status)?.[1] ?? "?"})`);
    } catch { /* thread ended */ }
  }
  return found;
}

export class SignalSource {
  private fd: number | null = null;
  private execThunk: (() => void) | null = null;
  /** Why signals come through process.on handlers instead (null when they come from the signalfd). */
  fallback: string | null = null;

  constructor(private readonly log: Logger, private readonly onSignal: (name: SignalName, from: SignalRecord | null) => void) {}

  start(): void {
    const takers = signalTakingThreads();
    if (takers.length) return this.startFallback(`thread(s) ${takers.join(", ")} do not block the handled signals`);
    if (!signalsBlocked(handledSignalNumbers())) return this.startFallback("the main thread does not block the handled signals");
    try {
      blockSignals([EXEC_MARKER]);
      reraiseOnDelivery(blockedSignalNumbers());
      this.fd = signalfd(blockedSignalNumbers());
    } catch (e) {
      return this.startFallback((e as Error).message);
    }
    void this.pump(this.fd);
  }

  private startFallback(why: string): void {
    this.fallback = why;
    this.log.warn(`Signals are handled without a signalfd (${why}); one that arrives during a re-exec may be lost`);
    for (const sig of HANDLED_SIGNALS) process.on(sig as NodeJS.Signals, () => this.onSignal(sig, null));
    // The marker's handler re-raises it: unblocked, that would repeat for
    // ever. Ignored, a pending one is dropped; an armed exec runs on a timer.
    try { ignoreSignal(EXEC_MARKER); } catch { /* blocking it stays the safe state */ }
    if (this.fd !== null) {
      try { close(this.fd); } catch { /* already closed */ }
      this.fd = null;
    }
    unblockSignals(handledSignalNumbers());
    if (this.execThunk) {
      const run = this.execThunk;
      this.execThunk = null;
      setTimeout(run, 0);
    }
  }

  /**
   * Bun reads the signalfd when epoll says it is readable and hands each
   * batch to this loop in order, before any later batch is read.
   */
  private async pump(fd: number): Promise<void> {
    try {
      for await (const chunk of Bun.file(fd).stream()) this.batch(parseSignalRecords(chunk));
      this.log.error("The signalfd stream ended");
      this.startFallback("the signalfd stream ended");
    } catch (e) {
      // Out of descriptors at start-up (EMFILE: reading needs one more), say:
      // a master deaf to TERM would never stop, so take signals the other way.
      this.log.error(`Reading signals failed: ${(e as Error).message}`);
      this.startFallback(`reading the signalfd failed: ${(e as Error).message}`);
    }
  }

  private batch(records: SignalRecord[]): void {
    let marker = false;
    for (const r of records) {
      if (r.signo === EXEC_MARKER) { marker ||= r.code === SI_TKILL && r.pid === getpid(); continue; }
      // The signalfd's numbers, named once here. Only blocked signals reach
      // it, and each has a name; a number without one would be a kernel
      // surprise, said rather than dropped silently.
      const name = signalFromNumber(r.signo);
      if (name === null) { this.log.warn(`Ignoring signal number ${r.signo} read from the signalfd: it has no name`); continue; }
      try {
        this.onSignal(name, r);
      } catch (e) {
        this.log.error(`Acting on ${name} failed: ${(e as Error).stack ?? e}`);
      }
    }
    if (marker && this.execThunk) {
      const run = this.execThunk;
      this.execThunk = null;
      run();
    }
  }

  /** Act now on every signal pending (a re-executed image does, before it resumes its work). */
  drainNow(): void {
    if (this.fd !== null) this.batch(readSignalfd(this.fd));
  }

  /**
   * Run `thunk` (the execve) once every signal sent before now has been
   * acted on: at the end of the batch that carries a marker raised now.
   * Without a signalfd it runs on the next turn of the event loop.
   */
  execWhenDrained(thunk: () => void): void {
    if (this.fd === null) {
      setTimeout(thunk, 0);
      return;
    }
    this.execThunk = thunk;
    raiseSignal(EXEC_MARKER);
  }

  /** Forget a pending exec (the lifecycle changed its mind: a stop arrived first). */
  cancelExec(): boolean {
    const had = this.execThunk !== null;
    this.execThunk = null;
    return had;
  }
}

// Start-up must never outlast a stop request. The handled signals are
// blocked while JavaScript runs (cli/main.ts starts every master that way),
// but Bun's event loop sleeps in epoll_pwait2 with an empty signal mask, so
// a signal sent while the master waits (for the lockfile, for name
// resolution of a -b host) is delivered then, and with no handler installed
// its default action would kill the master and leave its files behind.
// StartupSignals handles them from the first line of start-up: a stop signal
// ends the start at once (StopDuringStart: undo, exit 0; QUIT exits 1, as
// it does later), HUP and ALRM (Einhorn's deprecated upgrade signal) are
// ignored: there is nothing to upgrade yet, and ALRM's default action would
// kill the master.
import { pendingSignals } from "../../ffi/process";
import { type SignalName, signalFromNumber, signalNumber } from "../signal-names";
import { isMasterSignal, MASTER_SIGNALS, masterSignals } from "../core/master-signals";
import { StopDuringStart } from "./errors";

/** The signals that end a master. At start-up there are no workers to wait for, so each ends it at once. */
const STOP_SIGNALS: readonly SignalName[] = masterSignals((a) => a === "graceful-stop" || a === "stop" || a === "quit");
/** The signals that ask for an upgrade (ALRM: Einhorn's deprecated one). */
const UPGRADE_SIGNALS: readonly SignalName[] = masterSignals((a) => a === "upgrade" || a === "deprecated-upgrade");
const POLL_MS = 25;

/** How a master stopped during start-up exits: as the same signal would end it later (QUIT: 1, as Einhorn). */
export const stopDuringStartExitCode = (sig: SignalName): number => (isMasterSignal(sig) && MASTER_SIGNALS[sig] === "quit" ? 1 : 0);

export class StartupSignals {
  private got: SignalName | null = null;
  private readonly installed: Array<[SignalName, () => void]> = [];

  constructor(log: { info(message: string): void }) {
    for (const sig of [...STOP_SIGNALS, ...UPGRADE_SIGNALS]) {
      const fn = UPGRADE_SIGNALS.includes(sig)
        ? () => log.info(`Ignoring ${sig} received during start-up: there is nothing to upgrade yet`)
        : () => { this.got ??= sig; };
      process.on(sig as NodeJS.Signals, fn);
      this.installed.push([sig, fn]);
    }
  }

  /** The stop signal received (or pending) so far, or null. */
  readonly stopRequested = (): SignalName | null => this.got ?? pendingStopSignal();

  /** Throw StopDuringStart if a stop signal came. */
  check(): void {
    const sig = this.stopRequested();
    if (sig) throw new StopDuringStart(sig);
  }

  /** Remove the start-up handlers; the master's own go in within the same turn of the event loop. */
  dispose(): void {
    for (const [sig, fn] of this.installed.splice(0)) process.removeListener(sig as NodeJS.Signals, fn);
  }
}

/** The name of a stop signal pending (raised while blocked) for this thread or process, or null. */
export function pendingStopSignal(): SignalName | null {
  try {
    const pending = pendingSignals(STOP_SIGNALS.map(signalNumber));
    return pending.length ? signalFromNumber(pending[0]!) : null;
  } catch {
    return null;
  }
}

/** `p`, unless `stopRequested` reports a signal first (then it rejects with StopDuringStart). */
export async function untilStopSignal<T>(p: Promise<T>, stopRequested: () => SignalName | null): Promise<T> {
  let timer: ReturnType<typeof setInterval> | null = null;
  const stop = new Promise<never>((_, reject) => {
    timer = setInterval(() => {
      const sig = stopRequested();
      if (sig) reject(new StopDuringStart(sig));
    }, POLL_MS);
  });
  try {
    return await Promise.race([p, stop]);
  } finally {
    if (timer) clearInterval(timer);
  }
}

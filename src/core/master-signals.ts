// What each signal to the master means: Einhorn 1.1.1's table, once. The
// core acts on it (step.ts, onSignal), the signalfd blocks and reads exactly
// these plus CHLD (master/signal-source.ts), and start-up sorts them into
// "ends the start" and "ignored, nothing to upgrade yet" (master/startup.ts).
// A signal added here is handled everywhere or the type checker says where not.
import type { SignalName } from "../signal-names";

export type MasterSignalAction =
  /** Retire signal (USR2 unless --retire-signal) to every worker; exit when none is left. */
  | "graceful-stop"
  /** TERM to every worker; exit when none is left. */
  | "stop"
  /** QUIT to every worker; exit 1 at once. */
  | "quit"
  /** A smooth upgrade, as the `upgrade` command. */
  | "upgrade"
  /** The same, with Einhorn's line saying ALRM is deprecated. */
  | "deprecated-upgrade";

export const MASTER_SIGNALS = {
  SIGINT: "graceful-stop",
  SIGUSR2: "graceful-stop",
  SIGTERM: "stop",
  SIGQUIT: "quit",
  SIGHUP: "upgrade",
  SIGALRM: "deprecated-upgrade",
} as const satisfies Partial<Record<SignalName, MasterSignalAction>>;

export type MasterSignal = keyof typeof MASTER_SIGNALS;

export const masterSignals = (which: (action: MasterSignalAction) => boolean): MasterSignal[] =>
  (Object.keys(MASTER_SIGNALS) as MasterSignal[]).filter((sig) => which(MASTER_SIGNALS[sig]));

export const isMasterSignal = (sig: SignalName): sig is MasterSignal => Object.hasOwn(MASTER_SIGNALS, sig);

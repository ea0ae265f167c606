// The one table of Linux signal names and numbers. Every name einhorn handles
// past its edges is a SignalName: the CLI flags, the command socket's
// `signal`/`die`, the signalfd and wait statuses (numbers), the handoff
// document and shell completion each parse what they are given once, here,
// and the core only ever sees the canonical "SIGUSR2" form.
//
// Pure: no Bun, no I/O, no einhorn policy (which signals a command refuses,
// which ones retire a worker, lives with the code that decides). ffi/
// converts names to numbers with it too, so there is no second table.
//
// The numbers are those of Linux on x86-64 and aarch64, the platforms Bun
// runs on (asm-generic; MIPS, SPARC and Alpha number differently).

/** The standard signals, in number order (1..31). */
const STANDARD = [
  "SIGHUP", "SIGINT", "SIGQUIT", "SIGILL", "SIGTRAP", "SIGABRT", "SIGBUS", "SIGFPE", "SIGKILL", "SIGUSR1",
  "SIGSEGV", "SIGUSR2", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGSTKFLT", "SIGCHLD", "SIGCONT", "SIGSTOP", "SIGTSTP",
  "SIGTTIN", "SIGTTOU", "SIGURG", "SIGXCPU", "SIGXFSZ", "SIGVTALRM", "SIGPROF", "SIGWINCH", "SIGIO", "SIGPWR",
  "SIGSYS",
] as const;

/**
 * The real-time signals, numbered as glibc and `kill -l` name them: 34 is
 * SIGRTMIN (glibc keeps 32 and 33 for itself; they have no name), 35..49
 * SIGRTMIN+1..+15, 50..63 SIGRTMAX-14..-1, 64 SIGRTMAX. A worker killed by
 * one is reported by that name; the master's own exec marker is SIGRTMAX.
 */
const REAL_TIME = [
  "SIGRTMIN", "SIGRTMIN+1", "SIGRTMIN+2", "SIGRTMIN+3", "SIGRTMIN+4", "SIGRTMIN+5", "SIGRTMIN+6", "SIGRTMIN+7",
  "SIGRTMIN+8", "SIGRTMIN+9", "SIGRTMIN+10", "SIGRTMIN+11", "SIGRTMIN+12", "SIGRTMIN+13", "SIGRTMIN+14", "SIGRTMIN+15",
  "SIGRTMAX-14", "SIGRTMAX-13", "SIGRTMAX-12", "SIGRTMAX-11", "SIGRTMAX-10", "SIGRTMAX-9", "SIGRTMAX-8", "SIGRTMAX-7",
  "SIGRTMAX-6", "SIGRTMAX-5", "SIGRTMAX-4", "SIGRTMAX-3", "SIGRTMAX-2", "SIGRTMAX-1", "SIGRTMAX",
] as const;
const FIRST_REAL_TIME = 34;

export type StandardSignalName = (typeof STANDARD)[number];
export type SignalName = StandardSignalName | (typeof REAL_TIME)[number];

/** Other spellings Linux (and Node's os.constants) accept for a standard signal: read as the canonical name. */
const ALIASES: Readonly<Record<string, StandardSignalName>> = { SIGIOT: "SIGABRT", SIGPOLL: "SIGIO", SIGCLD: "SIGCHLD" };

/** The standard signals in number order, for choices and completion. */
export const STANDARD_SIGNALS: readonly StandardSignalName[] = STANDARD;
/** Every named signal in number order. */
export const SIGNAL_NAMES: readonly SignalName[] = [...STANDARD, ...REAL_TIME];

const NUMBER_OF = new Map<string, number>([
  ...STANDARD.map((n, i) => [n, i + 1] as const),
  ...REAL_TIME.map((n, i) => [n, FIRST_REAL_TIME + i] as const),
]);
const NAME_OF = new Map<number, SignalName>([...NUMBER_OF].map(([n, num]) => [num, n as SignalName]));

/** Whether `x` is a canonical signal name ("SIGUSR2"; not "USR2", not an alias). */
export function isSignalName(x: unknown): x is SignalName {
  return typeof x === "string" && NUMBER_OF.has(x);
}

/**
 * A signal as a person or a document writes it: "USR2", "usr2", "SIGUSR2",
 * "SigUsr2", an alias ("IOT", "CLD"), a real-time name ("RTMIN+3"), or its
 * number ("12"). Null for anything else, including "", " USR2" (callers trim
 * where they want to) and the nameless 32 and 33.
 */
export function parseSignal(text: string): SignalName | null {
  if (/^\d+$/.test(text)) return signalFromNumber(Number(text));
  const up = text.toUpperCase();
  const name = up.startsWith("SIG") ? up : `SIG${up}`;
  if (isSignalName(name)) return name;
  return ALIASES[name] ?? null;
}

/** The signal with this number, or null (0, 32, 33, beyond 64, not a whole number). */
export function signalFromNumber(num: number): SignalName | null {
  return NAME_OF.get(num) ?? null;
}

export function signalNumber(name: SignalName): number {
  return NUMBER_OF.get(name)!;
}

/** The name without "SIG", as Einhorn's answers and `kill -l` write it ("USR2"). */
export function shortSignalName(name: SignalName): string {
  return name.slice(3);
}

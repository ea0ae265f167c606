// The master's own safety timeouts: bounds it keeps so that no client, no
// slow reader and no stuck worker can hold it, and the pace of its progress
// reports. They are not tuning knobs, and each default suits production, so
// they are not options (no flag, no config-file key). They are settable,
// all through one environment variable, for two readers:
//
// - the test suite, which must see a timeout fire without waiting ten
//   seconds of wall time for each (EINHORN_TIMEOUTS=command-first-line=1);
// - an operator reproducing a problem at a pace that can be watched.
//
//   EINHORN_TIMEOUTS="NAME=SECONDS[,NAME=SECONDS...]"
//
// The table below is the one home of each timeout's name, default and
// meaning; docs/operations.md lists it and a test compares the two. A bad
// value is a usage error at start-up (exit 2), naming what was given and
// what is allowed. A master that re-executes itself keeps its environment,
// so the next image reads the same values.
import { YOUNG_OVER_LIMIT_SECONDS } from "../core/pool";
import { ENV } from "../protocol-env";

interface TimeoutSpec {
  /** Seconds, the production value. */
  readonly seconds: number;
  /** One line for docs/operations.md. */
  readonly what: string;
}

export const TIMEOUTS = {
  "command-first-line": { seconds: 10, what: "A command-socket client that has sent no whole line this long after connecting is disconnected." },
  "command-partial-line": { seconds: 10, what: "A command-socket client that leaves a line unfinished this long is disconnected." },
  "metrics-head": { seconds: 5, what: "A metrics/health client must send its whole request head within this time." },
  "metrics-answer": { seconds: 15, what: "A metrics/health answer the client has not read within this time is abandoned." },
  "ack-wait-report": { seconds: 10, what: "While an upgrade waits for ACKs, the log and waiting shells get a report this often." },
  "max-memory-young": {
    seconds: YOUNG_OVER_LIMIT_SECONDS,
    what: "A worker over --max-memory this soon after its start is taken as the program's normal size: reported once, not replaced.",
  },
} as const satisfies Record<string, TimeoutSpec>;

export type TimeoutName = keyof typeof TIMEOUTS;
export type Timeouts = Readonly<Record<TimeoutName, number>>;

const NAMES = Object.keys(TIMEOUTS) as TimeoutName[];
/** setTimeout's own limit is 2^31-1 ms (24.8 days); a day is more than any of these needs. */
const MAX_SECONDS = 86_400;

export class TimeoutsError extends Error {
  override name = "TimeoutsError";
}

/** Every timeout at its production value, in milliseconds. */
export function defaultTimeouts(): Timeouts {
  return Object.fromEntries(NAMES.map((n) => [n, TIMEOUTS[n].seconds * 1000])) as Record<TimeoutName, number>;
}

/**
 * The timeouts, in milliseconds, from EINHORN_TIMEOUTS's value (absent or
 * empty: every default). Throws TimeoutsError for a name it does not know or
 * a value that is not a number of seconds in (0, 86400].
 */
export function parseTimeouts(text: string | undefined): Timeouts {
  const out = defaultTimeouts() as Record<TimeoutName, number>;
  if (text === undefined || text.trim() === "") return out;
  for (const item of text.split(",")) {
    const entry = item.trim();
    if (entry === "") continue;
    const eq = entry.indexOf("=");
    const name = (eq < 0 ? entry : entry.slice(0, eq)).trim();
    const value = eq < 0 ? "" : entry.slice(eq + 1).trim();
    if (!(NAMES as string[]).includes(name)) {
      throw new TimeoutsError(`${ENV.TIMEOUTS}: '${entry}' names no timeout einhorn has; the settable ones are ${NAMES.join(", ")} (NAME=SECONDS, comma-separated)`);
    }
    const seconds = /^\d+(\.\d+)?$/.test(value) ? Number(value) : NaN;
    if (!(seconds > 0 && seconds <= MAX_SECONDS)) {
      throw new TimeoutsError(`${ENV.TIMEOUTS}: '${entry}': the value must be a number of seconds above 0 and at most ${MAX_SECONDS}, like ${name}=${TIMEOUTS[name as TimeoutName].seconds}`);
    }
    out[name as TimeoutName] = Math.round(seconds * 1000);
  }
  return out;
}

/** The values that differ from production, as NAME=SECONDS (for the start-up log line), or "" when none do. */
export function describeChangedTimeouts(t: Timeouts): string {
  return NAMES.filter((n) => t[n] !== TIMEOUTS[n].seconds * 1000).map((n) => `${n}=${t[n] / 1000}`).join(", ");
}

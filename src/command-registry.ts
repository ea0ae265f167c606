// The command socket's commands, each declared once: its name, its `help`
// line, who sends it, and the rules for its arguments. The rules serve both
// sides: the master refuses bad arguments with their messages, and `einhorn
// sh` completes arguments from the same rules, so what Tab offers is what the
// master accepts. `help`, the unknown-command answer and the shell's command
// names are all generated from COMMANDS.
//
// Why the handlers are not here: this module is what `einhorn sh` loads at
// start, and it stays light (no YAML library, no master code; the one YAML
// use, a `config` mapping, loads it lazily through protocol.ts and only in
// the master). The handlers live in src/master/commands.ts in a table typed
// `{ [N in CommandName]: Handler<N> }`, so the type checker refuses a command
// declared here without a handler there, or a handler for an undeclared one.
// Adding a command: one entry here, one handler there.
import { OPTIONS, type OptionSpec, runTimeKey, WORKER_COUNT } from "./config/options";
import type { ValueKind } from "./config/value-kinds";
import type { Settings } from "./core/state";
import { decodeLine, MAX_YAML_REQUEST_CHARS } from "./protocol";
import { parseSignal, type SignalName, shortSignalName, STANDARD_SIGNALS } from "./signal-names";

/** Arguments as the handler takes them, or the refusal the client gets (its wording is part of the protocol). */
export type ArgCheck<T> = { ok: true; value: T } | { ok: false; refusal: string };

export interface ArgRule<T> {
  /** Check a request's arguments. */
  parse(args: readonly string[]): ArgCheck<T>;
  /**
   * The words Tab offers for argument number `index` (0 is the first after
   * the command name). Empty where any word goes (a number) or none is taken.
   * Every word offered must pass `parse` (test/unit/command-registry.test.ts).
   */
  choices(index: number): readonly string[];
}

const ok = <T>(value: T): ArgCheck<T> => ({ ok: true, value });
const refuse = (refusal: string): ArgCheck<never> => ({ ok: false, refusal });

/**
 * Arguments are not looked at: Einhorn answers `inc extra` like `inc`, and
 * so does einhorn (its clients may send args to every command).
 */
const IGNORED: ArgRule<undefined> = { parse: () => ok(undefined), choices: () => [] };

/**
 * An optional first word from a fixed set; later words are ignored (as they
 * always were). `offered` is what completion shows, when some accepted words
 * are not advertised (`status text`, the spelled-out default).
 */
function optionalWord<W extends string, D>(opts: { accepted: readonly W[]; offered?: readonly W[]; absent: D; refusal(args: readonly string[]): string }): ArgRule<W | D> {
  return {
    parse(args) {
      if (args.length === 0) return ok(opts.absent);
      const word = args[0]!;
      return (opts.accepted as readonly string[]).includes(word) ? ok(word as W) : refuse(opts.refusal(args));
    },
    choices: (index) => (index === 0 ? (opts.offered ?? opts.accepted) : []),
  };
}

// --- signals -----------------------------------------------------------------------------

/**
 * Job-control signals stop workers without ending them: the master would then
 * wait forever for a worker that never exits (escalation to SIGKILL only
 * follows signals that ask a worker to leave), so `signal` and `die` refuse them.
 */
const JOB_CONTROL: ReadonlySet<SignalName> = new Set<SignalName>(["SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU"]);

/**
 * Signals `signal`/`die` accept: every spelling src/signal-names.ts reads
 * ("USR2", "usr2", "SIGUSR2", "12", an alias), as its canonical name,
 * except the job-control ones.
 */
export function parseSignalArg(arg: string): SignalName | null {
  const found = parseSignal(arg);
  return found && !JOB_CONTROL.has(found) ? found : null;
}

/**
 * Why `arg` is not accepted: not a signal at all, or a job-control one, which
 * is named as such (it is a signal; the policy above refuses it).
 */
function refusedSignal(arg: string, command: "signal" | "die", tryThese: string): ArgCheck<never> {
  const found = parseSignal(arg);
  const jobControl = "STOP, TSTP, TTIN and TTOU are refused";
  if (found && JOB_CONTROL.has(found)) {
    const name = shortSignalName(found);
    return refuse(`${command} ${name} refused: ${name} pauses workers without ending them (${jobControl}); ${tryThese}`);
  }
  return refuse(`'${arg}' is not a signal name; ${tryThese}${command === "signal" ? ` (${jobControl})` : ""}`);
}

/**
 * Signals a worker ignores unless it asked for them (WINCH, CHLD, URG) or
 * that only resume it (CONT). As a `die` signal they would leave the master
 * "stopping" for ever, waiting for workers that never leave, so `die`
 * refuses them; `signal` still sends them (Einhorn allows it, and nothing
 * waits on the result).
 */
const IGNORED_BY_DEFAULT: ReadonlySet<SignalName> = new Set<SignalName>(["SIGWINCH", "SIGCHLD", "SIGURG", "SIGCONT"]);

/**
 * What completion filters by each rule: the standard signals' short names,
 * sorted (the master also reads aliases, numbers and real-time names;
 * completion offers one spelling of each signal a person would send).
 */
const ALL_SIGNAL_NAMES = STANDARD_SIGNALS.map(shortSignalName).sort();

/** `signal SIG [SIG...]`: every name is checked before any is sent. */
const SIGNALS: ArgRule<SignalName[]> = {
  parse(args) {
    if (args.length === 0) return refuse("signal needs at least one signal name, like 'signal USR1' or 'signal HUP TERM'");
    const sigs: SignalName[] = [];
    for (const a of args) {
      const s = parseSignalArg(a);
      if (!s) return refusedSignal(a, "signal", "try USR1, USR2, HUP, TERM, INT, QUIT, WINCH");
      sigs.push(s);
    }
    return ok(sigs);
  },
  choices: () => ALL_SIGNAL_NAMES.filter((n) => parseSignalArg(n) !== null),
};

/** `die [SIG]`: null means the retire signal (the handler knows it). */
const DIE_SIGNAL: ArgRule<SignalName | null> = {
  parse(args) {
    if (args.length > 1) return refuse(`die takes at most one signal name, got '${args.join(" ")}'`);
    if (args.length === 0) return ok(null);
    const sig = parseSignalArg(args[0]!);
    if (!sig) return refusedSignal(args[0]!, "die", "die takes one, like USR2 (the default) or TERM");
    if (IGNORED_BY_DEFAULT.has(sig)) {
      return refuse(`die ${shortSignalName(sig)} refused: workers ignore ${shortSignalName(sig)} unless they handle it, so the master would wait for them for ever; die takes a signal that ends a worker, like USR2 (the default), TERM, INT or QUIT`);
    }
    return ok(sig);
  },
  choices: (index) => (index === 0 ? ALL_SIGNAL_NAMES.filter((n) => DIE_SIGNAL.parse([n]).ok) : []),
};

// --- set_workers -------------------------------------------------------------------------

/** set_workers takes what -n takes, within the same bounds. */
const SET_WORKERS: ArgRule<number> = {
  parse(args) {
    const n = args.length === 1 && /^\d+$/.test(args[0]!) ? WORKER_COUNT.parse(args[0]!) : null;
    if (!n?.ok) return refuse(`set_workers takes one whole number from ${WORKER_COUNT.min} to ${WORKER_COUNT.max}, got ${args.length ? `'${args.join(" ")}'` : "nothing"}`);
    return ok(n.value);
  },
  choices: () => [],
};

// --- config ------------------------------------------------------------------------------

/** The options `config` may set (options.ts marks them), by their key: number, max_unacked, ... */
const CONFIG_KEYS = new Map<string, OptionSpec>(OPTIONS.filter((o) => o.atRunTime).map((o) => [runTimeKey(o), o]));

/** The keys `config` knows, in the order its messages list them. */
export const CONFIG_KEY_NAMES = [...CONFIG_KEYS.keys()];

/**
 * A `config` value: text from KEY=VALUE, or a YAML scalar. Numbers are read
 * as their text, so a value means what it means on the command line; null
 * unsets an option whose default is none.
 */
function settingValue(key: string, o: OptionSpec, v: unknown): { ok: true; value: unknown } | { ok: false; refusal: string } {
  const kind = o.kind as ValueKind<unknown>;
  if (v === null && o.unset !== undefined) return { ok: true, value: null };
  const text = typeof v === "string" ? v : typeof v === "number" && Number.isFinite(v) ? String(v) : null;
  const parsed = text === null ? null : kind.parse(text);
  if (parsed?.ok) return { ok: true, value: parsed.value };
  const unset = o.unset === undefined ? "" : `, or null for ${o.unset}`;
  return { ok: false, refusal: `config: ${key} must be ${kind.notation}${unset}; ${JSON.stringify(v)} is not ${kind.allowed}` };
}

export interface ConfigChange { patch: Partial<Settings>; changes: string[] }

/** `config` args: a YAML/JSON mapping in one argument, or KEY=VALUE pairs. */
export function parseConfigArgs(args: readonly string[]): ConfigChange | string {
  const known = CONFIG_KEY_NAMES.join(", ");
  if (args.length === 0) return `config needs settings, as KEY=VALUE pairs or a YAML mapping. Known keys: ${known}`;
  let entries: Array<[string, unknown]>;
  if (args.length === 1 && !/^[A-Za-z_]\w*=/.test(args[0]!)) {
    let doc: unknown;
    try { doc = decodeLine(args[0]!, { maxYamlChars: MAX_YAML_REQUEST_CHARS }); } catch (e) { return `config: ${(e as Error).message}`; }
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return "config: expected a mapping like {number: 4}";
    entries = Object.entries(doc);
  } else {
    entries = [];
    for (const a of args) {
      const eq = a.indexOf("=");
      if (eq < 0) return `config: '${a}' is not KEY=VALUE`;
      const raw = a.slice(eq + 1);
      entries.push([a.slice(0, eq), raw === "null" ? null : raw]);
    }
  }
  if (entries.length === 0) return `config: no settings given. Known settings: ${known}`;
  const patch: Partial<Settings> = {};
  const changes: string[] = [];
  for (const [key, value] of entries) {
    // A Map: `constructor`, `toString` and `__proto__` are not settings.
    const o = CONFIG_KEYS.get(key);
    if (!o) return `config: unknown setting '${key}'. Known settings: ${known}`;
    const v = settingValue(key, o, value);
    if (!v.ok) return v.refusal;
    (patch as Record<string, unknown>)[o.field] = v.value;
    changes.push(`${key}=${value === null ? "null" : String(value)}`);
  }
  return { patch, changes };
}

/** Completion offers `KEY=` for each key, at every position: KEY=VALUE pairs may come in any number. */
const CONFIG: ArgRule<ConfigChange> = {
  parse(args) {
    const parsed = parseConfigArgs(args);
    return typeof parsed === "string" ? refuse(parsed) : ok(parsed);
  },
  choices: () => CONFIG_KEY_NAMES.map((k) => `${k}=`),
};

// --- the registry ------------------------------------------------------------------------

/** "person": anyone may send it, and `einhorn sh` offers it. "worker": sent by workers; the master closes the connection without an answer, so the shell neither offers nor sends it. */
export type Sender = "person" | "worker";

export interface CommandSpec<T> {
  /** The line in `help` (Einhorn's layout: `name: description`). */
  description: string;
  sender: Sender;
  args: ArgRule<T>;
}

/**
 * Every command, in the order the unknown-command answer lists them (that
 * order is part of the wording clients see; `help` sorts by name).
 */
export const COMMANDS = {
  "worker:ack": { description: "Worker ACK: the worker is up (sent by workers, not people)", sender: "worker", args: IGNORED },
  "worker:ping": { description: "Worker ping: records when a worker last checked in", sender: "worker", args: IGNORED },
  ehlo: { description: "Print a welcome banner naming the master", sender: "person", args: IGNORED },
  help: { description: "List the commands", sender: "person", args: IGNORED },
  state: {
    description: "Dump the master's state: Einhorn's layout (Ruby YAML, for Einhorn's clients); 'state json' or 'state yaml' for einhorn's own schema",
    sender: "person",
    // null: Einhorn's own layout, which its clients load with Psych.
    args: optionalWord({ accepted: ["json", "yaml"] as const, absent: null, refusal: (args) => `state takes nothing (Einhorn's layout, for Einhorn's clients), 'json' or 'yaml' (einhorn's own schema), got '${args[0]}'` }),
  },
  status: {
    description: "Workers at a glance: state, uptime, CPU, memory, restarts ('status json' for scripts)",
    sender: "person",
    args: optionalWord({ accepted: ["json", "text"] as const, offered: ["json"] as const, absent: "text" as const, refusal: (args) => `status takes 'json' or nothing (the table), got '${args.join(" ")}'` }),
  },
  inc: { description: "Increment the number of workers", sender: "person", args: IGNORED },
  dec: { description: "Decrement the number of workers (never below 1)", sender: "person", args: IGNORED },
  set_workers: { description: `Set the number of workers: set_workers N (${WORKER_COUNT.min}..${WORKER_COUNT.max})`, sender: "person", args: SET_WORKERS },
  quieter: { description: "Decrease the master's log verbosity", sender: "person", args: IGNORED },
  louder: { description: "Increase the master's log verbosity", sender: "person", args: IGNORED },
  signal: { description: "Send signals to every worker: signal SIG [SIG...]", sender: "person", args: SIGNALS },
  die: { description: "Send a signal (default USR2) to every worker, stop respawning, exit once they are gone: die [SIG]", sender: "person", args: DIE_SIGNAL },
  config: { description: "Change settings: config KEY=VALUE ... or a YAML mapping", sender: "person", args: CONFIG },
  upgrade: { description: "Smooth upgrade: new workers replace old ones one for one as they ACK", sender: "person", args: IGNORED },
  upgrade_fleet: { description: "Fleet upgrade: start every new worker, retire all old ones once every new one ACKed", sender: "person", args: IGNORED },
  reload: { description: "Re-execute the master without replacing workers", sender: "person", args: IGNORED },
} satisfies Record<string, CommandSpec<unknown>>;

export type CommandName = keyof typeof COMMANDS;

/** What a command's handler receives as its arguments, once its rule accepted them. */
export type ArgsOf<N extends CommandName> = (typeof COMMANDS)[N]["args"] extends ArgRule<infer T> ? T : never;

export const COMMAND_NAMES = Object.keys(COMMANDS) as CommandName[];

/** Whether a client's command word names a command (own keys only: not `constructor` or `__proto__`). */
export function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(COMMANDS, name);
}

/** Every name, in registry order, as the unknown-command and parse-error answers list them. */
export function commandList(): string {
  return COMMAND_NAMES.join(", ");
}

/** Reference layout: Einhorn's opening line, a blank line, then `name: description` sorted by name. */
export function helpText(): string {
  const lines = [...COMMAND_NAMES].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map((c) => `${c}: ${COMMANDS[c].description}`);
  return ["You are speaking to the Einhorn command socket. You can run the following commands:", "", ...lines].join("\n");
}

/** The commands people send (what `einhorn sh` offers). */
export function personCommands(): CommandName[] {
  return COMMAND_NAMES.filter((n) => COMMANDS[n].sender === "person");
}

/** The commands only workers send. */
export function workerCommands(): CommandName[] {
  return COMMAND_NAMES.filter((n) => COMMANDS[n].sender === "worker");
}

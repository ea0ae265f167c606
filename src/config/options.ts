// The master's options, each declared once: its names, the kind of value it
// takes (value-kinds.ts: the parser and what is allowed), its default, the
// MasterConfig field it fills, whether a config file and `config KEY=VALUE`
// may give it, what an upgrade does with a changed value, its usage line and
// how `einhorn systemd-unit` carries it. Everything else is derived from this
// table: the argv parser and the file reader (master-args.ts, config-file.ts),
// `einhorn -h` (src/cli/usage.ts), the command socket's `config` keys
// (src/command-registry.ts), the config diff of an upgrade
// (src/master/config-reload.ts) and docs/config.md's table (checked by
// test/unit/config-docs.test.ts).
//
// The order is `einhorn -h`'s, which follows Einhorn 1.1.1's usage.
import { availableParallelism } from "node:os";
import { join } from "node:path";
import type { Settings } from "../core/state";
import { RETIRE_SIGNAL_CHOICES } from "../core/pool";
import { MAX_WORKERS } from "../core/step";
import type { MasterConfig } from "./master-config";
import {
  ACK_MODE, anyText, BIND, COMMAND_LINE, type CountKind, FLAG, type FlagKind, NICE, oneOf, type OptionKind,
  POSITIVE_SECONDS, SECONDS_OR_OFF, signalChoice, size, TCP_ADDRESS, type ValueKind, VERBOSITY, wholeNumber,
} from "./value-kinds";

/**
 * What an upgrade (which re-reads --config FILE) does when the option's value
 * changed:
 * - "fixed": it was bound or created at start; the upgrade fails, naming it;
 * - "master": the re-executed master takes it;
 * - "worker": it shapes what a worker generation runs; the new workers take it;
 * - "setting": the master keeps it in its state; the upgrade applies the change;
 * - "once": it acts on this start only and is never handed over.
 */
export type Reload = "fixed" | "master" | "worker" | "setting" | "once";

/**
 * How `einhorn systemd-unit` carries the option into ExecStart=: as given;
 * with --socket, by handing the address to a systemd socket unit; or not at
 * all (refused: it has no place in a unit's command line). systemd-unit.ts
 * reads it (with each option's value kind, for the flags written bare).
 */
export type UnitRendering = "as-given" | "socket-unit" | "refused";

type Field = keyof MasterConfig;
/** The fields the master also keeps in its state (core/state.ts), which `config` and an upgrade can change at run time. */
export type SettingField = keyof Settings & Field;

/** What a default may depend on: where the files go, how many CPUs there are. */
export interface DefaultContext {
  tmpdir: string;
  cpus: number;
  /** "einhorn", or "einhorn-NAME" with -c NAME: the default command socket, pidfile and lockfile are named after it. */
  fileBase: string;
}

/** One option, as the parsers, the usage and the diff read it. */
export interface OptionSpec<F extends Field = Field> {
  long: string;
  short?: string;
  /** The value's word in the usage (`-n N`); absent for a flag. */
  placeholder?: string;
  kind: OptionKind;
  /** Given several times, the values form a list (-b, --drop-env-var). */
  repeat: boolean;
  field: F;
  reload: Reload;
  /** A config file may give it, by its long name (dashes or underscores). */
  inFile: boolean;
  /** `config KEY=VALUE` may set it at run time; KEY is the long name with underscores. */
  atRunTime: boolean;
  /** The value when the option is not given (flags: false; lists: empty). */
  default: (ctx: DefaultContext) => unknown;
  /** For an option whose default is "none" (null): what that means, as `config` says it ("no cap"). */
  unset?: string;
  /** For a counted flag: how far one use moves the count. */
  step?: number;
  /** Left out of the usage: internal. */
  hidden: boolean;
  help: string;
  unit: UnitRendering;
}

/** A class the option's field can have: "setting" only for fields the master's state holds. */
type ReloadOf<F extends Field> = F extends SettingField ? Reload : Exclude<Reload, "setting">;

interface Common<F extends Field> {
  long: string;
  short?: string;
  field: F;
  /** Required: an option that does not say what an upgrade does with it does not compile. */
  reload: ReloadOf<F>;
  help: string;
  unit: UnitRendering;
  /** Not in a config file (the file's own path, one-shot internals). */
  notInFile?: true;
  hidden?: true;
}

type Default<T> = T | ((ctx: DefaultContext) => T);
const asFunction = <T>(d: Default<T>): ((ctx: DefaultContext) => T) => (typeof d === "function" ? (d as (ctx: DefaultContext) => T) : () => d);

function base<F extends Field>(c: Common<F>) {
  return { long: c.long, short: c.short, field: c.field, reload: c.reload as Reload, help: c.help, unit: c.unit, inFile: !c.notInFile, hidden: c.hidden ?? false };
}

/** An option that takes one value; given twice, the last one counts. */
function valued<F extends Field>(c: Common<F> & {
  placeholder: string;
  kind: ValueKind<NonNullable<MasterConfig[F]>>;
  default: Default<MasterConfig[F]>;
  /** Only for a setting the master's state holds. */
  atRunTime?: F extends SettingField ? true : never;
  unset?: string;
}): OptionSpec<F> {
  return { ...base(c), placeholder: c.placeholder, kind: c.kind as ValueKind<unknown>, repeat: false, atRunTime: c.atRunTime ?? false, default: asFunction(c.default), unset: c.unset };
}

type ListField = { [K in Field]: MasterConfig[K] extends readonly unknown[] ? K : never }[Field];

/** An option that may be given several times; its values form a list, in order. */
function repeated<F extends ListField>(c: Common<F> & { placeholder: string; kind: ValueKind<MasterConfig[F][number]> }): OptionSpec<F> {
  return { ...base(c), placeholder: c.placeholder, kind: c.kind as ValueKind<unknown>, repeat: true, atRunTime: false, default: () => [] };
}

type FlagField = { [K in Field]: MasterConfig[K] extends boolean ? K : never }[Field];

function flag<F extends FlagField>(c: Common<F>): OptionSpec<F> {
  return { ...base(c), kind: FLAG satisfies FlagKind, repeat: false, atRunTime: false, default: () => false };
}

/** -q and -v: counted flags moving one number. */
function counted<F extends Field>(c: Common<F> & { kind: CountKind; step: number }): OptionSpec<F> {
  return { ...base(c), kind: c.kind, step: c.step, repeat: false, atRunTime: false, default: () => c.kind.base };
}

/** -n, and the command socket's set_workers. */
export const WORKER_COUNT = wholeNumber(1, MAX_WORKERS);

export const OPTIONS = [
  repeated({ long: "bind", short: "b", placeholder: "ADDR", field: "binds", kind: BIND, reload: "fixed", unit: "socket-unit", help: "Bind and listen on ADDR before any worker starts (repeatable): HOST:PORT, [IPV6]:PORT or unix:/PATH, with ,r ,n ,reuseport ,mode=0660 flags" }),
  valued({ long: "backlog", short: "l", placeholder: "N", field: "backlog", kind: wholeNumber(1, 65535), default: 100, reload: "fixed", unit: "as-given", help: "Listen backlog (default 100)" }),
  valued({ long: "command-name", short: "c", placeholder: "NAME", field: "commandName", kind: anyText("a name"), default: null, reload: "fixed", unit: "as-given", help: "Name shown in ps; also names the default command socket and lockfile" }),
  valued({ long: "socket-path", short: "d", placeholder: "PATH", field: "socketPath", kind: anyText("a path"), default: (ctx) => join(ctx.tmpdir, `${ctx.fileBase}.sock`), reload: "fixed", unit: "as-given", help: "Command socket path" }),
  // No pidfile unless asked, as Einhorn 1.1.1 (`pidfile: nil`): a default
  // one in the shared temp dir was overwritten by every other master, and a
  // file planted there by another user stopped every default master.
  valued({ long: "pidfile", short: "e", placeholder: "PATH", field: "pidfile", kind: anyText("a path"), default: null, reload: "fixed", unit: "as-given", help: "Write the master's pid to PATH (no pidfile unless given)" }),
  valued({ long: "lockfile", short: "f", placeholder: "PATH", field: "lockfile", kind: anyText("a path"), default: (ctx) => join(ctx.tmpdir, `${ctx.fileBase}.lock`), reload: "fixed", unit: "as-given", help: "Lockfile path" }),
  flag({ long: "command-socket-as-fd", short: "g", field: "commandSocketAsFd", reload: "worker", unit: "as-given", help: "Give each worker EINHORN_SOCK_FD, a descriptor already connected to the command socket" }),
  flag({ long: "kill-children-on-exit", short: "k", field: "killChildrenOnExit", reload: "worker", unit: "as-given", help: "Workers get SIGUSR2 (the --retire-signal) when the master dies, even by SIGKILL" }),
  valued({ long: "ack-mode", short: "m", placeholder: "MODE", field: "ackMode", kind: ACK_MODE, default: { kind: "timer", seconds: 1 }, reload: "setting", unit: "as-given", help: "'manual', or seconds a worker must live to count as up (timer; default 1)" }),
  valued({ long: "number", short: "n", placeholder: "N", field: "number", kind: WORKER_COUNT, default: 1, reload: "setting", atRunTime: true, unit: "as-given", help: "Number of workers (default 1)" }),
  // Part of a generation's spec: the upgrade's preflight checks the module the
  // re-read configuration names (master.ts runPreflight), before any worker runs it.
  valued({ long: "preload", short: "p", placeholder: "PATH", field: "preload", kind: anyText("a path"), default: null, reload: "worker", unit: "as-given", help: "Run workers from a Bun/TypeScript module exporting einhorn_main (checked before start and before every upgrade; PROGRAM ARGS become its argv); any other file is ignored with a warning" }),
  counted({ long: "quiet", short: "q", field: "verbosity", kind: VERBOSITY, step: 1, reload: "setting", unit: "as-given", help: "Quieter logs (repeatable)" }),
  counted({ long: "verbose", short: "v", field: "verbosity", kind: VERBOSITY, step: -1, reload: "setting", unit: "as-given", help: "Louder logs (repeatable)" }),
  valued({ long: "seconds", short: "s", placeholder: "N", field: "seconds", kind: POSITIVE_SECONDS, default: 1, reload: "setting", atRunTime: true, unit: "as-given", help: "Base respawn interval in seconds (default 1, > 0)" }),
  valued({ long: "signal-timeout", short: "t", placeholder: "T", field: "signalTimeout", kind: POSITIVE_SECONDS, default: null, unset: "never SIGKILL", reload: "setting", atRunTime: true, unit: "as-given", help: "SIGKILL a worker still alive T seconds after a signal asked it to leave" }),
  valued({ long: "retire-signal", placeholder: "SIG", field: "retireSignal", kind: signalChoice(RETIRE_SIGNAL_CHOICES, "a signal that asks a worker to leave"), default: "SIGUSR2", reload: "worker", unit: "as-given", help: "What workers get to leave, on upgrade and graceful stop (USR2, TERM, QUIT or INT; default USR2). One still alive 30s later is named in a warning" }),
  valued({ long: "max-unacked", placeholder: "N", field: "maxUnacked", kind: wholeNumber(1), default: (ctx) => Math.max(1, ctx.cpus), reload: "setting", atRunTime: true, unit: "as-given", help: "At most N new unacknowledged workers at once (default: number of CPUs)" }),
  valued({ long: "max-upgrade-additional", placeholder: "N", field: "maxUpgradeAdditional", kind: wholeNumber(0), default: null, unset: "no cap", reload: "setting", atRunTime: true, unit: "as-given", help: "During an upgrade, at most number + N workers alive" }),
  valued({ long: "ack-timeout", placeholder: "SECONDS", field: "ackTimeout", kind: POSITIVE_SECONDS, default: null, unset: "no time limit", reload: "setting", atRunTime: true, unit: "as-given", help: "Fail an upgrade whose new worker has not ACKed within SECONDS" }),
  valued({ long: "upgrade-max-deaths", placeholder: "N", field: "upgradeMaxDeaths", kind: wholeNumber(1), default: 3, reload: "setting", atRunTime: true, unit: "as-given", help: "Fail an upgrade after N new workers in a row die before ACKing (default 3)" }),
  valued({ long: "upgrade-bake", placeholder: "SECONDS", field: "upgradeBake", kind: SECONDS_OR_OFF, default: 0, reload: "setting", atRunTime: true, unit: "as-given", help: "After an upgrade is up, watch the new workers for SECONDS and roll back to the previous program if more than --upgrade-max-deaths of them exit unasked (default 0: off)" }),
  repeated({ long: "drop-env-var", placeholder: "VAR", field: "dropEnvVars", kind: anyText("a variable name"), reload: "master", unit: "as-given", help: "Remove VAR from the environment restored on re-exec (repeatable)" }),
  valued({ long: "reexec-as", placeholder: "CMDLINE", field: "reexecAs", kind: COMMAND_LINE, default: null, reload: "master", unit: "as-given", help: "Command line used instead of this binary when the master re-executes itself" }),
  // The master's level is set once at start; the workers' shapes each generation.
  valued({ long: "nice", placeholder: "MASTER[:WORKER[:RENICE_CMD]]", field: "nice", kind: NICE, default: { master: null, worker: null, reniceCmd: null }, reload: "worker", unit: "as-given", help: "Nice levels for the master and workers" }),
  valued({ long: "log-format", placeholder: "FORMAT", field: "logFormat", kind: oneOf(["text", "plain", "json"] as const), default: "text", reload: "master", unit: "as-given", help: "'text' (default: Einhorn's layout behind a UTC ISO 8601 timestamp), 'plain' (Einhorn's layout exactly) or 'json' (one object per line)" }),
  valued({ long: "worker-output", placeholder: "MODE", field: "workerOutput", kind: oneOf(["inherit", "prefix", "json"] as const), default: "inherit", reload: "fixed", unit: "as-given", help: "'inherit' (default: workers write to the master's stdout/stderr), 'prefix' (the master captures each line and tags it [WORKER pid #index]) or 'json' (one object per line)" }),
  valued({ long: "metrics", placeholder: "HOST:PORT", field: "metrics", kind: TCP_ADDRESS, default: null, reload: "fixed", unit: "as-given", help: "Serve Prometheus metrics on http://HOST:PORT/metrics and a health check on /healthz (port 0: the kernel picks; logged)" }),
  // Only a warning's switch: the metrics address itself is fixed at start.
  flag({ long: "metrics-allow-remote", field: "metricsAllowRemote", reload: "master", unit: "as-given", help: "Say that --metrics on a non-loopback address (0.0.0.0, a LAN address) is meant: without it the master warns at start, since /metrics needs no credentials to read" }),
  // The memory guard is the master's: the re-executed one watches with the new size.
  valued({ long: "max-memory", placeholder: "SIZE", field: "maxMemory", kind: size("1M"), default: null, reload: "master", unit: "as-given", help: "Replace a worker whose resident memory stays above SIZE (512M, 2G, ...): its successor first, then the retire signal; one at a time" }),
  flag({ long: "listen-fds", field: "listenFds", reload: "worker", unit: "as-given", help: "Also hand workers the sockets the systemd way: fds 3, 4, ... with LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES" }),
  flag({ long: "pass-notify-socket", field: "passNotifySocket", reload: "worker", unit: "as-given", help: "Let NOTIFY_SOCKET through to workers (by default the master alone speaks sd_notify for the pool; for NotifyAccess=all)" }),
  flag({ long: "subreaper", field: "subreaper", reload: "fixed", unit: "as-given", help: "Reap orphaned grandchildren of the workers (automatic when einhorn runs as PID 1)" }),
  // The file's path comes from the command line, which every upgrade re-reads unchanged.
  valued({ long: "config", placeholder: "FILE", field: "configFile", kind: anyText("a path"), default: null, reload: "fixed", notInFile: true, unit: "as-given", help: "Read options, program and arguments from a YAML file (docs/config.md); the command line overrides it. Re-read by every upgrade" }),
  valued({ long: "with-state-fd", placeholder: "FD", field: "withStateFd", kind: wholeNumber(0), default: null, reload: "once", notInFile: true, hidden: true, unit: "refused", help: "Internal: continue a master whose state is readable on FD" }),
  flag({ long: "upgrade-check", field: "upgradeCheck", reload: "once", notInFile: true, hidden: true, unit: "refused", help: "Internal: exit 0 if this binary can start" }),
  flag({ long: "version", field: "version", reload: "once", notInFile: true, unit: "refused", help: "Print the version and exit" }),
  flag({ long: "help", short: "h", field: "help", reload: "once", notInFile: true, unit: "refused", help: "Show this help" }),
];

/**
 * Every MasterConfig field but the program (and what parseMasterArgs records
 * about the command line itself) comes from an option: a field added to
 * MasterConfig without one makes this type an error.
 */
export type FieldsWithoutOption = Exclude<Field, (typeof OPTIONS)[number]["field"] | "program" | "commandLine">;
type MustBeTrue<T extends true> = T;
export type EveryFieldHasAnOption = MustBeTrue<[FieldsWithoutOption] extends [never] ? true : false>;

const BY_LONG = new Map<string, OptionSpec>(OPTIONS.map((o) => [o.long, o]));

export function optionByLong(long: string): OptionSpec | undefined {
  return BY_LONG.get(long);
}

/** How messages name an option: "-n/--number", or "--max-unacked". */
export function flagName(o: OptionSpec): string {
  return o.short ? `-${o.short}/--${o.long}` : `--${o.long}`;
}

/** The key `config KEY=VALUE` knows the option by. */
export function runTimeKey(o: OptionSpec): string {
  return o.long.replace(/-/g, "_");
}

/** The defaults' context on this machine, for what `defaults` leaves out. */
export function defaultContext(opts: { tmpdir: string; cpus?: number; commandName: string | null }): DefaultContext {
  return { tmpdir: opts.tmpdir, cpus: opts.cpus ?? availableParallelism(), fileBase: opts.commandName ? `einhorn-${opts.commandName}` : "einhorn" };
}

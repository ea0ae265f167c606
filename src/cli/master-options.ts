// The master's command line: `einhorn [options] [--] PROGRAM [ARGS...]`.
//
// Parsed here by a strict table rather than by citty's parser, because
// Einhorn (Ruby's OptionParser#order!) stops at the first non-option: in
// `einhorn -n 2 ./server -p 80` the `-p 80` belongs to the server. citty's
// mri-style parser would take it, and would accept unknown flags silently.
// citty still renders the usage text from the same table (see main.ts).
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { type BindSpec, BindSpecError, parseBindSpec } from "../master/bind-spec";
import { shellSplit } from "../master/shell-split";
import { ConfigFileError, configPath, readConfigFile } from "./config-file";
import { parseSize } from "../master/proc-stats";
import { RETIRE_SIGNAL_CHOICES } from "../core/pool";
import { parseSignal, shortSignalName, type SignalName } from "../signal-names";

export interface OptionDef {
  long: string;
  short?: string;
  value?: string; // placeholder; absent for boolean flags
  repeat?: boolean;
  hidden?: boolean;
  description: string;
}

export const MASTER_OPTIONS: OptionDef[] = [
  { long: "bind", short: "b", value: "ADDR", repeat: true, description: "Bind and listen on ADDR before any worker starts (repeatable): HOST:PORT, [IPV6]:PORT or unix:/PATH, with ,r ,n ,reuseport ,mode=0660 flags" },
  { long: "backlog", short: "l", value: "N", description: "Listen backlog (default 100)" },
  { long: "command-name", short: "c", value: "NAME", description: "Name shown in ps; also names the default command socket and lockfile" },
  { long: "socket-path", short: "d", value: "PATH", description: "Command socket path" },
  { long: "pidfile", short: "e", value: "PATH", description: "Write the master's pid to PATH (no pidfile unless given)" },
  { long: "lockfile", short: "f", value: "PATH", description: "Lockfile path" },
  { long: "command-socket-as-fd", short: "g", description: "Give each worker EINHORN_SOCK_FD, a descriptor already connected to the command socket" },
  { long: "kill-children-on-exit", short: "k", description: "Workers get SIGUSR2 (the --retire-signal) when the master dies, even by SIGKILL" },
  { long: "ack-mode", short: "m", value: "MODE", description: "'manual', or seconds a worker must live to count as up (timer; default 1)" },
  { long: "number", short: "n", value: "N", description: "Number of workers (default 1)" },
  { long: "preload", short: "p", value: "PATH", description: "Run workers from a Bun/TypeScript module exporting einhorn_main (checked before start and before every upgrade; PROGRAM ARGS become its argv); any other file is ignored with a warning" },
  { long: "quiet", short: "q", description: "Quieter logs (repeatable)" },
  { long: "verbose", short: "v", description: "Louder logs (repeatable)" },
  { long: "seconds", short: "s", value: "N", description: "Base respawn interval in seconds (default 1, > 0)" },
  { long: "signal-timeout", short: "t", value: "T", description: "SIGKILL a worker still alive T seconds after a signal asked it to leave" },
  { long: "retire-signal", value: "SIG", description: "What workers get to leave, on upgrade and graceful stop (USR2, TERM, QUIT or INT; default USR2). One still alive 30s later is named in a warning" },
  { long: "max-unacked", value: "N", description: "At most N new unacknowledged workers at once (default: number of CPUs)" },
  { long: "max-upgrade-additional", value: "N", description: "During an upgrade, at most number + N workers alive" },
  { long: "ack-timeout", value: "SECONDS", description: "Fail an upgrade whose new worker has not ACKed within SECONDS" },
  { long: "upgrade-max-deaths", value: "N", description: "Fail an upgrade after N new workers in a row die before ACKing (default 3)" },
  { long: "upgrade-bake", value: "SECONDS", description: "After an upgrade is up, watch the new workers for SECONDS and roll back to the previous program if more than --upgrade-max-deaths of them exit unasked (default 0: off)" },
  { long: "drop-env-var", value: "VAR", repeat: true, description: "Remove VAR from the environment restored on re-exec (repeatable)" },
  { long: "reexec-as", value: "CMDLINE", description: "Command line used instead of this binary when the master re-executes itself" },
  { long: "nice", value: "MASTER[:WORKER[:RENICE_CMD]]", description: "Nice levels for the master and workers" },
  { long: "log-format", value: "FORMAT", description: "'text' (default: Einhorn's layout behind a UTC ISO 8601 timestamp), 'plain' (Einhorn's layout exactly) or 'json' (one object per line)" },
  { long: "worker-output", value: "MODE", description: "'inherit' (default: workers write to the master's stdout/stderr), 'prefix' (the master captures each line and tags it [WORKER pid #index]) or 'json' (one object per line)" },
  { long: "metrics", value: "HOST:PORT", description: "Serve Prometheus metrics on http://HOST:PORT/metrics and a health check on /healthz (port 0: the kernel picks; logged)" },
  { long: "metrics-allow-remote", description: "Say that --metrics on a non-loopback address (0.0.0.0, a LAN address) is meant: without it the master warns at start, since /metrics needs no credentials to read" },
  { long: "max-memory", value: "SIZE", description: "Replace a worker whose resident memory stays above SIZE (512M, 2G, ...): its successor first, then the retire signal; one at a time" },
  { long: "listen-fds", description: "Also hand workers the sockets the systemd way: fds 3, 4, ... with LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES" },
  { long: "subreaper", description: "Reap orphaned grandchildren of the workers (automatic when einhorn runs as PID 1)" },
  { long: "config", value: "FILE", description: "Read options, program and arguments from a YAML file (docs/config.md); the command line overrides it. Re-read by every upgrade" },
  { long: "with-state-fd", value: "FD", hidden: true, description: "Internal: continue a master whose state is readable on FD" },
  { long: "upgrade-check", hidden: true, description: "Internal: exit 0 if this binary can start" },
  { long: "version", description: "Print the version and exit" },
  { long: "help", short: "h", description: "Show this help" },
];

export type { MasterConfig } from "../master/config";
import type { MasterConfig } from "../master/config";

/** Bad command-line input. `exitCode` is 2 (usage), as documented in the README. */
export class UsageError extends Error {
  override name = "UsageError";
  exitCode = 2;
}

const byLong = new Map(MASTER_OPTIONS.map((o) => [o.long, o]));
const byShort = new Map(MASTER_OPTIONS.filter((o) => o.short).map((o) => [o.short!, o]));

function flagName(o: OptionDef): string {
  return o.short ? `-${o.short}/--${o.long}` : `--${o.long}`;
}

type Raw = Map<string, string[]>;

/** Split argv into option values (by long name) and the program with its arguments. */
export function splitArgv(argv: string[]): { raw: Raw; program: string[] } {
  const raw: Raw = new Map();
  const put = (o: OptionDef, v: string) => raw.set(o.long, [...(raw.get(o.long) ?? []), v]);
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i]!;
    if (arg === "--") return { raw, program: argv.slice(i + 1) };
    if (!arg.startsWith("-") || arg === "-") return { raw, program: argv.slice(i) };
    i++;
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      const o = byLong.get(name);
      if (!o) throw new UsageError(`unknown option '--${name}' (einhorn -h lists the options; put '--' before a program whose name starts with '-')`);
      if (!o.value) {
        if (eq >= 0) throw new UsageError(`${flagName(o)} takes no value, got '${arg}'`);
        put(o, "true");
      } else if (eq >= 0) put(o, arg.slice(eq + 1));
      else {
        if (i >= argv.length) throw new UsageError(`${flagName(o)} needs a value (${o.value})`);
        put(o, argv[i++]!);
      }
      continue;
    }
    // Short options, possibly bundled (-qq, -kg) or with an attached value (-n3).
    for (let j = 1; j < arg.length; j++) {
      const o = byShort.get(arg[j]!);
      if (!o) throw new UsageError(`unknown option '-${arg[j]}' in '${arg}' (einhorn -h lists the options)`);
      if (!o.value) { put(o, "true"); continue; }
      const attached = arg.slice(j + 1);
      if (attached) put(o, attached);
      else {
        if (i >= argv.length) throw new UsageError(`${flagName(o)} needs a value (${o.value})`);
        put(o, argv[i++]!);
      }
      break;
    }
  }
  return { raw, program: [] };
}

function last(raw: Raw, long: string): string | undefined {
  const v = raw.get(long);
  return v ? v[v.length - 1] : undefined;
}

function intOpt(raw: Raw, long: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = last(raw, long);
  if (v === undefined) return undefined;
  const o = byLong.get(long)!;
  if (!/^-?\d+$/.test(v.trim()) || Number(v) < min || Number(v) > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? `at least ${min}` : `from ${min} to ${max}`;
    throw new UsageError(`${flagName(o)} wants a whole number ${range}, got '${v}'`);
  }
  return Number(v);
}

function secondsOpt(raw: Raw, long: string): number | undefined {
  const v = last(raw, long);
  if (v === undefined) return undefined;
  const o = byLong.get(long)!;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n <= 0) {
    throw new UsageError(`${flagName(o)} wants a number of seconds greater than 0, got '${v}'`);
  }
  return n;
}

/** --upgrade-bake: seconds, 0 (off) or more. */
function bakeOpt(raw: Raw): number | undefined {
  const v = last(raw, "upgrade-bake");
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === "" || !Number.isFinite(n) || n < 0) throw new UsageError(`--upgrade-bake wants a number of seconds, 0 (off) or more, got '${v}'`);
  return n;
}

function niceLevel(v: string, which: string, whole: string): number {
  if (!/^-?\d+$/.test(v) || Number(v) < -20 || Number(v) > 19) {
    throw new UsageError(`--nice ${which} level must be a whole number from -20 to 19, got '${v}' in '${whole}'`);
  }
  return Number(v);
}

function retireSignalOpt(raw: Raw): SignalName {
  const v = last(raw, "retire-signal");
  if (v === undefined) return "SIGUSR2";
  const sig = parseSignal(v.trim());
  if (sig === null || !(RETIRE_SIGNAL_CHOICES as readonly SignalName[]).includes(sig)) {
    throw new UsageError(`--retire-signal wants one of ${RETIRE_SIGNAL_CHOICES.map(shortSignalName).join(", ")} (a signal that asks a worker to leave), got '${v}'`);
  }
  return sig;
}

export interface Defaults { tmpdir?: string; cpus?: number; cwd?: string }

/**
 * The master's configuration from its command line and, with --config FILE,
 * that file: the file gives defaults, the command line overrides it option by
 * option (a repeatable option given on the command line replaces the file's
 * list), and the program comes from the command line if it names one.
 */
export function parseMasterArgs(argv: string[], defaults: Defaults = {}): MasterConfig {
  const split = splitArgv(argv);
  const file = last(split.raw, "config");
  if (file === undefined) return { ...buildConfig(split.raw, split.program, defaults), configFile: null, commandLine: argv };
  const path = configPath(file, defaults.cwd);
  let content;
  try {
    content = readConfigFile(path, MASTER_OPTIONS);
  } catch (e) {
    if (e instanceof ConfigFileError) throw new UsageError(e.message, { cause: e });
    throw e;
  }
  // The file alone must be valid: its mistakes are reported as the file's.
  try {
    buildConfig(content.raw, content.program, defaults);
  } catch (e) {
    if (e instanceof UsageError) throw new UsageError(`config ${path}: ${e.message}`, { cause: e });
    throw e;
  }
  const merged = new Map(content.raw);
  for (const [k, v] of split.raw) merged.set(k, v);
  merged.set("config", [path]);
  return { ...buildConfig(merged, split.program.length ? split.program : content.program, defaults), configFile: path, commandLine: argv };
}

function buildConfig(raw: Raw, program: string[], defaults: Defaults): Omit<MasterConfig, "configFile" | "commandLine"> {
  const has = (long: string) => raw.has(long);
  const dir = defaults.tmpdir ?? tmpdir();
  const commandName = last(raw, "command-name") ?? null;
  const base = commandName ? `einhorn-${commandName}` : "einhorn";

  let ackMode: MasterConfig["ackMode"] = { kind: "timer", seconds: 1 };
  const m = last(raw, "ack-mode");
  if (m !== undefined) {
    if (m === "manual") ackMode = { kind: "manual" };
    else {
      const n = Number(m);
      if (m.trim() === "" || !Number.isFinite(n) || n < 0) {
        throw new UsageError(`-m/--ack-mode wants 'manual' or a number of seconds of 0 or more (timer), got '${m}'`);
      }
      ackMode = { kind: "timer", seconds: n };
    }
  }

  const binds: BindSpec[] = [];
  for (const b of raw.get("bind") ?? []) {
    try { binds.push(parseBindSpec(b)); } catch (e) {
      if (e instanceof BindSpecError) throw new UsageError(`-b/--bind: ${e.message}`);
      throw e;
    }
  }

  const nice: MasterConfig["nice"] = { master: null, worker: null, reniceCmd: null };
  const niceText = last(raw, "nice");
  if (niceText !== undefined) {
    const [mst, wrk, ...cmd] = niceText.split(":");
    if (mst) nice.master = niceLevel(mst, "master", niceText);
    if (wrk) nice.worker = niceLevel(wrk, "worker", niceText);
    if (cmd.length) {
      throw new UsageError(`--nice: a RENICE_CMD ('${cmd.join(":")}') is not supported; einhorn sets worker priorities itself with setpriority(2), so give --nice MASTER:WORKER`);
    }
  }

  const reexecAs = last(raw, "reexec-as") ?? null;
  if (reexecAs !== null) {
    let words: string[];
    try { words = shellSplit(reexecAs); } catch (e) { throw new UsageError(`--reexec-as: ${(e as Error).message}`); }
    if (words.length === 0) throw new UsageError("--reexec-as wants a command line, got an empty one");
  }

  const logFormat = last(raw, "log-format") ?? "text";
  if (logFormat !== "text" && logFormat !== "plain" && logFormat !== "json") throw new UsageError(`--log-format wants 'text', 'plain' or 'json', got '${logFormat}'`);

  const workerOutput = last(raw, "worker-output") ?? "inherit";
  if (workerOutput !== "inherit" && workerOutput !== "prefix" && workerOutput !== "json") {
    throw new UsageError(`--worker-output wants 'inherit', 'prefix' or 'json', got '${workerOutput}'`);
  }

  const metrics = last(raw, "metrics") ?? null;
  if (metrics !== null) {
    let spec: BindSpec | null = null;
    try { spec = parseBindSpec(metrics); } catch { /* reported below */ }
    if (!spec || spec.address.kind !== "tcp" || spec.text.includes(",")) {
      throw new UsageError(`--metrics wants HOST:PORT (like 127.0.0.1:9100, [::1]:9100 or 0.0.0.0:0), got '${metrics}'`);
    }
  }

  const maxMemoryText = last(raw, "max-memory");
  let maxMemory: number | null = null;
  if (maxMemoryText !== undefined) {
    maxMemory = parseSize(maxMemoryText);
    if (maxMemory === null || maxMemory < 1024 * 1024) {
      throw new UsageError(`--max-memory wants a size of at least 1M, in bytes or with K, M, G or T (powers of 1024), like 512M; got '${maxMemoryText}'`);
    }
  }

  const verbosity = Math.min(2, Math.max(0, 1 + (raw.get("quiet")?.length ?? 0) - (raw.get("verbose")?.length ?? 0)));

  const stateFd = intOpt(raw, "with-state-fd", 0);

  return {
    program,
    binds,
    backlog: intOpt(raw, "backlog", 1, 65535) ?? 100,
    commandName,
    socketPath: last(raw, "socket-path") ?? join(dir, `${base}.sock`),
    // No pidfile unless asked, as Einhorn 1.1.1 (`pidfile: nil`): a default
    // one in the shared temp dir was overwritten by every other master, and a
    // file planted there by another user stopped every default master.
    pidfile: last(raw, "pidfile") ?? null,
    lockfile: last(raw, "lockfile") ?? join(dir, `${base}.lock`),
    commandSocketAsFd: has("command-socket-as-fd"),
    killChildrenOnExit: has("kill-children-on-exit"),
    ackMode,
    number: intOpt(raw, "number", 1, 1000) ?? 1,
    preload: last(raw, "preload") ?? null,
    verbosity,
    seconds: secondsOpt(raw, "seconds") ?? 1,
    signalTimeout: secondsOpt(raw, "signal-timeout") ?? null,
    retireSignal: retireSignalOpt(raw),
    maxUnacked: intOpt(raw, "max-unacked", 1) ?? Math.max(1, defaults.cpus ?? availableParallelism()),
    maxUpgradeAdditional: intOpt(raw, "max-upgrade-additional", 0) ?? null,
    ackTimeout: secondsOpt(raw, "ack-timeout") ?? null,
    upgradeMaxDeaths: intOpt(raw, "upgrade-max-deaths", 1) ?? 3,
    upgradeBake: bakeOpt(raw) ?? 0,
    dropEnvVars: raw.get("drop-env-var") ?? [],
    reexecAs,
    nice,
    logFormat,
    workerOutput,
    metrics,
    metricsAllowRemote: has("metrics-allow-remote"),
    maxMemory,
    listenFds: has("listen-fds"),
    subreaper: has("subreaper"),
    withStateFd: stateFd ?? null,
    upgradeCheck: has("upgrade-check"),
    version: has("version"),
    help: has("help"),
  };
}

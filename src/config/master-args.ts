// The master's command line: `einhorn [options] [--] PROGRAM [ARGS...]`,
// and with --config FILE that file, turned into a MasterConfig by the option
// table (options.ts).
//
// Parsed here by that strict table rather than by a general argv library,
// because Einhorn (Ruby's OptionParser#order!) stops at the first
// non-option: in `einhorn -n 2 ./server -p 80` the `-p 80` belongs to the
// server. mri-style parsers would take it, and would accept unknown flags.
import { tmpdir } from "node:os";
import { ConfigFileError, configPath, readConfigFile } from "./config-file";
import type { MasterConfig } from "./master-config";
import { defaultContext, flagName, OPTIONS, type OptionSpec } from "./options";
import type { CountKind } from "./value-kinds";

export type { MasterConfig } from "./master-config";

/** Bad command-line input. `exitCode` is 2 (usage), as documented in the README. */
export class UsageError extends Error {
  override name = "UsageError";
  exitCode = 2;
}

/** Option values as given, by long name, in order; flags as "true" once per use. */
export type RawOptions = Map<string, string[]>;

/** Split argv into option values (by long name) and the program with its arguments. */
export function splitArgv(argv: string[], options: readonly OptionSpec[] = OPTIONS): { raw: RawOptions; program: string[] } {
  const byLong = new Map(options.map((o) => [o.long, o]));
  const byShort = new Map(options.filter((o) => o.short).map((o) => [o.short!, o]));
  const raw: RawOptions = new Map();
  const put = (o: OptionSpec, v: string) => raw.set(o.long, [...(raw.get(o.long) ?? []), v]);
  const needsValue = (o: OptionSpec) => new UsageError(`${flagName(o)} needs a value (${o.placeholder})`);
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
      if (o.kind.takes !== "value") {
        if (eq >= 0) throw new UsageError(`${flagName(o)} takes no value, got '${arg}'`);
        put(o, "true");
      } else if (eq >= 0) put(o, arg.slice(eq + 1));
      else {
        if (i >= argv.length) throw needsValue(o);
        put(o, argv[i++]!);
      }
      continue;
    }
    // Short options, possibly bundled (-qq, -kg) or with an attached value (-n3).
    for (let j = 1; j < arg.length; j++) {
      const o = byShort.get(arg[j]!);
      if (!o) throw new UsageError(`unknown option '-${arg[j]}' in '${arg}' (einhorn -h lists the options)`);
      if (o.kind.takes !== "value") { put(o, "true"); continue; }
      const attached = arg.slice(j + 1);
      if (attached) put(o, attached);
      else {
        if (i >= argv.length) throw needsValue(o);
        put(o, argv[i++]!);
      }
      break;
    }
  }
  return { raw, program: [] };
}

/** The option's value from `text`, or the UsageError saying what was given and what is allowed. */
export function parseOptionValue(o: OptionSpec, text: string): unknown {
  if (o.kind.takes !== "value") throw new Error(`${flagName(o)} takes no value`);
  const r = o.kind.parse(text);
  if (r.ok) return r.value;
  throw new UsageError(r.why !== undefined ? `${flagName(o)}: ${r.why}` : `${flagName(o)} wants ${o.kind.allowed}, got '${text}'`);
}

export interface Defaults { tmpdir?: string; cpus?: number; cwd?: string }

/**
 * The master's configuration from its command line and, with --config FILE,
 * that file: the file gives defaults, the command line overrides it option by
 * option (a repeatable option given on the command line replaces the file's
 * list), and the program comes from the command line if it names one.
 */
export function parseMasterArgs(argv: string[], defaults: Defaults = {}): MasterConfig {
  return readMasterArgs(argv, defaults).config;
}

/**
 * What parseMasterArgs reads, kept apart by where each value came from: the
 * command line's options and program, and the --config file's options (for
 * `systemd-unit`, which must know which setting the file makes). The file is
 * read once, here.
 */
export interface MasterArgs {
  config: MasterConfig;
  cmdRaw: RawOptions;
  cmdProgram: string[];
  /** Empty without --config. */
  fileRaw: RawOptions;
}

export function readMasterArgs(argv: string[], defaults: Defaults = {}): MasterArgs {
  const split = splitArgv(argv);
  const file = split.raw.get("config")?.at(-1);
  const fromCmd = (config: MasterConfig, fileRaw: RawOptions): MasterArgs => ({ config, cmdRaw: split.raw, cmdProgram: split.program, fileRaw });
  if (file === undefined) return fromCmd({ ...buildConfig(split.raw, split.program, defaults), configFile: null, commandLine: argv }, new Map());
  const path = configPath(file, defaults.cwd);
  let content;
  try {
    content = readConfigFile(path, OPTIONS);
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
  return fromCmd({ ...buildConfig(merged, split.program.length ? split.program : content.program, defaults), configFile: path, commandLine: argv }, content.raw);
}

/** Each option's field from its values, or its default; counted flags add up within their kind's bounds. */
function buildConfig(raw: RawOptions, program: string[], defaults: Defaults): Omit<MasterConfig, "configFile" | "commandLine"> {
  const out: Record<string, unknown> = { program };
  const unset: OptionSpec[] = [];
  // -q and -v are summed first and bounded once: -qqq -v is one step quieter than the default.
  const counts = new Map<string, { kind: CountKind; sum: number }>();
  for (const o of OPTIONS) {
    const given = raw.get(o.long);
    const { kind } = o;
    if (kind.takes === "flag") out[o.field] = given !== undefined;
    else if (kind.takes === "count") {
      const c = counts.get(o.field) ?? { kind, sum: kind.base };
      c.sum += o.step! * (given?.length ?? 0);
      counts.set(o.field, c);
    } else if (o.repeat) out[o.field] = (given ?? []).map((v) => parseOptionValue(o, v));
    else if (given !== undefined) out[o.field] = parseOptionValue(o, given[given.length - 1]!);
    else unset.push(o);
  }
  for (const [field, { kind, sum }] of counts) out[field] = Math.min(kind.max, Math.max(kind.min, sum));
  // Defaults last: the default file names depend on -c.
  const ctx = defaultContext({ tmpdir: defaults.tmpdir ?? tmpdir(), cpus: defaults.cpus, commandName: (out.commandName as string | undefined) ?? null });
  for (const o of unset) out[o.field] = o.default(ctx);
  return out as unknown as Omit<MasterConfig, "configFile" | "commandLine">;
}

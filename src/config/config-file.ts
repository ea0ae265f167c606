// --config FILE: the master's options, program and arguments in a YAML file
// (docs/config.md). A file key is an option's long name (`ack-mode`, or
// `ack_mode`); its value is what the option would take on the command line,
// as YAML: a number, a string, true/false for a flag, a list for a
// repeatable option. The file becomes the same option table the command line
// is split into (master-args.ts), so every check and message is the
// command line's, and the command line overrides the file key by key.
import { readFileSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import type { OptionSpec } from "./options";
// The YAML library is loaded when a config file is read, not at import: this
// module comes with the option parser into every einhorn process (the shell,
// the preflight, each master image), and setting the library up costs about
// 1.5-3 ms of CPU that only --config needs (issue 15).
const yaml = (): typeof import("yaml") => require("yaml") as typeof import("yaml");

/** What a config file yields: option values by long name, and the program with its arguments. */
export interface ConfigFileContent {
  raw: Map<string, string[]>;
  program: string[];
}

/** What the file reader needs to know of an option (options.ts). */
export type OptionShape = Pick<OptionSpec, "long" | "kind" | "repeat" | "inFile">;
/** Largest config file read (a config is a few hundred bytes). */
const MAX_CONFIG_BYTES = 1024 * 1024;

export class ConfigFileError extends Error {
  override name = "ConfigFileError";
}

/** Read and check FILE; every problem is a ConfigFileError naming the file (and line, when there is one). */
export function readConfigFile(path: string, options: OptionShape[]): ConfigFileContent {
  let text: string;
  try {
    const buf = readFileSync(path);
    if (buf.length > MAX_CONFIG_BYTES) throw new ConfigFileError(`config ${path}: ${buf.length} bytes; a config file may have at most ${MAX_CONFIG_BYTES}`);
    text = buf.toString("utf8");
  } catch (e) {
    if (e instanceof ConfigFileError) throw e;
    const code = (e as { code?: string }).code;
    throw new ConfigFileError(`config ${path}: cannot read it (${code ?? (e as Error).message})`, { cause: e });
  }
  return parseConfigText(text, path, options);
}

export function parseConfigText(text: string, path: string, options: OptionShape[]): ConfigFileContent {
  const { LineCounter, parseDocument } = yaml();
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, schema: "core", prettyErrors: false, uniqueKeys: true, keepSourceTokens: false });
  const where = (offset: number | undefined) => {
    if (offset === undefined) return "";
    const p = lines.linePos(offset);
    return ` line ${p.line}:`;
  };
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    throw new ConfigFileError(`config ${path}:${where(e.pos?.[0])} not valid YAML: ${e.message.split("\n")[0]}`);
  }
  const value: unknown = doc.toJS({ maxAliasCount: 100 });
  if (value === null || value === undefined) return { raw: new Map(), program: [] };
  if (typeof value !== "object" || Array.isArray(value)) throw new ConfigFileError(`config ${path}: expected a mapping of options (like 'number: 4'), got ${Array.isArray(value) ? "a list" : `'${String(value)}'`}`);

  // Line of each top-level key, for messages.
  const keyLine = new Map<string, string>();
  const root = doc.contents as { items?: Array<{ key?: { value?: unknown; range?: [number, number, number] } }> } | null;
  for (const item of root?.items ?? []) if (item.key?.range) keyLine.set(String(item.key.value), where(item.key.range[0]));

  const byLong = new Map(options.filter((o) => o.inFile).map((o) => [o.long, o]));
  const known = () => [...byLong.keys(), "program", "args"].join(", ");
  const raw = new Map<string, string[]>();
  let program: string[] = [];
  let args: string[] | null = null;
  const scalar = (key: string, v: unknown): string => {
    if (typeof v === "string") return v;
    if (typeof v === "number" && Number.isFinite(v)) return String(v);
    throw new ConfigFileError(`config ${path}:${keyLine.get(key) ?? ""} '${key}' wants a number or a string, got ${JSON.stringify(v)}`);
  };
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    const at = keyLine.get(key) ?? "";
    if (key === "program") {
      if (typeof v === "string" && v !== "") program = [v];
      else if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "string" || typeof x === "number")) program = v.map(String);
      else throw new ConfigFileError(`config ${path}:${at} 'program' wants the program's path (a string), or a list of the program and its arguments, got ${JSON.stringify(v)}`);
      continue;
    }
    if (key === "args") {
      if (Array.isArray(v) && v.every((x) => typeof x === "string" || typeof x === "number")) args = v.map(String);
      else throw new ConfigFileError(`config ${path}:${at} 'args' wants a list of strings, got ${JSON.stringify(v)}`);
      continue;
    }
    const long = key.replace(/_/g, "-");
    const o = byLong.get(long);
    if (!o) throw new ConfigFileError(`config ${path}:${at} unknown key '${key}'. Known keys: ${known()}`);
    if (raw.has(long)) throw new ConfigFileError(`config ${path}:${at} '${key}' is given twice (as '${long}' and with underscores)`);
    if (o.kind.takes !== "value") {
      // A flag: true/false, or a count for -q/-v (as many uses as the count's range is wide).
      const most = o.kind.takes === "count" ? o.kind.max - o.kind.min : 0;
      if (v === false) continue;
      if (v === true) { raw.set(long, ["true"]); continue; }
      if (most > 0 && typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= most) {
        if (v > 0) raw.set(long, Array.from({ length: v }, () => "true"));
        continue;
      }
      throw new ConfigFileError(`config ${path}:${at} '${key}' is a flag: true or false${most > 0 ? ` (or a count, 0 to ${most})` : ""}, got ${JSON.stringify(v)}`);
    }
    if (o.repeat) {
      const list = Array.isArray(v) ? v : [v];
      raw.set(long, list.map((x) => scalar(key, x)));
      continue;
    }
    if (v === null) continue; // `key:` with no value: as if absent
    raw.set(long, [scalar(key, v)]);
  }
  if (args !== null) {
    if (program.length === 0) throw new ConfigFileError(`config ${path}: 'args' without 'program'`);
    if (program.length > 1) throw new ConfigFileError(`config ${path}: give the arguments either in the 'program' list or in 'args', not both`);
    program = [...program, ...args];
  }
  return { raw, program };
}

/** An absolute path for FILE, so the master finds it again after a re-exec from another directory. */
export function configPath(file: string, cwd = process.cwd()): string {
  return isAbsolute(file) ? file : resolve(cwd, file);
}

// --config FILE: the master's options, program and arguments in a YAML file
// (docs/config.md). A file key is an option's long name (`ack-mode`, or
// `ack_mode`); its value is what the option would take on the command line,
// as YAML: a number, a string, true/false for a flag, a list for a
// repeatable option. The file becomes the same option table the command line
// is split into (master-args.ts), so every check and message is the
// command line's, and the command line overrides the file key by key.
import { fstatSync, type Stats } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { SysError } from "../../ffi/errno";
import { fileKind, octalMode, ownerProblem, resolveTrusted, UntrustedPath, writableBy } from "../file-trust";
import type { OptionSpec } from "./options";
// The YAML library is loaded when a config file is read, not at import: this
// module comes with the option parser into every einhorn process (the shell,
// the preflight, each master image), and setting the library up costs about
// 1.5-3 ms of CPU that only --config needs (issue 15).
const yaml = (): typeof import("yaml") => require("yaml") as typeof import("yaml");
// libc likewise: only a master or shell given --config opens a file through it.
const libc = () => ({ ...(require("../../ffi/process") as typeof import("../../ffi/process")), close: (require("../../ffi/socket") as typeof import("../../ffi/socket")).close });

/** What a config file yields: option values by long name, and the program with its arguments. */
export interface ConfigFileContent {
  raw: Map<string, string[]>;
  program: string[];
}

/** What the file reader needs to know of an option (options.ts). */
export type OptionShape = Pick<OptionSpec, "long" | "kind" | "repeat" | "inFile">;
/** Largest config file read (a config is a few hundred bytes). */
const MAX_CONFIG_BYTES = 1024 * 1024;
/**
 * Deepest nesting of collections read. A config needs 2 (the mapping of
 * options, a list in it); the YAML library recurses once per level, so a
 * file of a million '[' would take it seconds and its whole stack.
 */
const MAX_DEPTH = 16;
/** Nodes reachable through aliases before the YAML library calls it a bomb. */
const MAX_ALIAS_NODES = 100;

export class ConfigFileError extends Error {
  override name = "ConfigFileError";
}

/**
 * Read and check FILE; every problem is a ConfigFileError naming the file
 * (and line, when there is one). The file may decide what the master runs,
 * as root perhaps, so it is held to these rules (docs/config.md, "Who may
 * write the file"), for einhorn running as `uid`:
 *
 * - it and every directory on the way to it pass file-trust.ts's rules: no
 *   other user can write or swap it (symbolic links are followed, and the
 *   directories they sit in count too);
 * - it is a regular file, owned by root or `uid`, not writable by group or
 *   others; checked on the descriptor that is read, not just the path;
 * - nothing in it can block or exhaust the master, which re-reads it at every
 *   upgrade while serving: the kind of file is known from lstat before the
 *   open (a FIFO or device is never opened), the open is O_NONBLOCK anyway,
 *   and at most MAX_CONFIG_BYTES are read, whatever the file claims.
 */
export function readConfigFile(path: string, options: OptionShape[], uid?: number): ConfigFileContent {
  const { close, geteuid, O_CLOEXEC, O_NOCTTY, O_NOFOLLOW, O_NONBLOCK, O_RDONLY, open } = libc();
  uid ??= geteuid();
  const fail = (why: string): never => { throw new ConfigFileError(`config ${path}: ${why}`); };
  let found;
  try {
    found = resolveTrusted(path, uid);
  } catch (e) {
    if (e instanceof UntrustedPath) fail(e.message);
    throw e;
  }
  const { real } = found;
  const checkFile = (st: Stats) => {
    const what = real === path ? "it is" : `it leads to ${real}, which is`;
    if (!st.isFile()) fail(`${what} ${fileKind(st)}; a config file must be a regular file`);
    const owner = ownerProblem(st.uid, uid);
    if (owner) fail(`${real === path ? "" : `${real} is `}${owner}, so that user could change what einhorn runs; chown it to ${uid === 0 ? "root" : "one of them"}`);
    const who = writableBy(st.mode);
    if (who) fail(`${real === path ? "" : `${real} is `}writable by ${who} (mode ${octalMode(st.mode)}); chmod g-w,o-w ${real === path ? "it" : real}`);
    if (st.size > MAX_CONFIG_BYTES) fail(`${st.size} bytes; a config file may have at most ${MAX_CONFIG_BYTES}`);
  };
  checkFile(found.st);
  let fd: number;
  try {
    // O_NOFOLLOW: `real` has no link left in it, so a link now means a swap.
    fd = open(real, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC | O_NOFOLLOW);
  } catch (e) {
    if (e instanceof SysError) fail(`cannot read it (${e.code}${real === path ? "" : ` at ${real}`})`);
    throw e;
  }
  let buf: Buffer;
  try {
    const st = fstatSync(fd);
    if (st.dev !== found.st.dev || st.ino !== found.st.ino) fail("it was replaced while einhorn was reading it; try again");
    checkFile(st);
    buf = libc().readAll(fd, MAX_CONFIG_BYTES + 1);
  } catch (e) {
    if (e instanceof ConfigFileError) throw e;
    fail(`cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  } finally {
    close(fd);
  }
  // It grew after fstat: still no more than the limit is ever held.
  if (buf!.length > MAX_CONFIG_BYTES) fail(`more than ${MAX_CONFIG_BYTES} bytes; a config file may have at most ${MAX_CONFIG_BYTES}`);
  return parseConfigText(buf!.toString("utf8"), path, options);
}

/** A value as JSON on one line, cut short: a refusal quotes what was given, not a whole file of it. */
function shown(v: unknown): string {
  const text = JSON.stringify(v) ?? String(v);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** The first line of an error's message: every refusal is one line. */
const firstLine = (e: unknown): string => String((e as Error)?.message ?? e).split("\n")[0] ?? "";

/**
 * FILE's text as one YAML document, bounded: nesting deeper than MAX_DEPTH
 * stops the parse as it reaches it (before the library's recursive steps
 * see it), and aliases expand to at most MAX_ALIAS_NODES nodes. Whatever the
 * library throws becomes a one-line ConfigFileError.
 */
function parseBounded(text: string, path: string): { doc: import("yaml").Document.Parsed; value: unknown; where: (offset: number | undefined) => string } {
  const { Composer, Lexer, LineCounter, Parser } = yaml();
  const lines = new LineCounter();
  const where = (offset: number | undefined) => (offset === undefined ? "" : ` line ${lines.linePos(offset).line}:`);
  const parser = new Parser(lines.addNewLine);
  // Parser.parse() with a look at the parser's stack after every token: the
  // stack holds the document and each collection being built, one per level.
  function* tokens() {
    lines.addNewLine(0);
    for (const lexeme of new Lexer().lex(text)) {
      yield* parser.next(lexeme);
      if (parser.stack.length > MAX_DEPTH + 2) {
        throw new ConfigFileError(`config ${path}:${where(parser.offset)} nested more than ${MAX_DEPTH} levels deep; a config is a mapping of options, some holding a list`);
      }
    }
    yield* parser.end();
  }
  let doc: import("yaml").Document.Parsed | undefined;
  try {
    const composer = new Composer({ schema: "core", uniqueKeys: true, keepSourceTokens: false, prettyErrors: false });
    for (const d of composer.compose(tokens(), true, text.length)) {
      if (doc) throw new ConfigFileError(`config ${path}:${where(d.range[0])} a second YAML document; a config file is one mapping`);
      doc = d;
    }
  } catch (e) {
    if (e instanceof ConfigFileError) throw e;
    throw new ConfigFileError(`config ${path}: not valid YAML: ${firstLine(e)}`, { cause: e });
  }
  if (!doc) throw new ConfigFileError(`config ${path}: not valid YAML: no document in it`);
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    throw new ConfigFileError(`config ${path}:${where(e.pos?.[0])} not valid YAML: ${firstLine(e)}`);
  }
  try {
    return { doc, value: doc.toJS({ maxAliasCount: MAX_ALIAS_NODES }), where };
  } catch (e) {
    // The library's answer to an alias bomb is a ReferenceError ("Excessive alias count ...").
    if (/alias/i.test(firstLine(e))) throw new ConfigFileError(`config ${path}: its aliases (*name) expand to more than ${MAX_ALIAS_NODES} nodes; write the values out instead`, { cause: e });
    throw new ConfigFileError(`config ${path}: not valid YAML: ${firstLine(e)}`, { cause: e });
  }
}

export function parseConfigText(text: string, path: string, options: OptionShape[]): ConfigFileContent {
  const { doc, value, where } = parseBounded(text, path);
  if (value === null || value === undefined) return { raw: new Map(), program: [] };
  if (typeof value !== "object" || Array.isArray(value)) throw new ConfigFileError(`config ${path}: expected a mapping of options (like 'number: 4'), got ${Array.isArray(value) ? "a list" : shown(value)}`);

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
    throw new ConfigFileError(`config ${path}:${keyLine.get(key) ?? ""} '${key}' wants a number or a string, got ${shown(v)}`);
  };
  for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
    const at = keyLine.get(key) ?? "";
    if (key === "program") {
      if (typeof v === "string" && v !== "") program = [v];
      else if (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === "string" || typeof x === "number")) program = v.map(String);
      else throw new ConfigFileError(`config ${path}:${at} 'program' wants the program's path (a string), or a list of the program and its arguments, got ${shown(v)}`);
      continue;
    }
    if (key === "args") {
      if (Array.isArray(v) && v.every((x) => typeof x === "string" || typeof x === "number")) args = v.map(String);
      else throw new ConfigFileError(`config ${path}:${at} 'args' wants a list of strings, got ${shown(v)}`);
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
      throw new ConfigFileError(`config ${path}:${at} '${key}' is a flag: true or false${most > 0 ? ` (or a count, 0 to ${most})` : ""}, got ${shown(v)}`);
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

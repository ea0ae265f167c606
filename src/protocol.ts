// Everything einhorn says to the outside world by name, once: environment
// variables workers read and the command-socket wire format (the commands
// themselves are declared in command-registry.ts).
// Einhorn 1.1.1 clients in Ruby, Go, Python and PHP depend on every string here.
import { escapeLine, unescapeLine } from "./protocol-env";

/**
 * The YAML library, loaded on first use: module set-up alone costs about 3 ms
 * of CPU, and most processes never need it (einhorn's own shell and the
 * master's upgrade path speak JSON; only YAML requests, YAML answers and the
 * `state` dump do).
 */
let yamlModule: typeof import("yaml") | null = null;
function yaml(): typeof import("yaml") {
  yamlModule ??= require("yaml") as typeof import("yaml");
  return yamlModule;
}

export { ENV, escapeLine, isEinhornWorkerVar, unescapeLine } from "./protocol-env";

/**
 * Longest command line the master reads; a longer one is answered with an
 * error and the connection closed. Einhorn's clients send lines well under
 * 1 KiB (`config` YAML is held to MAX_YAML_REQUEST_CHARS anyway); 64 KiB
 * keeps what one hostile line costs to parse small (docs/security.md).
 */
export const MAX_LINE_BYTES = 64 * 1024;
/** Aliases are expanded at most this many times per document (billion-laughs guard). */
export const MAX_ALIAS_COUNT = 100;
/** Collections nest at most this deep in a message; a request needs three levels. */
export const MAX_DEPTH = 64;
/**
 * Longest request the master parses as YAML (characters, after unescaping).
 * The YAML parser costs about 2-5 us of CPU and several hundred bytes of memory
 * per character (long flow lists, many keys, nested flows: measured 2026-12
 * with 10-30 KiB lines, both cores busy), so a 1 MiB YAML line would stall the
 * master for seconds and grow it by hundreds of MB; Ruby clients send well
 * under 1 KiB. JSON requests (what every other client sends) take the fast
 * path and may fill the line.
 */
export const MAX_YAML_REQUEST_CHARS = 16 * 1024;

export interface Request {
  command: string;
  args: string[];
  id?: unknown;
  pid?: number;
  request_id?: unknown;
  user?: string;
  /** Any other keys the client sent, kept for commands that read them. */
  [key: string]: unknown;
}

export interface Response {
  message: string;
  request_id?: unknown;
  wait?: boolean;
  [key: string]: unknown;
}


/**
 * YAML that reads back as the same data under YAML 1.2 (our decoder, most
 * libraries) and YAML 1.1 (Ruby's Psych, which Einhorn's own client uses):
 * written with the 1.1 rules, strings that 1.1 would take for something else
 * ("yes", "on", "1:20", "2001-12-14", an ISO time) are quoted. Unquoted, Psych
 * turns them into booleans, integers or Time objects, and its safe YAML.load
 * refuses the whole document over a Time.
 */
export function toYaml(value: unknown): string {
  return yaml().stringify(value, { lineWidth: 0, version: "1.1" });
}

/**
 * How answers are written on one connection: "yaml", Einhorn's format (a YAML
 * document per line), or "json" for a client that asked for it (see
 * REPLY_FORMAT_KEY).
 */
export type WireFormat = "yaml" | "json";

/**
 * A request key (an addition to Einhorn's protocol; its clients never send
 * it) by which a client asks for JSON answers on its connection from then
 * on: `"reply_format": "json"`. JSON is also YAML, so such a client reads
 * either; einhorn's own shell sends it, which keeps the YAML library out of
 * both the shell and the master on every command it runs.
 */
export const REPLY_FORMAT_KEY = "reply_format";

/** One message on the wire: a YAML (or JSON) document, `%` and newline escaped, then "\n". */
export function encodeMessage(msg: Record<string, unknown>, format: WireFormat = "yaml"): string {
  if (format === "json") return `${escapeLine(JSON.stringify(msg))}\n`;
  return `${escapeLine(`---\n${toYaml(msg)}`)}\n`;
}

export class ProtocolError extends Error {
  override name = "ProtocolError";
}

const NOT_JSON = Symbol("not JSON");

/** A short, safe rendering of a client's value for an error message. */
function preview(v: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(v) ?? String(v);
  } catch {
    text = Array.isArray(v) ? "a list" : typeof v;
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Throws unless `v` nests collections at most MAX_DEPTH deep (walked without recursion). */
function checkDepth(v: unknown): void {
  const stack: Array<[unknown, number]> = [[v, 0]];
  while (stack.length) {
    const [x, d] = stack.pop()!;
    if (typeof x !== "object" || x === null) continue;
    if (d >= MAX_DEPTH) throw new ProtocolError(`collections are nested more than ${MAX_DEPTH} levels deep`);
    // Arrays by index: Object.values on a long array is slow (150 ms for 500k items in Bun).
    const children: unknown[] = Array.isArray(x) ? x : Object.values(x);
    for (let i = 0; i < children.length; i++) {
      const child = children[i];
      if (typeof child === "object" && child !== null) stack.push([child, d + 1]);
    }
  }
}

/**
 * How deep JSON.parse could get in `text` before it finishes or fails. It
 * keeps JSON.parse from ever seeing a deep document: the parser allocates per
 * level before it finds the error, about 80 MB for a line of a million "[".
 */
function jsonDepth(text: string): number {
  let depth = 0;
  let max = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92) i++; // backslash: skip the escaped character
      else if (c === 34) inString = false;
    } else if (c === 34) {
      inString = true;
    } else if (c === 91 || c === 123) {
      if (++depth > max) max = depth;
    } else if (c === 93 || c === 125) {
      depth--;
    }
  }
  return max;
}

/**
 * Parse one line (without its "\n") into plain data. The `core` schema and an
 * alias budget keep a hostile client from building objects or exploding memory:
 * tags are not resolved to types (not even YAML 1.1's !!binary, !!set, !!omap,
 * !!timestamp), unknown ones are an error, and so is nesting past MAX_DEPTH.
 */
export function decodeLine(line: string, limits: { maxYamlChars?: number } = {}): unknown {
  const text = unescapeLine(line);
  // JSON is YAML, and JSON.parse is native and linear: try it first for what looks like JSON.
  if (/^\s*[[{]/.test(text) && jsonDepth(text) <= MAX_DEPTH) {
    let value: unknown = NOT_JSON;
    try { value = JSON.parse(text); } catch { /* YAML flow syntax, or broken: the YAML parser says which */ }
    if (value !== NOT_JSON) {
      checkDepth(value);
      return value;
    }
  }
  if (limits.maxYamlChars !== undefined && text.length > limits.maxYamlChars) {
    if (/^\s*[[{]/.test(text) && jsonDepth(text) > MAX_DEPTH) throw new ProtocolError(`collections are nested more than ${MAX_DEPTH} levels deep`);
    throw new ProtocolError(`YAML request too long: ${text.length} characters, the limit is ${limits.maxYamlChars} (JSON requests may use the whole line)`);
  }
  const doc = yaml().parseDocument(text, { schema: "core", resolveKnownTags: false, prettyErrors: false, uniqueKeys: false, strict: false });
  if (doc.errors.length) {
    const err = doc.errors[0]!;
    // The parser recurses per nesting level; a very deep document overflows the stack.
    if (/call stack/i.test(err.message)) throw new ProtocolError(`not a usable YAML document: collections are nested too deeply (the limit is ${MAX_DEPTH} levels)`);
    if (err.code === "MULTIPLE_DOCS") throw new ProtocolError("not a YAML document: a line holds exactly one document, this one holds several");
    throw new ProtocolError(`not a YAML document: ${err.message.split("\n")[0]}`);
  }
  if (doc.warnings.some((w) => w.code === "TAG_RESOLVE_FAILED")) throw new ProtocolError("YAML tags are not accepted");
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (e) {
    throw new ProtocolError(`not a usable YAML document: ${(e as Error).message.split("\n")[0]}`);
  }
  checkDepth(value);
  return value;
}

/** A decoded line as a request; Ruby clients may send symbol-style keys (":command"). */
export function toRequest(doc: unknown): Request {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc) || Object.getPrototypeOf(doc) !== Object.prototype) {
    throw new ProtocolError("Could not parse command: a request is a mapping");
  }
  // No prototype: a "__proto__" key from the client stays an ordinary key.
  const raw: Record<string, unknown> = Object.create(null);
  for (const [k, v] of Object.entries(doc)) raw[k.startsWith(":") ? k.slice(1) : k] = v;
  if (raw.command === undefined) throw new ProtocolError("No \"command\" given");
  if (typeof raw.command !== "string") throw new ProtocolError(`"command" must be a string, got ${preview(raw.command)}`);
  let args: string[] = [];
  if (raw.args !== undefined && raw.args !== null) {
    if (!Array.isArray(raw.args)) throw new ProtocolError(`"args" must be a list of strings, got ${preview(raw.args)}`);
    args = raw.args.map((a) => (typeof a === "string" ? a : typeof a === "number" || typeof a === "boolean" ? String(a) : JSON.stringify(a)));
  }
  return { ...raw, command: raw.command, args };
}

/** A request line as the master reads it: decoded with the request limits, then checked. */
export function decodeRequest(line: string): Request {
  return toRequest(decodeLine(line, { maxYamlChars: MAX_YAML_REQUEST_CHARS }));
}

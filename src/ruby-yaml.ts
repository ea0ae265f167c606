// YAML for Ruby readers: a small emitter for documents that Ruby's Psych,
// loading with `YAML.safe_load(text, permitted_classes: [Symbol, Time, Set],
// aliases: true)` (what Einhorn's SafeYAML does), turns into Ruby values of the
// right classes: Symbol keys and values, Integer keys, Time, Set, nil.
//
// Why not the `yaml` package: it has no notion of Ruby symbols, Set or Psych's
// timestamp form, and what Einhorn's clients index with (`state[:state]
// [:children][pid]`) depends on exactly those. The layout follows what
// `YAML.dump` writes (block style, two-space indent, arrays under a key at the
// key's own indent), so the text reads like Einhorn's own.
//
// Value model: a plain JS object is a Ruby Hash with Symbol keys (Einhorn's
// state uses them throughout); a Map is a Hash with the keys as given
// (numbers become Integer keys, strings String keys, RubySymbol Symbol keys).
// Strings are always double-quoted, so none is ever read as a symbol, number,
// boolean or time. A string holding raw bytes that are not UTF-8 (see
// ffi/os-string.ts) is written `!binary`, which Psych loads as a String of
// those bytes, as it would dump such a string itself.
import { hasRawBytes, osBytes } from "../ffi/os-string";

export class RubySymbol {
  constructor(readonly name: string) {}
}
export class RubyTime {
  /** Milliseconds since the epoch. */
  constructor(readonly ms: number) {}
}
export class RubySet {
  constructor(readonly items: string[]) {}
}
/** A number Ruby should read as a Float even when it is whole (`1.0`). */
export class RubyFloat {
  constructor(readonly value: number) {}
}

export const sym = (name: string) => new RubySymbol(name);
/** A Time, or nil for null/undefined. */
export const time = (ms: number | null | undefined) => (ms === null || ms === undefined ? null : new RubyTime(ms));

const SYMBOL_NAME = /^[A-Za-z_][A-Za-z0-9_]*[?!]?$/;

function symbolText(s: RubySymbol): string {
  // Psych reads a plain `:name` as a Symbol; other names need quoting (`:"a b"`).
  return SYMBOL_NAME.test(s.name) ? `:${s.name}` : `:${quote(s.name)}`;
}

/** JSON's string syntax is valid YAML double-quoted style; escape what YAML 1.1 treats as breaks or BOM too. */
function quote(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\u009f\u2028\u2029\ufeff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

const pad2 = (n: number) => String(n).padStart(2, "0");

/** Psych's Time form: `2026-11-22 12:00:00.012000000 +00:00` (UTC). */
function timeText(t: RubyTime): string {
  const d = new Date(t.ms);
  const frac = String(d.getUTCMilliseconds()).padStart(3, "0") + "000000";
  return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}.${frac} +00:00`;
}

function numberText(n: number, float: boolean): string {
  if (Number.isNaN(n)) return ".nan";
  if (!Number.isFinite(n)) return n > 0 ? ".inf" : "-.inf";
  if (float && Number.isInteger(n)) return `${n}.0`;
  return String(n);
}

function keyText(k: unknown): string {
  if (k instanceof RubySymbol) return symbolText(k);
  if (typeof k === "number" && Number.isInteger(k)) return String(k);
  return scalarText(k) ?? quote(String(k));
}

/** The one-line text of a scalar, or null for a collection. */
function scalarText(v: unknown): string | null {
  if (v === null || v === undefined) return "";
  if (typeof v === "boolean") return v ? "true" : "false";
  if (typeof v === "number") return numberText(v, false);
  if (typeof v === "bigint") return String(v);
  if (typeof v === "string") return hasRawBytes(v) ? `!binary ${quote(osBytes(v).toString("base64"))}` : quote(v);
  if (v instanceof RubySymbol) return symbolText(v);
  if (v instanceof RubyTime) return timeText(v);
  if (v instanceof RubyFloat) return numberText(v.value, true);
  if (Array.isArray(v)) return v.length === 0 ? "[]" : null;
  if (v instanceof RubySet) return null;
  const entries = hashEntries(v);
  return entries.length === 0 ? "{}" : null;
}

function hashEntries(v: unknown): Array<[unknown, unknown]> {
  if (v instanceof Map) return [...v.entries()];
  return Object.entries(v as Record<string, unknown>).map(([k, x]) => [sym(k), x]);
}

function emit(v: unknown, indent: string, out: string[], lead: string): void {
  // `lead` is what precedes the value on its first line ("key:" or "-").
  const scalar = scalarText(v);
  if (scalar !== null) {
    out.push(scalar === "" ? lead : `${lead} ${scalar}`);
    return;
  }
  if (v instanceof RubySet) {
    // How Psych dumps a Set: a Ruby object whose only ivar is its backing Hash.
    out.push(`${lead} !ruby/object:Set`);
    const inner = `${indent}  `;
    if (v.items.length === 0) out.push(`${inner}hash: {}`);
    else {
      out.push(`${inner}hash:`);
      for (const item of v.items) out.push(`${inner}  ${quote(item)}: true`);
    }
    return;
  }
  if (Array.isArray(v)) {
    // Under a key, Psych writes the items at the key's own indent.
    if (lead !== "") out.push(lead);
    for (const item of v) emitItem(item, indent, out);
    return;
  }
  if (lead !== "") out.push(lead);
  const inner = lead === "" ? indent : `${indent}  `;
  emitHash(v, inner, out);
}

function emitItem(item: unknown, indent: string, out: string[]): void {
  const scalar = scalarText(item);
  if (scalar !== null || item instanceof RubySet) {
    emit(item, indent, out, `${indent}-`);
    return;
  }
  // A collection inside a sequence starts on the dash's line: "- :a: 1" / "- - x".
  const sub: string[] = [];
  if (Array.isArray(item)) for (const x of item) emitItem(x, `${indent}  `, sub);
  else emitHash(item, `${indent}  `, sub);
  sub[0] = `${indent}- ${sub[0]!.slice(indent.length + 2)}`;
  out.push(...sub);
}

function emitHash(v: unknown, indent: string, out: string[]): void {
  for (const [k, x] of hashEntries(v)) {
    const lead = `${indent}${keyText(k)}:`;
    if (Array.isArray(x) && x.length > 0) {
      out.push(lead);
      for (const item of x) emitItem(item, indent, out);
    } else emit(x, indent, out, lead);
  }
}

/** The whole document, starting with `---` as YAML.dump does. */
export function toRubyYaml(value: unknown): string {
  const out: string[] = [];
  const scalar = scalarText(value);
  if (scalar !== null) return `--- ${scalar}\n`;
  out.push("---");
  if (Array.isArray(value)) for (const item of value) emitItem(item, "", out);
  else if (value instanceof RubySet) emit(value, "", out, "");
  else emitHash(value, "", out);
  return `${out.join("\n")}\n`;
}

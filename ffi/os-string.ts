// Strings the kernel hands us are bytes, not text: argv, the environment and
// file names may hold bytes that are not UTF-8 (a Latin-1 file name, a binary
// token in an environment variable). Bun decodes its argv and environment as
// UTF-8 and turns each bad byte into U+FFFD, so a master that passed those on
// would silently corrupt them (issue 9, item 5).
//
// Policy: such bytes are carried in ordinary JS strings, losslessly, the way
// Python's "surrogateescape" does (PEP 383): valid UTF-8 decodes as usual and
// each byte that is not part of valid UTF-8 becomes the lone surrogate
// U+DC00 + byte (U+DC80..U+DCFF). Valid UTF-8 can never produce a lone
// surrogate, so the mapping is one-to-one and osBytes() gives back exactly the
// bytes read. These strings survive JSON (JSON.stringify writes lone
// surrogates as \udcXX escapes), so the re-exec handoff carries them without
// a format change. Every place that gives a string to the kernel (cstr in
// libc.ts, hence posix_spawn, execve, open, socket paths) encodes it with
// osBytes(); file names given to node:fs go through fsPath().
import { readFileSync } from "node:fs";

/** A lone surrogate in the escape range (the `u` flag makes a valid pair one code point, never matched). */
const RAW_BYTE = /[\uDC80-\uDCFF]/u;

export function hasRawBytes(s: string): boolean {
  return RAW_BYTE.test(s);
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Bytes to a string: UTF-8, with every byte that is not valid UTF-8 escaped as U+DC00 + byte. */
export function osString(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch { /* not valid UTF-8: decode by hand below */ }
  let out = "";
  let i = 0;
  const n = bytes.length;
  const cont = (k: number, lo = 0x80, hi = 0xbf) => k < n && bytes[k]! >= lo && bytes[k]! <= hi;
  while (i < n) {
    const b = bytes[i]!;
    let len = 0;
    if (b < 0x80) len = 1;
    // The ranges are RFC 3629's: no overlong forms, no surrogates, nothing past U+10FFFF.
    else if (b >= 0xc2 && b <= 0xdf && cont(i + 1)) len = 2;
    else if (b === 0xe0 && cont(i + 1, 0xa0) && cont(i + 2)) len = 3;
    else if (((b >= 0xe1 && b <= 0xec) || b === 0xee || b === 0xef) && cont(i + 1) && cont(i + 2)) len = 3;
    else if (b === 0xed && cont(i + 1, 0x80, 0x9f) && cont(i + 2)) len = 3;
    else if (b === 0xf0 && cont(i + 1, 0x90) && cont(i + 2) && cont(i + 3)) len = 4;
    else if (b >= 0xf1 && b <= 0xf3 && cont(i + 1) && cont(i + 2) && cont(i + 3)) len = 4;
    else if (b === 0xf4 && cont(i + 1, 0x80, 0x8f) && cont(i + 2) && cont(i + 3)) len = 4;
    if (len === 0) {
      out += String.fromCharCode(0xdc00 + b);
      i++;
    } else {
      out += Buffer.from(bytes.subarray(i, i + len)).toString("utf8");
      i += len;
    }
  }
  return out;
}

/** A string back to the bytes it stands for (the inverse of osString). */
export function osBytes(s: string): Buffer {
  if (!hasRawBytes(s)) return Buffer.from(s, "utf8");
  const parts: Buffer[] = [];
  let text = "";
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if (ch.length === 1 && c >= 0xdc80 && c <= 0xdcff) {
      if (text) { parts.push(Buffer.from(text, "utf8")); text = ""; }
      parts.push(Buffer.of(c - 0xdc00));
    } else text += ch;
  }
  if (text) parts.push(Buffer.from(text, "utf8"));
  return Buffer.concat(parts);
}

/** A file name for node:fs: the string itself, or its bytes when it holds raw bytes. */
export function fsPath(s: string): string | Buffer {
  return hasRawBytes(s) ? osBytes(s) : s;
}

/** A NUL-separated /proc list (cmdline, environ) as strings. */
function procList(path: string): string[] | null {
  let raw: Buffer;
  try { raw = readFileSync(path); } catch { return null; }
  const items: string[] = [];
  let start = 0;
  for (let i = 0; i < raw.length; i++) {
    if (raw[i] === 0) { items.push(osString(raw.subarray(start, i))); start = i + 1; }
  }
  if (start < raw.length) items.push(osString(raw.subarray(start)));
  return items;
}

/**
 * This process's arguments after the program (what process.argv.slice(2)
 * holds), with their bytes intact. Read from /proc/self/cmdline: the last
 * `lossy.length` entries are ours (the runtime's own leading entries differ
 * between the compiled binary and `bun main.ts`). Each must decode to what
 * Bun gave us, else (the command line was rewritten, /proc is missing) Bun's
 * view is used.
 */
export function osArgs(lossy: string[] = process.argv.slice(2)): string[] {
  const all = procList("/proc/self/cmdline");
  if (!all || all.length < lossy.length) return lossy;
  const mine = all.slice(all.length - lossy.length);
  // Bun's decoder and ours may disagree on how many U+FFFD a bad sequence gets.
  const same = mine.every((a, i) => a === lossy[i] || (hasRawBytes(a) && lossy[i]!.includes("\uFFFD")));
  return same ? mine : lossy;
}

/**
 * The environment this process was started with, bytes intact: the kernel's
 * copy in /proc/self/environ. Falls back to process.env when /proc cannot be
 * read or disagrees on the names (something changed the environment).
 */
export function osEnviron(): Record<string, string> {
  const fallback = () => Object.fromEntries(Object.entries(process.env).filter((e): e is [string, string] => e[1] !== undefined));
  const all = procList("/proc/self/environ");
  if (!all) return fallback();
  const env: Record<string, string> = {};
  for (const entry of all) {
    const eq = entry.indexOf("=");
    if (eq <= 0) continue;
    const k = entry.slice(0, eq);
    // First one wins, as getenv(3) does.
    if (!(k in env)) env[k] = entry.slice(eq + 1);
  }
  // The names must agree (those that are plain text, anyway).
  const plain = (o: object) => Object.keys(o).filter((k) => !hasRawBytes(k) && !k.includes("\uFFFD")).sort().join("\0");
  const known = fallback();
  return Object.keys(env).length === Object.keys(known).length && plain(env) === plain(known) ? env : known;
}

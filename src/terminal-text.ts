// Text others chose, shown where a terminal may read it. The master's answers
// carry what clients and workers put into it (a ping's request_id, the
// program's argv, ehlo's user), and `--worker-output prefix` writes what
// workers print; a terminal obeys escape sequences: one could retitle the
// window, rewrite what is on screen (a worker line overwriting its own
// [WORKER pid] tag with a forged [MASTER] line), or on some terminals answer
// back into the shell's input. So every control character except newline and
// tab is shown in caret or \x notation, and so are the bidirectional
// overrides that make text read differently from what it is. `einhorn sh`
// does it on a terminal only (output to a pipe or a file is left byte for
// byte: scripts parse it); the master's prefixed worker lines always (a log
// file is read on a terminal later).
import { isatty } from "node:tty";

// C0 controls but \t and \n, DEL, C1 controls, and the Unicode bidi embeddings, overrides and isolates.
const UNSAFE = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g;

/** Whether terminalSafe would change `text`. */
export function hasUnsafe(text: string): boolean {
  UNSAFE.lastIndex = 0;
  const hit = UNSAFE.test(text);
  UNSAFE.lastIndex = 0;
  return hit;
}

export function terminalSafe(text: string): string {
  return text.replace(UNSAFE, (c) => {
    const code = c.charCodeAt(0);
    if (code < 0x20) return `^${String.fromCharCode(code + 0x40)}`;
    if (code === 0x7f) return "^?";
    return code <= 0xff ? `\\x${code.toString(16)}` : `\\u${code.toString(16)}`;
  });
}

const ttys = new Map<number, boolean>();

/** Whether `fd` is a terminal (asked once per descriptor). */
function isTerminal(fd: number): boolean {
  let v = ttys.get(fd);
  if (v === undefined) {
    try { v = isatty(fd); } catch { v = false; }
    ttys.set(fd, v);
  }
  return v;
}

/** `text` as it may be written to `fd`: neutralised when `fd` is a terminal. */
export function forDescriptor(fd: number, text: string): string {
  return isTerminal(fd) ? terminalSafe(text) : text;
}

// The pure parts of `einhorn sh`: turning text into command-socket requests,
// deciding whether an answer means failure, and tab completion. No I/O here,
// so all of it is unit-tested directly.
import { constants } from "node:os";
import { COMMANDS, type Response } from "../protocol";

/** One request as the user wrote it. `text` is the source, for messages. */
export interface ScriptCommand {
  command: string;
  args: string[];
  text: string;
}

/** Text that cannot be split into commands (an unterminated quote). */
export class ScriptError extends Error {
  override name = "ScriptError";
}

/**
 * Split a script into commands. Commands are separated by `;` or a newline;
 * words by whitespace. Like a POSIX shell: '...' is taken literally, "..."
 * allows \" and \\ (other backslashes are kept), and a backslash outside quotes
 * makes the next character ordinary (so `\;` is a literal semicolon). A `#` that
 * starts a word comments out the rest of the line. Empty commands are dropped.
 */
export function parseScript(script: string): ScriptCommand[] {
  const commands: ScriptCommand[] = [];
  let words: string[] = [];
  let word = "";
  let inWord = false; // true once the current word has begun (even as "" from quotes)
  let start = 0;

  const endWord = () => {
    if (inWord) words.push(word);
    word = "";
    inWord = false;
  };
  const endCommand = (end: number) => {
    endWord();
    if (words.length) commands.push({ command: words[0]!, args: words.slice(1), text: script.slice(start, end).trim() });
    words = [];
    start = end + 1;
  };

  let i = 0;
  while (i < script.length) {
    const ch = script[i]!;
    if (ch === ";" || ch === "\n") {
      endCommand(i);
      i++;
    } else if (ch === " " || ch === "\t" || ch === "\r") {
      endWord();
      i++;
    } else if (ch === "#" && !inWord) {
      const nl = script.indexOf("\n", i);
      if (nl < 0) break;
      i = nl; // the newline itself ends the command
    } else if (ch === "'") {
      const close = script.indexOf("'", i + 1);
      if (close < 0) throw new ScriptError(`unterminated ' quote starting at character ${i + 1}: ${excerpt(script, i)}`);
      word += script.slice(i + 1, close);
      inWord = true;
      i = close + 1;
    } else if (ch === '"') {
      let j = i + 1;
      for (;;) {
        if (j >= script.length) throw new ScriptError(`unterminated " quote starting at character ${i + 1}: ${excerpt(script, i)}`);
        const c = script[j]!;
        if (c === '"') break;
        if (c === "\\" && (script[j + 1] === '"' || script[j + 1] === "\\")) {
          word += script[j + 1];
          j += 2;
        } else {
          word += c;
          j++;
        }
      }
      inWord = true;
      i = j + 1;
    } else if (ch === "\\") {
      if (i + 1 >= script.length) throw new ScriptError("a backslash at the end of the text escapes nothing");
      // A backslash before a newline joins lines, as in sh.
      if (script[i + 1] !== "\n") { word += script[i + 1]; inWord = true; }
      i += 2;
    } else {
      word += ch;
      inWord = true;
      i++;
    }
  }
  endCommand(script.length);
  return commands;
}

function excerpt(s: string, at: number): string {
  const piece = s.slice(at, at + 30);
  return JSON.stringify(piece.length < s.length - at ? `${piece}...` : piece);
}

/** Commands the shell answers itself. */
export const LOCAL_COMMANDS = ["quit", "exit"] as const;

/** Commands only workers send: the master closes the connection without answering, which would end the shell. */
export const WORKER_ONLY_COMMANDS: readonly string[] = ["worker:ack", "worker:ping"];

/**
 * Prefixes of answers that mean failure, for masters that do not (yet) set
 * `error: true`. Einhorn's wire protocol has no status field; these are the
 * answers the master gives when it did nothing.
 */
export const FAILURE_PREFIXES: readonly string[] = [
  "Unrecognized command",
  "Could not parse",
  "No \"command\"",
  "Permission denied",
  "Upgrade failed",
  "Line too long",
  "Too many connections",
  "Internal error",
];

/** Whether one answer from the master reports a failure. */
export function isFailure(msg: Response): boolean {
  if (msg.error === true || (typeof msg.error === "string" && msg.error !== "" && msg.error !== "false")) return true;
  const text = typeof msg.message === "string" ? msg.message : "";
  return FAILURE_PREFIXES.some((p) => text.startsWith(p)) || text.includes("not available yet");
}

/** A decoded answer as a Response; Ruby masters may write symbol-style keys (":message"). */
export function toResponse(doc: unknown): Response | null {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return null;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(doc)) out[k.startsWith(":") ? k.slice(1) : k] = v;
  const message = out.message === undefined || out.message === null ? "" : typeof out.message === "string" ? out.message : JSON.stringify(out.message);
  return { ...out, message };
}

/** Command names offered by tab completion: what a person may send, plus the shell's own. */
export function completionNames(): string[] {
  return [...Object.keys(COMMANDS).filter((c) => !WORKER_ONLY_COMMANDS.includes(c)), ...LOCAL_COMMANDS].sort();
}

const SIGNAL_NAMES = Object.keys(constants.signals).map((s) => s.replace(/^SIG/, "")).sort();

/** Words offered after a command name, where the choices are known. */
function argumentChoices(command: string): string[] {
  switch (command) {
    case "state": return ["json", "yaml"];
    case "signal":
    case "die": return SIGNAL_NAMES;
    default: return [];
  }
}

/**
 * node:readline completer: completes the command name in the first word and,
 * for commands with a fixed set of arguments, the word being typed after it.
 * Returns [candidates, the text they replace].
 */
export function complete(line: string): [string[], string] {
  const m = /^(\s*)(\S*)$/.exec(line);
  if (m) {
    const typed = m[2]!;
    const names = completionNames();
    const hits = names.filter((n) => n.startsWith(typed));
    return [hits.length ? hits : names, typed];
  }
  const command = line.trim().split(/\s+/)[0]!;
  const current = /(\S*)$/.exec(line)![1]!;
  const choices = argumentChoices(command);
  const hits = choices.filter((c) => c.toLowerCase().startsWith(current.toLowerCase()));
  return [hits, current];
}

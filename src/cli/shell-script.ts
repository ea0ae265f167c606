// The pure parts of `einhorn sh`: turning text into command-socket requests,
// deciding whether an answer means failure, and tab completion. No I/O here,
// so all of it is unit-tested directly.
import { constants } from "node:os";
import { COMMANDS, type Response } from "../protocol";

// The one quote-aware splitter (shared with --reexec-as) lives in master/shell-split.ts.
export { parseScript, type ScriptCommand, ScriptError } from "../master/shell-split";

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

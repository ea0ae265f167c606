// The pure parts of `einhorn sh`: turning text into command-socket requests,
// deciding whether an answer means failure, and tab completion. No I/O here,
// so all of it is unit-tested directly.
import { COMMANDS, isCommandName, personCommands, workerCommands } from "../command-registry";
import type { Response } from "../protocol";

// The one quote-aware splitter (shared with --reexec-as) lives in src/shell-split.ts.
export { parseScript, type ScriptCommand, ScriptError } from "../shell-split";

/** Commands the shell answers itself. */
export const LOCAL_COMMANDS = ["quit", "exit"] as const;

/** Commands only workers send: the master closes the connection without answering, which would end the shell. */
export const WORKER_ONLY_COMMANDS: readonly string[] = workerCommands();

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
  return [...personCommands(), ...LOCAL_COMMANDS].sort();
}

/**
 * Words offered for argument number `index` of `command`: its registry rule's
 * choices (src/command-registry.ts), so Tab offers what the master accepts.
 */
export function argumentChoices(command: string, index: number): readonly string[] {
  if (!isCommandName(command) || COMMANDS[command].sender !== "person") return [];
  return COMMANDS[command].args.choices(index);
}

/**
 * node:readline completer: completes the command name in the first word and,
 * for commands with a fixed set of arguments, the word being typed after it.
 * Only the last command of the line counts (`inc; state j`; a quoted ";"
 * also counts as a separator here, which at worst offers nothing). Returns
 * [candidates, the text they replace].
 */
export function complete(line: string): [string[], string] {
  const last = line.slice(line.lastIndexOf(";") + 1);
  const m = /^(\s*)(\S*)$/.exec(last);
  if (m) {
    const typed = m[2]!;
    const names = completionNames();
    const hits = names.filter((n) => n.startsWith(typed));
    return [hits.length ? hits : names, typed];
  }
  const words = last.trim().split(/\s+/);
  const current = /(\S*)$/.exec(last)![1]!;
  // The word being typed is the last one (or a new, empty one after a space).
  const index = words.length - 1 - (current === "" ? 0 : 1);
  const choices = argumentChoices(words[0]!, index);
  const hits = choices.filter((c) => c.toLowerCase().startsWith(current.toLowerCase()));
  return [hits, current];
}

// What both shell modes share: exit codes, deadlines, output, connecting and
// greeting the master, and the non-interactive runner (-e, or commands piped
// on stdin).
import { readFileSync } from "node:fs";
import { userInfo } from "node:os";
import type { Response } from "../protocol";
import { writeOut } from "./stdio";
import { forDescriptor } from "../terminal-text";
import { type Answer, ConnectError, ConnectionLost, ShellClient, type ClientEvents } from "./shell-client";
import { type ScriptCommand, ScriptError, WORKER_ONLY_COMMANDS } from "./shell-script";

/** `einhorn sh` exit statuses (also listed in `einhorn sh -h`). */
export const EXIT = {
  /** Every command succeeded (or the interactive shell was left with quit/exit/Ctrl-D). */
  OK: 0,
  /** A command failed: the master's answer reported an error. */
  FAILED: 1,
  /** Bad options or a command line that cannot be split (an unterminated quote). */
  USAGE: 2,
  /** The master cannot be reached, refused the session, or the connection was lost. */
  CONNECTION: 3,
  /** --timeout passed before the master answered. */
  TIMEOUT: 4,
} as const;

export interface SessionOptions {
  socketPath: string;
  /** Seconds; null waits forever. */
  timeout: number | null;
  verbose: boolean;
  /** A uid besides the user's own and root whose master this shell may talk to (--trust-uid). */
  trustUid?: number | null;
}

export class TimeoutError extends Error {
  override name = "TimeoutError";
}

/** A point in time after which every wait fails with TimeoutError. */
export class Deadline {
  private readonly at: number | null;

  constructor(private readonly seconds: number | null) {
    this.at = seconds === null ? null : Date.now() + seconds * 1000;
  }

  race<T>(p: Promise<T>, what: string): Promise<T> {
    if (this.at === null) return p;
    const left = this.at - Date.now();
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new TimeoutError(`timed out after ${this.seconds} s (--timeout) waiting for ${what}`)), Math.max(0, left));
      p.then((v) => { clearTimeout(timer); resolve(v); }, (e) => { clearTimeout(timer); reject(e); });
    });
  }
}

/** Write and wait until the text is handed to the OS, so process.exit loses nothing (see stdio.ts). */
// Answers carry text others chose: neutralised when shown on a terminal (see terminal-text.ts).
export const out = (text: string) => writeOut(1, forDescriptor(1, text));
export const err = (text: string) => writeOut(2, forDescriptor(2, text));

/** The text of a message as printed: its message, ending in exactly one newline. */
export function messageText(msg: Response): string {
  const text = String(msg.message ?? "");
  if (text === "") return "";
  return text.endsWith("\n") ? text : `${text}\n`;
}

/**
 * The name sent with `ehlo`. Bun's os.userInfo() answers "unknown" when $USER
 * is unset (containers, cron), so fall back to $LOGNAME and /etc/passwd.
 */
export function currentUser(): string {
  let name = "";
  try { name = userInfo().username; } catch { /* no passwd entry */ }
  if (name && name !== "unknown") return name;
  if (process.env.USER) return process.env.USER;
  if (process.env.LOGNAME) return process.env.LOGNAME;
  const uid = process.getuid?.();
  try {
    for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
      const f = line.split(":");
      if (f.length > 2 && Number(f[2]) === uid && f[0]) return f[0];
    }
  } catch { /* no /etc/passwd */ }
  return uid === undefined ? "unknown" : `uid ${uid}`;
}

/** A message the shell refuses to send, or null. */
export function refuseLocally(cmd: ScriptCommand): string | null {
  if (WORKER_ONLY_COMMANDS.includes(cmd.command)) {
    return `'${cmd.command}' is sent by workers, not people: the master closes the connection without answering it`;
  }
  return null;
}

/**
 * Connect and send `ehlo` with the user's name. Returns the client and the
 * banner; a master that answers the greeting with an error (Permission denied,
 * Too many connections) refused the session: ConnectError.
 */
export async function connectAndGreet(opts: SessionOptions, deadline: Deadline, events: ClientEvents): Promise<{ client: ShellClient; banner: string }> {
  const client = await deadline.race(ShellClient.connect(opts.socketPath, events, { trustUid: opts.trustUid ?? null }), `a connection to ${opts.socketPath}`);
  let answer: Answer;
  try {
    answer = await deadline.race(client.request("ehlo", [], { user: currentUser() }).answer, "the master's greeting (ehlo)");
  } catch (e) {
    client.close();
    throw e;
  }
  const banner = answer.messages.map(messageText).join("");
  if (answer.failed) {
    client.close();
    throw new ConnectError(opts.socketPath, "EREFUSED", `the master refused the session: ${banner.trim()}`);
  }
  return { client, banner };
}

/** The one-line reason for an error that ends the shell, and its exit status. */
export function describeFatal(e: unknown, socketPath: string): { text: string; code: number } {
  if (e instanceof ConnectError) return { text: e.message, code: EXIT.CONNECTION };
  if (e instanceof ConnectionLost) return { text: `lost the connection to the master at ${socketPath}: ${e.message}`, code: EXIT.CONNECTION };
  if (e instanceof TimeoutError) return { text: e.message, code: EXIT.TIMEOUT };
  if (e instanceof ScriptError) return { text: e.message, code: EXIT.USAGE };
  throw e;
}

/**
 * Run commands one after another, each waiting for its final answer, and stop
 * at the first failure (like `a && b`): a later command may depend on an
 * earlier one. Answers go to stdout as they arrive; a failing answer goes to
 * stderr, prefixed with the command. `batches` yields lists of commands (one
 * -e script, or one stdin line at a time, parsed as it is read).
 */
export async function runBatch(opts: SessionOptions, batches: AsyncIterable<ScriptCommand[]> | Iterable<ScriptCommand[]>): Promise<number> {
  const deadline = new Deadline(opts.timeout);
  let client: ShellClient | null = null;
  // The master can go away while the shell waits for more commands on stdin
  // (`tail -f cmds | einhorn sh`): that ends the run with exit 3, not 0 at EOF.
  let markLost: (e: Error) => void = () => {};
  const lost = new Promise<never>((_, reject) => { markLost = reject; });
  lost.catch(() => { /* raced below */ });
  let dying = false;
  try {
    const greeted = await connectAndGreet(opts, deadline, {
      onUnsolicited: (msg) => void err(`einhorn sh: the master says: ${messageText(msg) || "(empty message)\n"}`),
      onClose: (reason) => markLost(new ConnectionLost(reason)),
    });
    client = greeted.client;
    if (opts.verbose) await err(greeted.banner);

    const iterator = (Symbol.asyncIterator in batches ? batches[Symbol.asyncIterator]() : (batches as Iterable<ScriptCommand[]>)[Symbol.iterator]()) as AsyncIterator<ScriptCommand[]> | Iterator<ScriptCommand[]>;
    for (;;) {
      // Reading stdin counts against --timeout too: the deadline covers the whole run.
      const reading = deadline.race(Promise.resolve(iterator.next()), "more commands on stdin");
      // After `die` the master closes the connection on purpose.
      const next = await (dying ? reading : Promise.race([reading, lost]));
      if (next.done) break;
      const commands = next.value;
      for (let i = 0; i < commands.length; i++) {
        const cmd = commands[i]!;
        if (cmd.command === "quit" || cmd.command === "exit") return EXIT.OK;
        const refused = refuseLocally(cmd);
        if (refused) {
          await err(`einhorn sh: ${cmd.text}: ${refused}\n`);
          await reportSkipped(commands.slice(i + 1));
          return EXIT.FAILED;
        }
        if (opts.verbose) await err(`einhorn sh> ${cmd.text}\n`);
        const writes: Promise<void>[] = [];
        const { answer } = client.request(cmd.command, cmd.args, {}, (msg, failed) => {
          writes.push(failed ? err(`einhorn sh: ${cmd.text}: ${messageText(msg) || "failed (empty answer)\n"}`) : out(messageText(msg)));
        });
        const result = await deadline.race(answer, `the answer to '${cmd.text}'`);
        await Promise.all(writes);
        if (result.failed) {
          await reportSkipped(commands.slice(i + 1));
          return EXIT.FAILED;
        }
        if (cmd.command === "die") dying = true;
      }
    }
    return EXIT.OK;
  } catch (e) {
    const { text, code } = describeFatal(e, opts.socketPath);
    await err(`einhorn sh: ${text}\n`);
    return code;
  } finally {
    client?.close();
  }
}

async function reportSkipped(rest: ScriptCommand[]): Promise<void> {
  if (rest.length) await err(`einhorn sh: stopped at the failure; not run: ${rest.map((c) => c.text).join("; ")}\n`);
}

// The interactive `einhorn sh`: a prompt with line editing, history kept in
// ~/.einhorn_sh_history and tab completion of commands and their arguments
// (from the command registry). Commands run one at a time; answers are
// printed as they arrive (an upgrade streams progress).
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { clearLine, createInterface, cursorTo, type Interface } from "node:readline";
import type { Response } from "../protocol";
import type { ShellClient } from "./shell-client";
import { complete, parseScript, type ScriptCommand, ScriptError } from "./shell-script";
import { terminalSafe } from "../terminal-text";
import { connectAndGreet, Deadline, describeFatal, EXIT, messageText, refuseLocally, type SessionOptions } from "./shell-session";

const PROMPT = "einhorn> ";
/** History lines kept in memory and in the file. */
const HISTORY_SIZE = 1000;

function historyPath(): string {
  return join(homedir(), ".einhorn_sh_history");
}

/** Oldest first, at most HISTORY_SIZE; a file grown past twice that is cut back. */
function loadHistory(path: string): string[] {
  let lines: string[];
  try {
    lines = readFileSync(path, "utf8").split("\n").filter((l) => l.trim() !== "");
  } catch {
    return [];
  }
  const kept = lines.slice(-HISTORY_SIZE);
  if (lines.length > 2 * HISTORY_SIZE) {
    try { writeFileSync(path, `${kept.join("\n")}\n`, { mode: 0o600 }); } catch { /* read-only home: keep going */ }
  }
  return kept;
}

/** Each line is appended as it is entered, so two shells at once both keep theirs. */
function remember(path: string, line: string): void {
  try { appendFileSync(path, `${line}\n`, { mode: 0o600 }); } catch { /* no history then */ }
}

export async function runInteractive(opts: SessionOptions): Promise<number> {
  let rl: Interface | null = null;
  let lastCommand = "";
  let prompting = false;
  let finish: (code: number) => void = () => {};
  const done = new Promise<number>((r) => { finish = r; });

  /** Print between prompts without mangling a half-typed line. */
  const say = (stream: NodeJS.WriteStream, text: string) => {
    if (!text) return;
    if (rl && prompting) {
      clearLine(process.stdout, 0);
      cursorTo(process.stdout, 0);
      stream.write(text);
      rl.prompt(true);
    } else {
      stream.write(text);
    }
  };

  let client: ShellClient;
  try {
    const greeted = await connectAndGreet(opts, new Deadline(opts.timeout), {
      onUnsolicited: (msg: Response) => say(process.stderr, `The master says: ${terminalSafe(messageText(msg))}`),
      onClose: (reason, pendingCount) => {
        // A command still waiting reports the loss itself (see drain).
        if (pendingCount > 0) return;
        if (lastCommand === "die") {
          say(process.stdout, `\nThe master has gone, as 'die' asked.\n`);
          finish(EXIT.OK);
          return;
        }
        say(process.stderr, `\nThe master at ${opts.socketPath} went away (${reason}).\n`);
        finish(EXIT.CONNECTION);
      },
    });
    client = greeted.client;
    process.stdout.write(terminalSafe(greeted.banner));
  } catch (e) {
    const { text, code } = describeFatal(e, opts.socketPath);
    process.stderr.write(`einhorn sh: ${text}\n`);
    return code;
  }
  process.stdout.write("Type 'help' for the commands, Tab to complete, 'quit' or Ctrl-D to leave.\n");

  const histFile = historyPath();
  const history = loadHistory(histFile);
  rl = createInterface({
    input: process.stdin,
    output: process.stdout,
    prompt: PROMPT,
    terminal: true,
    completer: (line: string) => complete(line),
    history: [...history].reverse(), // readline wants newest first
    historySize: HISTORY_SIZE,
    removeHistoryDuplicates: true,
  });

  const queue: string[] = [];
  let running: { id: number; text: string } | null = null;

  const showPrompt = () => {
    if (client.isClosed) return;
    prompting = true;
    // Keep the cursor where the user left it: text typed ahead while the
    // last command ran is on the line, and a plain prompt() would move the
    // cursor to its start, so Tab completed (and typing inserted) at column 0.
    rl!.prompt(true);
  };

  /** Run one command and wait for its final answer (or the per-command --timeout). */
  const runOne = async (cmd: ScriptCommand): Promise<"ok" | "leave"> => {
    if (cmd.command === "quit" || cmd.command === "exit") return "leave";
    const refused = refuseLocally(cmd);
    if (refused) { process.stderr.write(`${refused}\n`); return "ok"; }
    lastCommand = cmd.command;
    const { id, answer } = client.request(cmd.command, cmd.args, {}, (msg, failed) => {
      (failed ? process.stderr : process.stdout).write(terminalSafe(messageText(msg)));
    });
    running = { id, text: cmd.text };
    try {
      await new Deadline(opts.timeout).race(answer, `the answer to '${cmd.text}'`);
    } finally {
      running = null;
    }
    return "ok";
  };

  const drain = async () => {
    while (queue.length) {
      const line = queue.shift()!;
      let commands: ScriptCommand[];
      try {
        commands = parseScript(line);
      } catch (e) {
        if (e instanceof ScriptError) { process.stderr.write(`${e.message}\n`); continue; }
        throw e;
      }
      for (const cmd of commands) {
        try {
          if ((await runOne(cmd)) === "leave") { finish(EXIT.OK); return; }
        } catch (e) {
          const { text, code } = describeFatal(e, opts.socketPath);
          process.stderr.write(`einhorn sh: ${text}\n`);
          finish(code);
          return;
        }
      }
    }
    showPrompt();
  };

  let draining: Promise<void> | null = null;
  rl.on("line", (line: string) => {
    prompting = false;
    if (line.trim() !== "") remember(histFile, line);
    queue.push(line);
    if (!draining) {
      draining = drain().finally(() => { draining = null; });
    }
  });
  rl.on("SIGINT", () => {
    if (running) {
      // Stop waiting; the master carries on with the command regardless.
      process.stdout.write(`^C\n(stopped waiting for '${running.text}'; the master carries on with it)\n`);
      queue.length = 0;
      client.abandon(running.id);
    } else {
      // Like a shell: abandon the half-typed line and start over.
      process.stdout.write("^C\n");
      rl!.write(null, { ctrl: true, name: "e" });
      rl!.write(null, { ctrl: true, name: "u" });
      showPrompt();
    }
  });
  rl.on("close", () => { // Ctrl-D: leave the cursor on a fresh line
    process.stdout.write("\n");
    finish(EXIT.OK);
  });

  showPrompt();
  const code = await done;
  prompting = false;
  rl.removeAllListeners("close");
  rl.close();
  client.close();
  return code;
}

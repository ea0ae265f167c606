// `einhorn sh`: talk to a running master over its command socket.
//
//   einhorn sh [-c NAME | -d PATH] [-e 'cmd args; cmd'] [--timeout SECONDS] [-v]
//
// With -e the commands run one after another, each waiting for its final
// answer; without -e, a terminal on stdin gets the interactive shell and
// anything else is read as commands, line by line. Every session starts with
// `ehlo` naming the user.
//
// Exit status:
//   0  every command succeeded (interactive: left with quit, exit or Ctrl-D)
//   1  a command failed (the master's answer reported an error); later ones were not run
//   2  bad usage: unknown option, missing value, an unterminated quote
//   3  the master cannot be reached, refused the session, or the connection was lost
//   4  --timeout passed before the master answered
import { defineCommand, runCommand } from "citty";
import { parseScript, type ScriptCommand, ScriptError } from "./shell-script";
import { parseMasterArgs } from "../config/master-args";
import { err, EXIT, out, runBatch, type SessionOptions } from "./shell-session";

export { EXIT } from "./shell-session";

const SHELL_ARGS = {
  "socket-path": { type: "string", alias: "d", valueHint: "PATH", description: "The master's command socket (default $TMPDIR/einhorn.sock; einhorn-NAME.sock with -c)" },
  "command-name": { type: "string", alias: "c", valueHint: "NAME", description: "Talk to the master started with -c NAME" },
  config: { type: "string", valueHint: "FILE", description: "Talk to the master started with --config FILE (its socket-path or command-name; -d/-c override it)" },
  execute: { type: "string", alias: "e", valueHint: "'CMD ARGS; CMD'", description: "Run these commands (';'-separated, quotes allowed) and exit" },
  timeout: { type: "string", valueHint: "SECONDS", description: "Give up after SECONDS (-e/stdin: the whole run; interactive: each command)" },
  "trust-uid": { type: "string", valueHint: "UID", description: "Also talk to a command socket served by this uid (by default only your own uid's or root's)" },
  verbose: { type: "boolean", alias: "v", description: "-e/stdin: show the master's greeting and each command on stderr" },
  help: { type: "boolean", alias: "h", description: "Show this help" },
} as const;

export interface ShellConfig extends SessionOptions {
  /** The -e script, or null to read commands from stdin (interactively when it is a terminal). */
  script: string | null;
  help: boolean;
}

export class ShellUsageError extends Error {
  override name = "ShellUsageError";
}

/** Every spelling citty accepts for our options (it also makes camelCase aliases). */
const KNOWN_KEYS = new Set(["_", ...Object.entries(SHELL_ARGS).flatMap(([name, def]) => [name, name.replace(/-(\w)/g, (_m, c: string) => c.toUpperCase()), ...("alias" in def ? [def.alias] : [])])]);

function spellings(name: keyof typeof SHELL_ARGS): string {
  const def = SHELL_ARGS[name];
  return "alias" in def ? `-${def.alias}/--${name}` : `--${name}`;
}

/**
 * citty keeps the last of a repeated option and reads a value-taking option at
 * the very end as "". For a tool that changes a running service both are
 * worth refusing, so look at the raw words once before citty does.
 */
function checkRawArgs(argv: string[]): void {
  const valued = Object.entries(SHELL_ARGS).filter(([, d]) => d.type === "string");
  const seen = new Map<string, number>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") break;
    const hit = valued.find(([name, d]) => a === `--${name}` || a === `-${(d as { alias?: string }).alias}`);
    const attached = valued.find(([name, d]) => a.startsWith(`--${name}=`) || ((d as { alias?: string }).alias !== undefined && a.length > 2 && a.startsWith(`-${(d as { alias?: string }).alias}`) && !a.startsWith("--")));
    const found = hit ?? attached;
    if (!found) continue;
    const name = found[0] as keyof typeof SHELL_ARGS;
    seen.set(name, (seen.get(name) ?? 0) + 1);
    if (seen.get(name) === 2) {
      throw new ShellUsageError(name === "execute"
        ? "-e/--execute given more than once; put every command in one -e, separated by ';'"
        : `${spellings(name)} given more than once`);
    }
    if (hit) {
      if (i + 1 >= argv.length) throw new ShellUsageError(`${spellings(name)} needs a value (${(found[1] as { valueHint: string }).valueHint})`);
      i++; // the value, whatever it looks like
    }
  }
}

const shellCommand = defineCommand({
  meta: { name: "einhorn sh", description: "Talk to a running einhorn master over its command socket" },
  args: SHELL_ARGS,
  run({ args }): ShellConfig {
    const unknown = Object.keys(args).filter((k) => !KNOWN_KEYS.has(k));
    if (unknown.length) {
      const k = unknown[0]!;
      throw new ShellUsageError(`unknown option '${k.length === 1 ? "-" : "--"}${k}' (einhorn sh -h lists the options)`);
    }
    if (args._.length) {
      throw new ShellUsageError(`unexpected argument '${args._[0]}': commands go in -e, like einhorn sh -e '${args._.join(" ")}'`);
    }
    let timeout: number | null = null;
    const MAX_TIMEOUT_SECONDS = 2_147_483;
    if (args.timeout !== undefined) {
      const n = Number(args.timeout);
      // Timers hold at most 2^31-1 ms; a larger value would fire at once.
      if (args.timeout.trim() === "" || !Number.isFinite(n) || n <= 0 || n > MAX_TIMEOUT_SECONDS) {
        throw new ShellUsageError(`--timeout wants a number of seconds greater than 0 and at most ${MAX_TIMEOUT_SECONDS} (about 24 days; leave it out to wait forever), got '${args.timeout}'`);
      }
      timeout = n;
    }
    let trustUid: number | null = null;
    const trustArg = args["trust-uid"];
    if (trustArg !== undefined) {
      if (!/^\d+$/.test(trustArg.trim()) || Number(trustArg) > 0xfffffffe) throw new ShellUsageError(`--trust-uid wants a numeric uid, got '${trustArg}'`);
      trustUid = Number(trustArg);
    }
    const socketPathArg = args["socket-path"];
    const name = args["command-name"];
    if (socketPathArg === "") throw new ShellUsageError("-d/--socket-path needs a path");
    if (name === "") throw new ShellUsageError("-c/--command-name needs a name");
    if (args.execute !== undefined && args.execute.trim() === "") throw new ShellUsageError("-e/--execute needs commands, like -e 'state'");
    let socketPath = socketPathArg;
    if (socketPath === undefined) {
      if (args.config === "") throw new ShellUsageError("--config needs a file");
      // Exactly where the master puts its socket for this -c and --config
      // FILE (-c overrides the file's), by the master's own defaults.
      const master = [...(args.config !== undefined ? ["--config", args.config] : []), ...(name ? ["--command-name", name] : [])];
      try {
        socketPath = parseMasterArgs(master).socketPath;
      } catch (e) {
        throw new ShellUsageError((e as Error).message);
      }
    }
    return {
      socketPath,
      script: args.execute ?? null,
      timeout,
      verbose: args.verbose === true,
      trustUid,
      help: args.help === true,
    };
  },
});

export async function parseShellArgs(argv: string[]): Promise<ShellConfig> {
  checkRawArgs(argv);
  const { result } = await runCommand(shellCommand, { rawArgs: argv });
  return result as ShellConfig;
}

export function shellUsage(): string {
  const rows = Object.entries(SHELL_ARGS).map(([name, d]) => {
    const alias = "alias" in d ? `-${d.alias}, ` : "    ";
    const value = d.type === "string" ? ` ${d.valueHint}` : "";
    return [`${alias}--${name}${value}`, d.description] as const;
  });
  const width = Math.max(...rows.map(([n]) => n.length));
  return [
    "einhorn sh: talk to a running einhorn master over its command socket.",
    "",
    "Usage: einhorn sh [-c NAME | -d PATH] [-e 'cmd args; cmd'] [--timeout SECONDS] [-v]",
    "",
    "Without -e, a terminal gets an interactive shell (history in ~/.einhorn_sh_history, Tab",
    "completes commands and their arguments, quit/exit/Ctrl-D leaves); other stdin is read as",
    "commands, one line at a time. Commands run in order, each waiting for its final answer;",
    "the first failure stops the run. Answers go to stdout, failures and reasons to stderr.",
    "",
    "Options:",
    ...rows.map(([n, d]) => `  ${n.padEnd(width)}  ${d}`),
    "",
    "Exit status:",
    `  ${EXIT.OK}  every command succeeded (interactive: left with quit, exit or Ctrl-D)`,
    `  ${EXIT.FAILED}  a command failed (the master's answer reported an error)`,
    `  ${EXIT.USAGE}  bad usage: unknown option, missing value, unterminated quote`,
    `  ${EXIT.CONNECTION}  cannot connect to the master, it refused the session, or the connection was lost`,
    `  ${EXIT.TIMEOUT}  --timeout passed before the master answered`,
    "",
    "Examples:",
    "  einhorn sh -e state",
    "  einhorn sh -c myapp -e 'inc; state json'",
    "  einhorn sh --timeout 300 -e upgrade",
  ].join("\n");
}

/** Commands from stdin, parsed one line at a time as they arrive. */
async function* stdinCommands(): AsyncGenerator<ScriptCommand[]> {
  // Loaded here, not at the top: node:readline costs about 1.5 ms of CPU to
  // load, which `einhorn sh -e CMD` (the common case, scripts) never needs.
  const { createInterface } = await import("node:readline");
  const rl = createInterface({ input: process.stdin, terminal: false, crlfDelay: Infinity });
  let n = 0;
  try {
    for await (const line of rl) {
      n++;
      try {
        yield parseScript(line);
      } catch (e) {
        if (e instanceof ScriptError) throw new ScriptError(`stdin line ${n}: ${e.message}`);
        throw e;
      }
    }
  } finally {
    rl.close();
  }
}

export async function runShell(argv: string[]): Promise<number> {
  let cfg: ShellConfig;
  try {
    cfg = await parseShellArgs(argv);
  } catch (e) {
    if (e instanceof ShellUsageError || (e as Error)?.name === "CLIError") {
      await err(`einhorn sh: ${(e as Error).message}\n${"Usage: einhorn sh [-c NAME | -d PATH] [-e 'cmd args; cmd'] [--timeout SECONDS] [-v]; einhorn sh -h for more"}\n`);
      return EXIT.USAGE;
    }
    throw e;
  }
  if (cfg.help) {
    await out(`${shellUsage()}\n`);
    return EXIT.OK;
  }
  if (cfg.script !== null) {
    let commands: ScriptCommand[];
    try {
      commands = parseScript(cfg.script);
    } catch (e) {
      if (e instanceof ScriptError) {
        await err(`einhorn sh: -e: ${e.message}\n`);
        return EXIT.USAGE;
      }
      throw e;
    }
    if (commands.length === 0) {
      await err("einhorn sh: -e holds no commands\n");
      return EXIT.USAGE;
    }
    return runBatch(cfg, [commands]);
  }
  if (process.stdin.isTTY) {
    const { runInteractive } = await import("./shell-interactive");
    return runInteractive(cfg);
  }
  return runBatch(cfg, stdinCommands());
}

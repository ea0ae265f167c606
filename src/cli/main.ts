#!/usr/bin/env bun
// einhorn's single entry point. `einhorn [options] [--] PROGRAM [ARGS...]` runs
// the master; the first argument may instead name a subcommand: `sh` (the
// shell) or a hidden internal one starting with `_`. To run a worker program
// that is itself called `sh`, put an option or `--` first: `einhorn -- sh -c ...`.
import { type MasterConfig, parseMasterArgs, UsageError } from "../config/master-args";
import { einhornUsage } from "./usage";
import { StartError } from "../master/errors";
import { einhornVersionLabel, versionLine } from "../version";
import { selfCommand } from "./self";
import { osArgs, osEnviron } from "../../ffi/os-string";
import { writeOutSync } from "./stdio";
import { CLibraryError } from "../../ffi/c-library";
import { ENV } from "../protocol-env";
import { parseTimeouts, type Timeouts, TimeoutsError } from "../config/timeouts";

/**
 * A master's runtime threads must start with the signals it handles blocked
 * (they inherit the main thread's mask when the runtime creates them), and
 * the master never unblocks them (src/master/signal-source.ts). A fresh
 * start does not have that mask yet: block the signals and exec this same
 * command once. The mask is the marker, so this happens at most once;
 * re-executed masters inherit it.
 */
function bootstrapSignalMask(argv: string[], env: Record<string, string>, keepFds: number[] = []): void {
  // Imported lazily so that `einhorn --version` and `einhorn sh` never load libc.
  const { blockSignals, execve, signalsBlocked } = require("../../ffi/process") as typeof import("../../ffi/process");
  const { blockedSignalNumbers, handledSignalNumbers } = require("../master/signal-source") as typeof import("../master/signal-source");
  if (signalsBlocked(handledSignalNumbers())) return;
  // Sockets passed by systemd must survive this exec; the runtime marked
  // every inherited descriptor from 4 up close-on-exec when it started.
  const { keepSystemdSocketsAcrossExec } = require("../master/systemd") as typeof import("../master/systemd");
  keepSystemdSocketsAcrossExec(env, process.pid);
  const { setCloexec } = require("../../ffi/socket") as typeof import("../../ffi/socket");
  for (const fd of keepFds) setCloexec(fd, false);
  blockSignals(blockedSignalNumbers());
  const self = selfCommand();
  try {
    execve(self[0]!, [...self, ...argv], Object.entries(env).map(([k, v]) => `${k}=${v}`));
  } catch (e) {
    // Carry on in this image: signals may then be lost during the first re-exec only.
    process.stderr.write(`einhorn: warning: could not re-execute to set the signal mask: ${(e as Error).message}\n`);
  }
}

/** EINHORN_TIMEOUTS (src/config/timeouts.ts); a bad value is a usage error, as a bad flag is. */
function readTimeouts(env: Record<string, string | undefined>): Timeouts {
  try {
    return parseTimeouts(env[ENV.TIMEOUTS]);
  } catch (e) {
    if (e instanceof TimeoutsError) fail(e.message, 2);
    throw e;
  }
}

function fail(message: string, code: number): never {
  writeOutSync(2, `einhorn: ${message}\n`);
  process.exit(code);
}

/** The command line: its words, and the master options they give (parsed when first asked for: a subcommand's words are not master options). */
interface CommandLine {
  argv: string[];
  options(): MasterConfig;
}

/**
 * One way einhorn runs. main() runs the first mode of MODES that matches;
 * its `run` ends the process, or returns once the mode's work is handed to
 * the event loop.
 */
interface Mode {
  name: string;
  matches(cl: CommandLine): boolean;
  run(cl: CommandLine): Promise<void>;
}

/** A mode named by the first argument; the rest are its own arguments. */
function subcommand(name: string, run: (args: string[]) => Promise<void>): Mode {
  return { name, matches: (cl) => cl.argv[0] === name, run: (cl) => run(cl.argv.slice(1)) };
}

/** `--upgrade-check`, the preflight of an upgrade: this binary starts, can load the preload module (if any), and says which handed-over state it reads. */
async function upgradeCheck(config: MasterConfig): Promise<void> {
  if (config.preload) {
    const { checkPreload } = await import("./preload");
    const why = await checkPreload(config.preload);
    if (why) fail(`preload ${config.preload}: ${why}`, 1);
  }
  const { HANDOFF_SCHEMA, readHandoff, validateHandoff } = await import("../master/handoff");
  const { STATE_SCHEMA } = await import("../core/state");
  const docFd = osEnviron()[ENV.UPGRADE_CHECK_STATE_FD];
  if (docFd !== undefined) {
    // The document the master would hand over: read it as this binary
    // would after the exec, so one it cannot continue from fails the
    // upgrade now, while the old master still runs (not after its execve).
    const { handedConfig } = await import("../master/config");
    try {
      if (!/^\d+$/.test(docFd)) throw new Error(`${ENV.UPGRADE_CHECK_STATE_FD} is '${docFd}', not a descriptor number`);
      const doc = validateHandoff(readHandoff(Number(docFd)));
      handedConfig(doc);
    } catch (e) {
      fail(`cannot continue from the state this master would hand over: ${(e as Error).message}`, 1);
    }
  }
  writeOutSync(1, `${JSON.stringify({ einhorn: einhornVersionLabel(), handoffSchema: HANDOFF_SCHEMA, stateSchema: STATE_SCHEMA })}\n`);
  process.exit(0);
}

/**
 * `--with-state-fd N`: continue as the next image of a master that
 * re-executed itself. Nothing here may wait on the event loop before the
 * master has its signalfd (see below), so main() reaches this without one.
 */
async function resume(argv: string[], config: MasterConfig): Promise<void> {
  const stateFd = config.withStateFd!;
  // Loaded synchronously: signals pending since before the exec meet their
  // default action at the first event-loop wait, so none may come before
  // the master has its signalfd (Bun's loop waits with an empty mask).
  const { Master, loadHandoff } = require("../master/master") as typeof import("../master/master");
  const { close } = require("../../ffi/socket") as typeof import("../../ffi/socket");
  let doc;
  try {
    doc = loadHandoff(stateFd);
  } catch (e) {
    fail(`cannot continue from the state on fd ${stateFd}: ${(e as Error).message}`, 1);
  }
  // A --reexec-as wrapper may have cleared the signal mask (dash does while
  // it waits for a command): set it again the way a fresh start does, with
  // every handed-over descriptor kept across that one more exec.
  const { handedFds } = require("../master/handoff") as typeof import("../master/handoff");
  bootstrapSignalMask(argv, osEnviron(), [stateFd, ...handedFds(doc)]);
  close(stateFd);
  const { handedConfig } = require("../master/config") as typeof import("../master/config");
  let handed;
  try {
    // Options this einhorn has and the writer did not know get their defaults.
    handed = handedConfig(doc);
  } catch (e) {
    fail(`cannot continue from the state on fd ${stateFd}: ${(e as Error).message}`, 1);
  }
  const env = osEnviron();
  const master = new Master({ config: handed, selfCommand: selfCommand(), env, timeouts: readTimeouts(env) });
  await master.resume(doc);
}

/** A fresh master: check the preload module (if any), block the signals, then bind, spawn and serve. */
async function start(argv: string[], config: MasterConfig): Promise<void> {
  let postload: string | null = null;
  // Imported only here: preload.ts brings node:url, which every other start would pay for.
  if (config.preload && !(await import("./preload")).isPreloadModule(config.preload)) {
    // Reference: Einhorn "proceeds with postload" when it cannot preload; the
    // workers then run PROGRAM as given. Said once the master's log is up.
    postload = `-p ${config.preload} is not a Bun/TypeScript module (${config.program.length ? "preloading only loads .ts/.js files" : "and no PROGRAM was given"}); proceeding without preload: workers run ${config.program.length ? `'${config.program.join(" ")}'` : "nothing"} as given`;
    config = { ...config, preload: null };
    if (config.program.length === 0) {
      writeOutSync(2, `einhorn: ${postload}\n`);
      writeOutSync(1, einhornUsage(false));
      process.exit(1);
    }
  }
  if (config.preload) {
    // Checked in a throwaway process (module side effects stay out of the
    // master) before anything is bound or spawned. The master's own fds are
    // not yet anything a child could inherit, and nothing reaps yet, so
    // Bun.spawnSync is safe here.
    const { resolve } = await import("node:path");
    const { existsSync } = await import("node:fs");
    const abs = resolve(config.preload);
    if (!existsSync(abs)) fail(`-p/--preload: no such file: ${config.preload}`, 2);
    const r = Bun.spawnSync([...selfCommand(), "_preload", "--check", abs], { stdout: "ignore", stderr: "pipe", env: process.env });
    if (r.exitCode !== 0) fail(r.stderr.toString().trim().replace(/^einhorn: /, "") || `preload ${config.preload} failed to load`, 1);
    config = { ...config, preload: abs };
  }

  const { resolveProgram } = await import("../master/spawner");
  const { Master } = await import("../master/master");
  // The environment as bytes (osEnviron): values that are not UTF-8 reach the workers intact.
  const env = osEnviron();
  const timeouts = readTimeouts(env);
  bootstrapSignalMask(argv, env);
  try {
    if (!config.preload) resolveProgram(config.program[0]!, env.PATH);
    const { takeSystemdSockets } = await import("../master/systemd");
    const { getpid } = await import("../../ffi/process");
    // Sockets from systemd socket activation; the LISTEN_* variables are consumed here.
    const systemd = takeSystemdSockets(env, getpid());
    for (const k of Object.keys(process.env)) if (!(k in env) && k.startsWith("LISTEN_")) delete process.env[k];
    const master = new Master({ config, selfCommand: selfCommand(), env, systemd, timeouts });
    if (postload) master.log.warn(postload);
    await master.start();
  } catch (e) {
    if (e instanceof StartError) fail(e.message, e.exitCode);
    throw e;
  }
}

/** Every way einhorn runs, in the order they are tried: subcommands by the first argument, then by the options given. */
const MODES: Mode[] = [
  subcommand("_exec", async (args) => {
    const { runExecHelper } = await import("./exec-helper");
    runExecHelper(args);
  }),
  subcommand("_preload", async (args) => {
    const { runPreload } = await import("./preload");
    await runPreload(args);
  }),
  subcommand("systemd-unit", async (args) => {
    const { runSystemdUnit } = await import("./systemd-unit");
    process.exit(runSystemdUnit(args));
  }),
  subcommand("sh", async (args) => {
    const { runShell } = await import("./shell");
    process.exit(await runShell(args));
  }),
  {
    name: "help",
    matches: (cl) => cl.options().help,
    run: async () => {
      writeOutSync(1, einhornUsage(true));
      process.exit(0);
    },
  },
  {
    name: "version",
    matches: (cl) => cl.options().version,
    run: async () => {
      writeOutSync(1, `${versionLine()}\n`);
      process.exit(0);
    },
  },
  { name: "upgrade-check", matches: (cl) => cl.options().upgradeCheck, run: (cl) => upgradeCheck(cl.options()) },
  { name: "resume", matches: (cl) => cl.options().withStateFd !== null, run: (cl) => resume(cl.argv, cl.options()) },
  {
    name: "usage",
    matches: (cl) => cl.options().program.length === 0 && !cl.options().preload,
    run: async () => {
      // Reference: without a program, Einhorn prints its usage to stdout and exits 1.
      writeOutSync(1, einhornUsage(false));
      process.exit(1);
    },
  },
  { name: "start", matches: () => true, run: (cl) => start(cl.argv, cl.options()) },
];

export async function main(argv: string[]): Promise<void> {
  let parsed: MasterConfig | null = null;
  const cl: CommandLine = {
    argv,
    options: () => {
      if (parsed) return parsed;
      try {
        parsed = parseMasterArgs(argv);
      } catch (e) {
        if (e instanceof UsageError) fail(e.message, e.exitCode);
        throw e;
      }
      return parsed;
    },
  };
  // No await before the mode runs: resume must reach its signalfd without an event-loop wait.
  const mode = MODES.find((m) => m.matches(cl))!;
  await mode.run(cl);
}

if (import.meta.main) {
  // The arguments as bytes (osArgs): Bun's process.argv has each non-UTF-8 byte replaced by U+FFFD.
  main(osArgs()).catch((e) => {
    // A system whose C library einhorn cannot use: say which, no stack trace.
    if (e instanceof CLibraryError) fail(e.message, 1);
    // Anything else reaching here is a bug, not bad input; say so plainly.
    writeOutSync(2, `einhorn: internal error: ${(e as Error).stack ?? e}\n`);
    process.exit(70);
  });
}

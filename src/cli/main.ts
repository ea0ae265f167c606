#!/usr/bin/env bun
// einhorn's single entry point. `einhorn [options] [--] PROGRAM [ARGS...]` runs
// the master; the first argument may instead name a subcommand: `sh` (the
// shell) or a hidden internal one starting with `_`. To run a worker program
// that is itself called `sh`, put an option or `--` first: `einhorn -- sh -c ...`.
import { MASTER_OPTIONS, parseMasterArgs, UsageError } from "./master-options";
import { StartError } from "../master/errors";
import { EINHORN_VERSION, einhornVersionLabel } from "../version";
import { selfCommand } from "./self";

/** The master's usage, from the same table the parser uses. */
export function masterUsage(): string {
  const rows = MASTER_OPTIONS.filter((o) => !o.hidden).map((o) => {
    const names = `${o.short ? `-${o.short}, ` : "    "}--${o.long}${o.value ? ` ${o.value}` : ""}`;
    return [names, o.description] as const;
  });
  const width = Math.max(...rows.map(([n]) => n.length));
  return [
    `einhorn ${EINHORN_VERSION}: run N copies of PROGRAM sharing listening sockets; keep them up, upgrade them without dropping a connection.`,
    "",
    "Usage: einhorn [options] [--] PROGRAM [ARGS...]",
    "       einhorn sh [-c NAME | -d PATH] [-e 'cmd args; cmd'] [--timeout SECONDS]",
    "",
    "Options:",
    ...rows.map(([n, d]) => `  ${n.padEnd(width)}  ${d}`),
    "",
    "Exit status: 0 stopped cleanly; 1 could not start or failed at run time; 2 bad usage;",
    "126 PROGRAM is not executable; 127 PROGRAM not found; 70 internal error.",
  ].join("\n");
}

function fail(message: string, code: number): never {
  process.stderr.write(`einhorn: ${message}\n`);
  process.exit(code);
}

export async function main(argv: string[]): Promise<void> {
  const first = argv[0];
  if (first === "_exec") {
    const { runExecHelper } = await import("./exec-helper");
    runExecHelper(argv.slice(1));
  }
  if (first === "sh") {
    const { runShell } = await import("./shell");
    process.exit(await runShell(argv.slice(1)));
  }

  let config;
  try {
    config = parseMasterArgs(argv);
  } catch (e) {
    if (e instanceof UsageError) fail(e.message, e.exitCode);
    throw e;
  }
  if (config.help) {
    process.stdout.write(`${masterUsage()}\n`);
    process.exit(0);
  }
  if (config.version) {
    process.stdout.write(`einhorn ${einhornVersionLabel()}\n`);
    process.exit(0);
  }
  if (config.upgradeCheck) {
    // The preflight of an upgrade: this binary starts, and says which handed-over state it reads.
    const { HANDOFF_SCHEMA } = await import("../master/handoff");
    const { STATE_SCHEMA } = await import("../core/state");
    process.stdout.write(`${JSON.stringify({ einhorn: einhornVersionLabel(), handoffSchema: HANDOFF_SCHEMA, stateSchema: STATE_SCHEMA })}\n`);
    process.exit(0);
  }
  if (config.withStateFd !== null) {
    const { Master, loadHandoff } = await import("../master/master");
    const { close } = await import("../../ffi/socket");
    let doc;
    try {
      doc = loadHandoff(config.withStateFd);
      close(config.withStateFd);
    } catch (e) {
      fail(`cannot continue from the state on fd ${config.withStateFd}: ${(e as Error).message}`, 1);
    }
    const master = new Master({ config: { ...doc.config, withStateFd: null }, selfCommand: selfCommand(), env: { ...process.env } });
    await master.resume(doc);
    return;
  }
  if (config.preload) fail("-p/--preload is not available yet in this version (it lands with the worker-side work); nothing was started", 2);
  if (config.program.length === 0) {
    process.stderr.write(`${masterUsage()}\n`);
    fail("no PROGRAM given: einhorn [options] [--] PROGRAM [ARGS...]", 2);
  }

  const { resolveProgram } = await import("../master/spawner");
  const { Master } = await import("../master/master");
  try {
    resolveProgram(config.program[0]!);
    const master = new Master({ config, selfCommand: selfCommand(), env: { ...process.env } });
    await master.start();
  } catch (e) {
    if (e instanceof StartError) fail(e.message, e.exitCode);
    throw e;
  }
}

if (import.meta.main) {
  main(process.argv.slice(2)).catch((e) => {
    // Anything reaching here is a bug, not bad input; say so plainly.
    process.stderr.write(`einhorn: internal error: ${(e as Error).stack ?? e}\n`);
    process.exit(70);
  });
}

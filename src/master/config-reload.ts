// An upgrade (or reload) re-reads --config FILE: a change of settings rolls
// out with it. What the file may change, and how:
// - the program and its arguments, -k, -g, --nice's worker level, --listen-fds,
//   --reexec-as, --drop-env-var, --log-format: taken by the next master image;
// - the settings the core keeps in its state (number, seconds, ack mode,
//   max_unacked, ...): applied to the state handed to the next image, but
//   only those the file changed, so a `config`/`inc`/`set_workers` made at
//   run time stays unless the file now says otherwise;
// - what was bound or created at start (sockets, paths, command name,
//   metrics address, worker-output mode) cannot change without a restart: a
//   file that changes them fails the upgrade with the reason.
// The command line still overrides the file, as at start.
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Defaults, type MasterConfig, parseMasterArgs } from "../cli/master-options";
import type { Settings } from "../core/state";

const FIXED: Array<[string, (c: MasterConfig) => unknown]> = [
  ["bind", (c) => c.binds.map((b) => b.text)],
  ["backlog", (c) => c.backlog],
  ["socket-path", (c) => c.socketPath],
  ["pidfile", (c) => c.pidfile],
  ["lockfile", (c) => c.lockfile],
  ["command-name", (c) => c.commandName],
  ["metrics", (c) => c.metrics],
  ["worker-output", (c) => c.workerOutput],
  ["subreaper", (c) => c.subreaper],
  ["preload", (c) => c.preload],
];

const SETTINGS: Array<[string, keyof Settings, (c: MasterConfig) => unknown]> = [
  ["number", "number", (c) => c.number],
  ["seconds", "seconds", (c) => c.seconds],
  ["ack-mode", "ackMode", (c) => c.ackMode],
  ["max-unacked", "maxUnacked", (c) => c.maxUnacked],
  ["max-upgrade-additional", "maxUpgradeAdditional", (c) => c.maxUpgradeAdditional],
  ["signal-timeout", "signalTimeout", (c) => c.signalTimeout],
  ["ack-timeout", "ackTimeout", (c) => c.ackTimeout],
  ["upgrade-max-deaths", "upgradeMaxDeaths", (c) => c.upgradeMaxDeaths],
  ["upgrade-bake", "upgradeBake", (c) => c.upgradeBake],
  ["quiet/verbose", "verbosity", (c) => c.verbosity],
];

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export interface ConfigReload {
  config: MasterConfig;
  /** Settings to apply to the handed-over state. */
  patch: Partial<Settings>;
  /** What changed, for people: "number 2 -> 4", "program". */
  changes: string[];
}

/** The pidfile an image before "no pidfile unless asked" chose when not given one. */
function oldDefaultPidfile(cfg: MasterConfig, defaults: Defaults): string {
  return join(defaults.tmpdir ?? tmpdir(), cfg.commandName ? `einhorn-${cfg.commandName}.pid` : "einhorn.pid");
}

/** Re-read the config file of `old` with the same command line; throws an Error saying why it cannot be used. */
export function rereadConfig(old: MasterConfig, defaults: Defaults = {}): ConfigReload {
  if (!old.configFile) return { config: old, patch: {}, changes: [] };
  let next: MasterConfig;
  try {
    next = parseMasterArgs(old.commandLine, defaults);
  } catch (e) {
    // The parser's messages already name the file.
    throw new Error((e as Error).message, { cause: e });
  }
  next = { ...next, withStateFd: null, upgradeCheck: false, version: false, help: false };
  // Images before "no pidfile unless asked" wrote one by default and hand
  // over its path. The file they made stays this master's (removed at exit),
  // so a re-read that names no pidfile keeps it rather than failing every
  // upgrade until a restart; an -e or pidfile: given before and dropped now
  // is still a change.
  if (next.pidfile === null && old.pidfile !== null && old.pidfile === oldDefaultPidfile(old, defaults)) next = { ...next, pidfile: old.pidfile };
  // -p was resolved to an absolute path at start; a file that names it the same way is not a change.
  if (old.preload && next.preload && !same(old.preload, next.preload)) {
    const { resolve } = require("node:path") as typeof import("node:path");
    if (resolve(next.preload) === old.preload) next = { ...next, preload: old.preload };
  }
  for (const [name, get] of FIXED) {
    if (!same(get(old), get(next))) {
      throw new Error(`config ${old.configFile}: ${name} changed from ${JSON.stringify(get(old))} to ${JSON.stringify(get(next))}, which only a restart of einhorn can apply`);
    }
  }
  if (next.program.length === 0) throw new Error(`config ${old.configFile}: no program (neither in the file nor on the command line)`);
  const patch: Partial<Settings> = {};
  const changes: string[] = [];
  for (const [name, key, get] of SETTINGS) {
    if (!same(get(old), get(next))) {
      (patch as Record<string, unknown>)[key] = get(next);
      changes.push(`${name} ${JSON.stringify(get(old))} -> ${JSON.stringify(get(next))}`);
    }
  }
  if (!same(old.program, next.program)) changes.push(`program ${JSON.stringify(old.program)} -> ${JSON.stringify(next.program)}`);
  for (const k of ["retireSignal", "killChildrenOnExit", "commandSocketAsFd", "listenFds", "passNotifySocket", "reexecAs", "dropEnvVars", "logFormat", "nice", "maxMemory"] as const) {
    if (!same(old[k], next[k])) changes.push(`${k} ${JSON.stringify(old[k])} -> ${JSON.stringify(next[k])}`);
  }
  return { config: next, patch, changes };
}

// An upgrade (or reload) re-reads --config FILE: a change of settings rolls
// out with it. What each option's change does is its reload class in
// src/config/options.ts:
// - "fixed" (bound or created at start: sockets, paths, command name,
//   metrics address, worker-output mode): the upgrade fails with the reason;
// - "setting" (kept in the core's state: number, seconds, ack mode, ...):
//   applied to the state handed to the next image, but only those the file
//   changed, so a `config`/`inc`/`set_workers` made at run time stays unless
//   the file now says otherwise;
// - "master" and "worker" (and the program with its arguments): taken by the
//   next master image and the workers it starts; listed for people.
// The command line still overrides the file, as at start.
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { type Defaults, type MasterConfig, parseMasterArgs } from "../config/master-args";
import { OPTIONS, type Reload } from "../config/options";
import type { ValueKind } from "../config/value-kinds";
import type { Settings } from "../core/state";

/** One field of the configuration, with the options that give it ("quiet/verbose") and how a diff shows it. */
interface Diffed { name: string; field: keyof MasterConfig; reload: Reload; get(c: MasterConfig): unknown }

/** Per field, in option order: -q and -v both move the verbosity, and are one change. */
const DIFFED: Diffed[] = (() => {
  const byField = new Map<string, Diffed>();
  for (const o of OPTIONS) {
    const seen = byField.get(o.field);
    if (seen) { seen.name += `/${o.long}`; continue; }
    const show = o.kind.takes === "value" ? (o.kind as ValueKind<unknown>).show : undefined;
    const get = (c: MasterConfig): unknown => {
      const v = c[o.field];
      if (!show) return v;
      return o.repeat ? (v as unknown[]).map(show) : v === null ? null : show(v);
    };
    byField.set(o.field, { name: o.long, field: o.field, reload: o.reload, get });
  }
  return [...byField.values()];
})();

const ofClass = (...classes: Reload[]) => DIFFED.filter((d) => classes.includes(d.reload));
const FIXED = ofClass("fixed");
const SETTINGS = ofClass("setting");
const TAKEN_BY_NEXT_IMAGE = ofClass("master", "worker");

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
    if (resolve(next.preload) === old.preload) next = { ...next, preload: old.preload };
  }
  for (const { name, get } of FIXED) {
    if (!same(get(old), get(next))) {
      throw new Error(`config ${old.configFile}: ${name} changed from ${JSON.stringify(get(old))} to ${JSON.stringify(get(next))}, which only a restart of einhorn can apply`);
    }
  }
  if (next.program.length === 0) throw new Error(`config ${old.configFile}: no program (neither in the file nor on the command line)`);
  const patch: Partial<Settings> = {};
  const changes: string[] = [];
  const change = (name: string, from: unknown, to: unknown) => changes.push(`${name} ${JSON.stringify(from)} -> ${JSON.stringify(to)}`);
  for (const { name, field, get } of SETTINGS) {
    if (!same(get(old), get(next))) {
      // A "setting" option's field is also a Settings field (options.ts types it so).
      (patch as Record<string, unknown>)[field] = get(next);
      change(name, get(old), get(next));
    }
  }
  if (!same(old.program, next.program)) change("program", old.program, next.program);
  for (const { name, get } of TAKEN_BY_NEXT_IMAGE) {
    if (!same(get(old), get(next))) change(name, get(old), get(next));
  }
  return { config: next, patch, changes };
}

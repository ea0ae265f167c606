// What a master was told to do (src/config/master-config.ts) crosses the
// master's own execve in the handoff next to State, and like State it is
// versioned: a new image reads an older image's configuration with every
// option that image did not know set to its default, and refuses a newer one.
import { parseSignal } from "../signal-names";
import type { MasterConfig } from "../config/master-config";
import { parseMasterArgs } from "../config/master-args";

export type { MasterConfig } from "../config/master-config";

/** The layout of MasterConfig; bump it when a field changes meaning (adding one with a default needs no bump). */
export const CONFIG_SCHEMA = 1;

/**
 * A handed-over configuration, written by this or an older einhorn: fields
 * it lacks (options added since) take their values from `defaults` (what
 * this einhorn's parser gives with no options). The one-shot flags are off:
 * the new image is a running master.
 */
export function upgradeConfig(doc: unknown, schema: number, defaults: MasterConfig): MasterConfig {
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error("the handed-over configuration is not a mapping");
  if (schema > CONFIG_SCHEMA) throw new Error(`the handed-over configuration has schema ${schema}; this einhorn reads up to ${CONFIG_SCHEMA}`);
  const d = doc as Partial<MasterConfig>;
  // The retire signal decides what workers are sent from now on: a name that
  // is not a signal means a document we do not understand (every writer took
  // it from --retire-signal's four choices), refused like a newer schema.
  const retireSignal = d.retireSignal === undefined ? defaults.retireSignal : typeof d.retireSignal === "string" ? parseSignal(d.retireSignal) : null;
  if (retireSignal === null) throw new Error(`the handed-over configuration's retireSignal is ${JSON.stringify(d.retireSignal)}, which is not a signal name (like SIGUSR2 or SIGTERM)`);
  return {
    ...defaults,
    ...d,
    retireSignal,
    nice: { ...defaults.nice, ...(d.nice ?? {}) },
    // A writer from before commandLine was recorded re-reads its file alone.
    commandLine: d.commandLine ?? (d.configFile ? ["--config", d.configFile] : defaults.commandLine),
    withStateFd: null, upgradeCheck: false, version: false, help: false,
  };
}

/**
 * The configuration a handoff document carries, as this einhorn reads it
 * (upgradeConfig, with this einhorn's defaults): what a resumed image runs
 * with, and what an upgrade's preflight checks it could run with.
 */
export function handedConfig(doc: { config: unknown; configSchema: number }): MasterConfig {
  return upgradeConfig(doc.config, doc.configSchema, parseMasterArgs(["--", "true"]));
}

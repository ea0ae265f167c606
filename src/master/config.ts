// What a master was told to do: its command line (and --config file) as
// parsed by src/cli/master-options.ts. It crosses the master's own execve in
// the handoff next to State, and like State it is versioned: a new image
// reads an older image's configuration with every option that image did not
// know set to its default, and refuses a newer one.
import { parseSignal, type SignalName } from "../signal-names";
import type { BindSpec } from "./bind-spec";

/** The layout of MasterConfig; bump it when a field changes meaning (adding one with a default needs no bump). */
export const CONFIG_SCHEMA = 1;

export interface MasterConfig {
  program: string[];
  binds: BindSpec[];
  backlog: number;
  commandName: string | null;
  socketPath: string;
  /** -e PATH, or null: no pidfile unless asked (an older image's handoff may carry its default path). */
  pidfile: string | null;
  lockfile: string;
  commandSocketAsFd: boolean;
  killChildrenOnExit: boolean;
  ackMode: { kind: "timer"; seconds: number } | { kind: "manual" };
  number: number;
  preload: string | null;
  verbosity: number;
  seconds: number;
  signalTimeout: number | null;
  /** Canonical (SIGTERM, not TERM). */
  retireSignal: SignalName;
  maxUnacked: number;
  maxUpgradeAdditional: number | null;
  ackTimeout: number | null;
  upgradeMaxDeaths: number;
  /** --upgrade-bake: seconds a new generation is watched after it is up (0: off). */
  upgradeBake: number;
  dropEnvVars: string[];
  reexecAs: string | null;
  nice: { master: number | null; worker: number | null; reniceCmd: string | null };
  logFormat: "text" | "plain" | "json";
  /** --worker-output. */
  workerOutput: "inherit" | "prefix" | "json";
  /** --metrics HOST:PORT, or null. */
  metrics: string | null;
  /** --metrics-allow-remote: a non-loopback --metrics address is meant (no warning). */
  metricsAllowRemote: boolean;
  /** --max-memory in bytes, or null. */
  maxMemory: number | null;
  /** --config FILE as an absolute path, or null. */
  configFile: string | null;
  /** The master's own command line, for re-reading the config file with the same overrides. */
  commandLine: string[];
  listenFds: boolean;
  subreaper: boolean;
  withStateFd: number | null;
  upgradeCheck: boolean;
  version: boolean;
  help: boolean;
}

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

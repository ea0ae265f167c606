// What a master was told to do: its command line (and --config file) as
// parsed by master-args.ts from the options in options.ts. Its fields and
// their types are a format: the configuration crosses the master's own
// execve as JSON, between einhorn versions (src/master/config.ts reads an
// older one), so a field keeps its name and meaning once released.
import type { SignalName } from "../signal-names";
import type { BindSpec } from "./bind-spec";

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
  /** --metrics-allow-remote: no warning for a non-loopback --metrics. */
  metricsAllowRemote: boolean;
  /** --max-memory in bytes, or null. */
  maxMemory: number | null;
  /** --config FILE as an absolute path, or null. */
  configFile: string | null;
  /** The master's own command line, for re-reading the config file with the same overrides. */
  commandLine: string[];
  listenFds: boolean;
  subreaper: boolean;
  /** --pass-notify-socket: workers keep NOTIFY_SOCKET (see sd-notify.ts). */
  passNotifySocket: boolean;
  withStateFd: number | null;
  upgradeCheck: boolean;
  version: boolean;
  help: boolean;
}

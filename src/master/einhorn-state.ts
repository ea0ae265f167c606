// `state` as Einhorn 1.1.1 answers it: `YAML.dump` of
// `{state: Einhorn::State.state, persistent_descriptors: [...]}`, loaded by
// Einhorn's clients (its SafeYAML: Psych safe_load permitting Symbol, Time
// and Set) and indexed like `state[:state][:children][pid][:acked]`. Monitoring
// scripts and Einhorn's own integration tests read it that way, so the keys,
// their Ruby classes and the nesting follow Einhorn's State.default_state and
// Command.spinup/register_ping/signal_all, filled with our real values.
//
// Our own stable schema stays `state json` / `state yaml` (state-report.ts,
// docs/state.md); this layout is for Einhorn's readers, not for new ones.
import { isAcked, RETIRING_SIGNALS } from "../core/pool";
import type { State, Worker } from "../core/state";
import type { MasterConfig } from "./config";
import { RubyFloat, RubySet, sym, time, toRubyYaml } from "../ruby-yaml";
import type { Listener } from "./listeners";
import { shellSplit } from "../shell-split";
import { shortSignalName } from "../signal-names";

export interface EinhornStateInput {
  state: State;
  config: MasterConfig;
  listeners: Listener[];
  /** Times the master has re-executed itself (Einhorn's `generation`). */
  reexecs: number;
  commandFd: number | null;
  /** Open command-socket connections (Einhorn keeps them as persistent descriptors). */
  connectionFds: number[];
  /** PROGRAM as exec will find it (Einhorn's `cmd[0] = which(cmd[0])`). */
  which(program: string): string;
}

function child(w: Worker) {
  // Einhorn records the signals that ask a worker to leave (upgrades, dec,
  // die, stops, the KILL after -t), not those of the `signal` command: a HUP
  // to reopen logs leaves a worker unsignaled there, and so here.
  const leaving = w.signals.filter((s) => RETIRING_SIGNALS.has(s.signal));
  const last = leaving.length ? leaving[leaving.length - 1]!.at : null;
  const spec: Record<string, unknown> = {
    type: sym("worker"),
    version: w.version,
    acked: isAcked(w),
    // A Set of signal names without "SIG", as Einhorn's signal_all records them.
    signaled: new RubySet([...new Set(leaving.map((s) => shortSignalName(s.signal)))]),
    last_signaled_at: time(last),
    index: w.index,
    spinup_time: time(w.spawnedAt),
  };
  // Einhorn adds these on the first worker:ping.
  if (w.lastPing) {
    spec.pinged_at = time(w.lastPing.at);
    spec.pinged_request_id = w.lastPing.requestId ?? null;
  }
  return spec;
}

function bindEntry(l: Listener): [string, number | null, string[]] {
  const flags = l.spec.text.split(",").slice(1).map((f) => f.toLowerCase());
  const a = l.spec.address;
  if (a.kind === "tcp") return [a.host, a.port, flags];
  // Not expressible in Einhorn (TCP only): the address as given, no port.
  return [l.spec.text.split(",")[0]!, null, flags];
}

/** Einhorn's dumpable state, as Ruby values (see ruby-yaml.ts). */
function einhornStateDocument(inp: EinhornStateInput): unknown {
  const { state: s, config: cfg } = inp;
  const st = s.settings;
  const config: Record<string, unknown> = { number: st.number, backlog: cfg.backlog, seconds: st.seconds, max_unacked: st.maxUnacked };
  if (st.maxUpgradeAdditional !== null) config.max_upgrade_additional = st.maxUpgradeAdditional;
  let cmd = cfg.program;
  if (cmd.length && !cfg.preload) {
    try { cmd = [inp.which(cmd[0]!), ...cmd.slice(1)]; } catch { /* shown as given */ }
  }
  let reexec: string[] | null = null;
  if (cfg.reexecAs !== null) {
    try { reexec = shellSplit(cfg.reexecAs); } catch { reexec = [cfg.reexecAs]; }
  }
  return {
    state: {
      children: new Map(s.workers.map((w) => [w.pid, child(w)])),
      config,
      versions: {},
      version: s.version,
      sockets: {},
      orig_cmd: cfg.program,
      bind: inp.listeners.map(bindEntry),
      bind_fds: inp.listeners.map((l) => l.fd),
      bound_ports: inp.listeners.map((l) => (l.bound.family === "unix" ? null : l.bound.port)),
      cmd,
      script_name: null,
      respawn: s.stopping === null,
      upgrading: s.upgrade !== null,
      smooth_upgrade: s.upgrade?.mode === "smooth",
      reloading_for_upgrade: false,
      path: cfg.preload,
      cmd_name: cfg.commandName,
      verbosity: st.verbosity,
      generation: inp.reexecs,
      last_spinup: time(s.lastSpawnAt),
      ack_mode: st.ackMode.kind === "manual" ? { type: sym("manual") } : { type: sym("timer"), timeout: new RubyFloat(st.ackMode.seconds) },
      kill_children_on_exit: cfg.killChildrenOnExit,
      command_socket_as_fd: cfg.commandSocketAsFd,
      socket_path: cfg.socketPath,
      pidfile: cfg.pidfile,
      lockfile: cfg.lockfile,
      consecutive_deaths_before_ack: s.consecutiveDeaths,
      last_upgraded: time(s.upgrade?.startedAt),
      nice: { master: cfg.nice.master, worker: cfg.nice.worker, renice_cmd: cfg.nice.reniceCmd },
      reexec_commandline: reexec,
      drop_environment_variables: cfg.dropEnvVars,
      signal_timeout: st.signalTimeout,
      preloaded: cfg.preload !== null,
    },
    persistent_descriptors: [
      ...(inp.commandFd === null ? [] : [{ class: "Einhorn::Event::CommandServer", server: inp.commandFd }]),
      ...inp.connectionFds.map((fd) => ({ class: "Einhorn::Event::Connection", socket: fd, subscriptions: {} })),
    ],
  };
}

export function einhornStateYaml(inp: EinhornStateInput): string {
  return toRubyYaml(einhornStateDocument(inp));
}

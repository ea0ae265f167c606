// What `state` answers. The JSON form (`state json`) is a documented, stable
// schema (docs/state.md): fields are only ever added, never renamed. The YAML
// form is the same data, for Einhorn's own shell and for people.
import { isAcked, isRetiring } from "../core/pool";
import type { State } from "../core/state";
import { publicSpec } from "../core/generation";
import { formatSockAddr } from "../../ffi/sockaddr";
import type { Listener } from "./listeners";

const STATE_REPORT_SCHEMA = "einhorn.state/1";

export interface RuntimeInfo {
  einhornVersion: string;
  masterPid: number;
  commandName: string | null;
  socketPath: string;
  program: string[];
  listeners: Listener[];
  verbosity: number;
  /** Times the master has re-executed itself. */
  reexecs: number;
}

const iso = (t: number | null | undefined): string | null => (t === null || t === undefined ? null : new Date(t).toISOString());

export function buildStateReport(s: State, rt: RuntimeInfo) {
  const st = s.settings;
  return {
    schema: STATE_REPORT_SCHEMA,
    einhorn_version: rt.einhornVersion,
    master: {
      pid: rt.masterPid,
      command_name: rt.commandName,
      socket_path: rt.socketPath,
      program: rt.program,
      started_at: iso(s.startedAt),
      reexecs: rt.reexecs,
      version: s.version,
      stopping: s.stopping ? { signal: s.stopping.signal, since: iso(s.stopping.since) } : null,
      upgrade: s.upgrade
        ? { mode: s.upgrade.mode, started_at: iso(s.upgrade.startedAt), from_version: s.upgrade.fromVersion, deaths_before_ack: s.upgrade.deathsBeforeAck }
        : null,
      consecutive_deaths: s.consecutiveDeaths,
      verbosity: rt.verbosity,
      bake: s.bake
        ? { version: s.bake.version, previous_version: s.bake.previous, since: iso(s.bake.since), until: iso(s.bake.until), unasked_exits: s.bake.deaths }
        : null,
    },
    // What each generation still needed runs (the environment by its size and
    // the spec's digest only); `live` marks the one new workers start as.
    generations: Object.values(s.generations).sort((a, b) => a.version - b.version).map((g) => ({
      version: g.version,
      live: g.version === s.version,
      created_at: iso(g.createdAt),
      rollback_of: g.rollbackOf ?? null,
      workers: s.workers.filter((w) => w.version === g.version).length,
      spec: publicSpec(g.spec),
    })),
    settings: {
      number: st.number,
      seconds: st.seconds,
      ack_mode: st.ackMode.kind,
      ack_seconds: st.ackMode.kind === "timer" ? st.ackMode.seconds : null,
      max_unacked: st.maxUnacked,
      max_upgrade_additional: st.maxUpgradeAdditional,
      signal_timeout: st.signalTimeout,
      ack_timeout: st.ackTimeout,
      upgrade_max_deaths: st.upgradeMaxDeaths,
      upgrade_bake: st.upgradeBake,
    },
    listeners: rt.listeners.map((l) => ({
      spec: l.spec.text,
      fd: l.fd,
      address: formatSockAddr(l.bound),
      family: l.bound.family,
      port: l.bound.family === "unix" ? null : l.bound.port,
      path: l.bound.family === "unix" ? l.bound.path : null,
      nonblocking: l.spec.nonblock,
    })),
    workers: [...s.workers].sort((a, b) => a.index - b.index).map((w) => {
      const ex = s.exits[String(w.index)];
      return {
        pid: w.pid,
        index: w.index,
        version: w.version,
        acked: isAcked(w),
        acked_at: iso(w.ackedAt),
        spawned_at: iso(w.spawnedAt),
        retiring: isRetiring(w),
        signals: w.signals.map((x) => ({ signal: x.signal, at: iso(x.at) })),
        last_ping: w.lastPing ? { at: iso(w.lastPing.at), request_id: w.lastPing.requestId ?? null } : null,
        index_exits: { total: ex?.total ?? 0, before_ack: ex?.beforeAck ?? 0, unasked: ex?.unasked ?? 0 },
        ...(w.retireReason ? { retire_reason: w.retireReason } : {}),
      };
    }),
    exits: Object.fromEntries(Object.entries(s.exits).map(([k, v]) => [k, { total: v.total, before_ack: v.beforeAck, unasked: v.unasked, last_code: v.lastCode, last_signal: v.lastSignal, last_at: iso(v.lastAt) }])),
    exit_totals: s.exitTotals,
    recent_exits: s.recentExits.map((r) => ({ at: iso(r.at), pid: r.pid, index: r.index, generation: r.version, code: r.code, signal: r.signal, asked: r.asked, acked: r.acked, ...(r.vanished ? { vanished: true } : {}) })),
  };
}

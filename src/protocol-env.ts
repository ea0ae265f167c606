// The part of the protocol a worker needs: the environment variables einhorn
// sets and the command-socket line escaping. Kept free of the YAML library so
// the worker helper (the npm package einhorn/worker, for Node and Bun) has no
// dependencies; src/protocol.ts re-exports all of it.

export const ENV = {
  FD_COUNT: "EINHORN_FD_COUNT",
  FD_PREFIX: "EINHORN_FD_",
  SOCK_PATH: "EINHORN_SOCK_PATH",
  SOCK_FD: "EINHORN_SOCK_FD",
  MASTER_PID: "EINHORN_MASTER_PID",
  CHILD_INDEX: "EINHORN_CHILD_INDEX",
  // systemd's socket-passing protocol (sd_listen_fds), offered as an addition.
  LISTEN_FDS: "LISTEN_FDS",
  LISTEN_PID: "LISTEN_PID",
  LISTEN_FDNAMES: "LISTEN_FDNAMES",
  /**
   * Set only for an upgrade's preflight (`NEXT --upgrade-check`): the
   * descriptor holding the handoff document the master would write, which
   * the next binary reads as it would after the exec. Never set for workers.
   */
  UPGRADE_CHECK_STATE_FD: "EINHORN_UPGRADE_CHECK_STATE_FD",
  // systemd's notify protocol (sd_notify(3)): set by systemd for the master,
  // which speaks it for the pool; removed from workers' environment (see
  // src/master/sd-notify.ts) unless --pass-notify-socket.
  NOTIFY_SOCKET: "NOTIFY_SOCKET",
  WATCHDOG_USEC: "WATCHDOG_USEC",
  WATCHDOG_PID: "WATCHDOG_PID",
  /** The master's safety timeouts, set for tests or troubleshooting (src/config/timeouts.ts). Passed through to workers like any operator variable. */
  TIMEOUTS: "EINHORN_TIMEOUTS",
} as const;

/**
 * The variables einhorn sets for a worker. The master strips exactly these
 * from the environment it passes through (a master run inside another
 * einhorn's worker must not leak the outer one's values); any other
 * EINHORN_-prefixed variable is the operator's and passes through.
 */
export function isEinhornWorkerVar(name: string): boolean {
  return (
    name === ENV.FD_COUNT || name === ENV.SOCK_PATH || name === ENV.SOCK_FD || name === ENV.MASTER_PID ||
    name === ENV.CHILD_INDEX || (name.startsWith(ENV.FD_PREFIX) && /^\d+$/.test(name.slice(ENV.FD_PREFIX.length)))
  );
}

/** Command-socket lines: one document per line, `%` and newline escaped (as Einhorn's clients do). */
export const escapeLine = (s: string): string => s.replace(/%/g, "%25").replace(/\n/g, "%0A");
export const unescapeLine = (s: string): string => s.replace(/%0A/gi, "\n").replace(/%25/g, "%");

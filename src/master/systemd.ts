// systemd's socket-passing protocol (sd_listen_fds(3)), both ways:
// - in: a master started by a .socket unit finds its listening sockets at
//   descriptors 3, 4, ... (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES);
// - out: with --listen-fds, workers get the sockets that way too, so programs
//   written for socket activation run unmodified under einhorn.
import { describeSocket, setCloexec } from "../../ffi/socket";
import { ENV } from "../protocol";
import { StartError } from "./errors";

export const SD_LISTEN_FDS_START = 3;

export interface SystemdSockets { fds: number[]; names: string[] }

/**
 * The descriptors LISTEN_FDS announces for process `pid` (sd_listen_fds
 * rules: none when unset or when LISTEN_PID names another process); a
 * LISTEN_FDS that is not a number is an error.
 */
function listenFdsFor(env: Record<string, string | undefined>, pid: number): number[] | null {
  const count = env[ENV.LISTEN_FDS];
  if (count === undefined) return null;
  if (!/^\d+$/.test(count)) throw new StartError(`LISTEN_FDS is '${count}', not a number of descriptors`);
  const forPid = env[ENV.LISTEN_PID];
  if (forPid !== undefined && forPid !== String(pid)) return null;
  return Array.from({ length: Number(count) }, (_, i) => SD_LISTEN_FDS_START + i);
}

/**
 * The sockets systemd passed to process `pid`, or null when none were (or
 * they were meant for another process: LISTEN_PID differs). As sd_listen_fds
 * does with unset_environment, the variables are removed from `env` so that
 * workers and re-executed masters do not take them for their own; the
 * descriptors are made close-on-exec so only the ones einhorn hands on leak.
 */
export function takeSystemdSockets(env: Record<string, string | undefined>, pid: number): SystemdSockets | null {
  const fds = listenFdsFor(env, pid);
  const names = env[ENV.LISTEN_FDNAMES];
  delete env[ENV.LISTEN_FDS];
  delete env[ENV.LISTEN_PID];
  delete env[ENV.LISTEN_FDNAMES];
  if (!fds) return null;
  const n = fds.length;
  for (const fd of fds) {
    try { setCloexec(fd, true); } catch (e) {
      throw new StartError(`LISTEN_FDS says ${n} socket(s) start at fd 3, but fd ${fd} is not open: ${(e as Error).message}`, 1, { cause: e });
    }
  }
  const nameList = names ? names.split(":") : [];
  return { fds, names: fds.map((_, i) => nameList[i] ?? "unknown") };
}

/** The descriptor `-b systemd:SELECT` names: a LISTEN_FDNAMES name, else an index. */
export function selectSystemdSocket(sd: SystemdSockets | null, select: string, text: string): number {
  if (!sd) throw new StartError(`cannot use -b ${text}: no sockets were passed by systemd (LISTEN_FDS is not set for this process)`);
  let i = sd.names.indexOf(select);
  if (i < 0 && /^\d+$/.test(select)) i = Number(select);
  if (i < 0 || i >= sd.fds.length) {
    throw new StartError(`cannot use -b ${text}: systemd passed ${sd.fds.length} socket(s) named ${sd.names.map((n) => `'${n}'`).join(", ") || "(none)"}; give one of those names or an index from 0 to ${sd.fds.length - 1}`);
  }
  const fd = sd.fds[i]!;
  const d = describeSocket(fd);
  if (!d.stream || !d.listening) throw new StartError(`cannot use -b ${text}: fd ${fd} from systemd is not a listening stream socket`);
  return fd;
}

/** Clear FD_CLOEXEC on the descriptors systemd passed to `pid`, so an exec of this same process keeps them. */
export function keepSystemdSocketsAcrossExec(env: Record<string, string | undefined>, pid: number): void {
  let fds: number[] | null;
  try { fds = listenFdsFor(env, pid); } catch { return; } // reported once the master reads them
  for (const fd of fds ?? []) {
    try { setCloexec(fd, false); } catch { /* reported once the master reads them */ }
  }
}

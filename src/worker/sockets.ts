// The listening sockets a worker inherits (EINHORN_FD_n), checked before use:
// a descriptor that is closed, not a socket, or a socket that does not listen
// is reported by name and kind, instead of surfacing later as an odd EINVAL
// from accept(2) deep inside the runtime. Node APIs only (see socket-probe.ts).
import { fstatSync, readFileSync } from "node:fs";
import { ENV } from "../protocol-env";
import { readWorkerEnv, notUnderEinhorn, isWorkerEnv, type Env } from "./env";
import { EinhornWorkerError } from "./errors";
import { probeSocketInode, type SocketFamily } from "./socket-probe";

const FAMILY_TEXT = { inet: "IPv4", inet6: "IPv6", unix: "UNIX" } as const;

export interface ListeningSocket {
  fd: number;
  family: SocketFamily;
}

/** What `fd` is, in words, when it is not a listening stream socket; null when it is one. */
export function whatIsWrong(fd: number): string | null {
  let stat;
  try {
    stat = fstatSync(fd);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    return code === "EBADF" ? "not an open descriptor" : `not usable (fstat failed: ${code ?? (e as Error).message})`;
  }
  if (!stat.isSocket()) {
    if (stat.isFIFO()) return "a pipe (FIFO), not a socket";
    if (stat.isFile()) return "a regular file, not a socket";
    if (stat.isDirectory()) return "a directory, not a socket";
    if (stat.isCharacterDevice()) return "a character device (a terminal or /dev/null?), not a socket";
    if (stat.isBlockDevice()) return "a block device, not a socket";
    return "not a socket";
  }
  const d = probeSocketInode(stat.ino);
  if (!d) return "a socket that is not listening (a TCP socket never listen()ed, or not a TCP/UNIX socket)";
  if (!d.stream) return `a ${d.family === "unix" ? "UNIX datagram" : `UDP/${FAMILY_TEXT[d.family]}`} socket, not a stream socket`;
  if (!d.listening) return `a ${d.family === "unix" ? "UNIX" : `TCP/${FAMILY_TEXT[d.family]}`} stream socket that is not listening (a connection, or never listen()ed)`;
  return null;
}

/** The family of a descriptor that whatIsWrong() accepted. */
function familyOf(fd: number): SocketFamily {
  return probeSocketInode(fstatSync(fd).ino)!.family;
}

/**
 * Why an advertised socket is missing, when the likely cause is a process
 * between einhorn and this one: the master starts workers directly, so a
 * parent that is not the master is a launcher (npm, npx, yarn, a shell) and
 * several of them close descriptors above 2 or run the program in a child
 * without them. Null when the parent is the master (or unknown).
 */
export function launcherHint(masterPid: number, ppid: number = process.ppid): string | null {
  if (!ppid || ppid === masterPid) return null;
  let name = "";
  try { name = readFileSync(`/proc/${ppid}/comm`, "latin1").trim(); } catch { /* gone, or not ours to read */ }
  return `This process's parent (pid ${ppid}${name ? `, ${name}` : ""}) is not the einhorn master (pid ${masterPid}): `
    + "a process between einhorn and this one (npm, npx, yarn, a shell that closes descriptors) dropped the sockets; "
    + "have einhorn start node directly (einhorn ... -- node server.js; for TypeScript: node --import tsx server.ts)";
}

/** Check that `fd` is a listening stream socket; `label` says where the number came from; `masterPid` (from the environment) names a launcher in the way. */
export function checkListeningFd(fd: number, label = `fd ${fd}`, masterPid: number | null = null): ListeningSocket {
  if (!Number.isInteger(fd) || fd < 0) throw new EinhornWorkerError(`${label}: ${JSON.stringify(fd)} is not a file descriptor number`);
  const problem = whatIsWrong(fd);
  if (problem) {
    const hint = masterPid === null ? null : launcherHint(masterPid);
    throw new EinhornWorkerError(`${label}: fd ${fd} is ${problem}; expected a listening stream socket${hint ? `. ${hint}` : ""}`);
  }
  return { fd, family: familyOf(fd) };
}

/** Every inherited listening socket, in `-b` order, each one checked. */
export function socketFdsFrom(env: Env = process.env): number[] {
  if (!isWorkerEnv(env)) throw notUnderEinhorn("socketFds()");
  const { fds, masterPid } = readWorkerEnv(env);
  return fds.map((fd, i) => checkListeningFd(fd, `${ENV.FD_PREFIX}${i}=${fd}`, masterPid).fd);
}

/** The n-th inherited listening socket (0 = the first `-b`), checked. */
export function socketFdFrom(n: number, env: Env = process.env): number {
  if (!isWorkerEnv(env)) throw notUnderEinhorn(`socketFd(${n})`);
  const { fds, masterPid } = readWorkerEnv(env);
  if (!Number.isInteger(n) || n < 0 || n >= fds.length) {
    const have = fds.length === 0
      ? "einhorn passed no sockets (EINHORN_FD_COUNT=0: give the master a -b ADDR)"
      : `einhorn passed ${fds.length} socket${fds.length === 1 ? "" : "s"} (${ENV.FD_COUNT}=${fds.length}), so the index must be 0..${fds.length - 1}`;
    throw new EinhornWorkerError(`socketFd(${JSON.stringify(n)}): no such socket; ${have}`);
  }
  return checkListeningFd(fds[n]!, `${ENV.FD_PREFIX}${n}=${fds[n]}`, masterPid).fd;
}

// What kind of socket a descriptor is, with nothing but node:fs: the socket's
// inode (fstat) is looked up in the kernel's tables under /proc/net. The
// worker helper runs on Node as well as Bun, so it cannot ask getsockopt
// (SO_ACCEPTCONN, SO_DOMAIN) through bun:ffi. Linux only, like einhorn.
//
// A TCP socket that is bound but neither listening nor connected is in no
// table; it is reported as found: false (the caller says "not listening").
import { readFileSync } from "node:fs";

export type SocketFamily = "inet" | "inet6" | "unix";

export interface SocketInfo {
  family: SocketFamily;
  /** SOCK_STREAM (TCP, or a UNIX stream socket). */
  stream: boolean;
  listening: boolean;
  /** A connected UNIX socket (one end of a socketpair or an accepted connection). */
  connected: boolean;
}

// /proc/net/tcp: "sl local_address rem_address st ... uid timeout inode ..."; st 0A is LISTEN.
const TCP_LISTEN = "0A";
// /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path"; Flags has
// __SO_ACCEPTCON (0x10000) on a listening socket; Type 1 is SOCK_STREAM; St 3 is connected.
const UNIX_ACCEPTCON = 0x10000;

function table(name: string): string[] {
  try {
    return readFileSync(`/proc/net/${name}`, "latin1").split("\n").slice(1);
  } catch {
    return [];
  }
}

function findInet(name: string, ino: string): string[] | null {
  for (const line of table(name)) {
    const f = line.trim().split(/\s+/);
    if (f[9] === ino) return f;
  }
  return null;
}

/** Look a socket inode up; null when it is in none of the TCP, UDP or UNIX tables. */
export function probeSocketInode(inode: number | bigint): SocketInfo | null {
  const ino = String(inode);
  for (const [name, family] of [["tcp", "inet"], ["tcp6", "inet6"]] as const) {
    const f = findInet(name, ino);
    if (f) return { family, stream: true, listening: f[3] === TCP_LISTEN, connected: f[3] !== TCP_LISTEN };
  }
  for (const line of table("unix")) {
    const f = line.trim().split(/\s+/);
    if (f[6] !== ino) continue;
    const flags = parseInt(f[3] ?? "0", 16);
    return { family: "unix", stream: f[4] === "0001", listening: (flags & UNIX_ACCEPTCON) !== 0, connected: f[5] === "03" };
  }
  for (const [name, family] of [["udp", "inet"], ["udp6", "inet6"]] as const) {
    if (findInet(name, ino)) return { family, stream: false, listening: false, connected: false };
  }
  return null;
}

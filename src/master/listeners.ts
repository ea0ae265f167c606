// Opening the listening sockets of `-b` specs, once, in the master. Workers
// inherit the same open file descriptions; nothing here is re-bound on upgrade.
import { lookup } from "node:dns/promises";
import { lstatSync, rmSync } from "node:fs";
import { isIP } from "node:net";
import { SysError } from "../../ffi/errno";
import { umask } from "../../ffi/process";
import type { SockAddr } from "../../ffi/sockaddr";
import * as sock from "../../ffi/socket";
import type { SignalName } from "../signal-names";
import type { BindSpec } from "../config/bind-spec";
import { StartError } from "./errors";
import { acquireLock, describePath, type OwnedPath, ownedPath, releaseLock } from "./files";
import { selectSystemdSocket, type SystemdSockets } from "./systemd";
import { fsPath } from "../../ffi/os-string";

export interface Listener {
  fd: number;
  spec: BindSpec;
  /** The address the kernel reports (the real port when 0 was asked). */
  bound: SockAddr;
  /** Path we created, removed when the master exits. */
  unixPath: string | null;
}

async function resolve(spec: BindSpec): Promise<SockAddr> {
  const a = spec.address;
  if (a.kind === "systemd") throw new Error("systemd sockets are not resolved");
  if (a.kind === "unix") return { family: "unix", path: a.path };
  if (a.v6) {
    if (isIP(a.host) !== 6) throw new StartError(`bad bind address '${spec.text}': '${a.host}' is not an IPv6 address`, 2);
    return { family: "inet6", host: a.host, port: a.port };
  }
  if (isIP(a.host) === 4) return { family: "inet", host: a.host, port: a.port };
  try {
    const r = await lookup(a.host);
    return r.family === 6 ? { family: "inet6", host: r.address, port: a.port } : { family: "inet", host: r.address, port: a.port };
  } catch (e) {
    throw new StartError(`cannot bind ${spec.text}: host '${a.host}' does not resolve (${(e as { code?: string }).code ?? (e as Error).message})`, 1, { cause: e });
  }
}

/** What is at a UNIX socket path: nothing, a socket nobody accepts on, a live one (with the pid serving it), or another kind of file. */
export type UnixPathProbe =
  | { kind: "absent" }
  | { kind: "stale" }
  | { kind: "live"; pid: number | null }
  | { kind: "other"; found: string };

/**
 * Look at `path` without following a symbolic link and without blocking: the
 * probe connection is non-blocking, so a live socket whose accept queue is
 * full answers EAGAIN (counted as live) instead of stalling start-up.
 */
export function probeUnixSocket(path: string): UnixPathProbe {
  let st;
  try {
    st = lstatSync(fsPath(path));
  } catch {
    return { kind: "absent" };
  }
  if (!st.isSocket()) return { kind: "other", found: describePath(path, st) };
  const probe = sock.socket("unix", sock.SOCK_CLOEXEC | sock.SOCK_NONBLOCK);
  try {
    sock.connect(probe, { family: "unix", path });
    let pid: number | null = null;
    try { pid = sock.getPeerCred(probe).pid; } catch { /* unknown owner */ }
    return { kind: "live", pid };
  } catch (e) {
    if (e instanceof SysError && e.code === "ECONNREFUSED") return { kind: "stale" };
    if (e instanceof SysError && e.code === "EAGAIN") return { kind: "live", pid: null };
    throw e;
  } finally {
    sock.close(probe);
  }
}

/**
 * Make room for a UNIX socket at `path`: a stale socket (nobody accepting) is
 * removed; a live one, or any other kind of file, is an error.
 */
function clearStaleUnixSocket(path: string, what: string): void {
  const p = probeUnixSocket(path);
  if (p.kind === "other") throw new StartError(`${what} ${path} exists and is not a socket (it is ${p.found}); refusing to replace it`);
  if (p.kind === "live") throw new StartError(`${what} ${path} is in use: ${p.pid ? `pid ${p.pid}` : "something"} is accepting connections on it`);
  if (p.kind === "stale") rmSync(fsPath(path), { force: true });
}

/**
 * Bind a UNIX socket so that it is never, even for an instant, more open
 * than `mode`: bind(2) creates the file with 0777 & ~umask, which with this
 * umask is exactly `mode`. (No chmod afterwards: by then the path could lead
 * somewhere else, and chmod follows symbolic links.)
 */
function bindUnix(fd: number, path: string, mode: number): void {
  const old = umask(0o777 & ~mode);
  try {
    sock.bind(fd, { family: "unix", path });
  } finally {
    umask(old);
  }
}

export async function openListener(spec: BindSpec, backlog: number, systemd: SystemdSockets | null = null): Promise<Listener> {
  if (spec.address.kind === "systemd") {
    // Already bound and listening (systemd did it); einhorn only sets the blocking mode asked for.
    const fd = selectSystemdSocket(systemd, spec.address.select, spec.text);
    sock.setNonblocking(fd, spec.nonblock);
    return { fd, spec, bound: sock.getsockname(fd), unixPath: null };
  }
  const addr = await resolve(spec);
  let fd = -1;
  let boundPath: string | null = null;
  try {
    if (addr.family === "unix") clearStaleUnixSocket(addr.path, "bind path");
    fd = sock.socket(addr.family);
    if (addr.family !== "unix") {
      if (spec.reuseaddr) sock.setsockoptInt(fd, sock.SOL_SOCKET, sock.SO_REUSEADDR, 1);
      if (spec.reuseport) sock.setsockoptInt(fd, sock.SOL_SOCKET, sock.SO_REUSEPORT, 1);
    }
    if (addr.family === "unix") {
      bindUnix(fd, addr.path, spec.mode);
      boundPath = addr.path;
    } else sock.bind(fd, addr);
    sock.listen(fd, backlog);
    // Blocking unless `n` was asked: exactly as the flags say (Ruby 3 Einhorn
    // hands out non-blocking sockets regardless; ours does not).
    sock.setNonblocking(fd, spec.nonblock);
    return { fd, spec, bound: sock.getsockname(fd), unixPath: addr.family === "unix" ? addr.path : null };
  } catch (e) {
    if (fd >= 0) { try { sock.close(fd); } catch { /* already failing */ } }
    if (boundPath) rmSync(fsPath(boundPath), { force: true });
    if (e instanceof SysError) throw new StartError(`cannot listen on ${spec.text}: ${e.message}`, 1, { cause: e });
    throw e;
  }
}

/**
 * Create the master's command socket at `path` under the lockfile's flock
 * (held only for this, as Einhorn does), refusing when another master
 * serves it. Clients that connect before the master serves it wait in the
 * accept queue. `created` hears of the path as soon as it exists, so that a
 * failure after the bind still removes it.
 */
export async function createCommandSocket(
  path: string,
  lockfile: string,
  stopRequested: () => SignalName | null,
  on: { waiting(holder: number | null): void; created(owned: OwnedPath | null): void },
): Promise<number> {
  const lock = await acquireLock(lockfile, stopRequested, on.waiting);
  try {
    const found = probeUnixSocket(path);
    if (found.kind === "live") {
      throw new StartError(
        `another einhorn master${found.pid ? ` (pid ${found.pid})` : ""} is serving the command socket ${path}; ` +
          "give this master its own with -d PATH (or -c NAME), or stop the other one first",
      );
    }
    clearStaleUnixSocket(path, "command socket");
    let fd = -1;
    try {
      fd = sock.socket("unix");
      bindUnix(fd, path, 0o600);
      on.created(ownedPath(path));
      sock.listen(fd, 128);
      return fd;
    } catch (e) {
      if (fd >= 0) sock.close(fd);
      if (e instanceof SysError) throw new StartError(`cannot open the command socket ${path}: ${e.message}`, 1, { cause: e });
      throw e;
    }
  } finally {
    releaseLock(lock);
  }
}

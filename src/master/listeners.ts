// Opening the listening sockets of `-b` specs, once, in the master. Workers
// inherit the same open file descriptions; nothing here is re-bound on upgrade.
import { lookup } from "node:dns/promises";
import { chmodSync, lstatSync, rmSync } from "node:fs";
import { isIP } from "node:net";
import { SysError } from "../../ffi/errno";
import { umask } from "../../ffi/process";
import { formatSockAddr, type SockAddr } from "../../ffi/sockaddr";
import * as sock from "../../ffi/socket";
import type { BindSpec } from "./bind-spec";
import { StartError } from "./errors";
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
    throw new StartError(`cannot bind ${spec.text}: host '${a.host}' does not resolve (${(e as { code?: string }).code ?? (e as Error).message})`);
  }
}

/**
 * Make room for a UNIX socket at `path`: a stale socket (nobody accepting) is
 * removed; a live one, or any other kind of file, is an error.
 */
export function clearStaleUnixSocket(path: string, what: string): void {
  let st;
  try {
    st = lstatSync(fsPath(path));
  } catch {
    return;
  }
  if (!st.isSocket()) throw new StartError(`${what} ${path} exists and is not a socket; refusing to replace it`);
  const probe = sock.socket("unix");
  try {
    sock.connect(probe, { family: "unix", path });
    throw new StartError(`${what} ${path} is in use: something is accepting connections on it`);
  } catch (e) {
    if (!(e instanceof SysError) || e.code !== "ECONNREFUSED") throw e;
    rmSync(fsPath(path), { force: true });
  } finally {
    sock.close(probe);
  }
}

/** Bind a UNIX socket so that it is never, even for an instant, more open than `mode`. */
export function bindUnix(fd: number, path: string, mode: number): void {
  const old = umask(0o777 & ~mode);
  try {
    sock.bind(fd, { family: "unix", path });
  } finally {
    umask(old);
  }
  chmodSync(fsPath(path), mode);
}

export async function openListener(spec: BindSpec, backlog: number, systemd: SystemdSockets | null = null): Promise<Listener> {
  if (spec.address.kind === "systemd") {
    // Already bound and listening (systemd did it); einhorn only sets the blocking mode asked for.
    const fd = selectSystemdSocket(systemd, spec.address.select, spec.text);
    sock.setNonblocking(fd, spec.nonblock);
    return { fd, spec, bound: sock.getsockname(fd), unixPath: null };
  }
  const addr = await resolve(spec);
  if (addr.family === "unix") clearStaleUnixSocket(addr.path, "bind path");
  const fd = sock.socket(addr.family);
  try {
    if (addr.family !== "unix") {
      if (spec.reuseaddr) sock.setsockoptInt(fd, sock.SOL_SOCKET, sock.SO_REUSEADDR, 1);
      if (spec.reuseport) sock.setsockoptInt(fd, sock.SOL_SOCKET, sock.SO_REUSEPORT, 1);
    }
    if (addr.family === "unix") bindUnix(fd, addr.path, spec.mode);
    else sock.bind(fd, addr);
    sock.listen(fd, backlog);
    // Blocking unless `n` was asked: exactly as the flags say (Ruby 3 Einhorn
    // hands out non-blocking sockets regardless; ours does not).
    sock.setNonblocking(fd, spec.nonblock);
    return { fd, spec, bound: sock.getsockname(fd), unixPath: addr.family === "unix" ? addr.path : null };
  } catch (e) {
    try { sock.close(fd); } catch { /* already failing */ }
    if (e instanceof SysError) throw new StartError(`cannot listen on ${spec.text}: ${e.message}`);
    throw e;
  }
}

export function describeListener(l: Listener): string {
  return formatSockAddr(l.bound);
}

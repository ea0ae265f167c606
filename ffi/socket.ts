// Thin wrappers over the socket calls einhorn makes itself. Descriptors are
// created close-on-exec: a worker receives a socket only when the spawner
// hands it through explicitly.
import { ptr } from "bun:ffi";
import { check, sym } from "./libc";
import { AF_INET, AF_INET6, AF_UNIX, formatSockAddr, packSockAddr, packUnixAddr, unpackSockAddr, type SockAddr } from "./sockaddr";

export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_TYPE = 3;
export const SO_REUSEPORT = 15;
export const SO_PEERCRED = 17;
export const SO_ACCEPTCONN = 30;
export const SO_DOMAIN = 39;

export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;

export const F_DUPFD_CLOEXEC = 1030;
export const F_GETFD = 1;
export const F_SETFD = 2;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const FD_CLOEXEC = 1;
export const O_NONBLOCK = 0o4000;

const FAMILY: Record<SockAddr["family"], number> = { unix: AF_UNIX, inet: AF_INET, inet6: AF_INET6 };

export function socket(family: SockAddr["family"], flags = SOCK_CLOEXEC): number {
  return check(sym.socket(FAMILY[family], SOCK_STREAM | flags, 0), "socket", family);
}

/** An AF_UNIX datagram socket (the kind sd_notify(3) sends on), close-on-exec unless `flags` says otherwise. */
export function unixDatagramSocket(flags = SOCK_CLOEXEC): number {
  return check(sym.socket(AF_UNIX, SOCK_DGRAM | flags, 0), "socket", "unix datagram");
}

/** bind(2) to a UNIX address in `/path` or `@abstract` notation (see packUnixAddr). */
export function bindUnix(fd: number, text: string): void {
  const sa = packUnixAddr(text);
  check(sym.bind(fd, ptr(sa), sa.length), "bind", text);
}

/**
 * Send one datagram to a UNIX address in `/path` or `@abstract` notation;
 * the number of bytes sent (a datagram goes whole or not at all).
 */
export function sendto(fd: number, data: Buffer, flags: number, to: string): number {
  const sa = packUnixAddr(to);
  // A zero-length buffer has no address to point at.
  const body = data.length ? data : Buffer.alloc(1);
  return check(Number(sym.sendto(fd, ptr(body), data.length, flags, ptr(sa), sa.length)), "sendto", to);
}

export function bind(fd: number, addr: SockAddr): void {
  const sa = packSockAddr(addr);
  check(sym.bind(fd, ptr(sa), sa.length), "bind", formatSockAddr(addr));
}

export function connect(fd: number, addr: SockAddr): void {
  const sa = packSockAddr(addr);
  check(sym.connect(fd, ptr(sa), sa.length), "connect", formatSockAddr(addr));
}

export function listen(fd: number, backlog: number): void {
  check(sym.listen(fd, backlog), "listen");
}

export function close(fd: number): void {
  check(sym.close(fd), "close", String(fd));
}

export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const v = new Int32Array([value]);
  check(sym.setsockopt(fd, level, name, ptr(v), 4), "setsockopt");
}

export function getsockoptInt(fd: number, level: number, name: number): number {
  const v = new Int32Array(1);
  const len = new Uint32Array([4]);
  check(sym.getsockopt(fd, level, name, ptr(v), ptr(len)), "getsockopt");
  return v[0]!;
}

export function getsockname(fd: number): SockAddr {
  const b = Buffer.alloc(128);
  const len = new Uint32Array([b.length]);
  check(sym.getsockname(fd, ptr(b), ptr(len)), "getsockname");
  return unpackSockAddr(b, len[0]!);
}

export interface PeerCred { pid: number; uid: number; gid: number }

/** Credentials of the process at the other end of a connected UNIX socket. */
export function getPeerCred(fd: number): PeerCred {
  const v = new Int32Array(3);
  const len = new Uint32Array([12]);
  check(sym.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ptr(v), ptr(len)), "getsockopt", "SO_PEERCRED");
  return { pid: v[0]!, uid: v[1]! >>> 0, gid: v[2]! >>> 0 };
}

/** A connected pair of UNIX stream sockets, both close-on-exec. */
export function socketpair(): [number, number] {
  const fds = new Int32Array(2);
  check(sym.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ptr(fds)), "socketpair");
  return [fds[0]!, fds[1]!];
}

export function fcntl(fd: number, cmd: number, arg = 0): number {
  return check(sym.fcntl(fd, cmd, arg), "fcntl", String(fd));
}

export function setCloexec(fd: number, on: boolean): void {
  const flags = fcntl(fd, F_GETFD);
  fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC);
}

export function setNonblocking(fd: number, on: boolean): void {
  const flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

export function isNonblocking(fd: number): boolean {
  return (fcntl(fd, F_GETFL) & O_NONBLOCK) !== 0;
}

/** What a descriptor is, for validating inherited sockets: family, and whether it listens. */
export function describeSocket(fd: number): { family: SockAddr["family"] | "other"; listening: boolean; stream: boolean } {
  const domain = getsockoptInt(fd, SOL_SOCKET, SO_DOMAIN);
  const family = domain === AF_UNIX ? "unix" : domain === AF_INET ? "inet" : domain === AF_INET6 ? "inet6" : "other";
  return {
    family,
    listening: getsockoptInt(fd, SOL_SOCKET, SO_ACCEPTCONN) === 1,
    stream: getsockoptInt(fd, SOL_SOCKET, SO_TYPE) === SOCK_STREAM,
  };
}

export const POLLIN = 0x001;

/**
 * Which of `fds` have input waiting right now (poll(2) with a zero timeout):
 * readable data, a pending connection on a listening socket, or a hang-up.
 */
export function readableNow(fds: number[]): number[] {
  if (fds.length === 0) return [];
  // struct pollfd { int fd; short events; short revents; }
  const buf = new Int32Array(fds.length * 2);
  const view = new DataView(buf.buffer);
  fds.forEach((fd, i) => { buf[i * 2] = fd; view.setInt16(i * 8 + 4, POLLIN, true); });
  const n = check(sym.poll(ptr(buf), fds.length, 0), "poll");
  if (n === 0) return [];
  return fds.filter((_, i) => view.getInt16(i * 8 + 6, true) !== 0);
}

const FIONREAD = 0x541b;

/** Bytes received on a connected socket and not yet read (ioctl FIONREAD; 0 at end of stream). */
export function unreadBytes(fd: number): number {
  const n = new Int32Array(1);
  check(sym.ioctl(fd, FIONREAD, ptr(n)), "ioctl", `${fd} FIONREAD`);
  return n[0]!;
}

/** A close-on-exec duplicate of `fd` (same open file description). */
export function dupCloexec(fd: number): number {
  return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

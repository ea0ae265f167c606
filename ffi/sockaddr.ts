// Packing and unpacking of struct sockaddr_in, sockaddr_in6 and sockaddr_un
// (Linux layouts). Addresses arrive here already parsed; this file only knows bytes.
import { isIPv4, isIPv6 } from "node:net";
import { osBytes, osString } from "./os-string";
import { Errno, SysError } from "./errno";

export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;

/** The room in sockaddr_un.sun_path, including the terminating NUL. */
export const UNIX_PATH_MAX = 108;

export type SockAddr =
  | { family: "inet"; host: string; port: number }
  | { family: "inet6"; host: string; port: number; scopeId?: number }
  | { family: "unix"; path: string };

function ipv4Bytes(host: string): number[] {
  if (!isIPv4(host)) throw new Error(`not an IPv4 address: ${host}`);
  return host.split(".").map(Number);
}

function ipv6Bytes(host: string): number[] {
  if (!isIPv6(host)) throw new Error(`not an IPv6 address: ${host}`);
  let text = host;
  let tail: number[] = [];
  // An embedded IPv4 tail (::ffff:1.2.3.4) stands for the last two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4) {
    tail = ipv4Bytes(v4[1]!);
    text = text.slice(0, -v4[1]!.length) + "0:0";
  }
  const [head, rest] = text.includes("::") ? text.split("::") : [text, undefined];
  const headGroups = head ? head.split(":") : [];
  const restGroups = rest ? rest.split(":") : [];
  const fill = rest === undefined ? 0 : 8 - headGroups.length - restGroups.length;
  const groups = [...headGroups, ...Array(fill).fill("0"), ...restGroups].map((g) => parseInt(g, 16));
  const bytes = groups.flatMap((g) => [(g >> 8) & 0xff, g & 0xff]);
  if (tail.length) bytes.splice(12, 4, ...tail);
  return bytes;
}

export function packSockAddr(addr: SockAddr): Buffer {
  switch (addr.family) {
    case "inet": {
      const b = Buffer.alloc(16);
      b.writeUInt16LE(AF_INET, 0);
      b.writeUInt16BE(addr.port, 2);
      Buffer.from(ipv4Bytes(addr.host)).copy(b, 4);
      return b;
    }
    case "inet6": {
      const b = Buffer.alloc(28);
      b.writeUInt16LE(AF_INET6, 0);
      b.writeUInt16BE(addr.port, 2);
      Buffer.from(ipv6Bytes(addr.host)).copy(b, 8);
      b.writeUInt32LE(addr.scopeId ?? 0, 24);
      return b;
    }
    case "unix": {
      const path = osBytes(addr.path);
      if (path.length >= UNIX_PATH_MAX) {
        // What the kernel would say if sun_path could carry it: a SysError like any failed call.
        throw new SysError("bind", Errno.ENAMETOOLONG!, `the path is ${path.length} bytes; a UNIX socket path holds at most ${UNIX_PATH_MAX - 1}`, addr.path);
      }
      const b = Buffer.alloc(2 + path.length + 1);
      b.writeUInt16LE(AF_UNIX, 0);
      path.copy(b, 2);
      return b;
    }
  }
}

function formatIPv6(bytes: Buffer): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(bytes.readUInt16BE(i));
  // Compress the longest run of two or more zero groups, as RFC 5952 asks.
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) { bestStart = i; bestLen = j - i; }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

export function unpackSockAddr(b: Buffer, len: number): SockAddr {
  const family = b.readUInt16LE(0);
  if (family === AF_INET) {
    return { family: "inet", host: [...b.subarray(4, 8)].join("."), port: b.readUInt16BE(2) };
  }
  if (family === AF_INET6) {
    return { family: "inet6", host: formatIPv6(b.subarray(8, 24)), port: b.readUInt16BE(2), scopeId: b.readUInt32LE(24) };
  }
  if (family === AF_UNIX) {
    const raw = b.subarray(2, len);
    const nul = raw.indexOf(0);
    return { family: "unix", path: osString(raw.subarray(0, nul < 0 ? raw.length : nul)) };
  }
  throw new Error(`unknown address family ${family}`);
}

/** `127.0.0.1:8080`, `[::1]:8080`, `unix:/run/app.sock`: how addresses appear in logs and errors. */
export function formatSockAddr(addr: SockAddr): string {
  switch (addr.family) {
    case "inet": return `${addr.host}:${addr.port}`;
    case "inet6": return `[${addr.host}]:${addr.port}`;
    case "unix": return `unix:${addr.path}`;
  }
}

/**
 * A sockaddr_un for a UNIX socket address written the way sd_notify(3) and
 * ss(8) write one: `/path`, or `@name` for the abstract namespace (what
 * systemd uses inside containers). An abstract address is a NUL followed by
 * exactly the name's bytes, and its length is all there is to say where the
 * name ends: a terminating NUL would become part of the name, so the buffer
 * returned has the exact length to pass to the kernel.
 */
export function packUnixAddr(text: string): Buffer {
  if (!text.startsWith("@")) return packSockAddr({ family: "unix", path: text });
  const name = osBytes(text.slice(1));
  if (1 + name.length > UNIX_PATH_MAX) {
    throw new SysError("sendto", Errno.ENAMETOOLONG!, `the abstract name is ${name.length} bytes; it holds at most ${UNIX_PATH_MAX - 1}`, text);
  }
  const b = Buffer.alloc(2 + 1 + name.length);
  b.writeUInt16LE(AF_UNIX, 0);
  name.copy(b, 3);
  return b;
}

// dup2 and epoll_ctl, for adopting an inherited listening socket into a
// runtime's own event loop (src/worker/bun-adopt.ts).
import { ptr } from "bun:ffi";
import { check, sym } from "./libc";

export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
/** Wake one of the epoll instances waiting on the file, not all (Linux >= 4.5). */
export const EPOLLEXCLUSIVE = 1 << 28;

/** Make `newFd` refer to what `oldFd` refers to (closing newFd's old file first, atomically). */
export function dup2(oldFd: number, newFd: number): void {
  check(sym.dup2(oldFd, newFd), "dup2", `${oldFd} -> ${newFd}`);
}

/**
 * struct epoll_event is { uint32_t events; uint64_t data; }, packed on x86-64
 * (12 bytes, data at offset 4) and naturally aligned elsewhere (16 bytes,
 * data at offset 8).
 */
export function packEpollEvent(events: number, data: bigint, arch: string = process.arch): Buffer {
  const packed = arch === "x64" || arch === "ia32";
  const b = Buffer.alloc(packed ? 12 : 16);
  b.writeUInt32LE(events >>> 0, 0);
  b.writeBigUInt64LE(BigInt.asUintN(64, data), packed ? 4 : 8);
  return b;
}

export function epollCtl(epfd: number, op: number, fd: number, events = 0, data = 0n): void {
  const ev = packEpollEvent(events, data);
  check(sym.epoll_ctl(epfd, op, fd, ptr(ev)), "epoll_ctl", `epfd ${epfd}, op ${op}, fd ${fd}`);
}

// Writes that never block the master. Its own stdout/stderr may be a pipe to
// a slow reader (a log shipper, a paused terminal); a plain write would then
// stall the whole event loop. O_NONBLOCK cannot simply be set on fd 1 or 2:
// that flag lives on the open file description, shared with whoever else
// holds it (the shell that started us, a supervisor). So each kind of
// descriptor gets its own way to a private non-blocking write.
import { fstatSync } from "node:fs";
import { ptr } from "bun:ffi";
import { check, lastErrno, strerror, sym } from "./libc";
import { Errno, SysError } from "./errno";
import { O_CLOEXEC, O_NOCTTY, O_NONBLOCK } from "./process";
import { MSG_DONTWAIT, MSG_NOSIGNAL } from "./socket";

const O_WRONLY = 1;
const EAGAIN = Errno.EAGAIN!;
const EINTR = Errno.EINTR!;

/** Writes bytes to one descriptor without ever blocking; `write` returns how many were taken. */
export interface NonblockingWriter {
  readonly how: "reopened" | "send" | "plain";
  /** Bytes written (possibly fewer than given; 0 when the reader is full). Throws SysError for real failures (EPIPE). */
  write(data: Uint8Array): number;
  close(): void;
}

/**
 * A non-blocking writer for `fd`:
 * - a pipe, FIFO or terminal is opened again through /proc/self/fd, which
 *   gives a new open file description of the same pipe or tty whose
 *   O_NONBLOCK is ours alone;
 * - a socket is written with send(MSG_DONTWAIT), a per-call flag;
 * - a regular file (or /dev/null) never blocks for long: plain write(2).
 */
export function nonblockingWriter(fd: number): NonblockingWriter {
  const st = fstatSync(fd);
  if (st.isFIFO() || st.isCharacterDevice()) {
    let own = -1;
    try {
      own = check(sym.open(Buffer.from(`/proc/self/fd/${fd}\0`), O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0), "open", `/proc/self/fd/${fd}`);
    } catch { /* no /proc: fall back to plain writes */ }
    if (own >= 0) return rawWriter(own, "reopened", (p, n) => Number(sym.write(own, p, n)), true);
  }
  if (st.isSocket()) return rawWriter(fd, "send", (p, n) => Number(sym.send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL)), false);
  return rawWriter(fd, "plain", (p, n) => Number(sym.write(fd, p, n)), false);
}

function rawWriter(fd: number, how: NonblockingWriter["how"], call: (p: ReturnType<typeof ptr>, n: number) => number, owned: boolean): NonblockingWriter {
  return {
    how,
    write(data: Uint8Array): number {
      if (data.length === 0) return 0;
      for (;;) {
        const n = call(ptr(data), data.length);
        if (n >= 0) return n;
        const errno = lastErrno();
        if (errno === EINTR) continue;
        if (errno === EAGAIN) return 0;
        throw new SysError("write", errno, strerror(errno), `fd ${fd}`);
      }
    },
    close(): void {
      if (owned) sym.close(fd);
    },
  };
}

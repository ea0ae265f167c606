// Process descriptors (pidfds, Linux 5.3+): a descriptor that names one
// process for as long as it is open, even after its pid is reused. The master
// signals its children through them, so a pid that another process reaped
// and the kernel recycled can never be signalled by mistake.
//
// pidfd_open and pidfd_send_signal go through syscall(2): glibc wraps them
// only from 2.36 and musl not at all. Their numbers are the same on every
// architecture (they come from the unified table added in Linux 5.1).
import { ptr } from "bun:ffi";
import { SysError } from "./errno";
import { lastErrno, strerror, sym } from "./libc";
import { decodeWaitStatus, type ExitStatus, signalNumberOf, WNOHANG } from "./process";

const SYS_pidfd_send_signal = 424;
const SYS_pidfd_open = 434;
const P_PIDFD = 3;
const WEXITED = 4;
const CLD_EXITED = 1;

function sysCheck(ret: number | bigint, syscall: string, detail?: string): number {
  const n = Number(ret);
  if (n === -1) {
    const errno = lastErrno();
    throw new SysError(syscall, errno, strerror(errno), detail);
  }
  return n;
}

/** pidfd_open(2): a close-on-exec descriptor for process `pid`. */
export function pidfdOpen(pid: number): number {
  return sysCheck(sym.syscall(SYS_pidfd_open, pid, 0, 0, 0), "pidfd_open", String(pid));
}

/**
 * pidfd_send_signal(2). Returns false when the process has exited (ESRCH):
 * the descriptor still names it, so no other process can receive the signal.
 */
export function pidfdSendSignal(fd: number, signal: string | number): boolean {
  const num = signalNumberOf(signal);
  const ret = Number(sym.syscall(SYS_pidfd_send_signal, fd, num, 0, 0));
  if (ret === 0) return true;
  const errno = lastErrno();
  const e = new SysError("pidfd_send_signal", errno, strerror(errno), `fd ${fd} ${signal}`);
  if (e.code === "ESRCH") return false;
  throw e;
}

/** What waitid(P_PIDFD, fd, WEXITED|WNOHANG) says about the process a pidfd names. */
export type PidfdWait =
  | { kind: "running" }
  /** It had exited; this call reaped it. */
  | { kind: "exited"; status: ExitStatus }
  /** Not a child of this process (any more): another process reaped it, or it was never ours. */
  | { kind: "not-child" };

export function waitidPidfd(fd: number): PidfdWait {
  // siginfo_t is 128 bytes; si_pid at 16, si_status at 24, si_code at 8.
  const info = new Int32Array(32);
  const ret = sym.waitid(P_PIDFD, fd, ptr(info), WEXITED | WNOHANG);
  if (ret === -1) {
    const errno = lastErrno();
    const e = new SysError("waitid", errno, strerror(errno), `P_PIDFD ${fd}`);
    if (e.code === "ECHILD") return { kind: "not-child" };
    throw e;
  }
  if (info[4] === 0) return { kind: "running" };
  const code = info[2]!;
  const status = info[6]!;
  // Re-encode as a wait status so one decoder serves waitpid and waitid.
  return { kind: "exited", status: code === CLD_EXITED ? { code: status & 0xff, signal: null } : decodeWaitStatus(status & 0x7f) };
}

// Signals as data: signalfd(2) turns pending signals into records read from a
// descriptor, and a handler that re-raises the signal (raise(3) itself,
// installed with sigaction) turns a delivery back into a pending signal.
// Together they let a process keep its signals blocked for good and still
// learn of every one, in order, through the descriptor.
import { ptr } from "bun:ffi";
import { check, sym } from "./libc";

const SIGSET_BYTES = 128;
/** glibc's and musl's struct sigaction: handler at 0, sa_mask at 8, sa_flags at 136, sa_restorer at 144. */
const SIGACTION_BYTES = 152;
const SA_RESTART = 0x10000000;
const SFD_NONBLOCK = 0o4000;
const SFD_CLOEXEC = 0o2000000;
/** sizeof(struct signalfd_siginfo). */
export const SIGINFO_BYTES = 128;

function sigset(signals: number[]): Uint8Array {
  const set = new Uint8Array(SIGSET_BYTES);
  sym.sigemptyset(ptr(set));
  for (const s of signals) sym.sigaddset(ptr(set), s);
  return set;
}

/** A non-blocking, close-on-exec signalfd for `signals` (they must be blocked to be read from it). */
export function signalfd(signals: number[]): number {
  return check(sym.signalfd(-1, ptr(sigset(signals)), SFD_NONBLOCK | SFD_CLOEXEC), "signalfd", signals.join(","));
}

export interface SignalRecord {
  signo: number;
  /** si_code: SI_USER (0) for kill(2), SI_TKILL (-6) for tgkill/raise, CLD_* for SIGCHLD. */
  code: number;
  /** The sender's pid (kill) or the child's (SIGCHLD). */
  pid: number;
}

/** Decode the signalfd_siginfo records in `buf` (whole records only). */
export function parseSignalRecords(buf: Uint8Array): SignalRecord[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: SignalRecord[] = [];
  for (let off = 0; off + SIGINFO_BYTES <= buf.byteLength; off += SIGINFO_BYTES) {
    out.push({ signo: dv.getUint32(off, true), code: dv.getInt32(off + 8, true), pid: dv.getUint32(off + 12, true) });
  }
  return out;
}

/** Read every record pending on a non-blocking signalfd (empty when none is). */
export function readSignalfd(fd: number): SignalRecord[] {
  const buf = new Uint8Array(SIGINFO_BYTES * 16);
  const out: SignalRecord[] = [];
  for (;;) {
    const n = Number(sym.read(fd, ptr(buf), buf.byteLength));
    if (n <= 0) {
      if (n === -1) {
        try { check(-1, "read", `signalfd ${fd}`); } catch (e) {
          if ((e as { code?: string }).code === "EAGAIN") return out;
          throw e;
        }
      }
      return out;
    }
    out.push(...parseSignalRecords(buf.subarray(0, n)));
  }
}

/**
 * Make raise(3) the handler of `signals`, with all of them blocked while it
 * runs. A signal delivered to a thread that blocks these signals everywhere
 * but in a wait with a temporary empty mask (Bun's event loop waits in
 * epoll_pwait2 with one) is re-raised at that thread, where it stays pending
 * once the wait returns: readable from a signalfd, kept across execve.
 * Only safe when every thread blocks them: on a thread that does not, the
 * re-raised signal would be delivered again at once, for ever.
 */
export function reraiseOnDelivery(signals: number[]): void {
  const sa = new Uint8Array(SIGACTION_BYTES);
  const dv = new DataView(sa.buffer);
  const handler = (sym.raise as unknown as { ptr: number | bigint }).ptr;
  dv.setBigUint64(0, BigInt(handler), true);
  sa.set(sigset(signals), 8);
  dv.setInt32(136, SA_RESTART, true);
  for (const s of signals) check(sym.sigaction(s, ptr(sa), null), "sigaction", String(s));
}

/** sigaction(signo, SIG_IGN): a pending instance is discarded, later ones are never queued. */
export function ignoreSignal(signo: number): void {
  const sa = new Uint8Array(SIGACTION_BYTES);
  new DataView(sa.buffer).setBigUint64(0, 1n, true); // SIG_IGN
  check(sym.sigaction(signo, ptr(sa), null), "sigaction", `${signo} SIG_IGN`);
}

/** raise(3): send `signo` to the calling thread. */
export function raiseSignal(signo: number): void {
  check(sym.raise(signo), "raise", String(signo));
}

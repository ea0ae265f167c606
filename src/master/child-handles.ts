// One pidfd per worker, opened at spawn and carried across the master's own
// execve. Signals go through the pidfd, so they can only ever reach the
// process that was spawned: if another process reaps a worker (a
// --reexec-as wrapper shell does, for any child that dies while it runs) and
// the kernel hands its pid to someone else, the master's signal fails with
// ESRCH instead of hitting a stranger.
//
// Where pidfds are unavailable (kernel before 5.3, a seccomp filter), workers
// are signalled by pid, with the reason logged once. That is safe while the
// master is the only one reaping its children; across a --reexec-as wrapper
// the resume check falls back to waitpid(pid, WNOHANG), which tells a child
// from a stranger but not from a new child of the wrapper with a reused pid.
import { SysError } from "../../ffi/errno";
import { pidfdOpen, pidfdSendSignal, waitidPidfd } from "../../ffi/pidfd";
import { type ExitStatus, kill, waitpidNohang } from "../../ffi/process";
import { close, setCloexec } from "../../ffi/socket";
import type { Logger } from "../logging";
import type { SignalName } from "../signal-names";

export interface HandedPidfd { pid: number; fd: number }

export type ChildCheck = { kind: "running" } | { kind: "exited"; status: ExitStatus } | { kind: "gone"; reason: string };

export class ChildHandles {
  private readonly fds = new Map<number, number>();
  /** Why pidfds are not used (null while they are). */
  private unavailable: string | null = null;

  constructor(private readonly log: Logger) {}

  /** Open the pidfd of a freshly spawned child (not yet reaped, so its pid is still its own). */
  track(pid: number): void {
    if (this.unavailable !== null) return;
    try {
      this.fds.set(pid, pidfdOpen(pid));
    } catch (e) {
      if (e instanceof SysError && (e.code === "ENOSYS" || e.code === "EPERM" || e.code === "EINVAL")) {
        this.unavailable = e.message;
        this.log.warn(`Process descriptors are unavailable (${e.message}); signalling children by pid from now on`);
      } else {
        // Short of descriptors, say: this child alone is signalled by pid.
        this.log.warn(`Could not open a process descriptor for child ${pid} (${(e as Error).message}); signalling it by pid`);
      }
    }
  }

  /** Send `signal`; false when the process is already gone. */
  signal(pid: number, signal: SignalName): boolean {
    const fd = this.fds.get(pid);
    return fd === undefined ? kill(pid, signal) : pidfdSendSignal(fd, signal);
  }

  /** The child was reaped: its pidfd is of no further use. */
  forget(pid: number): void {
    const fd = this.fds.get(pid);
    if (fd === undefined) return;
    this.fds.delete(pid);
    try { close(fd); } catch { /* already closed */ }
  }

  /** The descriptors to keep across the execve (the caller clears FD_CLOEXEC on them). */
  handoff(): HandedPidfd[] {
    return [...this.fds].map(([pid, fd]) => ({ pid, fd }));
  }

  /** Take over the pidfds a previous image handed over (close-on-exec again, as pidfd_open makes them). */
  adopt(list: HandedPidfd[]): void {
    for (const { pid, fd } of list) {
      try {
        setCloexec(fd, true);
        this.fds.set(pid, fd);
      } catch (e) {
        this.log.warn(`Handed-over process descriptor ${fd} of worker ${pid} is unusable: ${(e as Error).message}`);
      }
    }
  }

  /**
   * After a re-exec: is `pid` still our running child? An exited child is
   * reaped here (its status returned); one that another process reaped, or
   * whose pid now names a stranger, is reported gone.
   */
  check(pid: number): ChildCheck {
    const fd = this.fds.get(pid);
    if (fd !== undefined) {
      const r = waitidPidfd(fd);
      if (r.kind === "running") return r;
      this.forget(pid);
      if (r.kind === "exited") return r;
      return { kind: "gone", reason: "reaped by another process during the re-exec; exit status unknown" };
    }
    try {
      const r = waitpidNohang(pid);
      return r ? { kind: "exited", status: r.status } : { kind: "running" };
    } catch (e) {
      if (e instanceof SysError && e.code === "ECHILD") return { kind: "gone", reason: "no longer a child of the master (reaped by another process); exit status unknown" };
      throw e;
    }
  }
}

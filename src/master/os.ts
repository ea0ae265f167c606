// The master's one seam to the operating system: everything the I/O shell
// does to processes and time goes through an `Os`. The shell (master.ts,
// interpreter.ts) never calls posix_spawn, kill, waitpid, execve, Date.now or
// setTimeout itself, so a test can run it over a scripted Os and watch every
// decision it carries out (test/unit/interpreter.test.ts), and the real one stays
// small enough to audit: systemOs() below is the whole of it.
//
// The shape follows cloudflare/tableflip's `env`: a handful of functions,
// not an abstraction of the OS. Sockets, files and the command server are not
// behind it: they are set up once at start and handed over as descriptors,
// and the integration tests drive them for real.
import { SysError } from "../../ffi/errno";
import { type ExitStatus, execve, spawn as posixSpawn, type SpawnOptions, waitpidNohang } from "../../ffi/process";
import type { Logger } from "../logging";
import type { SignalName } from "../signal-names";
import { type ChildCheck, ChildHandles, type HandedPidfd } from "./child-handles";

/** Stops a timer; calling it again, or after the timer fired, does nothing. */
export type Cancel = () => void;

export interface Os {
  /** Wall-clock milliseconds since the epoch (the core's `now`). */
  now(): number;
  /** Call `fn` once, `ms` from now (never earlier). */
  after(ms: number, fn: () => void): Cancel;
  /** Call `fn` every `ms`. */
  every(ms: number, fn: () => void): Cancel;
  /** posix_spawn a child (a worker, the preflight) and start tracking it; its pid. Throws a SysError. */
  spawn(file: string, argv: string[], env: string[], opts: SpawnOptions): number;
  /** Signal a child started by spawn (through its pidfd where there is one); false when it is already gone. */
  kill(pid: number, signal: SignalName): boolean;
  /** Reap one exited child (waitpid(-1, WNOHANG)); null when none is waiting or there are no children. */
  wait(): { pid: number; status: ExitStatus } | null;
  /** After a re-exec: is `pid` still our running child (see ChildHandles.check)? */
  check(pid: number): ChildCheck;
  /** The process descriptors to carry across the execve. */
  handOverChildren(): HandedPidfd[];
  /** Take over the process descriptors a previous image handed over. */
  adoptChildren(list: HandedPidfd[]): void;
  /** Replace this process image; returns only by throwing (the SysError of execve). */
  exec(file: string, argv: string[], env: string[]): never;
  /** End the process. */
  exit(code: number): never;
}

/** The real operating system. */
export function systemOs(log: Logger): Os {
  const children = new ChildHandles(log);
  return {
    now: () => Date.now(),
    after(ms, fn) {
      const t = setTimeout(fn, ms);
      return () => clearTimeout(t);
    },
    every(ms, fn) {
      const t = setInterval(fn, ms);
      return () => clearInterval(t);
    },
    spawn(file, argv, env, opts) {
      const pid = posixSpawn(file, argv, env, opts);
      children.track(pid);
      return pid;
    },
    kill: (pid, signal) => children.signal(pid, signal),
    wait() {
      let r;
      try {
        r = waitpidNohang(-1);
      } catch (e) {
        if (e instanceof SysError && e.code === "ECHILD") return null;
        throw e;
      }
      if (r) children.forget(r.pid);
      return r;
    },
    check: (pid) => children.check(pid),
    handOverChildren: () => children.handoff(),
    adoptChildren: (list) => children.adopt(list),
    exec: (file, argv, env) => execve(file, argv, env),
    exit: (code) => process.exit(code),
  };
}

// Starting one worker: its argv, the reference environment, the listening
// sockets at their advertised numbers and nothing else of the master's.
import { accessSync, constants as fsc, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { getpid, O_CLOEXEC, O_RDONLY, open, setpriority } from "../../ffi/process";
import type { Os } from "./os";
import { ENV, isEinhornWorkerVar } from "../protocol";
import type { SignalName } from "../signal-names";
import { StartError } from "./errors";
import { SD_LISTEN_FDS_START } from "./systemd";
import { fsPath } from "../../ffi/os-string";

export interface WorkerPlan {
  /** PROGRAM ARGS as given on the command line; PROGRAM is looked up in PATH like exec does. */
  program: string[];
  listenerFds: number[];
  sockPath: string;
  /** How to run this einhorn binary (for the exec helper); its argv[0] is what ps shows. */
  selfCommand: string[];
  /**
   * The file to exec for selfCommand[0]: the running image pinned by
   * pinSelfImage(), so spawning never depends on the path on disk.
   */
  selfExec?: string;
  /**
   * The file to exec for program[0]: with -p this binary itself (selfExec);
   * otherwise the generation's resolved program (WorkerSpec.programPath);
   * absent: looked up in PATH.
   */
  programFile?: string;
  killChildrenOnExit: boolean;
  /** Sent to workers when the master dies with -k (--retire-signal). */
  retireSignal: SignalName;
  workerNice: number | null;
  /** The environment workers inherit, before einhorn's own variables. */
  baseEnv: Record<string, string | undefined>;
  /** Also present the sockets with systemd's protocol: at fds 3, 4, ..., LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES. */
  listenFds: boolean;
  /** LISTEN_FDNAMES entries, one per listener. */
  listenNames: string[];
}

/**
 * The executable this process runs, held open from start-up. With -k, -p or
 * --listen-fds every worker is first this same binary; a package upgrade
 * that replaces or deletes the file on disk would make every later spawn fail
 * (ENOEXEC half-way through a copy, ENOENT after a delete). Executing
 * /proc/self/fd/N instead runs the inode this master is running, whatever
 * happens at its path, until an upgrade deliberately re-executes the path on
 * disk (and the new image pins its own). The descriptor is close-on-exec:
 * the kernel opens the file for the exec before closing it, so the child
 * runs it and keeps no descriptor. (Bun's compiled binary finds its embedded
 * code through /proc/self/exe, which names the same inode: checked by the
 * integration test that deletes the binary under a running master.)
 */
let pinned: { fd: number; path: string } | null = null;
export function pinSelfImage(): string | null {
  if (pinned) return pinned.path;
  try {
    const fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    pinned = { fd, path: `/proc/self/fd/${fd}` };
    return pinned.path;
  } catch {
    return null; // no /proc: spawn by path, as before
  }
}

/** Find PROGRAM as execvp(3) would; a clear StartError when it cannot run. Exit codes follow the shell: 127, 126. */
export function resolveProgram(program: string, pathVar = process.env.PATH ?? "/usr/bin:/bin"): string {
  const candidates = program.includes("/") ? [program] : pathVar.split(delimiter).filter(Boolean).map((d) => join(d, program));
  let found: string | null = null;
  for (const c of candidates) {
    let st;
    try { st = statSync(fsPath(c)); } catch { continue; }
    if (!st.isFile()) { found ??= c; continue; }
    try {
      accessSync(fsPath(c), fsc.X_OK);
      return c;
    } catch {
      found ??= c;
    }
  }
  if (found) throw new StartError(`cannot run '${program}': ${found} is not an executable file`, 126);
  throw new StartError(
    program.includes("/") ? `cannot run '${program}': no such file` : `cannot run '${program}': not found in PATH (${pathVar})`,
    127,
  );
}

/** Where each descriptor sits in the worker: the master's own numbers, or 3, 4, ... with --listen-fds. */
export interface FdLayout {
  listeners: number[];
  sockFd: number | null;
  /** dup2 moves and closes that put them there (empty when the numbers are kept). */
  dup2: Array<[number, number]>;
  close: number[];
  /** Descriptors kept at their own number (FD_CLOEXEC cleared in the child). */
  inherit: number[];
}

function fdLayout(listenerFds: number[], sockFd: number | null, listenFds: boolean): FdLayout {
  const sources = sockFd === null ? listenerFds : [...listenerFds, sockFd];
  if (!listenFds) return { listeners: listenerFds, sockFd, dup2: [], close: [], inherit: sources };
  // Move every source through a temporary above all sources and targets first,
  // so that no target overwrites a source that has not moved yet.
  const targets = sources.map((_, i) => SD_LISTEN_FDS_START + i);
  const base = Math.max(...sources, ...targets) + 1;
  const temps = sources.map((_, i) => base + i);
  return {
    listeners: targets.slice(0, listenerFds.length),
    sockFd: sockFd === null ? null : targets[targets.length - 1]!,
    dup2: [...sources.map((fd, i): [number, number] => [fd, temps[i]!]), ...temps.map((t, i): [number, number] => [t, targets[i]!])],
    close: temps,
    inherit: [],
  };
}

function workerEnv(plan: WorkerPlan, index: number, layout: FdLayout): string[] {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(plan.baseEnv)) {
    if (v !== undefined && !isEinhornWorkerVar(k) && k !== ENV.LISTEN_FDS && k !== ENV.LISTEN_PID && k !== ENV.LISTEN_FDNAMES) env[k] = v;
  }
  env[ENV.FD_COUNT] = String(layout.listeners.length);
  layout.listeners.forEach((fd, i) => { env[`${ENV.FD_PREFIX}${i}`] = String(fd); });
  env[ENV.SOCK_PATH] = plan.sockPath;
  if (layout.sockFd !== null) env[ENV.SOCK_FD] = String(layout.sockFd);
  env[ENV.MASTER_PID] = String(getpid());
  env[ENV.CHILD_INDEX] = String(index);
  if (plan.listenFds) {
    env[ENV.LISTEN_FDS] = String(layout.listeners.length);
    env[ENV.LISTEN_FDNAMES] = plan.listenNames.join(":");
    // LISTEN_PID must be the worker's own pid, known only in the child: the _exec helper sets it.
  }
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

/**
 * Spawn a worker; returns its pid. Exec failures throw a SysError.
 * With -k or --listen-fds the child is first our own binary in `_exec` mode,
 * which sets the parent-death signal and/or LISTEN_PID (posix_spawn has no
 * hook for either) and then execs the program in the same pid.
 */
export function spawnWorker(spawn: Os["spawn"], plan: WorkerPlan, index: number, sockFd: number | null, warn: (e: Error) => void = () => {}, stdio: [number, number] | null = null): number {
  const layout = fdLayout(plan.listenerFds, sockFd, plan.listenFds);
  const env = workerEnv(plan, index, layout);
  let file: string;
  let argv: string[];
  if (plan.killChildrenOnExit || plan.listenFds) {
    file = plan.selfExec ?? plan.selfCommand[0]!;
    argv = [...plan.selfCommand, "_exec"];
    if (plan.killChildrenOnExit) argv.push("--pdeathsig", plan.retireSignal, "--parent", String(getpid()));
    if (plan.listenFds) argv.push("--listen-pid");
    // The generation's resolved program; not the pinned self image, whose
    // /proc/self/fd path means nothing in the child (the descriptor is close-on-exec).
    if (plan.programFile !== undefined && plan.programFile !== plan.selfExec) argv.push("--file", plan.programFile);
    argv.push("--", ...plan.program);
  } else {
    file = plan.programFile ?? plan.program[0]!;
    argv = plan.program;
  }
  const pid = spawn(file, argv, env, {
    inheritFds: layout.inherit,
    // Captured output (--worker-output): onto 1 and 2 first, before the
    // listener moves, whose temporaries may reuse these descriptors' numbers.
    dup2: stdio ? [[stdio[0], 1], [stdio[1], 2], ...layout.dup2] : layout.dup2,
    close: layout.close,
    searchPath: plan.programFile === undefined && file === plan.program[0],
    newProcessGroup: true,
  });
  // The worker runs from here on: a failure to renice it is reported, never
  // turned into a spawn failure (that would leave a running, untracked worker).
  if (plan.workerNice !== null) {
    try { setpriority(pid, plan.workerNice); } catch (e) { warn(e as Error); }
  }
  return pid;
}

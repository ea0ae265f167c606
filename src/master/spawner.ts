// Starting one worker: its argv, the reference environment, the listening
// sockets at their advertised numbers and nothing else of the master's.
import { accessSync, constants as fsc, statSync } from "node:fs";
import { delimiter, join } from "node:path";
import { getpid, setpriority, spawn } from "../../ffi/process";
import { ENV, isEinhornWorkerVar } from "../protocol";
import { StartError } from "./errors";

export interface WorkerPlan {
  /** PROGRAM ARGS as given on the command line; PROGRAM is looked up in PATH like exec does. */
  program: string[];
  listenerFds: number[];
  sockPath: string;
  /** How to run this einhorn binary (for the exec helper). */
  selfCommand: string[];
  killChildrenOnExit: boolean;
  workerNice: number | null;
  /** The environment workers inherit, before einhorn's own variables. */
  baseEnv: Record<string, string | undefined>;
}

/** Find PROGRAM as execvp(3) would; a clear StartError when it cannot run. Exit codes follow the shell: 127, 126. */
export function resolveProgram(program: string, pathVar = process.env.PATH ?? "/usr/bin:/bin"): string {
  const candidates = program.includes("/") ? [program] : pathVar.split(delimiter).filter(Boolean).map((d) => join(d, program));
  let found: string | null = null;
  for (const c of candidates) {
    let st;
    try { st = statSync(c); } catch { continue; }
    if (!st.isFile()) { found ??= c; continue; }
    try {
      accessSync(c, fsc.X_OK);
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

export function workerEnv(plan: WorkerPlan, index: number, sockFd: number | null): string[] {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(plan.baseEnv)) if (v !== undefined && !isEinhornWorkerVar(k)) env[k] = v;
  env[ENV.FD_COUNT] = String(plan.listenerFds.length);
  plan.listenerFds.forEach((fd, i) => { env[`${ENV.FD_PREFIX}${i}`] = String(fd); });
  env[ENV.SOCK_PATH] = plan.sockPath;
  if (sockFd !== null) env[ENV.SOCK_FD] = String(sockFd);
  env[ENV.MASTER_PID] = String(getpid());
  env[ENV.CHILD_INDEX] = String(index);
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

/**
 * Spawn a worker; returns its pid. Exec failures throw a SysError.
 * With -k the child is first our own binary in `_exec` mode, which sets the
 * parent-death signal (posix_spawn has no hook for prctl) and then execs the
 * program in the same pid.
 */
export function spawnWorker(plan: WorkerPlan, index: number, sockFd: number | null): number {
  const env = workerEnv(plan, index, sockFd);
  const inherit = sockFd === null ? plan.listenerFds : [...plan.listenerFds, sockFd];
  let file: string;
  let argv: string[];
  if (plan.killChildrenOnExit) {
    file = plan.selfCommand[0]!;
    argv = [...plan.selfCommand, "_exec", "--pdeathsig", "SIGUSR2", "--parent", String(getpid()), "--", ...plan.program];
  } else {
    file = plan.program[0]!;
    argv = plan.program;
  }
  const pid = spawn(file, argv, env, { inheritFds: inherit, searchPath: !plan.killChildrenOnExit, newProcessGroup: true });
  if (plan.workerNice !== null) setpriority(pid, plan.workerNice);
  return pid;
}

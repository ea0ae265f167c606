// `einhorn _exec`: a tiny first stage run in the worker's own pid, for what
// posix_spawn cannot do in the child: set the parent-death signal (-k) and
// put the worker's own pid in its environment (LISTEN_PID). It then execs the
// real program in place; the parent-death signal survives the exec.
import { execve, getpid, getppid, prctl, PR_SET_PDEATHSIG } from "../../ffi/process";
import { parseSignal, signalNumber } from "../signal-names";
import { ENV } from "../protocol";
import { osEnviron } from "../../ffi/os-string";
import { setCloexec } from "../../ffi/socket";
import { resolveProgram } from "../master/spawner";
import { StartError } from "../master/errors";

/** The descriptors the environment tells the worker about: EINHORN_FD_n, EINHORN_SOCK_FD. */
function passedFds(env: Record<string, string | undefined>): number[] {
  const fds: number[] = [];
  const count = Number(env[ENV.FD_COUNT] ?? 0);
  for (let i = 0; i < count; i++) {
    const v = env[`${ENV.FD_PREFIX}${i}`];
    if (v !== undefined && /^\d+$/.test(v)) fds.push(Number(v));
  }
  const sockFd = env[ENV.SOCK_FD];
  if (sockFd !== undefined && /^\d+$/.test(sockFd)) fds.push(Number(sockFd));
  return fds;
}

export function runExecHelper(argv: string[]): never {
  let pdeathsig: number | null = null;
  let parent: number | null = null;
  let listenPid = false;
  // The file to exec (a generation's resolved program); default: program[0] looked up in PATH.
  let file: string | null = null;
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") { i++; break; }
    if (a === "--pdeathsig") {
      const v = argv[++i] ?? "";
      const sig = parseSignal(v);
      if (sig === null) { process.stderr.write(`einhorn _exec: --pdeathsig wants a signal name, like USR2, got '${v}'\n`); process.exit(2); }
      pdeathsig = signalNumber(sig);
    }
    else if (a === "--parent") parent = Number(argv[++i]);
    else if (a === "--listen-pid") listenPid = true;
    else if (a === "--file") file = argv[++i] ?? null;
    else { process.stderr.write(`einhorn _exec: unknown option '${a}'\n`); process.exit(2); }
  }
  const program = argv.slice(i);
  if (program.length === 0) { process.stderr.write("einhorn _exec: no program given\n"); process.exit(2); }
  if (pdeathsig !== null) prctl(PR_SET_PDEATHSIG, pdeathsig);
  // Reference (-k): if the master is already gone when the child starts, the child exits instead of running.
  if (parent !== null && getppid() !== parent) {
    process.stderr.write(`einhorn _exec: master ${parent} is gone; not starting ${program[0]}\n`);
    process.exit(1);
  }
  // Bytes, not text: values that are not UTF-8 pass through intact (see ffi/os-string.ts).
  const env: Record<string, string | undefined> = osEnviron();
  if (listenPid) env[ENV.LISTEN_PID] = String(getpid());
  // Bun marks inherited descriptors from 4 up close-on-exec when it starts
  // (see notes/bun-platform.md), which would drop the worker's sockets at the
  // exec below: clear the flag on exactly the descriptors the worker is told about.
  for (const fd of passedFds(env)) {
    try {
      setCloexec(fd, false);
    } catch (e) {
      process.stderr.write(`einhorn _exec: descriptor ${fd} for ${program[0]} is not open: ${(e as Error).message}\n`);
      process.exit(1);
    }
  }
  try {
    execve(file ?? resolveProgram(program[0]!, env.PATH), program, Object.entries(env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`));
  } catch (e) {
    process.stderr.write(`einhorn _exec: ${(e as Error).message}\n`);
    process.exit(e instanceof StartError ? e.exitCode : 127);
  }
}

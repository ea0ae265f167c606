// `einhorn _exec`: a tiny first stage run in the worker's own pid, for what
// posix_spawn cannot do in the child: set the parent-death signal (-k) and
// put the worker's own pid in its environment (LISTEN_PID). It then execs the
// real program in place; the parent-death signal survives the exec.
import { execve, getpid, getppid, prctl, PR_SET_PDEATHSIG, signalNumber } from "../../ffi/process";
import { ENV } from "../protocol";
import { resolveProgram } from "../master/spawner";
import { StartError } from "../master/errors";

export function runExecHelper(argv: string[]): never {
  let pdeathsig: number | null = null;
  let parent: number | null = null;
  let listenPid = false;
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") { i++; break; }
    if (a === "--pdeathsig") pdeathsig = signalNumber(argv[++i] ?? "") ?? null;
    else if (a === "--parent") parent = Number(argv[++i]);
    else if (a === "--listen-pid") listenPid = true;
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
  const env = { ...process.env };
  if (listenPid) env[ENV.LISTEN_PID] = String(getpid());
  try {
    const file = resolveProgram(program[0]!, env.PATH);
    execve(file, program, Object.entries(env).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`));
  } catch (e) {
    process.stderr.write(`einhorn _exec: ${(e as Error).message}\n`);
    process.exit(e instanceof StartError ? e.exitCode : 127);
  }
}

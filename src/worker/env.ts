// Reading what the einhorn master put in a worker's environment. Everything
// here is pure: it takes an environment mapping (process.env by default) and
// either returns plain values or throws an EinhornWorkerError that names the
// variable and the value it did not like.
import { ENV } from "../protocol-env";
import { EinhornWorkerError } from "./errors";

export type Env = Record<string, string | undefined>;

/** What a worker learns from its environment. */
export interface WorkerEnv {
  masterPid: number;
  /** The command socket's path (EINHORN_SOCK_PATH), when given. */
  sockPath: string | null;
  /** An fd already connected to the command socket (EINHORN_SOCK_FD, only with `einhorn -g`). */
  sockFd: number | null;
  /** EINHORN_CHILD_INDEX, or null when the master did not set it. */
  childIndex: number | null;
  /** EINHORN_FD_0 … EINHORN_FD_{count-1}, in `-b` order. Not validated as sockets here. */
  fds: number[];
}

/** Running under einhorn: the master set EINHORN_MASTER_PID and EINHORN_FD_COUNT. */
export function isWorkerEnv(env: Env = process.env): boolean {
  return env[ENV.MASTER_PID] !== undefined && env[ENV.FD_COUNT] !== undefined;
}

function wholeNumber(env: Env, name: string, min = 0): number {
  const raw = env[name];
  if (raw === undefined) throw new EinhornWorkerError(`${name} is not set`);
  if (!/^\d+$/.test(raw.trim())) throw new EinhornWorkerError(`${name} is ${JSON.stringify(raw)}, expected a whole number`);
  const n = Number(raw.trim());
  if (!Number.isSafeInteger(n) || n < min) throw new EinhornWorkerError(`${name} is ${JSON.stringify(raw)}, expected a whole number >= ${min}`);
  return n;
}

function optionalWholeNumber(env: Env, name: string): number | null {
  return env[name] === undefined || env[name] === "" ? null : wholeNumber(env, name);
}

/** The error for code that needs einhorn but runs without it. */
export function notUnderEinhorn(what: string): EinhornWorkerError {
  return new EinhornWorkerError(
    `${what}: not running under einhorn (${ENV.MASTER_PID} and ${ENV.FD_COUNT} are not both set). ` +
      `Start this program as a worker, e.g. \`einhorn -b 127.0.0.1:8080 -- bun worker.ts\`.`,
  );
}

/** Parse the whole worker environment; throws when not under einhorn or when a variable is malformed. */
export function readWorkerEnv(env: Env = process.env): WorkerEnv {
  if (!isWorkerEnv(env)) throw notUnderEinhorn("reading the worker environment");
  const masterPid = wholeNumber(env, ENV.MASTER_PID, 1);
  const count = wholeNumber(env, ENV.FD_COUNT);
  const fds: number[] = [];
  for (let i = 0; i < count; i++) {
    const name = `${ENV.FD_PREFIX}${i}`;
    if (env[name] === undefined) throw new EinhornWorkerError(`${ENV.FD_COUNT} is ${count}, but ${name} is not set`);
    fds.push(wholeNumber(env, name));
  }
  const sockPath = env[ENV.SOCK_PATH] ? env[ENV.SOCK_PATH]! : null;
  return {
    masterPid,
    sockPath,
    sockFd: optionalWholeNumber(env, ENV.SOCK_FD),
    childIndex: optionalWholeNumber(env, ENV.CHILD_INDEX),
    fds,
  };
}

/** EINHORN_CHILD_INDEX; null outside einhorn or when the master did not set it. */
export function childIndexFrom(env: Env = process.env): number | null {
  if (!isWorkerEnv(env)) return null;
  return optionalWholeNumber(env, ENV.CHILD_INDEX);
}

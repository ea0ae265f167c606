// The types of node:http and node:net (listen, serve) come from @types/node:
// referenced here (kept in the emitted .d.ts) so a project whose tsconfig
// lists no types (`tsc --init` writes "types": []) still finds them.
/// <reference types="node" preserve="true" />
// einhorn/worker: what a Bun/TypeScript program needs to run as an einhorn
// worker. Everything here also works outside einhorn where that makes sense
// (ack/ping resolve false, serve() binds a port), so one program runs both in
// development and under the master.
import { childIndexFrom, isWorkerEnv, readWorkerEnv, type WorkerEnv } from "./env";
import { socketFdFrom, socketFdsFrom } from "./sockets";

export { EinhornWorkerError } from "./errors";
export { ack, ping, type SendOptions } from "./master-link";
export { onGracefulShutdown, isShuttingDown, type ShutdownCallback } from "./graceful-shutdown";
export { serve, type ServeOptions, type WorkerServer } from "./serve";
export { listen, type ListenOptions, type ListeningServer } from "./listen";
export type { FetchHandler } from "./fetch-bridge";
export { checkListeningFd } from "./sockets";
export type { WorkerEnv };

/** Running under einhorn: EINHORN_MASTER_PID and EINHORN_FD_COUNT are both set. */
export function isWorker(): boolean {
  return isWorkerEnv(process.env);
}

/** Everything the master put in the environment, parsed (descriptors not yet checked). Throws outside einhorn. */
export function workerEnv(): WorkerEnv {
  return readWorkerEnv(process.env);
}

/** EINHORN_CHILD_INDEX: this worker's slot, stable for its life; null outside einhorn. */
export function childIndex(): number | null {
  return childIndexFrom(process.env);
}

/** The inherited listening sockets, in `-b` order, each checked to be a listening stream socket. Throws outside einhorn. */
export function socketFds(): number[] {
  return socketFdsFrom(process.env);
}

/** The n-th inherited listening socket (0 = first `-b`), checked. Throws outside einhorn or when out of range. */
export function socketFd(n = 0): number {
  return socketFdFrom(n, process.env);
}

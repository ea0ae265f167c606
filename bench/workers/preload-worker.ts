// The preload-spawn benchmark's worker: the same code started two ways.
//
//   bun bench/workers/preload-worker.ts      import.meta.main: runs einhorn_main itself
//   einhorn -p bench/workers/preload-worker.ts   the binary's built-in runtime imports the
//                                             module and calls einhorn_main
//
// It loads the worker helper, sends the manual ACK and idles until SIGUSR2
// (exit 0). No listening socket: the figures are the runtime's start and
// footprint, not a server's.
import { ack } from "einhorn/worker";

export async function einhorn_main(): Promise<void> {
  process.on("SIGUSR2", () => process.exit(0));
  await ack();
  setInterval(() => {}, 1 << 30);
}

if (import.meta.main) await einhorn_main();

// Placeholder replaced below.
import type { FetchHandler } from "./fetch-bridge";
import type { ServeOptions, WorkerServer } from "./serve";
export async function serveWithBun(_fd: number | null, _fetch: FetchHandler, _opts: ServeOptions): Promise<WorkerServer | string> {
  return "not implemented yet";
}

// SIGUSR2 is einhorn's "finish what you are doing and exit". This module owns
// the one SIGUSR2 listener: the first signal runs every registered callback
// once; later ones are ignored (while a listener is installed the default
// action, terminating the process, no longer applies). When serve() asked for
// it, the process exits 0 after every callback has settled.

export type ShutdownCallback = () => void | Promise<void>;

const callbacks = new Set<ShutdownCallback>();
let installed = false;
let started: Promise<void> | null = null;
let exitWhenDone = false;

function onSignal(): void {
  void runGracefulShutdown();
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on("SIGUSR2", onSignal);
}

/**
 * Run `fn` when the master asks this worker to shut down gracefully (SIGUSR2),
 * at most once. It may return a promise. Returns a function that unregisters it.
 * Note: registering anything means SIGUSR2 no longer kills the process by
 * itself; either exit in `fn`, or use serve(), which exits once all callbacks
 * (including yours) have settled.
 */
export function onGracefulShutdown(fn: ShutdownCallback): () => void {
  if (typeof fn !== "function") throw new TypeError("onGracefulShutdown(fn): fn must be a function");
  callbacks.add(fn);
  install();
  // Registered after the signal arrived: run now, so nothing is skipped.
  if (started) void settle(fn);
  return () => { callbacks.delete(fn); };
}

async function settle(fn: ShutdownCallback): Promise<void> {
  try {
    await fn();
  } catch (e) {
    console.error(`[einhorn worker ${process.pid}] graceful shutdown callback failed: ${(e as Error)?.stack ?? e}`);
  }
}

/** Whether graceful shutdown has begun. */
export function isShuttingDown(): boolean {
  return started !== null;
}

/**
 * Start graceful shutdown as if SIGUSR2 had arrived (idempotent); resolves
 * when every callback has settled.
 */
export function runGracefulShutdown(): Promise<void> {
  if (started) return started;
  started = Promise.all([...callbacks].map(settle)).then(() => {
    if (exitWhenDone) process.exit(0);
  });
  return started;
}

/** Exit 0 once graceful shutdown has finished (serve() sets this). */
export function exitAfterGracefulShutdown(on = true): void {
  exitWhenDone = on;
}

/** Forget everything (tests only). */
export function resetGracefulShutdownForTests(): void {
  callbacks.clear();
  started = null;
  exitWhenDone = false;
  if (installed) process.off("SIGUSR2", onSignal);
  installed = false;
}

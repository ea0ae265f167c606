// The one error type the worker helper throws for problems with how the
// worker was started (environment, inherited descriptors, the command
// socket), so callers can tell them from their own failures.

export class EinhornWorkerError extends Error {
  override name = "EinhornWorkerError";
}

/**
 * An error's message, led by its syscall and errno code when the message does
 * not name the code itself. Bun's listen failure reads "Failed to start
 * server. Is port 8080 in use?" and carries EADDRINUSE only in `code`; Node's
 * reads "listen EADDRINUSE: address already in use ..." and is kept as it is.
 */
export function errorWithCode(e: unknown): string {
  const err = e as { message?: unknown; code?: unknown; syscall?: unknown } | null;
  const message = typeof err?.message === "string" ? err.message : String(e);
  if (typeof err?.code !== "string" || message.includes(err.code)) return message;
  return `${typeof err.syscall === "string" ? `${err.syscall} ` : ""}${err.code}: ${message}`;
}

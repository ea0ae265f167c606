// The one error type the worker helper throws for problems with how the
// worker was started (environment, inherited descriptors, the command
// socket), so callers can tell them from their own failures.

export class EinhornWorkerError extends Error {
  override name = "EinhornWorkerError";
}

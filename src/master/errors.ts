// Errors that stop the master from starting. They carry the exit code the CLI
// uses (see "Exit codes" in the README) and a message meant for an operator.

import type { SignalName } from "../signal-names";

export class StartError extends Error {
  override name = "StartError";
  /** `cause`: the SysError (or other) it wraps, so its syscall and errno stay inspectable. */
  constructor(message: string, readonly exitCode = 1, options?: ErrorOptions) {
    super(message, options);
  }
}

/**
 * A stop signal (INT, TERM, QUIT, USR2) arrived while the master was still
 * starting: it undoes what it made and exits as a stop after start would
 * (0; QUIT: 1).
 */
export class StopDuringStart extends Error {
  override name = "StopDuringStart";
  constructor(readonly signal: SignalName) {
    super(`received ${signal} during start-up`);
  }
}

// Errors that stop the master from starting. They carry the exit code the CLI
// uses (see "Exit codes" in the README) and a message meant for an operator.

export class StartError extends Error {
  override name = "StartError";
  constructor(message: string, readonly exitCode = 1) {
    super(message);
  }
}

// Pidfile and lockfile. The lock is an flock(2) held for the master's whole
// life, across its own re-exec (the descriptor is inherited), so a second
// master with the same paths is refused however the first one was started.
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { O_CLOEXEC, O_CREAT, O_RDWR, open, tryLockExclusive } from "../../ffi/process";
import { close } from "../../ffi/socket";
import { StartError } from "./errors";
import { fsPath } from "../../ffi/os-string";

export interface HeldLock { fd: number; path: string }

function readPid(path: string): string | null {
  try {
    const t = readFileSync(fsPath(path), "utf8").trim();
    return /^\d+$/.test(t) ? t : null;
  } catch {
    return null;
  }
}

export function acquireLock(path: string): HeldLock {
  let fd: number;
  try {
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644);
  } catch (e) {
    throw new StartError(`cannot open lockfile: ${(e as Error).message}`);
  }
  if (!tryLockExclusive(fd)) {
    close(fd);
    const holder = readPid(path);
    throw new StartError(
      `another einhorn master${holder ? ` (pid ${holder})` : ""} holds the lock ${path}; ` +
        "give this one other paths with -c NAME (or -f/-e/-d), or stop the other one first",
    );
  }
  writeFileSync(fsPath(path), `${process.pid}\n`);
  return { fd, path };
}

/** An already-held lock inherited across the master's re-exec. */
export function adoptLock(fd: number, path: string): HeldLock {
  return { fd, path };
}

export function writePidfile(path: string): void {
  try {
    writeFileSync(fsPath(path), `${process.pid}\n`);
  } catch (e) {
    throw new StartError(`cannot write pidfile ${path}: ${(e as Error).message}`);
  }
}

/** Remove a file we wrote, but only while it still names us (another master may own it now). */
export function removeOwnFile(path: string): void {
  if (readPid(path) === String(process.pid)) rmSync(fsPath(path), { force: true });
}

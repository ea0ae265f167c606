// Pidfile and lockfile: the two plain files the master writes, often in a
// world-writable directory (the temp dir) that other local users can also
// write to. So the rules, for both (docs/security.md, "File rules"):
//
// - opened with O_NOFOLLOW (a symbolic link at the path is refused, never
//   followed), O_NONBLOCK (a FIFO or device cannot stall start-up) and
//   O_CLOEXEC (no worker inherits them);
// - a file already there is used only if fstat says it is a regular file,
//   owned by the master's uid, with a single link; anything else is refused
//   with one line naming the path and what was found there;
// - the master never truncates or chmods a file it did not create: a stale
//   pidfile of its own uid is unlinked and created afresh (O_EXCL);
// - at exit a file is removed only while the path still leads to the inode
//   the master created (another master may own the path by then).
//
// The lock (-f) is Einhorn's: an flock(2) held only while the command socket
// is created, so that two masters starting at once cannot both decide that a
// socket path is free. What stops a second master for good is the live
// command socket itself (see probeUnixSocket in listeners.ts), so masters
// with different -d run side by side whatever their lockfile.
import { fstatSync, lstatSync, readFileSync, readlinkSync, type Stats, unlinkSync, writeSync } from "node:fs";
import { SysError } from "../../ffi/errno";
import { geteuid, O_CLOEXEC, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_RDWR, open, tryLockExclusive } from "../../ffi/process";
import { close } from "../../ffi/socket";
import type { SignalName } from "../signal-names";
import { StartError, StopDuringStart } from "./errors";
import { fsPath } from "../../ffi/os-string";
import { fileKind } from "../file-trust";

/** How long a starting master waits for a lockfile another master holds while it creates its command socket. */
const LOCK_WAIT_MS = 5_000;
const LOCK_POLL_MS = 20;

/** A file the master wrote: removed at exit only if the path still leads to this inode. */
export interface OwnedPath { path: string; dev: number; ino: number }

export interface HeldLock { fd: number; path: string; created: boolean; dev: number; ino: number }

type What = "pidfile" | "lockfile";
const FLAG: Record<What, string> = { pidfile: "-e", lockfile: "-f" };

/** A few words for what sits at `path`, for refusals ("a symbolic link to /etc/passwd"). */
export function describePath(path: string, st?: Stats): string {
  try {
    st ??= lstatSync(fsPath(path));
  } catch (e) {
    return `nothing usable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`;
  }
  if (st.isSymbolicLink()) {
    let target = "?";
    try { target = readlinkSync(fsPath(path), "utf8"); } catch { /* gone meanwhile */ }
    return `a symbolic link (to ${target})`;
  }
  if (!st.isFile()) return fileKind(st);
  if (st.uid !== geteuid()) return `a file owned by uid ${st.uid}, not by this master's uid ${geteuid()}`;
  if (st.nlink !== 1) return `a file with ${st.nlink} hard links`;
  return "a regular file";
}

function refuse(what: What, path: string, found: string): never {
  throw new StartError(`refusing to use ${path} as the ${what}: it is ${found}; remove it or give another path with ${FLAG[what]}`);
}

/** `open PATH: ENOSPC (No space left on device)` for a node:fs error, like SysError's messages. */
export function fsErrorText(e: unknown, op?: string, path?: string): string {
  if (e instanceof SysError) return e.message;
  const err = e as NodeJS.ErrnoException;
  const why = /^[A-Z0-9]+: ([^,]+)/.exec(err.message ?? "")?.[1];
  if (!err.code) return err.message ?? String(e);
  return `${op ?? err.syscall ?? "error"} ${path ?? err.path ?? ""}: ${err.code}${why ? ` (${why})` : ""}`;
}

/**
 * Open (creating when absent) a file the master keeps its own data in,
 * under the rules at the top of this file. Returns the descriptor and
 * whether this call created the file.
 */
function openOwnFile(path: string, what: What): { fd: number; created: boolean; st: Stats } {
  const base = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
  for (let attempt = 0; attempt < 8; attempt++) {
    try {
      const fd = open(path, base | O_CREAT | O_EXCL, 0o644);
      return { fd, created: true, st: fstatSync(fd) };
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      if (e.code === "ELOOP" || e.code === "EISDIR") refuse(what, path, describePath(path));
      if (e.code !== "EEXIST") throw new StartError(`cannot create the ${what}: ${e.message}`, 1, { cause: e });
    }
    let fd: number;
    try {
      fd = open(path, base);
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
      if (e.code === "ENOENT") continue; // removed between the two opens: try creating again
      // ELOOP: a symbolic link; ENXIO: a socket; EISDIR: a directory; ETXTBSY, EACCES, ...
      if (e.code === "ELOOP" || e.code === "ENXIO" || e.code === "EISDIR") refuse(what, path, describePath(path));
      throw new StartError(`cannot open the ${what}: ${e.message}`, 1, { cause: e });
    }
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== geteuid() || st.nlink !== 1) {
      close(fd);
      refuse(what, path, describePath(path, st));
    }
    return { fd, created: false, st };
  }
  throw new StartError(`cannot create the ${what} ${path}: it keeps appearing and disappearing (another process is racing for it)`);
}

/** Remove `owned.path` only while it still leads to the inode the master made (no descriptor needed: works under EMFILE). */
export function removeOwnFile(owned: OwnedPath | null): void {
  if (!owned) return;
  try {
    const st = lstatSync(fsPath(owned.path));
    if (st.dev === owned.dev && st.ino === owned.ino) unlinkSync(fsPath(owned.path));
  } catch { /* already gone */ }
}

/** The inode now at `path` as an OwnedPath (after the master created something there). */
export function ownedPath(path: string): OwnedPath | null {
  try {
    const st = lstatSync(fsPath(path));
    return { path, dev: st.dev, ino: st.ino };
  } catch {
    return null;
  }
}

/**
 * Write this master's pid to `path`. A stale pidfile of the master's own uid
 * is unlinked and created afresh rather than truncated; the write itself
 * failing (ENOSPC) removes what was created.
 */
export function writePidfile(path: string): OwnedPath {
  let f = openOwnFile(path, "pidfile");
  if (!f.created) {
    close(f.fd);
    removeOwnFile({ path, dev: f.st.dev, ino: f.st.ino });
    f = openOwnFile(path, "pidfile");
    if (!f.created) {
      close(f.fd);
      throw new StartError(`cannot replace the stale pidfile ${path}: another process recreated it at once`);
    }
  }
  const owned = { path, dev: f.st.dev, ino: f.st.ino };
  try {
    const data = Buffer.from(`${process.pid}\n`);
    if (writeSync(f.fd, data) !== data.length) throw new StartError(`cannot write the pidfile ${path}: short write`);
  } catch (e) {
    removeOwnFile(owned);
    if (e instanceof StartError) throw e;
    throw new StartError(`cannot write the pidfile: ${fsErrorText(e, "write", path)}`, 1, { cause: e });
  } finally {
    close(f.fd);
  }
  return owned;
}

/** The pid holding an flock on inode `ino`, from /proc/locks (null when unknown). */
function lockHolder(ino: number): number | null {
  try {
    for (const line of readFileSync("/proc/locks", "latin1").split("\n")) {
      // "1: FLOCK  ADVISORY  WRITE 1234 08:01:567 0 EOF"
      const m = /^\d+:\s+FLOCK\s+\S+\s+\S+\s+(\d+)\s+[0-9a-f]+:[0-9a-f]+:(\d+)\s/.exec(line);
      if (m && Number(m[2]) === ino) return Number(m[1]);
    }
  } catch { /* no /proc */ }
  return null;
}

/**
 * Take the lockfile's flock, waiting up to `waitMs` while another master
 * holds it (it does so only while creating its command socket, for
 * milliseconds). `stopRequested` is polled while waiting: a stop signal
 * during start-up ends the wait at once.
 */
export async function acquireLock(path: string, stopRequested: () => SignalName | null, onWait: (holder: number | null) => void = () => {}, waitMs = LOCK_WAIT_MS): Promise<HeldLock> {
  const deadline = Date.now() + waitMs;
  let waiting = false;
  for (;;) {
    const f = openOwnFile(path, "lockfile");
    if (tryLockExclusive(f.fd)) {
      // Its previous holder may have removed the file between our open and
      // our lock: the lock only counts on the inode the path leads to now.
      const now = ownedPath(path);
      if (now && now.dev === f.st.dev && now.ino === f.st.ino) return { fd: f.fd, path, created: f.created, dev: f.st.dev, ino: f.st.ino };
      close(f.fd);
      continue;
    }
    close(f.fd);
    if (!waiting) {
      waiting = true;
      onWait(lockHolder(f.st.ino));
    }
    if (Date.now() >= deadline) {
      const holder = lockHolder(f.st.ino);
      throw new StartError(
        `the lockfile ${path} has been held by ${holder ? `pid ${holder}` : "another process"} for ${waitMs / 1000}s ` +
          "(einhorn holds it only while creating its command socket); give this master its own lockfile with -f PATH",
      );
    }
    const sig = stopRequested();
    if (sig) throw new StopDuringStart(sig);
    await new Promise((r) => setTimeout(r, LOCK_POLL_MS));
  }
}

/** Release the lock; a lockfile this master created is removed first, while still locked. */
export function releaseLock(lock: HeldLock | null): void {
  if (!lock) return;
  if (lock.created) removeOwnFile(lock);
  try { close(lock.fd); } catch { /* already closed */ }
}

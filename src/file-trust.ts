// Whether a file the master reads can be trusted: what kind of file sits at
// a path, who owns it, and whether another local user could have written it
// or swapped it for another through any directory on the way to it.
//
// The master's own files (pidfile, lockfile: src/master/files.ts) and the
// config file it reads (src/config/config-file.ts) describe what they find with
// the same words from here. The directory rules are sshd's StrictModes,
// applied to the path as the kernel resolves it:
//
// - every directory from / to the file must be owned by root or by the uid
//   that runs einhorn, and not be writable by group or others, unless it is
//   sticky (like /tmp): then only the owner of an entry can rename or remove
//   it, so an entry in it counts when root or that uid owns it;
// - symbolic links are followed, component by component. The checks apply to
//   every directory a link is met in as well as to where it leads: whoever
//   can rewrite a link can point it elsewhere, so a link in an unsafe
//   directory is as unsafe as a file there. Checking only realpath()'s result
//   would miss that.
//
// What the file itself must be (regular, its owner, its mode) is the
// caller's to check, on the descriptor it opened (fstat), so that what is
// checked is what is read.
import { lstatSync, readlinkSync, type Stats } from "node:fs";
import { posix } from "node:path";
import { fsPath, osString } from "../ffi/os-string";

/** Symbolic links followed before giving up, as the kernel's ELOOP limit. */
const MAX_LINKS = 40;
const S_ISVTX = 0o1000;

/** A few words for what kind of file `st` is ("a FIFO (named pipe)"), for refusals. */
export function fileKind(st: Stats): string {
  if (st.isFile()) return "a regular file";
  if (st.isSymbolicLink()) return "a symbolic link";
  if (st.isFIFO()) return "a FIFO (named pipe)";
  if (st.isSocket()) return "a socket";
  if (st.isDirectory()) return "a directory";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  return "an unknown kind of file";
}

/** "group", "others", "group and others", or null when neither may write. */
export function writableBy(mode: number): string | null {
  const g = (mode & 0o020) !== 0;
  const o = (mode & 0o002) !== 0;
  return g && o ? "group and others" : g ? "group" : o ? "others" : null;
}

/** "0644", "1777": the permission bits as chmod takes them. */
export const octalMode = (mode: number) => (mode & 0o7777).toString(8).padStart(4, "0");

/** The owners einhorn running as `uid` trusts, in words: "root" or "root or uid 1000". */
function trustedOwners(uid: number): string {
  return uid === 0 ? "root" : `root or uid ${uid}`;
}

const isTrustedOwner = (owner: number, uid: number) => owner === 0 || owner === uid;

/** Why a file or entry owned by `owner` is not trusted by einhorn running as `uid`, or null. */
export function ownerProblem(owner: number, uid: number): string | null {
  if (isTrustedOwner(owner, uid)) return null;
  return `owned by uid ${owner}, not by ${trustedOwners(uid)}, which runs einhorn`;
}

/** A path that failed the rules above; `message` says where and why, without the caller's prefix. */
export class UntrustedPath extends Error {
  override name = "UntrustedPath";
  /** The errno code when a lookup failed (ENOENT, EACCES, ELOOP, ENOTDIR), else null. */
  constructor(message: string, readonly code: string | null = null) {
    super(message);
  }
}

/** Why directory `dir` could let another user swap what is in it, or null. */
export function directoryProblem(dir: string, st: Stats, uid: number): string | null {
  const owner = ownerProblem(st.uid, uid);
  if (owner) return `directory ${dir} on the way to it is ${owner}, so that user could replace what is in it; chown it to ${uid === 0 ? "root" : "one of them"}`;
  const who = writableBy(st.mode);
  if (who && (st.mode & S_ISVTX) === 0) return `directory ${dir} on the way to it is writable by ${who} (mode ${octalMode(st.mode)}) and not sticky, so another user could replace what is in it; chmod g-w,o-w ${dir}`;
  return null;
}

/**
 * Resolve `path` (absolute) as the kernel would, checking each directory on
 * the way and each entry of a shared sticky directory (see the top of this
 * file). Returns the resolved path of the file and its lstat, without
 * opening it; throws UntrustedPath saying which directory or link is unsafe,
 * or which lookup failed.
 */
export function resolveTrusted(path: string, uid: number): { real: string; st: Stats } {
  const lstat = (p: string): Stats => {
    try {
      return lstatSync(fsPath(p));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? "EIO";
      throw new UntrustedPath(`cannot read it (${code}${p === path ? "" : ` at ${p}`})`, code);
    }
  };
  const checked = new Map<string, Stats>();
  const enter = (dir: string, st: Stats): void => {
    if (checked.has(dir)) return;
    const why = directoryProblem(dir, st, uid);
    if (why) throw new UntrustedPath(why);
    checked.set(dir, st);
  };
  let dir = "/";
  enter(dir, lstat(dir));
  const todo = path.split("/").filter((c) => c !== "" && c !== ".");
  let links = 0;
  while (todo.length > 0) {
    const name = todo.shift()!;
    // `dir` holds no symbolic link (it was built from resolved parts), so '..' is its parent.
    if (name === "..") { dir = posix.dirname(dir); continue; }
    const p = posix.join(dir, name);
    const st = lstat(p);
    const parent = checked.get(dir)!;
    const last = todo.length === 0;
    // In a sticky directory others may write (/tmp), an entry is whoever made it's.
    // The file itself gets its owner checked by the caller, with the same words as anywhere else.
    if (writableBy(parent.mode) && !(last && !st.isSymbolicLink())) {
      const owner = ownerProblem(st.uid, uid);
      if (owner) throw new UntrustedPath(`${st.isSymbolicLink() ? "the symbolic link" : fileKind(st).replace(/^an? /, "the ")} ${p} in the shared directory ${dir} (mode ${octalMode(parent.mode)}) is ${owner}; use a path only ${trustedOwners(uid)} can change`);
    }
    if (st.isSymbolicLink()) {
      if (++links > MAX_LINKS) throw new UntrustedPath(`cannot read it (ELOOP: more than ${MAX_LINKS} symbolic links)`, "ELOOP");
      let target: string;
      try {
        target = osString(readlinkSync(fsPath(p), "buffer"));
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? "EIO";
        throw new UntrustedPath(`cannot read it (${code} at ${p})`, code);
      }
      if (target.startsWith("/")) dir = "/";
      todo.unshift(...target.split("/").filter((c) => c !== "" && c !== "."));
      continue;
    }
    if (last) return { real: p, st };
    if (!st.isDirectory()) throw new UntrustedPath(`cannot read it (ENOTDIR at ${p})`, "ENOTDIR");
    enter(p, st);
    dir = p;
  }
  // The path names a directory ('/', or ending in '..'): the caller refuses it as not a regular file.
  return { real: dir, st: checked.get(dir) ?? lstat(dir) };
}

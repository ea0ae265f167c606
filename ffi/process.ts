// Process control: posix_spawn with the attributes a supervised worker needs,
// kill, waitpid, execve, signal masks, prctl, priorities, advisory locks.
// fork() is deliberately absent: a forked Bun process crashes before exec
// (see shared/notes/bun-platform.md); glibc's posix_spawn uses CLONE_VFORK
// and is safe from a multi-threaded runtime.
import { readSync } from "node:fs";
import { ptr } from "bun:ffi";
import { check, checkReturned, cstr, sym } from "./libc";
import { parseSignal, type SignalName, signalFromNumber, signalNumber } from "../src/signal-names";

export const POSIX_SPAWN_SETPGROUP = 0x02;
export const POSIX_SPAWN_SETSIGDEF = 0x04;
export const POSIX_SPAWN_SETSIGMASK = 0x08;
export const POSIX_SPAWN_SETSID = 0x80;

export const WNOHANG = 1;
export const PR_SET_PDEATHSIG = 1;
export const PR_SET_NAME = 15;
export const PR_SET_CHILD_SUBREAPER = 36;
export const PRIO_PROCESS = 0;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_CLOEXEC = 0o2000000;
export const O_RDONLY = 0;
export const O_EXCL = 0o200;
export const O_NONBLOCK = 0o4000;
export const O_NOFOLLOW = 0o400000;
export const O_NOCTTY = 0o400;
const SIG_BLOCK = 0;
const SIG_UNBLOCK = 1;
const SIG_SETMASK = 2;

// glibc: posix_spawnattr_t is 336 bytes, posix_spawn_file_actions_t 80, sigset_t 128.
// Over-allocate so a different libc layout cannot write past our buffers.
const ATTR_BYTES = 512;
const ACTIONS_BYTES = 256;
const SIGSET_BYTES = 256;

/**
 * A signal's number from its number or any spelling of its name ("USR2",
 * "SIGUSR2", "12"); throws naming it when there is no such signal. The names
 * come from src/signal-names.ts, the one table (pure Linux knowledge).
 */
export function signalNumberOf(signal: string | number): number {
  if (typeof signal === "number") return signal;
  const name = parseSignal(signal);
  if (name === null) throw new Error(`unknown signal ${signal}`);
  return signalNumber(name);
}

/** Pointer-array of NUL-terminated strings (argv/envp); keep `keep` alive across the call. */
function stringArray(items: string[]): { array: BigUint64Array; keep: Buffer[] } {
  const keep = items.map(cstr);
  const array = new BigUint64Array(items.length + 1);
  keep.forEach((b, i) => { array[i] = BigInt(ptr(b)); });
  return { array, keep };
}

export interface SpawnOptions {
  /** Descriptors the child keeps, at the same numbers (dup2(fd, fd) clears FD_CLOEXEC in the child only). */
  inheritFds?: number[];
  /** Extra dup2(from, to) moves done in the child before the inherited fds are kept. */
  dup2?: Array<[from: number, to: number]>;
  /** Descriptors closed in the child after the dup2 moves (temporaries of a remap). */
  close?: number[];
  /** Search PATH for the program (posix_spawnp). */
  searchPath?: boolean;
  /** Give the child its own process group. */
  newProcessGroup?: boolean;
  /** Start a new session instead (implies a new group). */
  newSession?: boolean;
}

/**
 * Start `argv[0]` (or `file`) with `env`. The child gets default dispositions for
 * every signal and an empty signal mask, whatever the master has installed.
 * Exec failures (ENOENT, EACCES, ENOEXEC) come back as a SysError here.
 */
export function spawn(file: string, argv: string[], env: string[], opts: SpawnOptions = {}): number {
  const actions = new Uint8Array(ACTIONS_BYTES);
  const attr = new Uint8Array(ATTR_BYTES);
  const empty = new Uint8Array(SIGSET_BYTES);
  const full = new Uint8Array(SIGSET_BYTES);
  checkReturned(sym.posix_spawn_file_actions_init(ptr(actions)), "posix_spawn_file_actions_init");
  checkReturned(sym.posix_spawnattr_init(ptr(attr)), "posix_spawnattr_init");
  try {
    for (const [from, to] of opts.dup2 ?? []) {
      checkReturned(sym.posix_spawn_file_actions_adddup2(ptr(actions), from, to), "posix_spawn_file_actions_adddup2");
    }
    for (const fd of opts.close ?? []) {
      checkReturned(sym.posix_spawn_file_actions_addclose(ptr(actions), fd), "posix_spawn_file_actions_addclose");
    }
    for (const fd of opts.inheritFds ?? []) {
      checkReturned(sym.posix_spawn_file_actions_adddup2(ptr(actions), fd, fd), "posix_spawn_file_actions_adddup2");
    }
    sym.sigemptyset(ptr(empty));
    sym.sigfillset(ptr(full));
    // glibc's sigfillset leaves out its two internal signals (32 and 33), and
    // its posix_spawn then sets them to SIG_IGN in the child; the worker
    // should start with every disposition at its default, so add their bits
    // by hand (sigaddset refuses them). Bit (sig - 1) of the little-endian mask.
    full[3]! |= 0x80; // signal 32
    full[4]! |= 0x01; // signal 33
    let flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    if (opts.newSession) flags |= POSIX_SPAWN_SETSID;
    else if (opts.newProcessGroup ?? true) flags |= POSIX_SPAWN_SETPGROUP;
    checkReturned(sym.posix_spawnattr_setflags(ptr(attr), flags), "posix_spawnattr_setflags");
    checkReturned(sym.posix_spawnattr_setsigmask(ptr(attr), ptr(empty)), "posix_spawnattr_setsigmask");
    checkReturned(sym.posix_spawnattr_setsigdefault(ptr(attr), ptr(full)), "posix_spawnattr_setsigdefault");
    checkReturned(sym.posix_spawnattr_setpgroup(ptr(attr), 0), "posix_spawnattr_setpgroup");

    const a = stringArray(argv);
    const e = stringArray(env);
    const pid = new Int32Array(1);
    const fn = opts.searchPath ? sym.posix_spawnp : sym.posix_spawn;
    const ret = fn(ptr(pid), cstr(file), ptr(actions), ptr(attr), ptr(a.array), ptr(e.array));
    checkReturned(ret, opts.searchPath ? "posix_spawnp" : "posix_spawn", file);
    void a.keep; void e.keep;
    return pid[0]!;
  } finally {
    sym.posix_spawn_file_actions_destroy(ptr(actions));
    sym.posix_spawnattr_destroy(ptr(attr));
  }
}

/** Replace this process image. Returns only by throwing. */
export function execve(file: string, argv: string[], env: string[]): never {
  const a = stringArray(argv);
  const e = stringArray(env);
  check(sym.execve(cstr(file), ptr(a.array), ptr(e.array)), "execve", file);
  void a.keep; void e.keep;
  throw new Error("execve returned without an error");
}

/**
 * How a child ended: its exit code, or the signal that killed it (`signal`
 * null with `code` null only for the nameless signals 32 and 33, which glibc
 * keeps for itself; `signo` says which).
 */
export type ExitStatus = { code: number; signal: null } | { code: null; signal: SignalName | null; signo: number };

/** A wait status, parsed once: the killing signal's number becomes its name here. */
export function decodeWaitStatus(status: number): ExitStatus {
  const sig = status & 0x7f;
  if (sig === 0) return { code: (status >> 8) & 0xff, signal: null };
  return { code: null, signal: signalFromNumber(sig), signo: sig };
}

/** Non-blocking waitpid: null when no child (of `pid`) has exited yet; throws ECHILD when none exist. */
export function waitpidNohang(pid = -1): { pid: number; status: ExitStatus } | null {
  const st = new Int32Array(1);
  const ret = check(sym.waitpid(pid, ptr(st), WNOHANG), "waitpid");
  if (ret === 0) return null;
  return { pid: ret, status: decodeWaitStatus(st[0]!) };
}

/** kill(2). Returns false for ESRCH (already gone) so callers can race exits safely. */
export function kill(pid: number, signal: string | number): boolean {
  const num = signalNumberOf(signal);
  const ret = sym.kill(pid, num);
  if (ret === -1) {
    try { check(ret, "kill", `${pid} ${signal}`); } catch (e) {
      if ((e as { code?: string }).code === "ESRCH") return false;
      throw e;
    }
  }
  return true;
}

export const getpid = (): number => sym.getpid();
export const getppid = (): number => sym.getppid();
export const geteuid = (): number => sym.geteuid();

export function prctl(option: number, arg2: number | bigint = 0): void {
  check(sym.prctl(option, BigInt(arg2), 0n, 0n, 0n), "prctl", String(option));
}

export function setpriority(pid: number, nice: number): void {
  check(sym.setpriority(PRIO_PROCESS, pid, nice), "setpriority", `pid ${pid} nice ${nice}`);
}

function sigset(signals: number[]): Uint8Array {
  const set = new Uint8Array(SIGSET_BYTES);
  sym.sigemptyset(ptr(set));
  for (const s of signals) sym.sigaddset(ptr(set), s);
  return set;
}

/** Block these signals on the calling thread (they stay pending); returns the previous mask. */
export function blockSignals(signals: number[]): Uint8Array {
  const old = new Uint8Array(SIGSET_BYTES);
  checkReturned(sym.pthread_sigmask(SIG_BLOCK, ptr(sigset(signals)), ptr(old)), "pthread_sigmask");
  return old;
}

export function setSignalMask(mask: Uint8Array): void {
  checkReturned(sym.pthread_sigmask(SIG_SETMASK, ptr(mask), null), "pthread_sigmask");
}

export function open(path: string, flags: number, mode = 0o644): number {
  return check(sym.open(cstr(path), flags, mode), "open", path);
}

/** flock(fd, LOCK_EX|LOCK_NB): false when another process holds the lock. */
export function tryLockExclusive(fd: number): boolean {
  const ret = sym.flock(fd, LOCK_EX | LOCK_NB);
  if (ret === 0) return true;
  try { check(ret, "flock"); } catch (e) {
    if ((e as { code?: string }).code === "EAGAIN") return false;
    throw e;
  }
  return false;
}

export function umask(mask: number): number {
  return sym.umask(mask);
}

/**
 * Everything in a file from offset 0 (at most `limit` bytes), read through
 * `fd` itself with pread (no new descriptor: it works when none is left, and
 * leaves the offset alone).
 */
export function readAll(fd: number, limit = Number.POSITIVE_INFINITY): Buffer {
  const chunks: Buffer[] = [];
  let pos = 0;
  while (pos < limit) {
    const buf = Buffer.alloc(Math.min(64 * 1024, limit - pos));
    const n = readSync(fd, buf, 0, buf.length, pos);
    if (n <= 0) break;
    chunks.push(buf.subarray(0, n));
    pos += n;
  }
  return Buffer.concat(chunks);
}

/** An anonymous in-memory file (memfd_create(2)); inheritable across exec unless `cloexec`. */
export function memfdCreate(name: string, cloexec = false): number {
  const MFD_CLOEXEC = 1;
  return check(sym.memfd_create(cstr(name), cloexec ? MFD_CLOEXEC : 0), "memfd_create", name);
}

/** The calling thread's current signal mask, as raw sigset_t bytes. */
export function currentSignalMask(): Uint8Array {
  const old = new Uint8Array(SIGSET_BYTES);
  checkReturned(sym.pthread_sigmask(SIG_BLOCK, ptr(sigset([])), ptr(old)), "pthread_sigmask");
  return old;
}

export function unblockSignals(signals: number[]): void {
  checkReturned(sym.pthread_sigmask(SIG_UNBLOCK, ptr(sigset(signals)), null), "pthread_sigmask");
}

/** Which of `signals` are pending (raised while blocked) for the calling thread or the process. */
export function pendingSignals(signals: number[]): number[] {
  const set = new Uint8Array(SIGSET_BYTES);
  check(sym.sigpending(ptr(set)), "sigpending");
  return signals.filter((s) => sym.sigismember(ptr(set), s) === 1);
}

/** Whether every one of `signals` is blocked on the calling thread. */
export function signalsBlocked(signals: number[]): boolean {
  const mask = currentSignalMask();
  return signals.every((s) => sym.sigismember(ptr(mask), s) === 1);
}

/**
 * The name ps -e, top and pgrep show (/proc/PID/comm) for the calling thread;
 * the kernel keeps the first 15 bytes.
 */
export function setProcessName(name: string): void {
  const buf = cstr(name);
  check(sym.prctl(PR_SET_NAME, BigInt(ptr(buf)), 0n, 0n, 0n), "prctl", "PR_SET_NAME");
}

export const RLIMIT_NOFILE = 7;

/** getrlimit(2): the soft and hard limits (Infinity for RLIM_INFINITY). */
export function getrlimit(resource: number): { soft: number; hard: number } {
  const v = new BigUint64Array(2);
  check(sym.getrlimit(resource, ptr(v)), "getrlimit", String(resource));
  const num = (x: bigint) => (x === 0xffffffffffffffffn ? Infinity : Number(x));
  return { soft: num(v[0]!), hard: num(v[1]!) };
}

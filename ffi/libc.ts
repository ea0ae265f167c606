// The dlopen table: every libc symbol einhorn calls, with its C signature.
// Only ffi/ imports this file; everything above it uses the typed wrappers.
import { osBytes } from "./os-string";
import { dlopen, FFIType, read } from "bun:ffi";
import { CLibraryError, detectCLibrary, SUPPORTED_C_LIBRARIES } from "./c-library";
import { SysError } from "./errno";

const { i32, u32, i64, u64, ptr, cstring } = FFIType;

/** The C library this process uses (glibc or musl), found from its own executable. */
export const cLibrary = detectCLibrary();

function open<T extends Record<string, import("bun:ffi").FFIFunction>>(symbols: T) {
  try {
    return dlopen(cLibrary.path, symbols);
  } catch (e) {
    // Said once, at start-up, in words an operator can act on; the CLI prints
    // a CLibraryError without a stack trace.
    throw new CLibraryError(
      `cannot use the C library ${cLibrary.path} (${cLibrary.kind}, by ${cLibrary.foundBy}): ${(e as Error).message}; einhorn supports ${SUPPORTED_C_LIBRARIES}`,
      { cause: e },
    );
  }
}

export const libc = open({
  __errno_location: { args: [], returns: ptr },
  strerror: { args: [i32], returns: cstring },

  // sockets
  socket: { args: [i32, i32, i32], returns: i32 },
  socketpair: { args: [i32, i32, i32, ptr], returns: i32 },
  bind: { args: [i32, ptr, u32], returns: i32 },
  connect: { args: [i32, ptr, u32], returns: i32 },
  listen: { args: [i32, i32], returns: i32 },
  setsockopt: { args: [i32, i32, i32, ptr, u32], returns: i32 },
  getsockopt: { args: [i32, i32, i32, ptr, ptr], returns: i32 },
  getsockname: { args: [i32, ptr, ptr], returns: i32 },
  close: { args: [i32], returns: i32 },
  dup2: { args: [i32, i32], returns: i32 },
  epoll_ctl: { args: [i32, i32, i32, ptr], returns: i32 },
  // fcntl is variadic; on the SysV x86-64 and AAPCS64 ABIs an int third argument
  // is passed exactly like a fixed one.
  fcntl: { args: [i32, i32, i64], returns: i32 },
  write: { args: [i32, ptr, u64], returns: i64 },
  send: { args: [i32, ptr, u64, i32], returns: i64 },
  sendto: { args: [i32, ptr, u64, i32, ptr, u32], returns: i64 },
  open: { args: [cstring, i32, u32], returns: i32 },
  flock: { args: [i32, i32], returns: i32 },
  poll: { args: [ptr, u64, i32], returns: i32 },
  // ioctl is variadic; the request is an unsigned long, the argument a pointer here.
  ioctl: { args: [i32, u64, ptr], returns: i32 },
  umask: { args: [u32], returns: u32 },
  memfd_create: { args: [cstring, u32], returns: i32 },
  getrlimit: { args: [i32, ptr], returns: i32 },
  clock_gettime: { args: [i32, ptr], returns: i32 },

  // processes
  posix_spawn: { args: [ptr, cstring, ptr, ptr, ptr, ptr], returns: i32 },
  posix_spawnp: { args: [ptr, cstring, ptr, ptr, ptr, ptr], returns: i32 },
  posix_spawn_file_actions_init: { args: [ptr], returns: i32 },
  posix_spawn_file_actions_destroy: { args: [ptr], returns: i32 },
  posix_spawn_file_actions_adddup2: { args: [ptr, i32, i32], returns: i32 },
  posix_spawn_file_actions_addclose: { args: [ptr, i32], returns: i32 },
  posix_spawnattr_init: { args: [ptr], returns: i32 },
  posix_spawnattr_destroy: { args: [ptr], returns: i32 },
  posix_spawnattr_setflags: { args: [ptr, i32], returns: i32 },
  posix_spawnattr_setsigmask: { args: [ptr, ptr], returns: i32 },
  posix_spawnattr_setsigdefault: { args: [ptr, ptr], returns: i32 },
  posix_spawnattr_setpgroup: { args: [ptr, i32], returns: i32 },
  sigemptyset: { args: [ptr], returns: i32 },
  sigfillset: { args: [ptr], returns: i32 },
  sigaddset: { args: [ptr, i32], returns: i32 },
  sigismember: { args: [ptr, i32], returns: i32 },
  sigpending: { args: [ptr], returns: i32 },
  pthread_sigmask: { args: [i32, ptr, ptr], returns: i32 },
  execve: { args: [cstring, ptr, ptr], returns: i32 },
  kill: { args: [i32, i32], returns: i32 },
  waitpid: { args: [i32, ptr, i32], returns: i32 },
  waitid: { args: [i32, u32, ptr, i32], returns: i32 },
  // syscall(2) is variadic; every argument is a long, passed in registers.
  // Used for the pidfd calls, which musl and glibc before 2.36 do not wrap.
  syscall: { args: [i64, i64, i64, i64, i64], returns: i64 },
  raise: { args: [i32], returns: i32 },
  sigaction: { args: [i32, ptr, ptr], returns: i32 },
  signalfd: { args: [i32, ptr, i32], returns: i32 },
  read: { args: [i32, ptr, u64], returns: i64 },
  getpid: { args: [], returns: i32 },
  getppid: { args: [], returns: i32 },
  geteuid: { args: [], returns: u32 },
  // prctl is variadic too; unsigned long arguments, passed in registers.
  prctl: { args: [i32, u64, u64, u64, u64], returns: i32 },
  setpriority: { args: [i32, u32, i32], returns: i32 },
});

export const sym = libc.symbols;

/** errno of the last failed call on this thread; read it before any other libc call. */
export function lastErrno(): number {
  const p = sym.__errno_location();
  return p === null ? 0 : read.i32(p, 0);
}

export function strerror(errno: number): string {
  return String(sym.strerror(errno));
}

/** Throw a SysError for a -1 return; read errno first, before anything can clobber it. */
export function check(ret: number, syscall: string, detail?: string): number {
  if (ret === -1) {
    const errno = lastErrno();
    throw new SysError(syscall, errno, strerror(errno), detail);
  }
  return ret;
}

/** For the calls that return an errno value instead of setting errno (posix_spawn, pthread_*). */
export function checkReturned(ret: number, syscall: string, detail?: string): void {
  if (ret !== 0) throw new SysError(syscall, ret, strerror(ret), detail);
}

/**
 * A NUL-terminated copy of a JS string, for `cstring`/`ptr` arguments. The
 * bytes are osBytes(s): a string carrying raw non-UTF-8 bytes (see
 * os-string.ts) reaches the kernel as exactly those bytes.
 */
export function cstr(s: string): Buffer {
  return Buffer.concat([osBytes(s), Buffer.of(0)]);
}

// errno numbers and names for Linux (x86-64 and aarch64 share these), and the
// SysError every wrapper in ffi/ throws. Names rather than numbers travel in
// messages and tests, because operators search for "EADDRINUSE", not "98".

const NAMES: Record<number, string> = {
  1: "EPERM", 2: "ENOENT", 3: "ESRCH", 4: "EINTR", 5: "EIO", 6: "ENXIO", 7: "E2BIG",
  8: "ENOEXEC", 9: "EBADF", 10: "ECHILD", 11: "EAGAIN", 12: "ENOMEM", 13: "EACCES",
  14: "EFAULT", 15: "ENOTBLK", 16: "EBUSY", 17: "EEXIST", 18: "EXDEV", 19: "ENODEV",
  20: "ENOTDIR", 21: "EISDIR", 22: "EINVAL", 23: "ENFILE", 24: "EMFILE", 25: "ENOTTY",
  26: "ETXTBSY", 27: "EFBIG", 28: "ENOSPC", 29: "ESPIPE", 30: "EROFS", 31: "EMLINK",
  32: "EPIPE", 33: "EDOM", 34: "ERANGE", 35: "EDEADLK", 36: "ENAMETOOLONG", 37: "ENOLCK",
  38: "ENOSYS", 39: "ENOTEMPTY", 40: "ELOOP", 88: "ENOTSOCK", 89: "EDESTADDRREQ",
  90: "EMSGSIZE", 91: "EPROTOTYPE", 92: "ENOPROTOOPT", 93: "EPROTONOSUPPORT",
  94: "ESOCKTNOSUPPORT", 95: "EOPNOTSUPP", 96: "EPFNOSUPPORT", 97: "EAFNOSUPPORT",
  98: "EADDRINUSE", 99: "EADDRNOTAVAIL", 100: "ENETDOWN", 101: "ENETUNREACH",
  102: "ENETRESET", 103: "ECONNABORTED", 104: "ECONNRESET", 105: "ENOBUFS", 106: "EISCONN",
  107: "ENOTCONN", 108: "ESHUTDOWN", 110: "ETIMEDOUT", 111: "ECONNREFUSED",
  112: "EHOSTDOWN", 113: "EHOSTUNREACH", 114: "EALREADY", 115: "EINPROGRESS",
};

export const Errno: Record<string, number> = Object.fromEntries(
  Object.entries(NAMES).map(([n, name]) => [name, Number(n)]),
);

export function errnoName(errno: number): string {
  return NAMES[errno] ?? `E${errno}`;
}

/** A failed system call. `message` reads like `bind 127.0.0.1:8080: EADDRINUSE (Address already in use)`. */
export class SysError extends Error {
  readonly syscall: string;
  readonly errno: number;
  readonly code: string;
  readonly detail: string | undefined;

  constructor(syscall: string, errno: number, describe: string, detail?: string) {
    const code = errnoName(errno);
    super(`${syscall}${detail ? ` ${detail}` : ""}: ${code} (${describe})`);
    this.name = "SysError";
    this.syscall = syscall;
    this.errno = errno;
    this.code = code;
    this.detail = detail;
  }
}

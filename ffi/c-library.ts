// Which C library this process runs on, and what to dlopen for it.
//
// einhorn is released for glibc systems (Debian, Ubuntu, RHEL, ...) and for
// musl systems (Alpine). The two name their libc differently: glibc's is
// `libc.so.6`; musl's libc is its own dynamic linker, `/lib/ld-musl-ARCH.so.1`
// (also known by the soname `libc.musl-ARCH.so.1`), and there is no
// `libc.so.6` on a musl system at all. Opening `libc.so.6` by name would fail
// there, so the choice is made from what this very executable was linked
// against: the ELF interpreter of /proc/self/exe names the C library the
// running runtime already uses, which is the one our calls must go to.
//
// This file opens nothing through FFI: it is safe to import from the CLI to
// report a failure without loading libc.
import { closeSync, existsSync, openSync, readSync } from "node:fs";

export type CLibraryKind = "glibc" | "musl";

export interface CLibrary {
  kind: CLibraryKind;
  /** What to pass to dlopen. */
  path: string;
  /** How it was found, for messages. */
  foundBy: string;
}

/** The C library could not be found or opened; the message says what was found and what is supported. */
export class CLibraryError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CLibraryError";
  }
}

export const SUPPORTED_C_LIBRARIES = "glibc (libc.so.6) or musl (ld-musl-ARCH.so.1)";

const PT_INTERP = 3;

/**
 * The program interpreter (PT_INTERP) named by an ELF file, read through
 * `read(offset, length)`; null for a static executable or a non-ELF file.
 * Handles 32/64-bit and either byte order, so it can read any target's binary.
 */
export function elfInterpreter(read: (offset: number, length: number) => Uint8Array): string | null {
  const ident = read(0, 64);
  if (ident.length < 52 || ident[0] !== 0x7f || ident[1] !== 0x45 || ident[2] !== 0x4c || ident[3] !== 0x46) return null;
  const is64 = ident[4] === 2;
  const little = ident[5] === 1;
  const view = new DataView(ident.buffer, ident.byteOffset, ident.byteLength);
  const u16 = (v: DataView, o: number) => v.getUint16(o, little);
  const u32 = (v: DataView, o: number) => v.getUint32(o, little);
  const word = (v: DataView, o: number) => (is64 ? Number(v.getBigUint64(o, little)) : v.getUint32(o, little));
  const phoff = word(view, is64 ? 0x20 : 0x1c);
  const phentsize = u16(view, is64 ? 0x36 : 0x2a);
  const phnum = u16(view, is64 ? 0x38 : 0x2c);
  if (phoff === 0 || phnum === 0 || phentsize < (is64 ? 56 : 32)) return null;
  const table = read(phoff, phentsize * phnum);
  const tv = new DataView(table.buffer, table.byteOffset, table.byteLength);
  for (let i = 0; i < phnum && (i + 1) * phentsize <= table.length; i++) {
    const at = i * phentsize;
    if (u32(tv, at) !== PT_INTERP) continue;
    const offset = word(tv, at + (is64 ? 0x08 : 0x04));
    const size = word(tv, at + (is64 ? 0x20 : 0x10));
    if (size === 0 || size > 4096) return null;
    const bytes = read(offset, size);
    const nul = bytes.indexOf(0);
    return new TextDecoder().decode(bytes.subarray(0, nul >= 0 ? nul : bytes.length));
  }
  return null;
}

/** The program interpreter of an ELF file on disk (see elfInterpreter). */
export function elfInterpreterOfFile(path: string): string | null {
  const fd = openSync(path, "r");
  try {
    return elfInterpreter((offset, length) => {
      const buf = new Uint8Array(length);
      const n = readSync(fd, buf, 0, length, offset);
      return buf.subarray(0, n);
    });
  } finally {
    closeSync(fd);
  }
}

/**
 * The C library an executable linked through this interpreter uses; null for
 * an interpreter of neither family (uClibc, bionic, ...): unsupported.
 */
export function cLibraryForInterpreter(interp: string): CLibrary | null {
  const base = interp.slice(interp.lastIndexOf("/") + 1);
  // musl: the dynamic linker is libc itself; dlopen of its path returns the
  // copy already loaded.
  if (/^ld-musl-[\w]+\.so\.1$/.test(base)) return { kind: "musl", path: interp, foundBy: `ELF interpreter ${interp}` };
  // glibc: ld-linux-x86-64.so.2, ld-linux-aarch64.so.1, ld-linux.so.2, ...
  if (/^ld-linux[-\w]*\.so\.\d+$/.test(base)) return { kind: "glibc", path: "libc.so.6", foundBy: `ELF interpreter ${interp}` };
  return null;
}

/** musl's name for an architecture, as in ld-musl-ARCH.so.1. */
function muslArch(arch: string): string {
  return arch === "x64" ? "x86_64" : arch === "arm64" ? "aarch64" : arch;
}

/**
 * Decide which C library to open. The executable's own interpreter first;
 * without one (a static or unreadable executable), probe for musl's dynamic
 * linker and otherwise assume glibc.
 */
export function detectCLibrary(opts: { exe?: string; arch?: string; exists?: (p: string) => boolean } = {}): CLibrary {
  const exe = opts.exe ?? "/proc/self/exe";
  let interp: string | null = null;
  let readError: string | null = null;
  try {
    interp = elfInterpreterOfFile(exe);
  } catch (e) {
    readError = (e as Error).message;
  }
  if (interp !== null) {
    const lib = cLibraryForInterpreter(interp);
    if (lib) return lib;
    throw new CLibraryError(
      `unsupported C library: this executable is linked through ${interp}, and einhorn supports ${SUPPORTED_C_LIBRARIES}`,
    );
  }
  const exists = opts.exists ?? existsSync;
  const arch = muslArch(opts.arch ?? process.arch);
  const musl = `/lib/ld-musl-${arch}.so.1`;
  const glibc = [`/lib/${arch}-linux-gnu/libc.so.6`, "/lib64/libc.so.6", "/lib/libc.so.6", "/usr/lib/libc.so.6"];
  const why = readError ? `cannot read ${exe} (${readError})` : `${exe} names no ELF interpreter`;
  // Debian's musl package installs ld-musl next to glibc: only a system
  // without glibc is taken for a musl one.
  if (exists(musl) && !glibc.some(exists)) return { kind: "musl", path: musl, foundBy: `${why}; found ${musl} and no glibc` };
  return { kind: "glibc", path: "libc.so.6", foundBy: `${why}; assumed glibc` };
}

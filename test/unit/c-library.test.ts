// Finding the C library from an executable's ELF interpreter (ffi/c-library.ts):
// hand-made ELF images of every class and byte order, the names glibc and
// musl use, the fallback probe, and the refusal of anything else.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CLibraryError, cLibraryForInterpreter, detectCLibrary, elfInterpreter } from "../../ffi/c-library";

/** A minimal ELF image: header, program headers (a PT_LOAD, then PT_INTERP if given), the interpreter string. */
function elf(opts: { is64: boolean; little: boolean; interp: string | null }): Uint8Array {
  const { is64, little, interp } = opts;
  const ehsize = is64 ? 64 : 52;
  const phentsize = is64 ? 56 : 32;
  const phnum = interp === null ? 1 : 2;
  const strOff = ehsize + phentsize * phnum;
  const str = interp === null ? new Uint8Array(0) : new TextEncoder().encode(`${interp}\0`);
  const buf = new Uint8Array(strOff + str.length);
  const v = new DataView(buf.buffer);
  buf.set([0x7f, 0x45, 0x4c, 0x46, is64 ? 2 : 1, little ? 1 : 2, 1]);
  const word = (o: number, x: number) => (is64 ? v.setBigUint64(o, BigInt(x), little) : v.setUint32(o, x, little));
  v.setUint16(0x10, 2, little); // ET_EXEC
  word(is64 ? 0x20 : 0x1c, ehsize); // e_phoff
  v.setUint16(is64 ? 0x36 : 0x2a, phentsize, little);
  v.setUint16(is64 ? 0x38 : 0x2c, phnum, little);
  v.setUint32(ehsize, 1, little); // PT_LOAD first, as linkers write PT_PHDR/PT_LOAD before it
  if (interp !== null) {
    const at = ehsize + phentsize;
    v.setUint32(at, 3, little); // PT_INTERP
    word(at + (is64 ? 0x08 : 0x04), strOff); // p_offset
    word(at + (is64 ? 0x20 : 0x10), str.length); // p_filesz
  }
  buf.set(str, strOff);
  return buf;
}

const reader = (b: Uint8Array) => (offset: number, length: number) => b.subarray(offset, offset + length);

describe("elfInterpreter", () => {
  for (const is64 of [true, false]) {
    for (const little of [true, false]) {
      test(`${is64 ? "ELF64" : "ELF32"} ${little ? "little" : "big"}-endian`, () => {
        expect(elfInterpreter(reader(elf({ is64, little, interp: "/lib/ld-musl-aarch64.so.1" })))).toBe("/lib/ld-musl-aarch64.so.1");
        expect(elfInterpreter(reader(elf({ is64, little, interp: null })))).toBeNull();
      });
    }
  }

  test("not an ELF file, or cut short", () => {
    expect(elfInterpreter(reader(new TextEncoder().encode("#!/bin/sh\necho hi\n".padEnd(80))))).toBeNull();
    expect(elfInterpreter(reader(elf({ is64: true, little: true, interp: "/x" }).subarray(0, 40)))).toBeNull();
  });
});

describe("cLibraryForInterpreter", () => {
  test("glibc's loaders mean libc.so.6", () => {
    for (const i of ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-linux.so.2", "/lib/ld-linux-armhf.so.3"]) {
      expect(cLibraryForInterpreter(i)).toEqual({ kind: "glibc", path: "libc.so.6", foundBy: `ELF interpreter ${i}` });
    }
  });

  test("musl's loader is its libc", () => {
    expect(cLibraryForInterpreter("/lib/ld-musl-x86_64.so.1")).toEqual({ kind: "musl", path: "/lib/ld-musl-x86_64.so.1", foundBy: "ELF interpreter /lib/ld-musl-x86_64.so.1" });
  });

  test("anything else is not recognised", () => {
    expect(cLibraryForInterpreter("/lib/ld-uClibc.so.0")).toBeNull();
    expect(cLibraryForInterpreter("/system/bin/linker64")).toBeNull();
  });
});

describe("detectCLibrary", () => {
  const withExe = (bytes: Uint8Array, fn: (path: string) => void) => {
    const dir = mkdtempSync(join(tmpdir(), "einhorn-clib-"));
    try {
      writeFileSync(join(dir, "exe"), bytes);
      fn(join(dir, "exe"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  test("follows the executable's interpreter", () => {
    withExe(elf({ is64: true, little: true, interp: "/lib/ld-musl-x86_64.so.1" }), (exe) => {
      expect(detectCLibrary({ exe, exists: () => true }).kind).toBe("musl");
    });
  });

  test("an unknown interpreter is refused, naming it and what is supported", () => {
    withExe(elf({ is64: true, little: true, interp: "/lib/ld-uClibc.so.0" }), (exe) => {
      let err: unknown;
      try { detectCLibrary({ exe }); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(CLibraryError);
      expect((err as Error).message).toBe("unsupported C library: this executable is linked through /lib/ld-uClibc.so.0, and einhorn supports glibc (libc.so.6) or musl (ld-musl-ARCH.so.1)");
    });
  });

  test("without an interpreter: musl only where its loader exists and glibc does not", () => {
    withExe(elf({ is64: true, little: true, interp: null }), (exe) => {
      const alpine = detectCLibrary({ exe, arch: "arm64", exists: (p) => p === "/lib/ld-musl-aarch64.so.1" });
      expect(alpine).toEqual({ kind: "musl", path: "/lib/ld-musl-aarch64.so.1", foundBy: `${exe} names no ELF interpreter; found /lib/ld-musl-aarch64.so.1 and no glibc` });
      // Debian with its musl package installed beside glibc.
      const debian = detectCLibrary({ exe, arch: "x64", exists: (p) => p === "/lib/ld-musl-x86_64.so.1" || p === "/lib/x86_64-linux-gnu/libc.so.6" });
      expect(debian.kind).toBe("glibc");
      expect(detectCLibrary({ exe, arch: "x64", exists: () => false }).path).toBe("libc.so.6");
    });
  });

  test("an unreadable executable falls back to the probe and says why", () => {
    const lib = detectCLibrary({ exe: "/nonexistent/einhorn", arch: "x64", exists: () => false });
    expect(lib.kind).toBe("glibc");
    expect(lib.foundBy).toStartWith("cannot read /nonexistent/einhorn (");
  });
});

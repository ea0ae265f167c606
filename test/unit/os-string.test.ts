// The bytes-in-strings codec (ffi/os-string.ts): every byte sequence survives
// bytes -> string -> bytes, valid UTF-8 decodes as text, and the strings
// survive the JSON of the re-exec handoff.
import { describe, expect, test } from "bun:test";
import { fsPath, hasRawBytes, osBytes, osString } from "../../ffi/os-string";
import { cstr } from "../../ffi/libc";

function rng(seed: number) {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
}

describe("osString / osBytes", () => {
  test("valid UTF-8 decodes as text and has no raw bytes", () => {
    for (const s of ["", "plain", "é", "日本語", "😀 emoji", "\u{10080}", "a\u0000b"]) {
      const b = Buffer.from(s, "utf8");
      expect(osString(b)).toBe(s);
      expect(hasRawBytes(osString(b))).toBe(false);
      expect(osBytes(s).equals(b)).toBe(true);
    }
  });

  test("bytes that are not UTF-8 become U+DC00+byte, one each, and come back exactly", () => {
    const cases: number[][] = [[0xff], [0x61, 0xff, 0xfe, 0x62], [0xc3], [0xc3, 0x28], [0xe0, 0x80, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xaf], [0xf0, 0x9f, 0x98]];
    for (const c of cases) {
      const b = Buffer.from(c);
      const s = osString(b);
      expect(hasRawBytes(s)).toBe(true);
      expect(osBytes(s).toString("hex")).toBe(b.toString("hex"));
    }
    expect(osString(Buffer.from([0x61, 0xff, 0x62]))).toBe("a\udcffb");
    expect(osString(Buffer.from([0xc3, 0xa9, 0xff]))).toBe("é\udcff");
  });

  test("random byte strings round-trip, also through JSON (the handoff)", () => {
    const next = rng(42);
    for (let i = 0; i < 3000; i++) {
      const len = next() % 24;
      const b = Buffer.alloc(len);
      for (let j = 0; j < len; j++) {
        // Mostly high bytes, where UTF-8 goes wrong.
        b[j] = next() % 3 === 0 ? next() % 128 : 0x80 + (next() % 128);
      }
      const s = osString(b);
      expect(osBytes(s).equals(b)).toBe(true);
      expect(osBytes(JSON.parse(JSON.stringify(s))).equals(b)).toBe(true);
    }
  });

  test("a real astral character next to an escape is not confused with it", () => {
    const b = Buffer.concat([Buffer.from("\u{10080}", "utf8"), Buffer.from([0x80])]);
    const s = osString(b);
    expect(osBytes(s).equals(b)).toBe(true);
  });

  test("cstr and fsPath give the kernel the raw bytes", () => {
    const s = osString(Buffer.from([0x2f, 0x74, 0xff]));
    expect(cstr(s).toString("hex")).toBe("2f74ff00");
    expect(fsPath(s)).toEqual(Buffer.from([0x2f, 0x74, 0xff]));
    expect(fsPath("/plain")).toBe("/plain");
  });
});

// Values that come from clients and workers: what the master keeps of them
// (boundedValue) and how the shell shows them on a terminal (terminalSafe).
import { describe, expect, test } from "bun:test";
import { terminalSafe } from "../../src/terminal-text";
import { boundedValue, MAX_CLIENT_VALUE_CHARS } from "../../src/master/commands";

describe("terminalSafe", () => {
  test("controls but newline and tab, DEL, C1 and bidi overrides are shown, not obeyed", () => {
    expect(terminalSafe("a\tb\nc")).toBe("a\tb\nc");
    expect(terminalSafe("\x1b]0;t\x07\x1b[2J")).toBe("^[]0;t^G^[[2J");
    expect(terminalSafe("\x00\x7f\x9b\r")).toBe("^@^?\\x9b^M");
    expect(terminalSafe("\u202eevil\u2066x\u2069")).toBe("\\u202eevil\\u2066x\\u2069");
    expect(terminalSafe("héllo ☃ 🦄")).toBe("héllo ☃ 🦄");
  });
});

describe("boundedValue", () => {
  test("values whose JSON fits are kept as they are, of any type", () => {
    for (const v of [null, 1, "x".repeat(MAX_CLIENT_VALUE_CHARS - 2), [1, 2], { a: "b" }, true]) expect(boundedValue(v)).toEqual({ value: v, cut: null });
  });

  test("longer ones become a string of their start that says how long they were", () => {
    const s = boundedValue("x".repeat(10_000));
    expect(s.cut).toBe(10_002);
    expect(s.value).toBe(`${"x".repeat(MAX_CLIENT_VALUE_CHARS - 40)}... (cut from 10002 characters)`);
    const list = boundedValue(Array.from({ length: 1000 }, (_, i) => i));
    expect(typeof list.value).toBe("string");
    expect(String(list.value).startsWith("[0,1,2,")).toBe(true);
    expect(JSON.stringify(list.value).length).toBeLessThanOrEqual(MAX_CLIENT_VALUE_CHARS + 4);
  });
});

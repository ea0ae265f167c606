// The Psych-style emitter for Einhorn's `state` layout: exact text for each
// construct (what Ruby reads back is checked in test/integration/einhorn-compat).
import { describe, expect, test } from "bun:test";
import { RubyFloat, RubySet, sym, time, toRubyYaml } from "../../src/ruby-yaml";

describe("toRubyYaml", () => {
  test("symbol keys, integer keys, symbols, nil, booleans, numbers and quoted strings", () => {
    const doc = { state: { children: new Map([[123, { type: sym("worker"), acked: true, gone: null, n: 2.5, f: new RubyFloat(1) }]]), name: ":not_a_symbol" } };
    expect(toRubyYaml(doc)).toBe([
      "---",
      ":state:",
      "  :children:",
      "    123:",
      "      :type: :worker",
      "      :acked: true",
      "      :gone:",
      "      :n: 2.5",
      "      :f: 1.0",
      '  :name: ":not_a_symbol"',
      "",
    ].join("\n"));
  });

  test("Time in Psych's form, Set as Psych dumps it, empty collections", () => {
    const doc = { t: time(Date.UTC(2026, 10, 22, 12, 0, 0, 12)), none: time(null), s: new RubySet(["USR2", "KILL"]), e: new RubySet([]), a: [], h: {} };
    expect(toRubyYaml(doc)).toBe([
      "---",
      ":t: 2026-11-22 12:00:00.012000000 +00:00",
      ":none:",
      ":s: !ruby/object:Set",
      "  hash:",
      '    "USR2": true',
      '    "KILL": true',
      ":e: !ruby/object:Set",
      "  hash: {}",
      ":a: []",
      ":h: {}",
      "",
    ].join("\n"));
  });

  test("arrays under keys sit at the key's indent; nested arrays and hashes start on the dash's line", () => {
    const doc = { bind: [["127.0.0.1", 80, ["r"]]], pd: [{ class: "X", server: 7 }] };
    expect(toRubyYaml(doc)).toBe([
      "---",
      ":bind:",
      '- - "127.0.0.1"',
      "  - 80",
      "  - - \"r\"",
      ":pd:",
      '- :class: "X"',
      "  :server: 7",
      "",
    ].join("\n"));
  });

  test("strings holding raw bytes are !binary; line breaks and BOM are escaped", () => {
    expect(toRubyYaml({ b: "a\udcffb", u: "x\u2028y\ufeff" })).toBe(['---', ':b: !binary "Yf9i"', ':u: "x\\u2028y\\ufeff"', ""].join("\n"));
  });
});

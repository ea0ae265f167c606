// EINHORN_TIMEOUTS (src/config/timeouts.ts): what it accepts, what it refuses
// and how it says so, and docs/operations.md's table against the code's.
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { defaultTimeouts, describeChangedTimeouts, parseTimeouts, TIMEOUTS, TimeoutsError } from "../../src/config/timeouts";

describe("EINHORN_TIMEOUTS", () => {
  test("absent, empty or blank: every timeout at its production value, in ms", () => {
    for (const v of [undefined, "", "  "]) expect(parseTimeouts(v)).toEqual(defaultTimeouts());
    expect(defaultTimeouts()["command-first-line"]).toBe(10_000);
    expect(describeChangedTimeouts(defaultTimeouts())).toBe("");
  });

  test("NAME=SECONDS entries, comma-separated, fractions allowed; the rest keep their defaults", () => {
    const t = parseTimeouts(" command-first-line=1, metrics-head = 0.25 ,,");
    expect(t["command-first-line"]).toBe(1000);
    expect(t["metrics-head"]).toBe(250);
    expect(t["command-partial-line"]).toBe(10_000);
    expect(describeChangedTimeouts(t)).toBe("command-first-line=1, metrics-head=0.25");
  });

  test.each([
    ["nope=1", "'nope=1' names no timeout einhorn has; the settable ones are command-first-line, command-partial-line, metrics-head, metrics-answer, ack-wait-report, max-memory-young"],
    ["command-first-line", "'command-first-line': the value must be a number of seconds above 0 and at most 86400, like command-first-line=10"],
    ["command-first-line=0", "'command-first-line=0': the value must be"],
    ["command-first-line=-1", "'command-first-line=-1': the value must be"],
    ["command-first-line=1e3", "'command-first-line=1e3': the value must be"],
    ["command-first-line=86401", "'command-first-line=86401': the value must be"],
    ["metrics-head=5s", "'metrics-head=5s': the value must be a number of seconds above 0 and at most 86400, like metrics-head=5"],
  ])("%p is refused, saying what was given and what is allowed", (given, says) => {
    expect(() => parseTimeouts(given)).toThrow(TimeoutsError);
    expect(() => parseTimeouts(given)).toThrow(`EINHORN_TIMEOUTS: ${says}`);
  });

  test("docs/operations.md's table is the code's: every name, default and meaning", () => {
    const md = readFileSync(join(import.meta.dir, "../../docs/operations.md"), "utf8");
    const section = md.slice(md.indexOf("## Safety timeouts"));
    const rows = [...section.matchAll(/^\| `([a-z-]+)` \| (\d+) s \| (.*) \|$/gm)].map((m) => [m[1], Number(m[2]), m[3]]);
    expect(rows).toEqual(Object.entries(TIMEOUTS).map(([name, t]) => [name, t.seconds, t.what]));
  });
});

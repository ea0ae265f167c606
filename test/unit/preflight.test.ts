// The preflight's verdict: what an --upgrade-check exit status and output mean.
import { describe, expect, test } from "bun:test";
import { HANDOFF_SCHEMA } from "../../src/master/handoff";
import { judgePreflight } from "../../src/master/preflight";

const cmd = ["/usr/local/bin/einhorn"];
const ok = (line: string) => judgePreflight(cmd, { code: 0, signal: null }, line);

describe("judgePreflight", () => {
  test("a binary that reads this master's handoff schema (or newer) passes", () => {
    expect(ok(`{"einhorn":"0.2.0","handoffSchema":${HANDOFF_SCHEMA},"stateSchema":1}\n`)).toEqual({ ok: true, detail: "new einhorn 0.2.0" });
    expect(ok(`loading...\n{"einhorn":"9.0.0","handoffSchema":${HANDOFF_SCHEMA + 3}}`)).toEqual({ ok: true, detail: "new einhorn 9.0.0" });
  });

  test("an older handoff schema is refused, naming both", () => {
    expect(ok(`{"einhorn":"0.0.1","handoffSchema":${HANDOFF_SCHEMA - 1}}`)).toEqual({
      ok: false,
      reason: `the new einhorn (0.0.1) reads handed-over state up to schema ${HANDOFF_SCHEMA - 1}, but this master writes schema ${HANDOFF_SCHEMA}`,
    });
  });

  test("no JSON line: not an einhorn we can hand over to", () => {
    expect(ok("Einhorn 1.1.1\n")).toEqual({
      ok: false,
      reason: "preflight '/usr/local/bin/einhorn --upgrade-check' did not report the state format it reads (is it einhorn?): Einhorn 1.1.1",
    });
  });

  test("a failing exit or a signal is the reason, with the last lines of output", () => {
    expect(judgePreflight(cmd, { code: 1, signal: null }, "a\nb\nc\neinhorn: preload app.ts: Expected \"}\"\n")).toEqual({
      ok: false,
      reason: "preflight '/usr/local/bin/einhorn --upgrade-check' exited with status 1: b | c | einhorn: preload app.ts: Expected \"}\"",
    });
    expect(judgePreflight(cmd, { code: null, signal: "SIGSEGV", signo: 11 }, "")).toEqual({
      ok: false,
      reason: "preflight '/usr/local/bin/einhorn --upgrade-check' was killed by SIGSEGV",
    });
    expect(judgePreflight(cmd, { code: null, signal: null, signo: 32 }, "")).toEqual({
      ok: false,
      reason: "preflight '/usr/local/bin/einhorn --upgrade-check' was killed by signal 32",
    });
  });
});

// --retire-signal on the master's command line: accepted spellings, the
// default, and what a bad value is told.
import { describe, expect, test } from "bun:test";
import { parseMasterArgs, UsageError } from "../../src/config/master-args";
import type { SignalName } from "../../src/signal-names";

const parse = (...flags: string[]) => parseMasterArgs([...flags, "--", "true"], { tmpdir: "/tmp", cpus: 2 });

describe("--retire-signal", () => {
  const ok: [string[], SignalName][] = [
    [[], "SIGUSR2"],
    [["--retire-signal", "TERM"], "SIGTERM"],
    [["--retire-signal", "term"], "SIGTERM"],
    [["--retire-signal", "SIGQUIT"], "SIGQUIT"],
    [["--retire-signal=INT"], "SIGINT"],
    [["--retire-signal", "USR2"], "SIGUSR2"],
    [["--retire-signal", "TERM", "--retire-signal", "QUIT"], "SIGQUIT"],
    // Read by the one signal parser, as the command socket's die reads it: a number names its signal.
    [["--retire-signal", "15"], "SIGTERM"],
    [["--retire-signal", " sigint "], "SIGINT"],
  ];
  for (const [flags, want] of ok) {
    test(`${flags.join(" ") || "(not given)"} -> ${want}`, () => {
      expect(parse(...flags).retireSignal).toBe(want);
    });
  }

  const bad: [string, RegExp][] = [
    ["HUP", /--retire-signal wants one of USR2, TERM, QUIT, INT \(a signal that asks a worker to leave\), got 'HUP'/],
    ["KILL", /got 'KILL'/],
    ["9", /got '9'/],
    ["USR3", /--retire-signal wants one of USR2, TERM, QUIT, INT \(a signal that asks a worker to leave\), got 'USR3'/],
    ["", /got ''/],
  ];
  for (const [value, re] of bad) {
    test(`'${value}' is refused with the allowed names`, () => {
      let err: unknown;
      try { parse("--retire-signal", value); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(UsageError);
      expect((err as Error).message).toMatch(re);
    });
  }
});

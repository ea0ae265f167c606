// Every edge where a signal name enters einhorn parses it once, with the one
// parser (src/signal-names.ts): the command socket's `signal` and `die`
// (answers worded as before), wait statuses, the handoff document read after
// a re-exec (core/state.ts's policy: deciding names refused, records dropped
// with a warning), the handed-over configuration, and shell completion.
// --retire-signal has its own file (retire-signal-option.test.ts).
import { describe, expect, test } from "bun:test";
import { decodeWaitStatus } from "../../ffi/process";
import { complete } from "../../src/cli/shell-script";
import type { Event } from "../../src/core/step";
import { DEFAULT_SETTINGS, initialState, type State, upgradeState } from "../../src/core/state";
import { DEFAULT_SPEC } from "../../src/core/generation";
import type { SignalName } from "../../src/signal-names";
import type { Connection } from "../../src/master/command-server";
import { type CommandContext, handleLine } from "../../src/master/commands";
import { upgradeConfig } from "../../src/master/config";
import { validateHandoff } from "../../src/master/handoff";
import { parseMasterArgs } from "../../src/config/master-args";
import { parseSignal } from "../../src/signal-names";

/** One command line through handleLine: the events it dispatched and its answers. */
function send(line: string, retireSignal: SignalName = "SIGUSR2") {
  const state: State = { ...initialState(DEFAULT_SETTINGS, 0, { ...DEFAULT_SPEC, retireSignal }) };
  state.workers = [100, 101].map((pid, index) => ({ pid, index, version: 0, spawnedAt: 0, ackedAt: 1, signals: [], lastPing: null }));
  const events: Event[] = [];
  const answers: Array<{ message: string; error: boolean }> = [];
  const ctx = { state: () => state, dispatch: (e: Event) => events.push(e), log: () => {} } as unknown as CommandContext;
  const conn = {
    format: "yaml", describe: () => "test",
    reply: (_id: unknown, message: string, opts: { error?: boolean } = {}) => answers.push({ message, error: opts.error === true }),
  } as unknown as Connection;
  handleLine(ctx, conn, JSON.stringify({ command: line.split(" ")[0], args: line.split(" ").slice(1).filter(Boolean) }));
  return { events, answers };
}

describe("command socket: signal", () => {
  test("every spelling is read once; the core gets canonical names; the answer is Einhorn's, with short names", () => {
    const r = send("signal usr1 12 SIGHUP rtmin+2");
    expect(r.events).toEqual([{ type: "signal-workers", signals: ["SIGUSR1", "SIGUSR2", "SIGHUP", "SIGRTMIN+2"] }]);
    expect(r.answers).toEqual([{ message: "Successfully sent USR1, USR2, HUP, RTMIN+2s to 2 processes: [100, 101]", error: false }]);
  });

  const refusals: Array<[string, string]> = [
    ["signal BOGUS", "'BOGUS' is not a signal name; try USR1, USR2, HUP, TERM, INT, QUIT, WINCH (STOP, TSTP, TTIN and TTOU are refused)"],
    ["signal HUP 999", "'999' is not a signal name; try USR1, USR2, HUP, TERM, INT, QUIT, WINCH (STOP, TSTP, TTIN and TTOU are refused)"],
    ["signal STOP", "signal STOP refused: STOP pauses workers without ending them (STOP, TSTP, TTIN and TTOU are refused); try USR1, USR2, HUP, TERM, INT, QUIT, WINCH"],
    ["signal 20", "signal TSTP refused: TSTP pauses workers without ending them (STOP, TSTP, TTIN and TTOU are refused); try USR1, USR2, HUP, TERM, INT, QUIT, WINCH"],
    ["signal", "signal needs at least one signal name, like 'signal USR1' or 'signal HUP TERM'"],
  ];
  for (const [line, message] of refusals) {
    test(`${line}: refused, nothing sent`, () => {
      const r = send(line);
      expect(r.events).toEqual([]);
      expect(r.answers).toEqual([{ message, error: true }]);
    });
  }
});

describe("command socket: die", () => {
  test("without a name: the retire signal; with one, in any spelling: that signal", () => {
    // No name: each worker gets its own generation's retire signal (the core decides).
    expect(send("die").events).toEqual([{ type: "stop" }]);
    const byRetire = send("die", "SIGTERM");
    expect(byRetire.events).toEqual([{ type: "stop" }]);
    expect(byRetire.answers[0]!.message).toContain("Successfully sent TERMs");
    const r = send("die 15");
    expect(r.events).toEqual([{ type: "stop", signal: "SIGTERM" }]);
    expect(r.answers).toEqual([{ message: "Einhorn is going down! Successfully sent TERMs to 2 processes: [100, 101]", error: false }]);
    expect(send("die sigquit").events).toEqual([{ type: "stop", signal: "SIGQUIT" }]);
  });

  const refusals: Array<[string, string]> = [
    ["die NOPE", "'NOPE' is not a signal name; die takes one, like USR2 (the default) or TERM"],
    ["die TSTP", "die TSTP refused: TSTP pauses workers without ending them (STOP, TSTP, TTIN and TTOU are refused); die takes one, like USR2 (the default) or TERM"],
    ["die USR2 TERM", "die takes at most one signal name, got 'USR2 TERM'"],
    ["die winch", "die WINCH refused: workers ignore WINCH unless they handle it, so the master would wait for them for ever; die takes a signal that ends a worker, like USR2 (the default), TERM, INT or QUIT"],
    // An alias is read as its canonical name, and answered with it.
    ["die CLD", "die CHLD refused: workers ignore CHLD unless they handle it, so the master would wait for them for ever; die takes a signal that ends a worker, like USR2 (the default), TERM, INT or QUIT"],
    ["die 18", "die CONT refused: workers ignore CONT unless they handle it, so the master would wait for them for ever; die takes a signal that ends a worker, like USR2 (the default), TERM, INT or QUIT"],
  ];
  for (const [line, message] of refusals) {
    test(`${line}: refused, the master keeps running`, () => {
      const r = send(line);
      expect(r.events).toEqual([]);
      expect(r.answers).toEqual([{ message, error: true }]);
    });
  }
});

describe("wait statuses", () => {
  test("the signal that killed a child is named once, in ffi's decoder; an exit code is not a signal", () => {
    expect(decodeWaitStatus(7 << 8)).toEqual({ code: 7, signal: null });
    expect(decodeWaitStatus(15)).toEqual({ code: null, signal: "SIGTERM", signo: 15 });
    expect(decodeWaitStatus(9 | 0x80)).toEqual({ code: null, signal: "SIGKILL", signo: 9 }); // core dumped
    expect(decodeWaitStatus(34)).toEqual({ code: null, signal: "SIGRTMIN", signo: 34 });
    expect(decodeWaitStatus(32)).toEqual({ code: null, signal: null, signo: 32 });
  });
});

describe("the handoff document read after a re-exec", () => {
  const minimal = { config: { program: ["true"] }, listeners: [], commandFd: 5 };
  const state = (patch: Record<string, unknown>) => ({ ...initialState(DEFAULT_SETTINGS, 0), ...patch });

  test("a retire signal that is not a signal name refuses the document, naming field and value", () => {
    const doc = { ...minimal, state: state({ settings: { ...DEFAULT_SETTINGS, retireSignal: "SIGBOGUS" } }) };
    expect(() => validateHandoff(doc)).toThrow("the handed-over state's settings.retireSignal is 'SIGBOGUS', which is not a signal name (like SIGUSR2 or SIGTERM)");
  });

  test("so does the signal of a stop under way, and a signal to act on now", () => {
    expect(() => validateHandoff({ ...minimal, state: state({ stopping: { signal: 15, since: 0 } }) }))
      .toThrow("the handed-over state's stopping.signal is 15, which is not a signal name (like SIGUSR2 or SIGTERM)");
    expect(() => validateHandoff({ ...minimal, state: state({}), signals: ["SIGHUP", "SIGNOPE"] }))
      .toThrow(`the handed-over state's signals list has "SIGNOPE", which is not a signal name (like SIGHUP or SIGTERM)`);
  });

  test("names an older writer recorded read as canonical ones (SIGIOT is SIGABRT, USR2 is SIGUSR2)", () => {
    const s = upgradeState(state({
      schema: 1, generations: undefined,
      settings: { ...DEFAULT_SETTINGS, retireSignal: "TERM" },
      stopping: { signal: "usr2", since: 5 },
      workers: [{ pid: 7, index: 0, version: 0, spawnedAt: 0, ackedAt: 1, signals: [{ signal: "SIGIOT", at: 2 }], lastPing: null }],
      exits: { 0: { total: 1, beforeAck: 0, lastCode: null, lastSignal: "SIGPOLL", lastAt: 3 } },
    }), 10);
    // (A schema-1 writer kept the retire signal in its settings: it becomes the spec's.)
    expect(s.generations["0"]!.spec.retireSignal).toBe("SIGTERM");
    expect(s.stopping).toEqual({ signal: "SIGUSR2", since: 5 });
    expect(s.workers[0]!.signals).toEqual([{ signal: "SIGABRT", at: 2 }]);
    expect(s.exits["0"]!.lastSignal).toBe("SIGIO");
    expect(validateHandoff({ ...minimal, state: state({}), signals: ["HUP", "SIGTERM"] }).signals).toEqual(["SIGHUP", "SIGTERM"]);
  });

  test("a record that is not a signal name is dropped with a warning; the document is still read", () => {
    const warnings: string[] = [];
    const doc = state({
      workers: [{ pid: 7, index: 0, version: 0, spawnedAt: 0, ackedAt: 1, signals: [{ signal: "SIGHUP", at: 1 }, { signal: "SIGWAT", at: 2 }, { signal: null, at: 3 }], lastPing: null }],
      exits: { 2: { total: 1, beforeAck: 0, lastCode: null, lastSignal: "SIG99", lastAt: 3 } },
    });
    expect(() => validateHandoff({ ...minimal, state: doc })).not.toThrow();
    const s = upgradeState(doc, 10, (m) => warnings.push(m));
    expect(s.workers[0]!.signals).toEqual([{ signal: "SIGHUP", at: 1 }]);
    expect(s.exits["2"]!.lastSignal).toBeNull();
    expect(warnings).toEqual([
      "Dropped 'SIGWAT' from worker 7's signal history in the handed-over state: not a signal name",
      "Dropped null from worker 7's signal history in the handed-over state: not a signal name",
      "Dropped 'SIG99' from the last exit of index 2 in the handed-over state: not a signal name",
    ]);
  });

  test("a record an older einhorn wrote as SIG<number> (a real-time signal Node had no name for) is read by its number", () => {
    const warnings: string[] = [];
    const doc = state({
      workers: [{ pid: 7, index: 0, version: 0, spawnedAt: 0, ackedAt: 1, signals: [{ signal: "SIG64", at: 1 }], lastPing: null }],
      exits: { 0: { total: 1, beforeAck: 0, lastCode: null, lastSignal: "SIG34", lastAt: 3 }, 1: { total: 1, beforeAck: 0, lastCode: null, lastSignal: "SIG32", lastAt: 3 } },
    });
    const s = upgradeState(doc, 10, (m) => warnings.push(m));
    expect(s.workers[0]!.signals).toEqual([{ signal: "SIGRTMAX", at: 1 }]);
    expect(s.exits["0"]!.lastSignal).toBe("SIGRTMIN");
    // 32 and 33 have no name (glibc keeps them): still dropped, with the warning.
    expect(s.exits["1"]!.lastSignal).toBeNull();
    expect(warnings).toEqual(["Dropped 'SIG32' from the last exit of index 1 in the handed-over state: not a signal name"]);
  });

  test("the handed-over configuration's retire signal is read the same way", () => {
    const defaults = parseMasterArgs(["--", "true"], { tmpdir: "/tmp", cpus: 2 });
    expect(upgradeConfig({ program: ["x"], retireSignal: "SIGQUIT" }, 1, defaults).retireSignal).toBe("SIGQUIT");
    expect(upgradeConfig({ program: ["x"] }, 1, defaults).retireSignal).toBe("SIGUSR2");
    expect(() => upgradeConfig({ program: ["x"], retireSignal: "QUITE" }, 1, defaults))
      .toThrow(`the handed-over configuration's retireSignal is "QUITE", which is not a signal name (like SIGUSR2 or SIGTERM)`);
  });
});

describe("shell completion", () => {
  test("signal and die offer the standard signals' short names, each one the master reads (job control is refused, so not offered)", () => {
    const [all] = complete("signal ");
    expect(all.length).toBe(31 - 4);
    for (const refused of ["STOP", "TSTP", "TTIN", "TTOU"]) expect(all).not.toContain(refused);
    for (const name of all) expect(parseSignal(name)).not.toBeNull();
    expect(complete("die al")).toEqual([["ALRM"], "al"]);
    expect(complete("signal US")).toEqual([["USR1", "USR2"], "US"]);
  });
});

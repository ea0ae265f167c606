// The command registry (src/command-registry.ts) and the master's handlers
// for it (src/master/commands.ts): help and the shell's completion come from
// the registry, every registered command has a handler, and every refusal
// keeps its wording (Einhorn's clients and people's scripts read it).
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { argumentChoices, complete, completionNames } from "../../src/cli/shell-script";
import { COMMANDS, COMMAND_NAMES, CONFIG_KEY_NAMES, type CommandName, commandList, helpText, parseSignalArg } from "../../src/command-registry";
import { DEFAULT_SETTINGS, initialState, type State } from "../../src/core/state";
import { type Event, step } from "../../src/core/step";
import { type CommandContext, handleLine } from "../../src/master/commands";
import type { Connection } from "../../src/master/command-server";
import { shortSignalName, STANDARD_SIGNALS } from "../../src/signal-names";

/**
 * What a client saw and what the master was asked to do, for one request line
 * sent to a master with two workers (pids 100 and 101) run by the real core.
 */
function send(line: string | Record<string, unknown>): string[] {
  const seen: string[] = [];
  let state: State = initialState({ ...DEFAULT_SETTINGS, number: 2 }, 0);
  let nextPid = 100;
  const apply = (e: Event) => {
    const queue = [e];
    while (queue.length) {
      const r = step(state, queue.shift()!, 0);
      state = r.state;
      for (const f of r.effects) if (f.type === "spawn") queue.push({ type: "spawned", spawnId: f.spawnId, pid: nextPid++ });
    }
  };
  apply({ type: "start" });
  const ctx: CommandContext = {
    state: () => state,
    dispatch: (e) => { seen.push(`dispatch ${JSON.stringify(e)}`); apply(e); },
    report: () => ({ report: true }),
    einhornState: () => "(einhorn layout)",
    status: (format) => `(status ${format})`,
    masterPid: 42,
    commandName: "web",
    einhornVersion: "1.2.3",
    setVerbosity: (v) => seen.push(`verbosity ${v}`),
    upgrade: (_conn, id, mode) => seen.push(`upgrade ${mode} ${JSON.stringify(id)}`),
    reload: (_conn, id) => seen.push(`reload ${JSON.stringify(id)}`),
    log: (level, message) => { if (level !== "debug") seen.push(`log ${level}: ${message}`); },
  };
  // Only what handleLine uses of a connection.
  const conn = {
    format: "yaml",
    reply: (id: unknown, message: string, opts: { error?: boolean } = {}) => seen.push(`${opts.error ? "error" : "reply"} ${JSON.stringify(id)} ${message}`),
    close: () => seen.push("close"),
    describe: () => "test client",
  } as unknown as Connection;
  handleLine(ctx, conn, typeof line === "string" ? line : JSON.stringify(line));
  return seen;
}

const cmd = (command: string, ...args: string[]) => send({ command, args, id: 1 });
/** The one error answer to a request, or a failure naming what came instead. */
const refusal = (command: string, ...args: string[]) => {
  const seen = cmd(command, ...args);
  expect(seen).toHaveLength(1);
  expect(seen[0]).toStartWith("error 1 ");
  return seen[0]!.slice("error 1 ".length);
};

const NAMES_IN_ORDER = "worker:ack, worker:ping, ehlo, help, state, status, inc, dec, set_workers, quieter, louder, signal, die, config, upgrade, upgrade_fleet, reload";

describe("help", () => {
  test("is byte for byte what the master has always printed", () => {
    expect(helpText()).toBe([
      "You are speaking to the Einhorn command socket. You can run the following commands:",
      "",
      "config: Change settings: config KEY=VALUE ... or a YAML mapping",
      "dec: Decrement the number of workers (never below 1)",
      "die: Send a signal (default USR2) to every worker, stop respawning, exit once they are gone: die [SIG]",
      "ehlo: Print a welcome banner naming the master",
      "help: List the commands",
      "inc: Increment the number of workers",
      "louder: Increase the master's log verbosity",
      "quieter: Decrease the master's log verbosity",
      "reload: Re-execute the master without replacing workers",
      "set_workers: Set the number of workers: set_workers N (1..1000)",
      "signal: Send signals to every worker: signal SIG [SIG...]",
      "state: Dump the master's state: Einhorn's layout (Ruby YAML, for Einhorn's clients); 'state json' or 'state yaml' for einhorn's own schema",
      "status: Workers at a glance: state, uptime, CPU, memory, restarts ('status json' for scripts)",
      "upgrade: Smooth upgrade: new workers replace old ones one for one as they ACK",
      "upgrade_fleet: Fleet upgrade: start every new worker, retire all old ones once every new one ACKed",
      "worker:ack: Worker ACK: the worker is up (sent by workers, not people)",
      "worker:ping: Worker ping: records when a worker last checked in",
    ].join("\n"));
    expect(cmd("help")).toEqual([`reply 1 ${helpText()}`]);
  });

  test("lists every registered command, once", () => {
    const lines = helpText().split("\n").slice(2);
    expect(lines.map((l) => l.slice(0, l.indexOf(": ")))).toEqual([...COMMAND_NAMES].sort());
    for (const name of COMMAND_NAMES) expect(lines).toContain(`${name}: ${COMMANDS[name].description}`);
  });
});

describe("unknown commands and unparsable lines", () => {
  test("name every command in registry order, as before", () => {
    expect(commandList()).toBe(NAMES_IN_ORDER);
    expect(cmd("frobnicate")).toEqual([`error 1 Unrecognized command: "frobnicate". Commands: ${NAMES_IN_ORDER}`]);
    // Object's own properties are not commands.
    for (const name of ["constructor", "__proto__", "toString", "HELP", ""]) {
      expect(cmd(name)).toEqual([`error 1 Unrecognized command: ${JSON.stringify(name)}. Commands: ${NAMES_IN_ORDER}`]);
    }
    expect(send({ args: [] })).toEqual([`error undefined No "command" given. Commands: ${NAMES_IN_ORDER}`]);
    expect(send("[1, 2]")).toEqual([`error undefined Could not parse command: a request is a mapping. Commands: ${NAMES_IN_ORDER}`]);
    expect(send({ command: 5 })).toEqual([`error undefined "command" must be a string, got 5. Commands: ${NAMES_IN_ORDER}`]);
  });
});

describe("handlers", () => {
  test("every registered command has one: none is answered as unknown", () => {
    for (const name of COMMAND_NAMES) {
      const seen = cmd(name);
      expect(seen.length).toBeGreaterThan(0);
      for (const s of seen) expect(s).not.toContain("Unrecognized command");
    }
  });

  test("each does what it always did with good arguments", () => {
    const table: Record<CommandName, Array<[string[], string[]]>> = {
      "worker:ack": [[[], ["log warn: Received worker:ack without a numeric pid from test client; ignoring", "close"]]],
      "worker:ping": [[[], ["log warn: Received worker:ping without a numeric pid from test client; ignoring", "close"]]],
      ehlo: [[[], ["reply 1 Welcome, friend! You are speaking to Einhorn Master Process 42 (web).\nThis is Einhorn 1.2.3."]]],
      help: [[["ignored"], [`reply 1 ${helpText()}`]]],
      state: [
        [[], ["reply 1 (einhorn layout)"]],
        [["json"], ['reply 1 {"report":true}']],
        [["yaml", "extra words are ignored"], ["reply 1 report: true\n"]],
      ],
      status: [[[], ["reply 1 (status text)"]], [["json"], ["reply 1 (status json)"]], [["text"], ["reply 1 (status text)"]]],
      inc: [[[], ['dispatch {"type":"inc"}', "reply 1 Incrementing number of workers from 2 -> 3"]]],
      dec: [[["x"], ['dispatch {"type":"dec"}', "reply 1 Decrementing number of workers from 2 -> 1"]]],
      set_workers: [
        [["5"], ['dispatch {"type":"set-workers","number":5}', "reply 1 Altering worker count, 2 -> 5. Will spin up additional workers."]],
        [["1"], ['dispatch {"type":"set-workers","number":1}', "reply 1 Altering worker count, 2 -> 1. Will gracefully terminate workers."]],
        [["2"], ['dispatch {"type":"set-workers","number":2}', "reply 1 Altering worker count, 2 -> 2."]],
      ],
      quieter: [[[], ['dispatch {"type":"settings","patch":{"verbosity":2}}', "verbosity 2", "reply 1 Verbosity set to 2 (0 debug, 1 info, 2 errors only)"]]],
      louder: [[[], ['dispatch {"type":"settings","patch":{"verbosity":0}}', "verbosity 0", "reply 1 Verbosity set to 0 (0 debug, 1 info, 2 errors only)"]]],
      signal: [[["usr1", "SIGterm", "1"], ['dispatch {"type":"signal-workers","signals":["SIGUSR1","SIGTERM","SIGHUP"]}', "reply 1 Successfully sent USR1, TERM, HUPs to 2 processes: [100, 101]"]]],
      die: [
        [[], ["reply 1 Einhorn is going down! Successfully sent USR2s to 2 processes: [100, 101]", 'dispatch {"type":"stop"}']],
        [["term"], ["reply 1 Einhorn is going down! Successfully sent TERMs to 2 processes: [100, 101]", 'dispatch {"type":"stop","signal":"SIGTERM"}']],
      ],
      config: [
        [["number=3", "ack_timeout=null"], ['dispatch {"type":"settings","patch":{"number":3,"ackTimeout":null}}', "reply 1 Config updated: number=3, ack_timeout=null"]],
        [["{seconds: 2.5}"], ['dispatch {"type":"settings","patch":{"seconds":2.5}}', "reply 1 Config updated: seconds=2.5"]],
      ],
      upgrade: [[[], ["upgrade smooth 1"]]],
      upgrade_fleet: [[[], ["upgrade fleet 1"]]],
      reload: [[[], ["reload 1"]]],
    };
    for (const [name, cases] of Object.entries(table)) for (const [args, want] of cases) expect(cmd(name, ...args)).toEqual(want);
    expect(send({ command: "worker:ack", pid: "123" })).toEqual(['dispatch {"type":"ack","pid":123}', "close"]);
    expect(send({ command: "worker:ping", pid: 5, request_id: "r" })).toEqual(['dispatch {"type":"ping","pid":5,"requestId":"r"}', "close"]);
    expect(send({ command: "ehlo", user: "alice" })[0]).toStartWith("reply undefined Welcome, alice! ");
  });
});

describe("argument rules refuse with the messages they always gave", () => {
  test("state and status", () => {
    expect(refusal("state", "xml")).toBe("state takes nothing (Einhorn's layout, for Einhorn's clients), 'json' or 'yaml' (einhorn's own schema), got 'xml'");
    expect(refusal("state", "x", "json")).toBe("state takes nothing (Einhorn's layout, for Einhorn's clients), 'json' or 'yaml' (einhorn's own schema), got 'x'");
    expect(refusal("status", "yaml")).toBe("status takes 'json' or nothing (the table), got 'yaml'");
    expect(refusal("status", "x", "json")).toBe("status takes 'json' or nothing (the table), got 'x json'");
  });

  test("set_workers", () => {
    for (const [args, got] of [[[], "nothing"], [["0"], "'0'"], [["1001"], "'1001'"], [["-1"], "'-1'"], [["abc"], "'abc'"], [["3", "4"], "'3 4'"], [["2.5"], "'2.5'"]] as const) {
      expect(refusal("set_workers", ...args)).toBe(`set_workers takes one whole number from 1 to 1000, got ${got}`);
    }
  });

  test("signal: nothing sent unless every name is good", () => {
    expect(refusal("signal")).toBe("signal needs at least one signal name, like 'signal USR1' or 'signal HUP TERM'");
    for (const bad of ["NOPE", "0", "1000", "SIGNOPE"]) {
      expect(refusal("signal", "USR1", bad)).toBe(`'${bad}' is not a signal name; try USR1, USR2, HUP, TERM, INT, QUIT, WINCH (STOP, TSTP, TTIN and TTOU are refused)`);
    }
    // Job-control signals are signals: the refusal names the policy, not a typo.
    for (const [bad, name] of [["STOP", "STOP"], ["SIGTSTP", "TSTP"], ["ttin", "TTIN"], ["19", "STOP"], ["22", "TTOU"]]) {
      expect(refusal("signal", "USR1", bad!)).toBe(`signal ${name} refused: ${name} pauses workers without ending them (STOP, TSTP, TTIN and TTOU are refused); try USR1, USR2, HUP, TERM, INT, QUIT, WINCH`);
    }
  });

  test("die", () => {
    expect(refusal("die", "TERM", "KILL")).toBe("die takes at most one signal name, got 'TERM KILL'");
    for (const bad of ["NOPE", "SIGNOPE", "0"]) expect(refusal("die", bad)).toBe(`'${bad}' is not a signal name; die takes one, like USR2 (the default) or TERM`);
    for (const [bad, name] of [["STOP", "STOP"], ["19", "STOP"], ["sigttou", "TTOU"]]) {
      expect(refusal("die", bad!)).toBe(`die ${name} refused: ${name} pauses workers without ending them (STOP, TSTP, TTIN and TTOU are refused); die takes one, like USR2 (the default) or TERM`);
    }
    for (const ignored of ["WINCH", "CHLD", "CONT", "urg", "SIGWINCH"]) {
      const name = ignored.toUpperCase().replace(/^SIG/, "");
      expect(refusal("die", ignored)).toBe(`die ${name} refused: workers ignore ${name} unless they handle it, so the master would wait for them for ever; die takes a signal that ends a worker, like USR2 (the default), TERM, INT or QUIT`);
    }
  });

  test("config", () => {
    const known = "number, seconds, signal_timeout, max_unacked, max_upgrade_additional, ack_timeout, upgrade_max_deaths, upgrade_bake";
    expect(refusal("config")).toBe(`config needs settings, as KEY=VALUE pairs or a YAML mapping. Known keys: ${known}`);
    expect(refusal("config", "{}")).toBe(`config: no settings given. Known settings: ${known}`);
    expect(refusal("config", "foo=1")).toBe(`config: unknown setting 'foo'. Known settings: ${known}`);
    expect(refusal("config", "constructor=1")).toBe(`config: unknown setting 'constructor'. Known settings: ${known}`);
    expect(refusal("config", "number=0")).toBe('config: number must be a whole number 1..1000; "0" is not a whole number from 1 to 1000');
    expect(refusal("config", "seconds=x")).toBe('config: seconds must be a number of seconds > 0; "x" is not a number of seconds greater than 0');
    expect(refusal("config", "number=3", "x")).toBe("config: 'x' is not KEY=VALUE");
    expect(refusal("config", "[1]")).toBe("config: expected a mapping like {number: 4}");
    expect(refusal("config", "'unterminated")).toBe("config: not a YAML document: Missing closing 'quote");
  });
});

describe("completion comes from the registry", () => {
  test("offers every command a person sends, and no worker-only one", () => {
    const names = completionNames();
    for (const name of COMMAND_NAMES) {
      if (COMMANDS[name].sender === "person") expect(names).toContain(name);
      else expect(names).not.toContain(name);
    }
    expect(names.filter((n) => !(n in COMMANDS))).toEqual(["exit", "quit"]);
  });

  /** Signal names without SIG that `accept` takes, from the standard signals (src/signal-names.ts). */
  const signalsWhere = (accept: (name: string) => boolean) => STANDARD_SIGNALS.map(shortSignalName).filter(accept).sort();

  test("each command's first and later arguments", () => {
    const signalNames = signalsWhere((n) => parseSignalArg(n) !== null);
    const dieNames = signalNames.filter((n) => !["WINCH", "CHLD", "URG", "CONT"].includes(n));
    const configKeys = ["number=", "seconds=", "signal_timeout=", "max_unacked=", "max_upgrade_additional=", "ack_timeout=", "upgrade_max_deaths=", "upgrade_bake="];
    // [first argument, second argument]; a new command needs its line here.
    const expected: Record<CommandName, [readonly string[], readonly string[]]> = {
      "worker:ack": [[], []],
      "worker:ping": [[], []],
      ehlo: [[], []],
      help: [[], []],
      state: [["json", "yaml"], []],
      status: [["json"], []],
      inc: [[], []],
      dec: [[], []],
      set_workers: [[], []],
      quieter: [[], []],
      louder: [[], []],
      signal: [signalNames, signalNames],
      die: [dieNames, []],
      config: [configKeys, configKeys],
      upgrade: [[], []],
      upgrade_fleet: [[], []],
      reload: [[], []],
    };
    expect(signalNames).toContain("USR2");
    expect(signalNames).not.toContain("STOP");
    for (const name of COMMAND_NAMES) {
      const [first, second] = expected[name];
      expect([name, [...argumentChoices(name, 0)]]).toEqual([name, [...first]]);
      expect([name, [...argumentChoices(name, 1)]]).toEqual([name, [...second]]);
    }
  });

  test("every word offered is accepted by the master", () => {
    for (const name of COMMAND_NAMES) {
      for (const word of COMMANDS[name].args.choices(0)) {
        // config keys need a value; the rule is checked with a good one.
        const args = name === "config" ? [`${word}${word === "number=" ? "3" : "1"}`] : [word];
        const seen = cmd(name, ...args);
        expect([name, word, seen.filter((s) => s.startsWith("error"))]).toEqual([name, word, []]);
      }
    }
  });

  test("through the readline completer, case-insensitively, for the last command of a line", () => {
    expect(complete("signal us")).toEqual([["USR1", "USR2"], "us"]);
    expect(complete("signal USR1 te")).toEqual([["TERM"], "te"]);
    expect(complete("die USR1 ")).toEqual([[], ""]);
    expect(complete("die WIN")).toEqual([[], "WIN"]);
    expect(complete("signal WIN")).toEqual([["WINCH"], "WIN"]);
    expect(complete("status ")).toEqual([["json"], ""]);
    expect(complete("state json ")).toEqual([[], ""]);
    expect(complete("config max_u")).toEqual([["max_unacked=", "max_upgrade_additional="], "max_u"]);
    expect(complete("config number=2 ack")).toEqual([["ack_timeout="], "ack"]);
    expect(complete("inc; state y")).toEqual([["yaml"], "y"]);
    expect(complete("inc; st")).toEqual([["state", "status"], "st"]);
    expect(complete("worker:ack ")).toEqual([[], ""]);
    expect(complete("frob ")).toEqual([[], ""]);
  });
});

describe("docs/state.md", () => {
  const md = readFileSync(join(import.meta.dir, "../../docs/state.md"), "utf8");
  /** The first column of the Markdown table under the line starting with `heading`. */
  const firstColumn = (heading: string) => {
    const from = md.indexOf(heading);
    expect(from).toBeGreaterThanOrEqual(0);
    const table = md.slice(from).split("\n\n").find((block) => block.startsWith("|"))!;
    return table.split("\n").slice(2).map((row) => /^\| `([^`]+)` \|/.exec(row)?.[1]);
  };

  test("documents every registered command, and no other", () => {
    expect(firstColumn("## Commands").sort()).toEqual([...COMMAND_NAMES].sort());
  });

  test("documents every config key, in the order the refusals list them", () => {
    expect(firstColumn("**`config` settings**")).toEqual(CONFIG_KEY_NAMES);
  });
});

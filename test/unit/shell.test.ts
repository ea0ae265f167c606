// The pure parts of `einhorn sh`: option parsing, script splitting, failure
// detection and completion.
import { describe, expect, test } from "bun:test";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EXIT, parseShellArgs, ShellUsageError, shellUsage } from "../../src/cli/shell";
import { complete, completionNames, isFailure, parseScript, ScriptError, toResponse } from "../../src/cli/shell-script";
import { currentUser, Deadline, messageText, TimeoutError } from "../../src/cli/shell-session";
import { COMMANDS } from "../../src/command-registry";

const words = (script: string) => parseScript(script).map((c) => [c.command, ...c.args]);

describe("parseScript", () => {
  test("splits on ';' and newlines, words on whitespace, drops empty commands", () => {
    expect(words("state")).toEqual([["state"]]);
    expect(words("inc; state json")).toEqual([["inc"], ["state", "json"]]);
    expect(words("  inc ;;  ; set_workers\t3 \n dec;")).toEqual([["inc"], ["set_workers", "3"], ["dec"]]);
    expect(words("")).toEqual([]);
    expect(words(" ; ")).toEqual([]);
  });

  test("quotes keep spaces and semicolons; backslashes escape", () => {
    expect(words(`config '{number: 2; x}'`)).toEqual([["config", "{number: 2; x}"]]);
    expect(words(`config "a \\"b\\" \\\\ \\n"`)).toEqual([["config", 'a "b" \\ \\n']]);
    expect(words(`signal a\\;b; x`)).toEqual([["signal", "a;b"], ["x"]]);
    expect(words(`x '' "" y`)).toEqual([["x", "", "", "y"]]);
    expect(words(`x ab'c d'"e"f`)).toEqual([["x", "abc def"]]);
  });

  test("'#' starting a word comments out the rest of the line", () => {
    expect(words("inc # more\nstate # x; dec")).toEqual([["inc"], ["state"]]);
    expect(words("config a#b")).toEqual([["config", "a#b"]]);
  });

  test("keeps each command's source text for messages", () => {
    expect(parseScript(" inc ; state  json ").map((c) => c.text)).toEqual(["inc", "state  json"]);
  });

  test("an unterminated quote or trailing backslash is an error naming where", () => {
    expect(() => parseScript("config 'a")).toThrow(ScriptError);
    expect(() => parseScript('state "json')).toThrow(/unterminated " quote starting at character 7/);
    expect(() => parseScript("x \\")).toThrow(ScriptError);
  });
});

describe("isFailure", () => {
  test("error: true is failure, whatever the text", () => {
    expect(isFailure({ message: "All good", error: true })).toBe(true);
    expect(isFailure({ message: "All good", error: "bad value" })).toBe(true);
    expect(isFailure({ message: "All good", error: false })).toBe(false);
  });

  test("known error answers of a master without the error field", () => {
    for (const m of [
      'Unrecognized command: "x". Commands: ...',
      "Could not parse command: not a YAML document",
      "Permission denied: uid 5 may not use this command socket",
      "Upgrade failed: new workers died",
      "upgrade is not available yet: seamless upgrades land later",
    ]) expect(isFailure({ message: m })).toBe(true);
    for (const m of ["Incrementing number of workers from 1 -> 2", "Upgrade done", "", "workers: []"]) expect(isFailure({ message: m })).toBe(false);
  });

  test("toResponse accepts Ruby-style symbol keys and odd messages", () => {
    expect(toResponse({ ":message": "hi", ":request_id": 3 })).toEqual({ message: "hi", request_id: 3 });
    expect(toResponse({ message: null })).toEqual({ message: "" });
    expect(toResponse(["x"])).toBeNull();
    expect(toResponse("x")).toBeNull();
  });

  test("messageText ends in exactly one newline, and is empty for an empty message", () => {
    expect(messageText({ message: "a" })).toBe("a\n");
    expect(messageText({ message: "a\n" })).toBe("a\n");
    expect(messageText({ message: "" })).toBe("");
  });
});

describe("completion", () => {
  test("offers every command a person may send, plus quit and exit, but not the worker ones", () => {
    const names = completionNames();
    for (const c of Object.keys(COMMANDS).filter((c) => !c.startsWith("worker:"))) expect(names).toContain(c);
    expect(names).toContain("quit");
    expect(names).not.toContain("worker:ack");
  });

  test("completes the first word, then known arguments", () => {
    expect(complete("he")).toEqual([["help"], "he"]);
    expect(complete("up")).toEqual([["upgrade", "upgrade_fleet"], "up"]);
    expect(complete("zz")[0]).toEqual(completionNames());
    expect(complete("state j")).toEqual([["json"], "j"]);
    expect(complete("signal US")).toEqual([["USR1", "USR2"], "US"]);
    expect(complete("inc ")).toEqual([[], ""]);
  });
});

describe("parseShellArgs", () => {
  test("socket path: -d, else -c NAME, else the default, all in the temp dir like the master", async () => {
    expect((await parseShellArgs([])).socketPath).toBe(join(tmpdir(), "einhorn.sock"));
    expect((await parseShellArgs(["-c", "web"])).socketPath).toBe(join(tmpdir(), "einhorn-web.sock"));
    expect((await parseShellArgs(["--command-name=web"])).socketPath).toBe(join(tmpdir(), "einhorn-web.sock"));
    expect((await parseShellArgs(["-c", "web", "-d", "/x.sock"])).socketPath).toBe("/x.sock");
    expect((await parseShellArgs(["--socket-path", "/y.sock"])).socketPath).toBe("/y.sock");
  });

  test("-e, --timeout and -v", async () => {
    const c = await parseShellArgs(["-e", "inc; state", "--timeout", "1.5", "-v"]);
    expect(c).toMatchObject({ script: "inc; state", timeout: 1.5, verbose: true, help: false });
    expect(await parseShellArgs([])).toMatchObject({ script: null, timeout: null, verbose: false });
    expect((await parseShellArgs(["-e", "-weird"])).script).toBe("-weird");
  });

  test("refuses unknown options, stray words, repeats, missing and bad values", async () => {
    for (const args of [["-x"], ["--frob"], ["state"], ["-e", "a", "-e", "b"], ["-d", "a", "--socket-path", "b"], ["-e"], ["-d"], ["--timeout"], ["--timeout", "0"], ["--timeout", "-1"], ["--timeout", "x"], ["-e", " "]]) {
      await expect(parseShellArgs(args)).rejects.toBeInstanceOf(ShellUsageError);
    }
  });

  test("the usage text documents every exit code", () => {
    const u = shellUsage();
    for (const code of Object.values(EXIT)) expect(u).toMatch(new RegExp(`^  ${code}  `, "m"));
    expect(EXIT).toEqual({ OK: 0, FAILED: 1, USAGE: 2, CONNECTION: 3, TIMEOUT: 4 });
  });
});

describe("session helpers", () => {
  test("currentUser names someone", () => {
    expect(currentUser()).not.toBe("");
    expect(currentUser()).not.toBe("unknown");
  });

  test("Deadline rejects with TimeoutError once passed, and not without a limit", async () => {
    const never = new Promise<number>(() => {});
    await expect(new Deadline(0.01).race(never, "x")).rejects.toBeInstanceOf(TimeoutError);
    expect(await new Deadline(null).race(Promise.resolve(5), "x")).toBe(5);
    expect(await new Deadline(10).race(Promise.resolve(6), "x")).toBe(6);
  });
});

describe("shellSplit (--reexec-as): the same splitter as einhorn sh scripts, one command only", () => {
  const { shellSplit } = require("../../src/shell-split") as typeof import("../../src/shell-split");
  const cases: Array<[string, string[]]> = [
    [`sh -c 'sleep 2; exec "$0" "$@"' /usr/bin/einhorn`, ["sh", "-c", `sleep 2; exec "$0" "$@"`, "/usr/bin/einhorn"]],
    [`/opt/einhorn\\ 2/bin/einhorn --flag`, ["/opt/einhorn 2/bin/einhorn", "--flag"]],
    [`env "A=one two" einhorn`, ["env", "A=one two", "einhorn"]],
    [`x "a\\"b" 'c\\d'`, ["x", `a"b`, "c\\d"]],
    [`  spaced   out  `, ["spaced", "out"]],
    ["", []],
  ];
  for (const [line, words] of cases) test(`${JSON.stringify(line)} -> ${JSON.stringify(words)}`, () => expect(shellSplit(line)).toEqual(words));

  test("an unquoted ; makes two commands: refused, saying how to fix it; an open quote is refused", () => {
    expect(() => shellSplit("einhorn; rm -rf /")).toThrow(/one command was expected, got 2 \(quote the ';'/);
    expect(() => shellSplit("sh -c 'oops")).toThrow(/unterminated ' quote/);
  });
});

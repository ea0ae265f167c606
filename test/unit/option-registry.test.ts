// Every option in src/config/options.ts, walked through each way a value
// reaches the master: the command line, the config file and (where the
// option allows it) the command socket's `config`. Each value kind's sample
// texts must be taken, or refused, the same way by all three, so a bound
// cannot be declared in one place and checked differently in another.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { COMMANDS, parseConfigArgs } from "../../src/command-registry";
import { parseMasterArgs, UsageError } from "../../src/config/master-args";
import { flagName, OPTIONS, type OptionSpec, runTimeKey, WORKER_COUNT } from "../../src/config/options";
import type { ValueKind } from "../../src/config/value-kinds";
import { DEFAULT_SETTINGS, initialState } from "../../src/core/state";
import { buildStateReport } from "../../src/master/state-report";
import { rereadConfig } from "../../src/master/config-reload";
import { MAX_WORKERS } from "../../src/core/step";

const dir = mkdtempSync(join(tmpdir(), "einhorn-registry-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const D = { tmpdir: "/tmp/x", cpus: 2 };
let n = 0;
function file(text: string): string {
  const p = join(dir, `o${++n}.yaml`);
  writeFileSync(p, text);
  return p;
}

/** --config's value is a file to read: test/unit/config-file.test.ts walks it. */
const valueOptions = OPTIONS.filter((o) => o.kind.takes === "value" && o.long !== "config");
const kindOf = (o: OptionSpec) => o.kind as ValueKind<unknown>;
/** What the option's field holds when `text` is given once. */
const expected = (o: OptionSpec, text: string) => {
  const r = kindOf(o).parse(text);
  if (!r.ok) throw new Error(`${o.long}: sample '${text}' does not parse`);
  return o.repeat ? [r.value] : r.value;
};
/** One-shot options stop a start by themselves; everything else is parsed with a program. */
const argv = (...words: string[]) => [...words, "--", "prog"];
/** The option's field after parsing `words`. */
const field = (o: OptionSpec, words: string[]): unknown => parseMasterArgs(words, D)[o.field];

describe("every option with a value", () => {
  for (const o of valueOptions) {
    const { accepted, refused } = kindOf(o).samples;
    test(`${flagName(o)}: argv, file and config agree on ${[...accepted, ...refused].map((s) => `'${s}'`).join(" ")}`, () => {
      for (const text of accepted) {
        const want = expected(o, text);
        expect(field(o, argv(`--${o.long}`, text))).toEqual(want);
        expect(field(o, argv(`--${o.long}=${text}`))).toEqual(want);
        if (o.short) expect(field(o, argv(`-${o.short}`, text))).toEqual(want);
        if (o.inFile) {
          for (const key of [o.long, o.long.replace(/-/g, "_")]) {
            expect(field(o, ["--config", file(`${key}: ${JSON.stringify(text)}\n`), "--", "prog"])).toEqual(want);
          }
          // A YAML number means what its text means on the command line.
          if (/^-?\d+(\.\d+)?$/.test(text)) expect(field(o, ["--config", file(`${o.long}: ${text}\n`), "--", "prog"])).toEqual(want);
        }
        if (o.atRunTime) {
          const key = runTimeKey(o);
          expect(parseConfigArgs([`${key}=${text}`])).toEqual({ patch: { [o.field]: want }, changes: [`${key}=${text}`] });
          expect(parseConfigArgs([JSON.stringify({ [key]: /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text })])).toMatchObject({ patch: { [o.field]: want } });
        }
      }
      for (const text of refused) {
        expect(() => parseMasterArgs(argv(`--${o.long}`, text), D)).toThrow(UsageError);
        let message = "";
        try { parseMasterArgs(argv(`--${o.long}`, text), D); } catch (e) { message = (e as Error).message; }
        // What was given and what is allowed, on one line (or the parser's own account of what is wrong).
        expect(message).not.toContain("\n");
        expect(message.startsWith(`${flagName(o)} wants ${kindOf(o).allowed}, got '${text}'`) || message.startsWith(`${flagName(o)}: `)).toBe(true);
        if (o.inFile) {
          const p = file(`${o.long}: ${JSON.stringify(text)}\n`);
          expect(() => parseMasterArgs(["--config", p, "--", "prog"], D)).toThrow(`config ${p}: ${message}`);
        }
        if (o.atRunTime) {
          const key = runTimeKey(o);
          expect(parseConfigArgs([`${key}=${text}`])).toBe(`config: ${key} must be ${kindOf(o).notation}${o.unset ? `, or null for ${o.unset}` : ""}; ${JSON.stringify(text)} is not ${kindOf(o).allowed}`);
        }
      }
    });
  }
});

describe("flags and counted flags", () => {
  for (const o of OPTIONS.filter((x) => x.kind.takes !== "value" && x.reload !== "once")) {
    test(`${flagName(o)} on the command line and in a file`, () => {
      const given = field(o, argv(`--${o.long}`));
      const absent = field(o, argv());
      expect(given).not.toEqual(absent);
      if (o.short) expect(field(o, argv(`-${o.short}`))).toEqual(given);
      expect(() => parseMasterArgs(argv(`--${o.long}=1`), D)).toThrow(`${flagName(o)} takes no value, got '--${o.long}=1'`);
      expect(field(o, ["--config", file(`${o.long}: true\n`), "--", "prog"])).toEqual(given);
      expect(field(o, ["--config", file(`${o.long}: false\n`), "--", "prog"])).toEqual(absent);
    });
  }

  test("-q and -v move one verbosity, summed, then kept within 0..2", () => {
    const v = (...words: string[]) => parseMasterArgs(argv(...words), D).verbosity;
    expect([v(), v("-q"), v("-qq"), v("-qqq"), v("-v"), v("-vv"), v("-qqq", "-v"), v("-q", "-v")]).toEqual([1, 2, 2, 2, 0, 0, 2, 1]);
    expect(parseMasterArgs(["--config", file("quiet: 2\nverbose: 1\n"), "--", "prog"], D).verbosity).toBe(2);
  });
});

describe("the table itself", () => {
  test("names are unique, long and short", () => {
    const longs = OPTIONS.map((o) => o.long);
    const shorts = OPTIONS.flatMap((o) => (o.short ? [o.short] : []));
    expect(new Set(longs).size).toBe(longs.length);
    expect(new Set(shorts).size).toBe(shorts.length);
  });

  test("`config` sets only settings the master's state holds, and can unset only what defaults to none", () => {
    for (const o of OPTIONS) {
      if (o.atRunTime) {
        expect([o.long, o.reload]).toEqual([o.long, "setting"]);
        expect(o.kind.takes).toBe("value");
      }
      if (o.reload === "setting") expect(Object.keys(DEFAULT_SETTINGS)).toContain(o.field);
      const defaultsToNone = o.default({ tmpdir: "/t", cpus: 1, fileBase: "einhorn" }) === null;
      if (o.atRunTime) expect([o.long, o.unset !== undefined]).toEqual([o.long, defaultsToNone]);
    }
  });

  test("one-shot options stay out of files and units; everything else may be in a file", () => {
    for (const o of OPTIONS) {
      if (o.reload === "once") expect([o.long, o.inFile, o.unit]).toEqual([o.long, false, "refused"]);
      else if (o.long !== "config") expect([o.long, o.inFile]).toEqual([o.long, true]);
    }
  });

  test("`state json` reports every setting `config` can change, under the key `config` takes", () => {
    const report = buildStateReport(initialState(DEFAULT_SETTINGS, 0), { einhornVersion: "t", masterPid: 1, commandName: null, socketPath: "/s", program: ["p"], listeners: [], verbosity: 1, reexecs: 0 });
    for (const o of OPTIONS.filter((x) => x.atRunTime)) expect(Object.keys(report.settings)).toContain(runTimeKey(o));
  });

  test("-n and set_workers share one bound, MAX_WORKERS", () => {
    expect([WORKER_COUNT.min, WORKER_COUNT.max]).toEqual([1, MAX_WORKERS]);
    expect(COMMANDS.set_workers.args.parse([String(MAX_WORKERS)])).toEqual({ ok: true, value: MAX_WORKERS });
    expect(COMMANDS.set_workers.args.parse([String(MAX_WORKERS + 1)]).ok).toBe(false);
    expect(() => parseMasterArgs(argv("-n", String(MAX_WORKERS + 1)), D)).toThrow(`-n/--number wants a whole number from 1 to ${MAX_WORKERS}`);
    expect(COMMANDS.set_workers.description).toContain(`(1..${MAX_WORKERS})`);
  });
});

describe("an upgrade's config diff follows each option's reload class", () => {
  for (const o of OPTIONS.filter((x) => x.inFile)) {
    test(`${flagName(o)} (${o.reload})`, () => {
      const p = file("program: [srv]\n");
      const old = parseMasterArgs(["--config", p], D);
      // A value other than the default, as the file would give it.
      const value = o.kind.takes === "value"
        ? JSON.stringify(kindOf(o).samples.accepted.find((t) => JSON.stringify(expected(o, t)) !== JSON.stringify(old[o.field])))
        : "true";
      writeFileSync(p, `program: [srv]\n${o.long}: ${value}\n`);
      if (o.reload === "fixed") {
        expect(() => rereadConfig(old, D)).toThrow(`: ${o.long} changed from `);
        return;
      }
      const r = rereadConfig(old, D);
      const named = r.changes.filter((c) => c.split(" ")[0]!.split("/").includes(o.long));
      expect([o.long, named.length]).toEqual([o.long, 1]);
      if (o.reload === "setting") expect(Object.keys(r.patch)).toEqual([o.field]);
      else expect(r.patch).toEqual({});
    });
  }

  test("changes are named by option, settings first, and show what was given", () => {
    const p = file("program: [srv]\nretire-signal: USR2\nbind: [127.0.0.1:0]\n");
    const old = parseMasterArgs(["--config", p], D);
    writeFileSync(p, "program: [srv]\nretire-signal: TERM\nmax-memory: 1G\nquiet: 1\nbind: [127.0.0.1:0]\n");
    const r = rereadConfig(old, D);
    expect(r.changes).toEqual(["quiet/verbose 1 -> 2", 'retire-signal "SIGUSR2" -> "SIGTERM"', "max-memory null -> 1073741824"]);
    expect(r.patch).toEqual({ verbosity: 2 });
  });
});

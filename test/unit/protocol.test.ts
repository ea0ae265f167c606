// The command-socket codec against golden lines: the exact bytes we send, the
// exact lines Einhorn's own Ruby client and the Go/Python/PHP worker libraries
// send, and what a hostile client might send instead.
import { describe, expect, test } from "bun:test";
import {
  decodeLine, decodeRequest, encodeMessage, escapeLine, MAX_ALIAS_COUNT, MAX_DEPTH, MAX_YAML_REQUEST_CHARS, ProtocolError, REPLY_FORMAT_KEY, toRequest, unescapeLine,
} from "../../src/protocol";

/** A line as it travels, without its final "\n". */
const wire = (msg: Record<string, unknown>) => {
  const line = encodeMessage(msg);
  expect(line.endsWith("\n")).toBe(true);
  expect(line.indexOf("\n")).toBe(line.length - 1);
  return line.slice(0, -1);
};

describe("encodeMessage: the exact bytes of a response", () => {
  const golden: Array<[string, Record<string, unknown>, string]> = [
    ["plain message", { message: "Welcome" }, "---%0Amessage: Welcome%0A\n"],
    ["% is escaped as %25", { message: "100% done", request_id: 1 }, "---%0Amessage: 100%25 done%0Arequest_id: 1%0A\n"],
    ["a literal %0A survives", { message: "%0A literally" }, "---%0Amessage: \"%250A literally\"%0A\n"],
    ["newlines: block scalar, every newline escaped", { message: "line1\nline2\n", request_id: "abc" }, "---%0Amessage: |%0A  line1%0A  line2%0Arequest_id: abc%0A\n"],
    ["no trailing newline: strip indicator", { message: "a\nb" }, "---%0Amessage: |-%0A  a%0A  b%0A\n"],
    ["unicode is written as UTF-8, unescaped", { message: "héllo ☃ 🦄", request_id: null }, "---%0Amessage: héllo ☃ 🦄%0Arequest_id: null%0A\n"],
    ["float request_id and wait", { message: "x", request_id: 1.5, wait: true }, "---%0Amessage: x%0Arequest_id: 1.5%0Await: true%0A\n"],
    ["list request_id", { message: "x", request_id: [1, "a"], wait: true }, "---%0Amessage: x%0Arequest_id:%0A  - 1%0A  - a%0Await: true%0A\n"],
    ["mapping request_id", { message: "x", request_id: { a: 1 } }, "---%0Amessage: x%0Arequest_id:%0A  a: 1%0A\n"],
    ["strings that look like other types are quoted", { message: "true", request_id: "1" }, "---%0Amessage: \"true\"%0Arequest_id: \"1\"%0A\n"],
    ["empty message, boolean request_id", { message: "", request_id: true }, "---%0Amessage: \"\"%0Arequest_id: true%0A\n"],
    ["error flag; YAML-special text is quoted", { message: "a: b # c", error: true }, "---%0Amessage: \"a: b # c\"%0Aerror: true%0A\n"],
    ["leading spaces are kept", { message: "  leading", error: true }, "---%0Amessage: \"  leading\"%0Aerror: true%0A\n"],
    // Ruby's Psych reads YAML 1.1: unquoted, these would come back as true, 80 and a Time.
    ["YAML 1.1 booleans are quoted", { message: "yes", request_id: "on" }, "---%0Amessage: \"yes\"%0Arequest_id: \"on\"%0A\n"],
    ["YAML 1.1 sexagesimal and timestamps are quoted", { message: "1:20", request_id: "2026-11-22T12:17:37.012Z" }, "---%0Amessage: \"1:20\"%0Arequest_id: \"2026-11-22T12:17:37.012Z\"%0A\n"],
  ];
  for (const [name, msg, line] of golden) {
    test(name, () => {
      expect(encodeMessage(msg)).toBe(line);
      expect(decodeLine(wire(msg))).toEqual(msg);
    });
  }

  test("a long message is never folded (one line, whatever its length)", () => {
    const message = "word ".repeat(400).trim();
    expect(encodeMessage({ message })).toBe(`---%0Amessage: ${message}%0A\n`);
  });

  test("round trip: every message survives encode and decode unchanged", () => {
    const messages = [
      "", " ", "%", "%%0A%25", "\n", "\n\n", "a\r\nb", "tab\there", "# not a comment", "- not a list", "{not: a map}", "[x]",
      "'single'", "\"double\"", "null", "~", "yes", "0x1F", "1e3", ".inf", "---", "...", "key: value", "&anchor", "*alias", "!tag",
      "a\u0000b", "\u0007bell", "🦄".repeat(100), "x".repeat(100_000), "trailing space ", "\ttab first",
    ];
    for (const [i, message] of messages.entries()) {
      for (const request_id of [undefined, i, `id-${i}`, null, [i, "x"], { n: i }]) {
        const msg: Record<string, unknown> = { message };
        if (request_id !== undefined) msg.request_id = request_id;
        if (i % 2) msg.wait = true;
        expect(decodeLine(wire(msg))).toEqual(msg);
      }
    }
  });

  test("escapeLine/unescapeLine are inverses and the escaped form has no newline", () => {
    for (const s of ["", "%", "\n", "%0A", "%250A", "a%\nb%25\n%0a"]) {
      expect(escapeLine(s)).not.toContain("\n");
      expect(unescapeLine(escapeLine(s))).toBe(s);
    }
    expect(escapeLine("%\n")).toBe("%25%0A");
    expect(unescapeLine("%0a")).toBe("\n"); // either case, as Ruby's client accepts
  });
});

describe("encodeMessage in JSON (for a client that sent reply_format: json)", () => {
  test("one escaped JSON document per line, no YAML document marker", () => {
    expect(encodeMessage({ message: "100% done\nnext", request_id: 1, wait: true }, "json")).toBe('{"message":"100%25 done\\nnext","request_id":1,"wait":true}\n');
    expect(encodeMessage({ message: "%0A literally" }, "json")).toBe('{"message":"%250A literally"}\n');
  });

  test("round trip through decodeLine, which is what Einhorn clients (YAML readers) and ours use", () => {
    for (const message of ["", "%", "%%0A%25", "\n", "a\r\nb", "yes", "1:20", "---", "🦄", "a\u0000b", "x".repeat(100_000)]) {
      for (const request_id of [undefined, 7, "id", null, [1, "x"], { n: 1 }]) {
        const msg: Record<string, unknown> = { message, error: true };
        if (request_id !== undefined) msg.request_id = request_id;
        const line = encodeMessage(msg, "json");
        expect(line.indexOf("\n")).toBe(line.length - 1);
        expect(decodeLine(line.slice(0, -1))).toEqual(msg);
      }
    }
  });

  test("the request key is reply_format, and a request carrying it is still a valid request", () => {
    expect(REPLY_FORMAT_KEY).toBe("reply_format");
    const req = decodeRequest(encodeMessage({ command: "state", args: [], id: 1, [REPLY_FORMAT_KEY]: "json" }, "json").slice(0, -1));
    expect(req.command).toBe("state");
    expect(req[REPLY_FORMAT_KEY]).toBe("json");
  });
});

describe("decoding what real clients send", () => {
  // Produced by Ruby 3.1 / Psych 4: YAML.dump(hash), then gsub(/%|\n/, '%' => '%25', "\n" => '%0A').
  const ruby: Array<[string, string, Record<string, unknown>]> = [
    ["state", "---%0Acommand: state%0Aargs: []%0Aid: 1%0A", { command: "state", args: [], id: 1 }],
    ["signal with args", "---%0Acommand: signal%0Aargs:%0A- HUP%0A- USR1%0Aid: 2%0A", { command: "signal", args: ["HUP", "USR1"], id: 2 }],
    ["a Ruby worker's ACK", "---%0Acommand: worker:ack%0Apid: 123%0A", { command: "worker:ack", pid: 123, args: [] }],
    ["symbol keys", "---%0A:command: ehlo%0A:args: []%0A", { command: "ehlo", args: [] }],
    ["config with a JSON argument", "---%0Acommand: config%0Aargs:%0A- '{\"seconds\": 2}'%0Aid: x%0A", { command: "config", args: ['{"seconds": 2}'], id: "x" }],
    [
      "awkward strings, null id",
      "---%0Acommand: echo%0Aargs:%0A- 100%25%0A- |-%0A  a%0A  b%0A- 'yes'%0A- '1'%0A- 'null'%0A- ''%0Aid:%0A",
      { command: "echo", args: ["100%", "a\nb", "yes", "1", "null", ""], id: null },
    ],
    ["unicode user", "---%0Aid: 1%0Acommand: state%0Aargs: []%0Auser: ünï%0A", { id: 1, command: "state", args: [], user: "ünï" }],
  ];
  for (const [name, line, req] of ruby) {
    test(`Ruby client: ${name}`, () => {
      expect(decodeRequest(line) as Record<string, unknown>).toEqual(req);
    });
  }

  test("the raw JSON ACK line of the Go, Python and PHP libraries", () => {
    expect(decodeRequest('{"command":"worker:ack","pid":123}')).toEqual({ command: "worker:ack", pid: 123, args: [] });
    expect(decodeRequest('{"command": "worker:ack", "pid": 123}')).toEqual({ command: "worker:ack", pid: 123, args: [] });
  });

  test("JSON requests: ping with a request_id, einhorn sh's request", () => {
    expect(decodeRequest('{"command":"worker:ping","pid":7,"request_id":"r-1"}')).toEqual({ command: "worker:ping", pid: 7, request_id: "r-1", args: [] });
    expect(decodeRequest('{"command":"set_workers","args":["3"],"id":{"n":1}}')).toEqual({ command: "set_workers", args: ["3"], id: { n: 1 } });
  });

  test("our own encoder's request is read back", () => {
    expect(decodeRequest(wire({ command: "config", args: ["seconds=2", "100%\n"], id: 9 }))).toEqual({ command: "config", args: ["seconds=2", "100%\n"], id: 9 });
  });

  test("YAML flow syntax, comments and explicit standard tags are fine", () => {
    expect(decodeRequest("{command: state, args: [json]}  # a comment")).toEqual({ command: "state", args: ["json"] });
    expect(decodeRequest("{command: !!str state}")).toEqual({ command: "state", args: [] });
  });

  test("scalar args become strings; missing or null args are an empty list", () => {
    expect(decodeRequest("{command: x, args: [1, 2.5, true, null]}").args).toEqual(["1", "2.5", "true", "null"]);
    expect(decodeRequest("{command: x}").args).toEqual([]);
    expect(decodeRequest("{command: x, args: null}").args).toEqual([]);
  });

  test("a small anchor and alias is fine", () => {
    expect(decodeRequest("{command: signal, args: [&s HUP, *s]}")).toEqual({ command: "signal", args: ["HUP", "HUP"] });
  });

  test("a JSON request may fill the whole line; only YAML is held to MAX_YAML_REQUEST_CHARS", () => {
    const big = "y".repeat(4 * MAX_YAML_REQUEST_CHARS);
    expect(decodeRequest(JSON.stringify({ command: "state", args: [big] })).args).toEqual([big]);
    expect(() => decodeRequest(`{command: state, args: [${big}]}`)).toThrow(/YAML request too long: \d+ characters, the limit is 16384/);
    // A client reading answers is not held to the request limit.
    expect(decodeLine(wire({ message: big }))).toEqual({ message: big });
  });
});

describe("hostile documents: a ProtocolError with a useful message", () => {
  const nest = (open: string, close: string, n: number, inner = "1") => open.repeat(n) + inner + close.repeat(n);
  const bomb = (() => {
    // Nine levels of nine aliases each: 9^9 nodes if expanded.
    const lines = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    const names = "abcdefghi";
    for (let i = 1; i < names.length; i++) lines.push(`${names[i]}: &${names[i]} [${Array(9).fill(`*${names[i - 1]}`).join(", ")}]`);
    lines.push("command: state");
    return escapeLine(lines.join("\n"));
  })();

  const cases: Array<[string, string, RegExp]> = [
    ["Ruby object tag", "--- !ruby/object:Gem::Requirement%0Arequirements: []%0A", /YAML tags are not accepted/],
    ["Ruby hash subclass tag", "--- !ruby/hash:ActiveSupport::HashWithIndifferentAccess%0Acommand: state%0A", /YAML tags are not accepted/],
    ["js-yaml function tag", "!!js/function 'function () { return 1 }'", /YAML tags are not accepted/],
    ["Python object tag as the command", "{command: !!python/object/apply:os.system [id]}", /YAML tags are not accepted/],
    ["%TAG directive with a local tag", "%TAG ! tag:evil.example,2000:%0A--- !cmd {command: state}", /YAML tags are not accepted/],
    ["YAML 1.1 !!binary", "!!binary aGVsbG8=", /YAML tags are not accepted/],
    ["YAML 1.1 !!set", "{command: state, args: !!set {a, b}}", /YAML tags are not accepted/],
    ["YAML 1.1 !!omap", "!!omap [command: state]", /YAML tags are not accepted/],
    ["YAML 1.1 !!timestamp", "{command: !!timestamp 2001-12-14}", /YAML tags are not accepted/],
    ["alias bomb (billion laughs)", bomb, /alias count|resource exhaustion/i],
    ["deep JSON nesting", `{"command":"state","id":${nest("[", "]", MAX_DEPTH + 1)}}`, /nested more than 64 levels deep/],
    ["deep JSON nesting filling the line", "[".repeat(1024 * 1024 - 1), /nested more than 64 levels deep/],
    ["deep YAML flow nesting", `{command: state, id: ${nest("[", "]", 200)}}`, /nested (more than 64 levels|too deeply)/],
    ["deep YAML flow nesting past the parser's stack", "[".repeat(MAX_YAML_REQUEST_CHARS - 100), /nested too deeply/],
    ["deep YAML block nesting", `${"- ".repeat(5000)}x`, /nested (more than 64 levels|too deeply)/],
    ["a list", "- state", /a request is a mapping/],
    ["a number", "42", /a request is a mapping/],
    ["a bare word", "state", /a request is a mapping/],
    ["an empty line", "", /a request is a mapping/],
    ["null", "~", /a request is a mapping/],
    ["a JSON string", '"state"', /a request is a mapping/],
    ["a JSON list", '["state"]', /a request is a mapping/],
    ["no command", "{args: [json]}", /No "command" given/],
    ["command is a number", "{command: 5}", /"command" must be a string, got 5/],
    ["command is a list", '{"command":["state"]}', /"command" must be a string, got \["state"\]/],
    ["command is a mapping", "{command: {die: now}}", /"command" must be a string, got \{"die":"now"\}/],
    ["command is null", "{command: null}", /"command" must be a string, got null/],
    ["command is a boolean", "{command: true}", /"command" must be a string, got true/],
    ["args is a string", "{command: signal, args: HUP}", /"args" must be a list of strings, got "HUP"/],
    ["args is a mapping", '{"command":"signal","args":{"0":"HUP"}}', /"args" must be a list of strings, got \{"0":"HUP"\}/],
    ["args is a number", "{command: set_workers, args: 3}", /"args" must be a list of strings, got 3/],
    ["__proto__ smuggling a command", "{__proto__: {command: die}}", /No "command" given/],
    ["__proto__ smuggling in JSON", '{"__proto__":{"command":"die"}}', /No "command" given/],
    ["two documents on one line", "{command: state}%0A--- {command: die}", /exactly one document/],
    ["broken flow mapping", "{command: state", /not a YAML document/],
    ["broken JSON", '{"command" "state"}', /not a YAML document: Missing , or :/],
    ["a too long YAML request", `command: state%0Aargs: [${"a,".repeat(MAX_YAML_REQUEST_CHARS)}]`, /YAML request too long/],
  ];
  for (const [name, line, re] of cases) {
    test(name, () => {
      let err: unknown;
      try {
        decodeRequest(line);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as Error).message).toMatch(re);
      // The message quotes at most a short preview of what the client sent.
      expect((err as Error).message.length).toBeLessThan(200);
    });
  }

  test("a huge non-string command is quoted only in part", () => {
    const line = JSON.stringify({ command: ["x".repeat(100_000)] });
    expect(() => decodeRequest(line)).toThrow(/got \["x+\.\.\.$/);
  });

  test("nesting up to the limit is fine", () => {
    expect(decodeRequest(`{"command":"state","id":${nest("[", "]", MAX_DEPTH - 1)}}`).command).toBe("state");
  });

  test(`aliases up to the budget (${MAX_ALIAS_COUNT}) are fine`, () => {
    const aliases = Array(MAX_ALIAS_COUNT - 1).fill("*s").join(", ");
    expect(decodeRequest(`{command: signal, args: [&s HUP, ${aliases}]}`).args).toHaveLength(MAX_ALIAS_COUNT);
  });

  test("a hostile line costs little: a 1 MiB JSON-looking line of brackets is refused in well under a second", () => {
    const t = performance.now();
    expect(() => decodeRequest("[".repeat(1024 * 1024 - 1))).toThrow(ProtocolError);
    expect(() => decodeRequest(`{"a":`.repeat(200_000))).toThrow(ProtocolError);
    expect(() => decodeRequest(`{${"k: v, ".repeat(140_000)}}`)).toThrow(/YAML request too long/);
    expect(performance.now() - t).toBeLessThan(1000);
  });

  test("toRequest accepts only plain mappings", () => {
    for (const doc of [new Map([["command", "state"]]), new Set(["state"]), new Date(0), new Uint8Array(3), [], "state", 1, null, undefined]) {
      expect(() => toRequest(doc)).toThrow(/a request is a mapping/);
    }
  });
});

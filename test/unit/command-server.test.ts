// Line framing of the command socket's transport, without a socket: what a
// Connection makes of the bytes it is fed.
import { describe, expect, test } from "bun:test";
import { Connection, PARTIAL_LINE_TIMEOUT_MS } from "../../src/master/command-server";
import { MAX_LINE_BYTES } from "../../src/protocol";

function connection(sent: string[] = []): Connection {
  const socket = { write: (d: Buffer) => { sent.push(d.toString("utf8")); return d.length; }, end: () => {} };
  const server = { log: () => {}, forget: () => {} };
  return new Connection(socket as never, { pid: 1, uid: 0 }, server as never);
}

const feed = (c: Connection, s: string | Buffer, now = 0) => c.feed(Buffer.isBuffer(s) ? s : Buffer.from(s), now);

describe("Connection.feed", () => {
  test("splits lines across and within chunks, drops a trailing CR", () => {
    const c = connection();
    expect(feed(c, "{\"command\":")).toEqual([]);
    expect(feed(c, "\"state\"}\r\nsecond\nthi")).toEqual(["{\"command\":\"state\"}", "second"]);
    expect(feed(c, "rd\n")).toEqual(["third"]);
  });

  test("a line split inside a multi-byte character is decoded whole", () => {
    const c = connection();
    const bytes = Buffer.from("é☃\n");
    expect(feed(c, bytes.subarray(0, 1))).toEqual([]);
    expect(feed(c, bytes.subarray(1, 4))).toEqual([]);
    expect(feed(c, bytes.subarray(4))).toEqual(["é☃"]);
  });

  test("a line of exactly MAX_LINE_BYTES is accepted; one byte more is too long, in one chunk or many", () => {
    const c = connection();
    expect(feed(c, `${"x".repeat(MAX_LINE_BYTES)}\n`)).toEqual(["x".repeat(MAX_LINE_BYTES)]);
    expect(feed(connection(), `${"x".repeat(MAX_LINE_BYTES + 1)}\n`)).toBe("too-long");
    const d = connection();
    const piece = Buffer.alloc(64 * 1024, 0x78);
    let r: string[] | "too-long" = [];
    for (let i = 0; i <= MAX_LINE_BYTES / piece.length && r !== "too-long"; i++) r = feed(d, piece);
    expect(r).toBe("too-long");
  });

  test("a partial line is stale after PARTIAL_LINE_TIMEOUT_MS without its newline", () => {
    const c = connection();
    feed(c, "{\"comm", 1000);
    expect(c.stalePartial(1000 + PARTIAL_LINE_TIMEOUT_MS)).toBe(false);
    expect(c.stalePartial(1001 + PARTIAL_LINE_TIMEOUT_MS)).toBe(true);
    feed(c, "and\":\"state\"}\n", 2000);
    expect(c.stalePartial(10 * PARTIAL_LINE_TIMEOUT_MS)).toBe(false);
  });

  test("the partial-line clock restarts with each new line (a busy client is not stale)", () => {
    const c = connection();
    feed(c, "{\"command\":", 0);
    // Completes the first line and starts a second in the same chunk, 50 s later.
    feed(c, "\"state\"}\n{\"comm", 50_000);
    expect(c.stalePartial(50_000 + PARTIAL_LINE_TIMEOUT_MS - 1)).toBe(false);
    expect(c.stalePartial(50_001 + PARTIAL_LINE_TIMEOUT_MS)).toBe(true);
  });
});

describe("Connection answers", () => {
  test("in Einhorn's YAML unless the client asked for JSON; the format applies to every later answer", () => {
    const sent: string[] = [];
    const c = connection(sent);
    c.reply(1, "hello", { wait: true });
    c.format = "json";
    c.reply(1, "done", { error: true });
    expect(sent).toEqual(["---%0Amessage: hello%0Arequest_id: 1%0Await: true%0A\n", '{"message":"done","request_id":1,"error":true}\n']);
  });
});

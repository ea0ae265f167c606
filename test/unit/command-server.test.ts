// Line framing of the command socket's transport, without a socket: what a
// Connection makes of the bytes it is fed.
import { describe, expect, test } from "bun:test";
import { Connection, MAX_TOTAL_PARTIAL_INPUT } from "../../src/master/command-server";
import { defaultTimeouts } from "../../src/config/timeouts";
import { MAX_LINE_BYTES } from "../../src/protocol";

/** The production silence limits (src/config/timeouts.ts). */
const FIRST_LINE_TIMEOUT_MS = defaultTimeouts()["command-first-line"];
const PARTIAL_LINE_TIMEOUT_MS = defaultTimeouts()["command-partial-line"];

/** A stand-in for the CommandServer's budget bookkeeping (shared by the connections made with it). */
function fakeServer() {
  return {
    limits: { firstLineMs: FIRST_LINE_TIMEOUT_MS, partialLineMs: PARTIAL_LINE_TIMEOUT_MS },
    partialBytes: 0,
    output: 0,
    log: () => {},
    forget: () => {},
    partialHeld(d: number) { this.partialBytes += d; },
    outputQueued(d: number) { this.output += d; },
    checkOutputBudget: () => {},
  };
}

function connection(sent: string[] = [], server = fakeServer()): Connection {
  const socket = { write: (d: Buffer) => { sent.push(d.toString("utf8")); return d.length; }, end: () => {} };
  const c = new Connection(socket as never, { pid: 1, uid: 0 }, server as never);
  c.openedAt = 0;
  return c;
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
    let r: ReturnType<Connection["feed"]> = [];
    for (let i = 0; i <= MAX_LINE_BYTES / piece.length && r !== "too-long"; i++) r = feed(d, piece);
    expect(r).toBe("too-long");
  });

  test("a partial line is stale after PARTIAL_LINE_TIMEOUT_MS without its newline", () => {
    const c = connection();
    feed(c, "{\"command\":\"ehlo\"}\n{\"comm", 1000);
    expect(c.stale(1000 + PARTIAL_LINE_TIMEOUT_MS)).toBeNull();
    expect(c.stale(1001 + PARTIAL_LINE_TIMEOUT_MS)).toBe(`left a line unfinished for ${PARTIAL_LINE_TIMEOUT_MS / 1000}s`);
    feed(c, "and\":\"state\"}\n", 2000);
    expect(c.stale(10 * PARTIAL_LINE_TIMEOUT_MS)).toBeNull();
  });

  test("the partial-line clock restarts with each new line (a busy client is not stale)", () => {
    const c = connection();
    feed(c, "{\"command\":", 0);
    // Completes the first line and starts a second in the same chunk, 50 s later.
    feed(c, "\"state\"}\n{\"comm", 50_000);
    expect(c.stale(50_000 + PARTIAL_LINE_TIMEOUT_MS - 1)).toBeNull();
    expect(c.stale(50_001 + PARTIAL_LINE_TIMEOUT_MS)).not.toBeNull();
  });

  test("a connection that sends no whole line within FIRST_LINE_TIMEOUT_MS of connecting is stale; one line keeps it", () => {
    const silent = connection();
    expect(silent.stale(FIRST_LINE_TIMEOUT_MS)).toBeNull();
    expect(silent.stale(FIRST_LINE_TIMEOUT_MS + 1)).toBe(`sent no whole line within ${FIRST_LINE_TIMEOUT_MS / 1000}s of connecting`);
    const session = connection();
    feed(session, "{\"command\":\"ehlo\"}\n", 5);
    expect(session.stale(100 * FIRST_LINE_TIMEOUT_MS)).toBeNull();
  });

  test("partial lines of all connections together are bounded: past MAX_TOTAL_PARTIAL_INPUT the one adding is over budget", () => {
    const server = fakeServer();
    const chunk = Buffer.alloc(60 * 1024, 0x78);
    const conns: Connection[] = [];
    let result: ReturnType<Connection["feed"]> = [];
    while (result !== "over-budget") {
      const c = connection([], server);
      conns.push(c);
      result = feed(c, chunk);
    }
    expect(conns.length).toBe(Math.floor(MAX_TOTAL_PARTIAL_INPUT / chunk.length) + 1);
    expect(server.partialBytes).toBeLessThanOrEqual(MAX_TOTAL_PARTIAL_INPUT);
    // Closing gives the bytes back.
    for (const c of conns) c.release();
    expect(server.partialBytes).toBe(0);
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

describe("Connection budgets", () => {
  test("closing after an answer only partly written keeps the rest queued until it is flushed; the socket going away gives it back", () => {
    const server = fakeServer();
    let accept = 10;
    let ended = false;
    const written: string[] = [];
    const socket = {
      write: (d: Buffer) => { const n = Math.min(accept, d.length); written.push(d.subarray(0, n).toString()); return n; },
      end: () => { ended = true; },
    };
    const c = new Connection(socket as never, { pid: 1, uid: 0 }, server as never);
    c.reply(1, "x".repeat(100));
    expect(server.output).toBeGreaterThan(0);
    c.close();
    expect(ended).toBe(false); // still flushing
    expect(c.queuedOutput).toBe(server.output);
    accept = 1 << 20;
    c.flush();
    expect(ended).toBe(true);
    expect(server.output).toBe(0);
    expect(written.join("")).toContain("x".repeat(100));
    // A second connection whose peer vanishes before the flush: the queue is given back.
    accept = 10;
    const d = new Connection(socket as never, { pid: 1, uid: 0 }, server as never);
    d.reply(1, "y".repeat(100));
    d.close();
    d.release(true);
    expect(server.output).toBe(0);
  });
});

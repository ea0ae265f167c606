import { describe, expect, test } from "bun:test";
import { readSync } from "node:fs";
import { nonblockingWriter } from "../../ffi/io";
import { close, setNonblocking, socketpair } from "../../ffi/socket";
import { LineSink } from "../../src/master/line-sink";
import { formatLine, LineSplitter, MAX_LINE_BYTES, prefixBody } from "../../src/master/worker-output";

const B = (s: string) => Buffer.from(s);

describe("LineSplitter", () => {
  test("lines cut anywhere by the chunks come out whole; the tail waits", () => {
    const sp = new LineSplitter();
    const text = "one\ntwo\n\nthree and more\nfour";
    const got: string[] = [];
    for (let i = 0; i < text.length; i += 3) for (const l of sp.feed(B(text.slice(i, i + 3)))) got.push(`${l.line}${l.partial ? "+" : ""}`);
    expect(got).toEqual(["one", "two", "", "three and more"]);
    expect(sp.rest().toString()).toBe("four");
    expect(sp.rest().length).toBe(0);
  });
  test("an over-long line comes out in MAX_LINE_BYTES pieces, all but the last marked partial", () => {
    const sp = new LineSplitter(B("ab"));
    const long = "z".repeat(MAX_LINE_BYTES * 2 + 10);
    const out = [...sp.feed(B(long.slice(0, 1000))), ...sp.feed(B(`${long.slice(1000)}\nnext\n`))];
    expect(out.map((o) => [o.line.length, o.partial])).toEqual([[MAX_LINE_BYTES, true], [MAX_LINE_BYTES, true], [12, false], [4, false]]);
    expect(out[0]!.line.subarray(0, 3).toString()).toBe("abz");
  });
  test("a line of exactly MAX_LINE_BYTES is one line", () => {
    const sp = new LineSplitter();
    const out = sp.feed(B(`${"q".repeat(MAX_LINE_BYTES)}\n`));
    expect(out.map((o) => [o.line.length, o.partial])).toEqual([[MAX_LINE_BYTES, false]]);
  });
  test("formats", () => {
    const at = new Date("2026-12-01T00:00:00.000Z");
    expect(formatLine("prefix", { pid: 7, index: 2 }, "stdout", B("hi\r"), false, true, at).toString()).toBe("2026-12-01T00:00:00.000Z [WORKER 7 #2] hi\n");
    expect(formatLine("prefix", { pid: 7, index: 2 }, "stderr", B("hi"), true, false, at).toString()).toBe("[WORKER 7 #2 +] hi\n");
    expect(JSON.parse(formatLine("json", { pid: 7, index: 2 }, "stderr", B('a"b'), false, true, at).toString()))
      .toEqual({ time: "2026-12-01T00:00:00.000Z", role: "worker", pid: 7, index: 2, stream: "stderr", message: 'a"b' });
  });
});

describe("LineSink over a real socket nobody reads", () => {
  test("never blocks; past the cap lines are dropped and counted; whole lines come out once the reader reads", async () => {
    const [a, b] = socketpair();
    setNonblocking(b, true);
    const dropped: number[] = [];
    const sink = new LineSink(nonblockingWriter(a), { onDropped: (n) => dropped.push(n) }, 64 * 1024);
    const line = (i: number) => B(`line ${i} ${"p".repeat(100)}\n`);
    let accepted = 0;
    const t0 = performance.now();
    for (let i = 0; i < 20_000; i++) if (sink.push(line(i))) accepted++;
    expect(performance.now() - t0).toBeLessThan(5_000); // it returned: nothing blocked
    expect(sink.droppedTotal).toBe(20_000 - accepted);
    expect(sink.droppedTotal).toBeGreaterThan(0);
    // A priority line still fits (twice the cap).
    expect(sink.push(B("MASTER line\n"), true)).toBe(true);
    // Now read everything.
    let got = "";
    const buf = Buffer.alloc(65536);
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      try {
        const n = readSync(b, buf);
        got += buf.subarray(0, n).toString();
      } catch (e) {
        if ((e as { code?: string }).code !== "EAGAIN") throw e;
        if (sink.queuedBytes === 0) break;
        await Bun.sleep(15);
      }
    }
    const lines = got.split("\n");
    expect(lines.pop()).toBe("");
    expect(lines.length).toBe(accepted + 1);
    expect(lines[lines.length - 1]).toBe("MASTER line");
    for (const l of lines.slice(0, -1)) expect(l).toMatch(/^line \d+ p{100}$/);
    expect(dropped.reduce((x, y) => x + y, 0)).toBe(sink.droppedTotal);
    sink.close();
    close(a);
    close(b);
  });
});

describe("prefix mode neutralises controls (as einhorn sh does on a terminal)", () => {
  const at = new Date("2026-12-01T00:00:00Z");
  const B = (s: string | number[]) => (typeof s === "string" ? Buffer.from(s) : Buffer.from(s));
  test("printable ASCII, tab and valid UTF-8 pass untouched; controls, C1, bidi and invalid bytes are escaped", () => {
    const body = (b: Buffer) => prefixBody(b, b.length).toString();
    expect(body(B("plain\ttext ü ✓"))).toBe("plain\ttext ü ✓");
    expect(body(B("a\rb\x1b[2Kc\x07"))).toBe("a^Mb^[[2Kc^G");
    expect(body(B("x\u009by \u202eevil\u2066"))).toBe("x\\x9by \\u202eevil\\u2066");
    expect(body(B([0x61, 0x9b, 0x62]))).toBe("a\ufffdb");
    expect(formatLine("prefix", { pid: 7, index: 2 }, "stdout", B("\x1b]0;t\x07x\r"), false, false, at).toString()).toBe("[WORKER 7 #2] ^[]0;t^Gx\n");
  });
});


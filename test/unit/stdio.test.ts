// stdio.ts writes with write(2) and falls back to the stream on EAGAIN; a
// reader that is gone (EPIPE) drops the output without an error. Real pipes,
// a real child process.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";

const WRITER = join(import.meta.dir, "..", "fixtures", "stdio-writer.ts");

async function run(args: string[], readSlowly: boolean) {
  const p = Bun.spawn([process.execPath, WRITER, ...args], { stdout: "pipe", stderr: "pipe" });
  let out = "";
  const reader = p.stdout.getReader();
  const dec = new TextDecoder();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    out += dec.decode(value, { stream: true });
    // A slow reader lets the 64 KiB pipe fill, so writes block or answer EAGAIN.
    if (readSlowly) await Bun.sleep(2);
  }
  return { out, err: await new Response(p.stderr).text(), code: await p.exited };
}

describe("writeOut", () => {
  for (const nonblocking of [false, true]) {
    test(`every line arrives once and in order through a full pipe (${nonblocking ? "O_NONBLOCK: stream fallback" : "blocking"})`, async () => {
      const n = 3000; // about 620 KB, ten pipe buffers
      const r = await run([String(n), ...(nonblocking ? ["--nonblocking"] : [])], true);
      expect(r.code).toBe(0);
      expect(r.err).toBe("done\n");
      const lines = r.out.split("\n").filter(Boolean);
      expect(lines.length).toBe(n);
      lines.forEach((l, i) => expect(l.startsWith(`line ${i} `)).toBe(true));
    }, 60_000);
  }

  test("a reader that has gone away: no error, the writer finishes", async () => {
    const p = Bun.spawn([process.execPath, WRITER, "2000"], { stdout: "pipe", stderr: "pipe" });
    await p.stdout.cancel();
    expect(await p.exited).toBe(0);
    expect(await new Response(p.stderr).text()).toBe("done\n");
  }, 60_000);
});

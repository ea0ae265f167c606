// The signal source outside a master image (threads not blocking the
// signals): it falls back to process.on handlers, says why, and still acts
// on signals and runs an armed exec. The signalfd path itself is covered by
// test/integration/signals.test.ts against the compiled binary.
import { expect, test } from "bun:test";
import { join } from "node:path";

test("without a blocked mask in every thread: a logged fallback that still delivers signals and runs the exec", async () => {
  const p = Bun.spawn([process.execPath, join(import.meta.dir, "../fixtures/signal-source-probe.ts")], { stdout: "pipe", stderr: "pipe" });
  let out = "";
  const dec = new TextDecoder();
  const reader = p.stdout.getReader();
  const readUntil = async (needle: string) => {
    const deadline = Date.now() + 20_000;
    while (!out.includes(needle)) {
      if (Date.now() > deadline) throw new Error(`no '${needle}' in: ${out}`);
      const { value, done } = await reader.read();
      if (done) throw new Error(`ended without '${needle}': ${out}${await new Response(p.stderr).text()}`);
      out += dec.decode(value);
    }
  };
  await readUntil("exec thunk ran");
  expect(out).toContain("fallback yes");
  expect(out).toMatch(/warn Signals are handled without a signalfd \((thread|the main thread).*\); one that arrives during a re-exec may be lost/);
  p.kill("SIGHUP");
  await readUntil("signal SIGHUP");
  p.kill("SIGTERM");
  await readUntil("signal SIGTERM");
  expect(await p.exited).toBe(0);
}, 30_000);

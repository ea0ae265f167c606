// onGracefulShutdown: SIGUSR2 runs each callback once, in this process.
import { afterEach, expect, test } from "bun:test";
import { isShuttingDown, onGracefulShutdown, resetGracefulShutdownForTests, runGracefulShutdown } from "../../src/worker/graceful-shutdown";

afterEach(() => resetGracefulShutdownForTests());

const usr2 = async () => { process.kill(process.pid, "SIGUSR2"); await Bun.sleep(20); };

test("SIGUSR2 runs every callback once, however many signals arrive", async () => {
  const calls: string[] = [];
  onGracefulShutdown(() => { calls.push("a"); });
  onGracefulShutdown(async () => { await Bun.sleep(5); calls.push("b"); });
  expect(isShuttingDown()).toBe(false);
  await usr2();
  await usr2();
  expect(isShuttingDown()).toBe(true);
  expect(calls.sort()).toEqual(["a", "b"]);
});

test("an unregistered callback does not run", async () => {
  const calls: string[] = [];
  const off = onGracefulShutdown(() => { calls.push("gone"); });
  onGracefulShutdown(() => { calls.push("kept"); });
  off();
  await usr2();
  expect(calls).toEqual(["kept"]);
});

test("a failing callback does not stop the others; the run settles", async () => {
  const calls: string[] = [];
  const errors: string[] = [];
  const orig = console.error;
  console.error = (m: string) => { errors.push(String(m)); };
  try {
    onGracefulShutdown(() => { throw new Error("nope"); });
    onGracefulShutdown(async () => { calls.push("ok"); });
    await runGracefulShutdown();
  } finally { console.error = orig; }
  expect(calls).toEqual(["ok"]);
  expect(errors[0]).toMatch(/graceful shutdown callback failed: Error: nope/);
});

test("a callback registered after the signal runs at once", async () => {
  onGracefulShutdown(() => {});
  await usr2();
  let ran = false;
  onGracefulShutdown(() => { ran = true; });
  await Bun.sleep(1);
  expect(ran).toBe(true);
});

test("fn must be a function", () => {
  expect(() => onGracefulShutdown(42 as unknown as () => void)).toThrow(TypeError);
});

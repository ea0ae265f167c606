// No signal is lost, whenever it comes: TERM, INT and HUP sent at random
// moments while the master re-executes itself again and again, with two busy
// loops loading both cores (a signal that meets a runtime thread, or a master
// image between its execve and its signalfd, is exactly what this catches).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { command, describeProcesses, processesTagged, sleep, startMaster, stateJson, stopMaster, type Master, waitFor, within } from "../harness";

let hogs: Subprocess[] = [];
beforeAll(() => {
  hogs = [0, 1].map(() => Bun.spawn(["sh", "-c", "while :; do :; done"], { stdio: ["ignore", "ignore", "ignore"] }));
});
afterAll(async () => {
  for (const h of hogs) h.kill("SIGKILL");
  await Promise.all(hogs.map((h) => h.exited));
});

/** A seeded generator, so a failing run can be told apart from another (the seed is printed). */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x / 0x100000000;
  };
}

/** Log lines that end with `what` (the master says "Received SIGTERM" once per signal it reads). */
const count = (m: Master, what: string) => m.output().split("\n").filter((l) => l.endsWith(what)).length;

/** Re-execute the master back to back (reload) until it stops answering; `done` counts the re-execs completed. */
async function reloadLoop(m: Master, stop: () => boolean, progress: { done: number }): Promise<void> {
  while (!stop()) {
    try {
      const answers = await command(m.sockPath, "reload", [], 20_000);
      // Refused or abandoned: the master is stopping.
      if (answers[answers.length - 1]!.error) return;
      progress.done++;
    } catch {
      return; // the master stopped: the connection closed or was refused
    }
  }
}

describe("signals during repeated re-execs, both cores busy", () => {
  for (const [sig, rounds] of [["SIGTERM", 200], ["SIGINT", 200]] as const) {
    test(`${sig} at ${rounds} random moments: every master acts on it and exits 0`, async () => {
      const seed = Date.now() & 0xffff;
      const rnd = random(seed);
      const lanes = 6;
      const failures: string[] = [];
      // Rounds by how many re-execs had completed when the signal was sent.
      const landed = new Map<number, number>();
      const lane = async (id: number) => {
        for (let i = id; i < rounds; i += lanes) {
          const m = startMaster(["-n", "1", "-m", "0", "--", "sleep", "1000"]);
          await waitFor("a worker", async () => (await stateJson(m.sockPath)).workers.length === 1, 30_000);
          let stopped = false;
          const progress = { done: 0 };
          const loop = reloadLoop(m, () => stopped, progress);
          // In the first re-exec (an image the start-up self-exec made) or
          // the second (one that inherited its mask from the previous
          // image), anywhere in it: preflight, exec, the new image's start,
          // resume. A re-exec takes ~0.3 s here with two busy loops.
          const nth = 1 + Math.floor(rnd() * 2);
          await waitFor(`re-exec ${nth} begun`, () => count(m, "Reloading einhorn, as commanded") >= nth, 30_000);
          await sleep(rnd() * 300);
          landed.set(progress.done, (landed.get(progress.done) ?? 0) + 1);
          m.proc.kill(sig);
          const code = await Promise.race([m.exited, sleep(20_000).then(() => null)]);
          stopped = true;
          await loop;
          if (code !== 0 || count(m, `Received ${sig}`) !== 1) {
            failures.push(`round ${i}: exit ${code}, ${count(m, `Received ${sig}`)} 'Received ${sig}'\n${m.output()}`);
            if (code === null) await stopMaster(m, "SIGKILL");
          }
          try {
            await waitFor("workers gone", () => processesTagged(m.tag).length === 0);
          } catch (e) {
            // What is left, and what the master said, before the leak check kills it.
            throw new Error(`round ${i} (seed ${seed}): ${(e as Error).message}\nLeft:\n${describeProcesses(m.tag, m.pid)}\nThe master's output:\n${m.output()}`);
          }
        }
      };
      await Promise.all(Array.from({ length: lanes }, (_, i) => lane(i)));
      const spread = [...landed].sort(([a], [b]) => a - b).map(([done, n]) => `${n} after ${done}`).join(", ");
      if (failures.length) console.log(`seed ${seed}: ${failures.length} failure(s); first:\n${failures[0]}`);
      else console.log(`${sig}: ${rounds} masters; signals sent after so many completed re-execs: ${spread} (seed ${seed})`);
      expect(failures).toEqual([]);
      // The moments really are spread: some signals came once a re-exec had completed.
      expect([...landed].filter(([done]) => done >= 1).reduce((n, [, k]) => n + k, 0)).toBeGreaterThan(rounds / 5);
    }, within(240_000));
  }

  test("SIGHUP at 200 random moments: each one is received and acted on; the master keeps serving and stops on TERM", async () => {
    const seed = Date.now() & 0xffff;
    const rnd = random(seed);
    const m = startMaster(["-n", "1", "-m", "0", "--", "sleep", "1000"]);
    await waitFor("a worker", async () => (await stateJson(m.sockPath)).workers.length === 1, 30_000);
    let stopped = false;
    const loop = reloadLoop(m, () => stopped, { done: 0 });
    for (let i = 1; i <= 200; i++) {
      await sleep(rnd() * 100);
      m.proc.kill("SIGHUP");
      // Wait until it was acted on before the next: two HUPs pending at once would merge in the kernel.
      await waitFor(`HUP ${i} acted on (seed ${seed})`, () => count(m, "Received SIGHUP") >= i, 20_000);
      expect(m.exitCode()).toBeNull();
    }
    stopped = true;
    await loop;
    expect(count(m, "Received SIGHUP")).toBe(200);
    const s = await stateJson(m.sockPath);
    // HUPs that arrive while one upgrade is being prepared join it, so fewer re-execs than HUPs.
    expect(s.master.reexecs).toBeGreaterThan(20);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(240_000));
});

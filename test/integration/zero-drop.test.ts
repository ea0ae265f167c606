// The zero-dropped-connections claim, as an automated test: a bounded HTTP
// load runs throughout 20 consecutive upgrades (each one re-executing the
// master) against the example worker, which drains gracefully on SIGUSR2.
// Every request must succeed. The longer run is bench/ (upgrade under load).
import { expect, test } from "bun:test";
import { join } from "node:path";
import { BUN, command, ROOT, startMaster, listenerPort, stateJson, stopMaster, waitFor } from "../harness";

const UPGRADES = 20;
const CLIENTS = 8;

test(`no failed request across ${UPGRADES} consecutive upgrades under load`, async () => {
  const m = startMaster(["-n", "2", "-m", "manual", "-b", "127.0.0.1:0", "--", BUN, join(ROOT, "examples", "http-worker.ts")], { cwd: ROOT });
  const s = await waitFor("2 acked workers", async () => {
    const st = await stateJson(m.sockPath);
    return st.workers.filter((w) => w.acked).length === 2 ? st : null;
  }, 20_000);
  const url = `http://127.0.0.1:${listenerPort(s)}/`;

  let running = true;
  let ok = 0;
  const failures: string[] = [];
  const servedBy = new Set<string>();
  const client = async () => {
    while (running) {
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
        const body = await res.text();
        if (res.status !== 200 || !body.startsWith("Hello from worker")) failures.push(`status ${res.status}: ${body.slice(0, 80)}`);
        else {
          ok++;
          servedBy.add(body.split(" ")[3]!);
        }
      } catch (e) {
        failures.push(`${(e as Error).name}: ${(e as Error).message}`);
      }
    }
  };
  const clients = Array.from({ length: CLIENTS }, client);

  const durations: number[] = [];
  for (let i = 0; i < UPGRADES; i++) {
    const t0 = performance.now();
    const answers = await command(m.sockPath, "upgrade", [], 60_000);
    durations.push(performance.now() - t0);
    const last = answers[answers.length - 1]!;
    expect(last.message).toBe("Upgrade done");
  }
  running = false;
  await Promise.all(clients);

  const end = await stateJson(m.sockPath);
  expect(end.master.reexecs).toBe(UPGRADES);
  expect(end.master.pid).toBe(m.pid);
  expect(failures).toEqual([]);
  expect(ok).toBeGreaterThan(UPGRADES * 10);
  // Workers of many generations answered (the load really ran across the upgrades).
  expect(servedBy.size).toBeGreaterThan(UPGRADES);
  console.log(`zero-drop: ${ok} requests, 0 failed, ${UPGRADES} upgrades, median upgrade ${durations.sort((a, b) => a - b)[UPGRADES >> 1]!.toFixed(0)} ms`);
  expect(await stopMaster(m)).toBe(0);
});

// spawn-latency: from spawning the master process to N workers counted as up,
// with timer ACKs (-m 0) and with manual ACKs from a worker that ACKs at
// once; and from an `inc` command to the new worker up.
//
// Times come from the master's own clock where it reports them (state json:
// started_at, spawned_at, acked_at, ms resolution, same system clock as ours)
// and, independently, from polling `state` every 5 ms ("observed", which adds
// up to one poll of delay). The master is spawned at t0 = Date.now().
import { join } from "node:path";
import {
  ackedCount, ask, type Benchmark, type BenchContext, distribution, fmtMs, median, pollState, readState, realPython, round,
  sleep, startMaster, waitForAcked, WORKERS_DIR,
} from "./harness";

const ACK_WORKER = join(WORKERS_DIR, "ack-now.py");

interface StartSample { run: number; boot_ms: number | null; first_spawn_ms: number | null; last_spawn_ms: number | null; up_ms: number | null; observed_ms: number; polls: number }
interface IncSample { sample: number; answer_ms: number; spawn_ms: number | null; up_ms: number | null; observed_ms: number }

const maxOf = (xs: Array<number | null>): number | null => (xs.some((x) => x === null) || xs.length === 0 ? null : Math.max(...(xs as number[])));
const minOf = (xs: Array<number | null>): number | null => (xs.some((x) => x === null) || xs.length === 0 ? null : Math.min(...(xs as number[])));
const medianOrNull = (xs: Array<number | null>): number | null => (xs.every((x) => x !== null) && xs.length ? round(median(xs as number[])) : null);

function workerCmd(py: string, manual: boolean): string[] {
  return [py, "-S", ACK_WORKER, ...(manual ? ["--ack"] : [])];
}

async function startToUp(py: string, mode: "timer" | "manual", n: number, run: number): Promise<StartSample> {
  const m = startMaster(["-n", String(n), "-m", mode === "timer" ? "0" : "manual"], workerCmd(py, mode === "manual"), { label: `spawn-${mode}-${n}-${run}` });
  try {
    const seen = await waitForAcked(m, n, { timeoutMs: 60_000, everyMs: 5 });
    const t0 = m.spawnedAtMs;
    const ws = seen.state.workers;
    const rel = (x: number | null) => (x === null ? null : x - t0);
    return {
      run,
      boot_ms: rel(seen.state.startedAtMs),
      first_spawn_ms: rel(minOf(ws.map((w) => w.spawnedAtMs))),
      last_spawn_ms: rel(maxOf(ws.map((w) => w.spawnedAtMs))),
      up_ms: rel(maxOf(ws.map((w) => w.ackedAtMs))),
      observed_ms: seen.seenAtMs - t0,
      polls: seen.polls,
    };
  } finally {
    await m.stop();
  }
}

/** `inc` on a master with 4 manual-ACK workers, repeated; each after the respawn interval (-s) has passed. */
async function incToUp(ctx: BenchContext, py: string, samples: number, seconds: number): Promise<IncSample[]> {
  const base = 4;
  const m = startMaster(["-n", String(base), "-m", "manual", "-s", String(seconds)], workerCmd(py, true), { label: "spawn-inc" });
  const out: IncSample[] = [];
  try {
    await waitForAcked(m, base, { timeoutMs: 30_000 });
    for (let k = 1; k <= samples; k++) {
      const st = await readState(m.sockPath);
      // The master spawns at most one worker per -s interval after the first start: wait it out,
      // so the figure is the command-to-worker path, not the interval.
      const lastSpawn = maxOf(st.workers.map((w) => w.spawnedAtMs));
      if (lastSpawn !== null) await sleep(Math.max(0, lastSpawn + seconds * 1000 + 50 - Date.now()));
      else await sleep(seconds * 1000 + 50);
      const before = new Set(st.workers.map((w) => w.pid));
      const t0 = Date.now();
      const p0 = performance.now();
      const answer = await ask(m.sockPath, "inc");
      const answerMs = performance.now() - p0;
      if (k === 1) ctx.log(`inc answered: ${JSON.stringify(answer)}`);
      const seen = await pollState(m, (s) => s.workers.some((w) => !before.has(w.pid) && w.acked) && ackedCount(s) >= base + k, `worker ${base + k} up after inc`, { timeoutMs: 30_000, everyMs: 2 });
      const w = seen.state.workers.find((x) => !before.has(x.pid) && x.acked)!;
      out.push({
        sample: k,
        answer_ms: round(answerMs),
        spawn_ms: w.spawnedAtMs === null ? null : w.spawnedAtMs - t0,
        up_ms: w.ackedAtMs === null ? null : w.ackedAtMs - t0,
        observed_ms: seen.seenAtMs - t0,
      });
    }
  } finally {
    await m.stop();
  }
  return out;
}

export const spawnLatency: Benchmark = {
  name: "spawn-latency",
  description: "Master process spawn to N workers up (N = 1, 8, 64; timer ACK -m 0 and instant manual ACK), and `inc` to the new worker up",
  runs: { full: 5, quick: 1 },
  async run(ctx) {
    const py = realPython();
    const sizes = [1, 8, 64];
    const modes = ["timer", "manual"] as const;
    const incSamples = ctx.quick ? 2 : Math.max(5, ctx.runs);
    const incSeconds = 1;
    const start: Record<string, StartSample[]> = {};
    for (const mode of modes) {
      for (const n of sizes) {
        const key = `${mode}-${n}`;
        start[key] = [];
        for (let r = 1; r <= ctx.runs; r++) start[key]!.push(await startToUp(py, mode, n, r));
        const s = start[key]!;
        ctx.log(`${key}: up ${s.map((x) => x.up_ms ?? x.observed_ms).join(", ")} ms`);
      }
    }
    const inc = await incToUp(ctx, py, incSamples, incSeconds);
    ctx.log(`inc: up ${inc.map((x) => x.up_ms ?? x.observed_ms).join(", ")} ms`);

    const results: Record<string, unknown> = {};
    const summary = [];
    for (const [key, s] of Object.entries(start)) {
      const up = s.map((x) => x.up_ms ?? x.observed_ms);
      results[key] = {
        up_ms_median: round(median(up)),
        up_ms: distribution(up),
        observed_ms_median: round(median(s.map((x) => x.observed_ms))),
        boot_ms_median: medianOrNull(s.map((x) => x.boot_ms)),
        last_spawn_ms_median: medianOrNull(s.map((x) => x.last_spawn_ms)),
      };
      const [mode, n] = key.split("-");
      const boot = medianOrNull(s.map((x) => x.boot_ms));
      const lastSpawn = medianOrNull(s.map((x) => x.last_spawn_ms));
      summary.push({
        measure: `start to ${n} worker${n === "1" ? "" : "s"} up, ${mode === "timer" ? "-m 0" : "manual ACK (python)"}`,
        value: fmtMs(median(up)),
        detail: `range ${fmtMs(Math.min(...up))}–${fmtMs(Math.max(...up))}; master ready ${boot === null ? "?" : fmtMs(boot)}, last spawn ${lastSpawn === null ? "?" : fmtMs(lastSpawn)}; observed by polling ${fmtMs(median(s.map((x) => x.observed_ms)))}`,
      });
    }
    const incUp = inc.map((x) => x.up_ms ?? x.observed_ms);
    results.inc = {
      up_ms_median: round(median(incUp)),
      up_ms: distribution(incUp),
      spawn_ms_median: medianOrNull(inc.map((x) => x.spawn_ms)),
      answer_ms_median: round(median(inc.map((x) => x.answer_ms))),
      observed_ms_median: round(median(inc.map((x) => x.observed_ms))),
    };
    const incSpawn = medianOrNull(inc.map((x) => x.spawn_ms));
    summary.push({
      measure: "`inc` to new worker up (4 workers, manual ACK)",
      value: fmtMs(median(incUp)),
      detail: `${inc.length} samples, range ${fmtMs(Math.min(...incUp))}–${fmtMs(Math.max(...incUp))}; command to spawn ${incSpawn === null ? "?" : fmtMs(incSpawn)}; answer ${fmtMs(median(inc.map((x) => x.answer_ms)))}`,
    });
    return {
      parameters: {
        sizes,
        modes: { timer: "-m 0", manual: "-m manual" },
        worker: `${py} -S bench/workers/ack-now.py [--ack]`,
        python: py,
        poll_interval_ms: 5,
        inc: { workers: 4, ack: "manual", seconds: incSeconds, samples: incSamples, note: "each inc is sent once -s has passed since the last spawn" },
        clock: "t0 = Date.now() just before spawning the master; up = last acked_at (master clock) - t0; observed = poll that saw N acked - t0",
      },
      samples: { start, inc },
      results,
      summary,
    };
  },
};

// rollout-time: a smooth upgrade from the `upgrade` command to "Upgrade done",
// for N = 1, 8, 64, 256 workers that ACK at once (Python, `-m manual`) and
// workers that take 200 ms before they ACK; with the default --max-unacked
// (number of CPUs) and with --max-unacked N (every new worker at once).
//
// Model. New workers start as ACKs free a slot, at most M = max_unacked
// unACKed at a time, so an upgrade of N workers that each need S ms to start
// takes at least ceil(N / M) "waves" of S ms:
//   einhorn overhead = total - S x ceil(N / M)
// For the 200 ms workers S = 200 (the sleep; their interpreter start, ~15 ms
// of CPU, counts as overhead here, so this overstates einhorn's share a
// little). For the instant workers S is measured: the median acked_at -
// spawned_at of the new workers (state json, master clock, ms resolution),
// which includes interpreter start and, with many at once, CPU contention.
// The master re-exec part is the request to the "Master re-executed" line.
//
// One master per (variant, N) serves all its runs: the first generation starts
// without the delay (ack-now.py --delay-while only sleeps while a flag file exists), then
// each run is one upgrade, after which the next waits until the old workers
// are gone.
import { writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import {
  type Benchmark, type BenchContext, fmtMs, median, pollState, processLimits, readState, realPython, round, startMaster, waitForAcked, WORKERS_DIR,
} from "./harness";
import { timedUpgrade } from "./upgrade-common";

const WORKER = join(WORKERS_DIR, "ack-now.py");

type Kind = "instant" | "delay200";
interface Variant { kind: Kind; maxUnacked: "default" | "N" }
interface RunSample {
  kind: Kind; max_unacked: number; n: number; run: number;
  total_ms: number; reexec_ms: number | null; reexec_master_ms: number | null;
  worker_start_ms_median: number | null; waves: number; model_worker_ms: number; overhead_ms: number;
  reexecs_before: number | null; reexecs_after: number | null; ok: boolean; final: string; messages_count: number;
}

async function measure(ctx: BenchContext, py: string, v: Variant, n: number, runs: number): Promise<RunSample[]> {
  const cpus = availableParallelism();
  const M = v.maxUnacked === "N" ? n : cpus;
  const delay = v.kind === "delay200" ? 200 : 0;
  const label = `rollout-${v.kind}-${v.maxUnacked === "N" ? "mN" : "mdef"}-${n}`;
  const args = ["-n", String(n), "-m", "manual", ...(v.maxUnacked === "N" ? ["--max-unacked", String(n)] : [])];
  // The flag file lives in the master's directory; it is created once the first generation is up.
  const m = startMaster(args, [py, "-S", WORKER, "--ack", "--delay", String(delay), "--delay-while", "DELAYFLAG"], { label });
  const flag = join(m.dir, "DELAYFLAG");
  const out: RunSample[] = [];
  try {
    await waitForAcked(m, n, { timeoutMs: 120_000, everyMs: 20 });
    if (delay) writeFileSync(flag, "");
    for (let r = 1; r <= runs; r++) {
      const before = await readState(m.sockPath);
      const reexecsBefore = (before.raw as any)?.master?.reexecs ?? null;
      const oldPids = new Set(before.workers.map((w) => w.pid));
      const up = await timedUpgrade(m.sockPath, 180_000);
      // After "Upgrade done": the new generation, and the old one gone (before the next run).
      const after = await pollState(m, (s) => s.workers.length === n && s.workers.every((w) => w.acked && !w.retiring && !oldPids.has(w.pid)), `old workers gone after upgrade ${r}`, { timeoutMs: 60_000, everyMs: 20 });
      const reexecsAfter = (after.state.raw as any)?.master?.reexecs ?? null;
      const starts = after.state.workers.filter((w) => w.ackedAtMs !== null && w.spawnedAtMs !== null).map((w) => w.ackedAtMs! - w.spawnedAtMs!);
      const startMed = starts.length ? round(median(starts)) : null;
      const waves = Math.ceil(n / M);
      const S = delay || (startMed ?? 0);
      const s: RunSample = {
        kind: v.kind, max_unacked: M, n, run: r,
        total_ms: up.total_ms, reexec_ms: up.reexec_ms, reexec_master_ms: up.reexec_master_ms,
        worker_start_ms_median: startMed, waves, model_worker_ms: round(S * waves), overhead_ms: round(up.total_ms - S * waves),
        reexecs_before: reexecsBefore, reexecs_after: reexecsAfter, ok: up.ok, final: up.final, messages_count: up.messages.length,
      };
      if (!up.ok) ctx.note(`${label} run ${r}: the upgrade did not end with "Upgrade done": ${up.final}`);
      if (reexecsBefore !== null && reexecsAfter !== reexecsBefore + 1) ctx.note(`${label} run ${r}: master.reexecs went ${reexecsBefore} -> ${reexecsAfter}, expected +1`);
      ctx.log(`${label} run ${r}: total ${fmtMs(s.total_ms)}, re-exec ${s.reexec_ms === null ? "?" : fmtMs(s.reexec_ms)}, worker start ${startMed} ms, overhead ${fmtMs(s.overhead_ms)}`);
      out.push(s);
    }
  } finally {
    await m.stop(10_000);
  }
  return out;
}

export const rolloutTime: Benchmark = {
  name: "rollout-time",
  description: "smooth upgrade, `upgrade` to \"Upgrade done\", N = 1/8/64/256 workers ACKing at once or after 200 ms, default and N max-unacked; einhorn's overhead and the master re-exec part",
  runs: { full: 3, quick: 1 },
  async run(ctx) {
    const py = realPython();
    const cpus = availableParallelism();
    const limits = processLimits();
    const ns = ctx.quick ? [1, 8, 64] : [1, 8, 64, 256];
    const room = Math.min(typeof limits.ulimit_u === "number" ? limits.ulimit_u : Infinity, limits.pid_max ?? Infinity) - limits.processes_now;
    // During an upgrade both generations are alive: 2N workers.
    const fits = ns.filter((n) => 2 * n + 50 < room);
    if (fits.length < ns.length) ctx.note(`not enough room for ${ns.filter((n) => !fits.includes(n)).join(", ")} workers (x2 during an upgrade): ulimit -u ${limits.ulimit_u}, ${limits.processes_now} processes running`);
    const variants: Variant[] = [
      { kind: "instant", maxUnacked: "default" },
      { kind: "instant", maxUnacked: "N" },
      { kind: "delay200", maxUnacked: "default" },
      { kind: "delay200", maxUnacked: "N" },
    ];
    const samples: RunSample[] = [];
    const results: Record<string, unknown> = {};
    const summary = [];
    for (const v of variants) {
      for (const n of fits) {
        // 256 workers with 200 ms each in waves of M = CPUs is ~25 s per run: one run.
        const runs = n >= 256 ? (v.kind === "delay200" && v.maxUnacked === "default" ? 1 : Math.min(2, ctx.runs)) : ctx.runs;
        const got = await measure(ctx, py, v, n, runs);
        samples.push(...got);
        const M = v.maxUnacked === "N" ? n : cpus;
        const med = (f: (s: RunSample) => number | null) => { const xs = got.map(f).filter((x): x is number => x !== null); return xs.length ? round(median(xs)) : null; };
        const key = `${v.kind}/max_unacked=${v.maxUnacked === "N" ? "N" : `default(${cpus})`}/n=${n}`;
        const r = {
          runs: got.length, max_unacked: M, waves: Math.ceil(n / M),
          total_ms: med((s) => s.total_ms), reexec_ms: med((s) => s.reexec_ms), reexec_master_ms: med((s) => s.reexec_master_ms),
          worker_start_ms: med((s) => s.worker_start_ms_median), model_worker_ms: med((s) => s.model_worker_ms), overhead_ms: med((s) => s.overhead_ms),
          total_ms_all: got.map((s) => s.total_ms), all_ok: got.every((s) => s.ok),
        };
        results[key] = r;
        const ref = n === 8 && v.kind === "instant" && v.maxUnacked === "default" ? "target < 1 s; Ruby Einhorn side by side: vs-ruby" : undefined;
        summary.push({
          measure: `${v.kind === "instant" ? "instant ACK" : "200 ms start"}, N=${n}, max-unacked ${M}${v.maxUnacked === "N" ? " (=N)" : " (default)"}`,
          value: r.total_ms === null ? "–" : fmtMs(r.total_ms),
          detail: `overhead ${r.overhead_ms === null ? "?" : fmtMs(r.overhead_ms)} (total − ${r.waves} wave(s) × ${v.kind === "delay200" ? "200 ms" : `${r.worker_start_ms} ms measured start`}); master re-exec ${r.reexec_ms === null ? "?" : fmtMs(r.reexec_ms)}; ${r.runs} run(s): ${r.total_ms_all.map((x) => fmtMs(x)).join(", ")}`,
          ...(ref ? { reference: ref } : {}),
        });
      }
    }
    return {
      parameters: {
        worker: `${py} -S bench/workers/ack-now.py --ack --delay DELAY_MS --delay-while FLAG (-m manual)`, ns: fits, cpus, default_max_unacked: cpus, limits, variants,
        model: "overhead = total - S x ceil(N / max_unacked); S = 200 ms for the delayed workers (the sleep; their ~15 ms interpreter start counts as overhead), and for the instant workers the median acked_at - spawned_at of the new generation (master clock, ms resolution; includes interpreter start and CPU contention). Master re-exec = request to the 'Master re-executed' progress line. One master per (variant, N); the first generation starts without the delay, each run is one upgrade; the next run waits until the old generation is gone.",
      },
      samples,
      results,
      summary,
    };
  },
};

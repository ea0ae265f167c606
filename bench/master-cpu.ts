// master-cpu: CPU the master itself uses (utime+stime of all its threads from
// /proc/PID/stat; children not included), in ms of CPU per second of wall
// time, over a fixed window:
//   idle        4 `sleep` workers, all up, nothing happening
//   crash loop  every worker exits at once, -s 0.1. Two ways:
//     before ACK  (-m 1, the default kind): each death before ACK lengthens
//                 the respawn interval (0.1 s × 1.5^deaths), so respawns slow down
//     after ACK   (-m 0: ACKed at spawn, so no backoff): one respawn per 0.1 s
// The window starts once the master answers (idle: after the workers are up
// and 1 s of settling; crash loops: once the first worker has died).
import { type Benchmark, type BenchContext, CLK_TCK, cpuTimeMs, readState, distribution, median, pollState, round, schedCpuMs, sleep, startMaster, waitForAcked, which } from "./harness";

interface Scenario { key: string; label: string; args: string[]; program: string[]; ready: "acked" | "first-exit" }

interface Sample { run: number; window_ms: number; cpu_ms: number; sched_cpu_ms: number; cpu_ms_per_s: number; sched_cpu_ms_per_s: number; respawns: number | null }

async function measure(ctx: BenchContext, sc: Scenario, run: number, windowMs: number): Promise<Sample> {
  const m = startMaster(sc.args, sc.program, { label: `cpu-${sc.key}-${run}` });
  try {
    if (sc.ready === "acked") {
      await waitForAcked(m, 4, { timeoutMs: 30_000 });
      await sleep(1000);
    } else {
      await pollState(m, (s) => (s.exitsTotal ?? 1) >= 1, "the first worker exit", { timeoutMs: 30_000, everyMs: 10 });
    }
    const e0 = await readState(m.sockPath).then((s) => s.exitsTotal).catch(() => null);
    const c0 = cpuTimeMs(m.pid);
    const s0 = schedCpuMs(m.pid);
    const t0 = performance.now();
    await sleep(windowMs);
    const c1 = cpuTimeMs(m.pid);
    const s1 = schedCpuMs(m.pid);
    const wall = performance.now() - t0;
    if (m.proc.exitCode !== null) throw new Error(`the master exited during the ${sc.key} window`);
    const e1 = await readState(m.sockPath).then((s) => s.exitsTotal).catch(() => null);
    const sample = {
      run,
      window_ms: round(wall),
      cpu_ms: round(c1 - c0),
      sched_cpu_ms: round(s1 - s0),
      cpu_ms_per_s: round(((c1 - c0) / wall) * 1000),
      sched_cpu_ms_per_s: round(((s1 - s0) / wall) * 1000),
      respawns: e0 === null || e1 === null ? null : e1 - e0,
    };
    ctx.log(`${sc.key} run ${run}: ${sample.cpu_ms_per_s} ms/s (stat), ${sample.sched_cpu_ms_per_s} ms/s (schedstat)${sample.respawns === null ? "" : `, ${sample.respawns} worker exits`}`);
    return sample;
  } finally {
    await m.stop();
  }
}

export const masterCpu: Benchmark = {
  name: "master-cpu",
  description: "Master CPU time (utime+stime, ms per s of wall time) idle with 4 workers, and in a crash loop (-s 0.1) with deaths before and after ACK",
  runs: { full: 3, quick: 1 },
  async run(ctx) {
    const windowMs = ctx.quick ? 2000 : 5000;
    const sleepBin = which("sleep") ?? "sleep";
    const falseBin = which("false") ?? "false";
    const scenarios: Scenario[] = [
      { key: "idle", label: "idle, 4 workers", args: ["-n", "4", "-m", "0"], program: [sleepBin, "100000"], ready: "acked" },
      { key: "crash-before-ack", label: "crash loop, deaths before ACK (-m 1, backoff)", args: ["-n", "4", "-s", "0.1", "-m", "1"], program: [falseBin], ready: "first-exit" },
      { key: "crash-after-ack", label: "crash loop, ACKed at spawn (-m 0, no backoff)", args: ["-n", "4", "-s", "0.1", "-m", "0"], program: [falseBin], ready: "first-exit" },
    ];
    const samples: Record<string, Sample[]> = {};
    for (const sc of scenarios) {
      samples[sc.key] = [];
      for (let r = 1; r <= ctx.runs; r++) samples[sc.key]!.push(await measure(ctx, sc, r, windowMs));
    }
    const results: Record<string, unknown> = {};
    const summary = [];
    for (const sc of scenarios) {
      const s = samples[sc.key]!;
      const perS = median(s.map((x) => x.cpu_ms_per_s));
      const sched = median(s.map((x) => x.sched_cpu_ms_per_s));
      const respawns = s.every((x) => x.respawns !== null) ? median(s.map((x) => x.respawns!)) : null;
      results[sc.key] = {
        cpu_ms_per_s_median: round(perS),
        sched_cpu_ms_per_s_median: round(sched),
        cpu_ms_per_s: distribution(s.map((x) => x.cpu_ms_per_s)),
        worker_exits_per_window_median: respawns,
        cpu_ms_per_worker_exit: respawns ? round(median(s.map((x) => x.sched_cpu_ms)) / respawns) : null,
      };
      summary.push({
        measure: `master CPU, ${sc.label}`,
        value: `${perS.toFixed(1)} ms/s`,
        detail: `${(perS / 10).toFixed(2)}% of a core; schedstat ${sched.toFixed(2)} ms/s; ${s.length} × ${windowMs / 1000} s${respawns !== null && sc.key !== "idle" ? `; ${respawns} worker exits per window` : ""}`,
      });
    }
    return {
      parameters: { window_ms: windowMs, clk_tck_resolution_ms: round(1000 / CLK_TCK), scenarios },
      samples,
      results,
      summary,
    };
  },
};

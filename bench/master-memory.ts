// master-memory: the master's resident memory with idle workers, read from
// /proc/PID/status (VmRSS now, VmHWM the peak so far) once the workers are up
// and the master has settled. Workers are `sleep 100000` with -m 0, so the
// figure is the master's own bookkeeping, not its workers'.
import { type Benchmark, distribution, fmtMB, median, procStatusKb, processLimits, round, sleep, startMaster, waitForAcked } from "./harness";

const TARGET_MB_8 = 40;

interface Sample { run: number; workers: number; up_ms: number; samples_kb: Array<Record<string, number>>; rss_kb: number; hwm_kb: number; rss_anon_kb: number | null; rss_file_kb: number | null; threads: number | null }

export const masterMemory: Benchmark = {
  name: "master-memory",
  description: "Master RSS (VmRSS, and peak VmHWM) with 4, 8 and 1000 idle `sleep` workers (-m 0), sampled after settling",
  runs: { full: 3, quick: 1 },
  async run(ctx) {
    const limits = processLimits();
    let sizes = [4, 8, 1000];
    const settleMs = ctx.quick ? 1000 : 2000;
    const sampleCount = 5;
    const sampleEveryMs = 200;
    // 1000 workers need 1000 more processes than are running now, with room to spare.
    const need = 1000 + limits.processes_now + 100;
    const room = Math.min(typeof limits.ulimit_u === "number" ? limits.ulimit_u : Infinity, limits.pid_max ?? Infinity, limits.threads_max ?? Infinity);
    if (room < need) {
      ctx.note(`not enough room for 1000 workers: ulimit -u ${limits.ulimit_u}, pid_max ${limits.pid_max}, threads-max ${limits.threads_max}, ${limits.processes_now} processes running; the 1000-worker case is skipped`);
      sizes = sizes.filter((n) => n !== 1000);
    }
    const runs: Sample[] = [];
    for (const n of sizes) {
      for (let r = 1; r <= ctx.runs; r++) {
        const m = startMaster(["-n", String(n), "-m", "0"], ["sleep", "100000"], { label: `memory-${n}-${r}` });
        try {
          const seen = await waitForAcked(m, n, { timeoutMs: 120_000, everyMs: n > 100 ? 50 : 10 });
          const upMs = seen.seenAtMs - m.spawnedAtMs;
          await sleep(settleMs);
          const samples: Array<Record<string, number>> = [];
          for (let i = 0; i < sampleCount; i++) {
            samples.push(procStatusKb(m.pid));
            if (i + 1 < sampleCount) await sleep(sampleEveryMs);
          }
          const last = samples[samples.length - 1]!;
          runs.push({
            run: r,
            workers: n,
            up_ms: upMs,
            samples_kb: samples.map((s) => ({ VmRSS: s.VmRSS!, VmHWM: s.VmHWM!, RssAnon: s.RssAnon ?? -1, RssFile: s.RssFile ?? -1, Threads: s.Threads ?? -1 })),
            rss_kb: median(samples.map((s) => s.VmRSS!)),
            hwm_kb: last.VmHWM!,
            rss_anon_kb: last.RssAnon ?? null,
            rss_file_kb: last.RssFile ?? null,
            threads: last.Threads ?? null,
          });
          ctx.log(`${n} workers, run ${r}: up in ${upMs} ms; VmRSS ${fmtMB(runs[runs.length - 1]!.rss_kb)}, VmHWM ${fmtMB(last.VmHWM!)}`);
        } finally {
          await m.stop();
        }
      }
    }
    const results: Record<string, unknown> = {};
    const summary = [];
    for (const n of sizes) {
      const rs = runs.filter((x) => x.workers === n);
      const rss = median(rs.map((x) => x.rss_kb));
      const hwm = median(rs.map((x) => x.hwm_kb));
      const anon = rs.every((x) => x.rss_anon_kb !== null) ? median(rs.map((x) => x.rss_anon_kb!)) : null;
      results[`${n}_workers`] = {
        vmrss_kb_median: round(rss, 0),
        vmhwm_kb_median: round(hwm, 0),
        rss_anon_kb_median: anon,
        rss_file_kb_median: rs.every((x) => x.rss_file_kb !== null) ? median(rs.map((x) => x.rss_file_kb!)) : null,
        vmrss_kb: distribution(rs.map((x) => x.rss_kb)),
        up_ms_median: round(median(rs.map((x) => x.up_ms))),
        threads: rs[0]?.threads ?? null,
      };
      if (n === 8 && rss / 1024 > TARGET_MB_8) ctx.note(`master RSS with 8 workers is ${fmtMB(rss)}, above the ${TARGET_MB_8} MB target`);
      summary.push({
        measure: `master RSS, ${n} idle workers`,
        value: fmtMB(rss),
        detail: `peak (VmHWM) ${fmtMB(hwm)}${anon !== null ? `; anon ${fmtMB(anon)}` : ""}; ${rs.length} run${rs.length === 1 ? "" : "s"}, range ${fmtMB(Math.min(...rs.map((x) => x.rss_kb)))}–${fmtMB(Math.max(...rs.map((x) => x.rss_kb)))}${n >= 100 ? `; all up in ${(median(rs.map((x) => x.up_ms)) / 1000).toFixed(1)} s` : ""}`,
        reference: n === 8 ? `target < ${TARGET_MB_8} MB; Ruby Einhorn side by side: vs-ruby` : "",
      });
    }
    return {
      parameters: { sizes, worker: "sleep 100000", ack: "-m 0", settle_ms: settleMs, samples_per_run: sampleCount, sample_every_ms: sampleEveryMs, limits },
      samples: runs,
      results,
      summary,
    };
  },
};

// ops-overhead: what the operations features cost the master, side by side
// with the plain master in the same run (alternating order per run):
//   idle           4 `sleep` workers, nothing else (the plain figure)
//   metrics        the same with --metrics, /metrics scraped once a second
//                  (plus /healthz), as Prometheus and a probe would
//   chatty-inherit 4 workers writing RATE lines/s each to stdout, default
//                  --worker-output inherit (straight to the log file; the
//                  master is not involved: the plain figure for the next)
//   chatty-prefix  the same workers with --worker-output prefix: every line
//                  read, tagged and written by the master
// Master CPU is utime+stime of all its threads (/proc/PID/stat) over the
// window, in ms per s of wall time; RSS is VmRSS at the end of the window,
// HWM the peak.
import { type Benchmark, type BenchContext, cpuTimeMs, median, schedCpuMs, procStatusKb, realPython, round, sleep, startMaster, waitForAcked, which, WORKERS_DIR } from "./harness";
import { join } from "node:path";
import { statSync } from "node:fs";

interface Scenario { key: string; label: string; args: string[]; program: string[]; scrape: boolean }
interface Sample { run: number; cpu_ms_per_s: number; sched_cpu_ms_per_s: number; rss_mb: number; hwm_mb: number; scrapes: number; scrape_ms_p50: number | null; log_mb: number }

async function measure(ctx: BenchContext, sc: Scenario, run: number, windowMs: number): Promise<Sample> {
  const m = startMaster(sc.args, sc.program, { label: `ops-${sc.key}-${run}` });
  try {
    await waitForAcked(m, 4, { timeoutMs: 30_000 });
    let port: number | null = null;
    if (sc.scrape) {
      const deadline = Date.now() + 10_000;
      while (port === null && Date.now() < deadline) {
        const hit = /Serving metrics on http:\/\/127\.0\.0\.1:(\d+)\//.exec(m.log());
        if (hit) port = Number(hit[1]);
        else await sleep(20);
      }
      if (port === null) throw new Error("the master did not log its metrics port");
    }
    await sleep(1000);
    const logSize0 = statSync(m.logPath).size;
    const c0 = cpuTimeMs(m.pid);
    const s0 = schedCpuMs(m.pid);
    const t0 = performance.now();
    const times: number[] = [];
    let scrapes = 0;
    while (performance.now() - t0 < windowMs) {
      if (port !== null) {
        const s = performance.now();
        const body = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        await (await fetch(`http://127.0.0.1:${port}/healthz`)).text();
        times.push(performance.now() - s);
        if (!body.includes("einhorn_workers_wanted 4")) throw new Error("unexpected /metrics answer");
        scrapes++;
      }
      await sleep(Math.min(1000, Math.max(0, windowMs - (performance.now() - t0))));
    }
    const c1 = cpuTimeMs(m.pid);
    const s1 = schedCpuMs(m.pid);
    const wall = performance.now() - t0;
    const st = procStatusKb(m.pid);
    if (m.proc.exitCode !== null) throw new Error(`the master exited during the ${sc.key} window`);
    const sample: Sample = {
      run,
      cpu_ms_per_s: round(((c1 - c0) / wall) * 1000),
      sched_cpu_ms_per_s: round(((s1 - s0) / wall) * 1000),
      rss_mb: round((st.VmRSS ?? 0) / 1024, 1),
      hwm_mb: round((st.VmHWM ?? 0) / 1024, 1),
      scrapes,
      scrape_ms_p50: times.length ? round(median(times), 2) : null,
      log_mb: round((statSync(m.logPath).size - logSize0) / 1024 / 1024, 2),
    };
    ctx.log(`${sc.key} run ${run}: ${sample.cpu_ms_per_s} ms/s CPU (schedstat ${sample.sched_cpu_ms_per_s}), RSS ${sample.rss_mb} MB (peak ${sample.hwm_mb})${scrapes ? `, ${scrapes} scrapes, p50 ${sample.scrape_ms_p50} ms` : ""}, log +${sample.log_mb} MB`);
    return sample;
  } finally {
    await m.stop();
  }
}

export const opsOverhead: Benchmark = {
  name: "ops-overhead",
  description: "Master CPU and RSS with --metrics scraped every second and with --worker-output prefix under chatty workers, next to the plain master in the same run",
  runs: { full: 3, quick: 1 },
  async run(ctx) {
    const windowMs = ctx.quick ? 3000 : 10_000;
    const rate = 1000;
    const sleepBin = which("sleep") ?? "sleep";
    const py = realPython();
    const chatty = [py, "-S", join(WORKERS_DIR, "chatty.py"), "--rate", String(rate)];
    const base = ["-n", "4", "-m", "0"];
    const scenarios: Scenario[] = [
      { key: "idle", label: "idle, 4 workers (plain)", args: base, program: [sleepBin, "100000"], scrape: false },
      { key: "metrics", label: "idle, 4 workers, --metrics scraped every 1 s", args: ["--metrics", "127.0.0.1:0", ...base], program: [sleepBin, "100000"], scrape: true },
      { key: "chatty-inherit", label: `4 workers × ${rate} lines/s, --worker-output inherit (plain)`, args: base, program: chatty, scrape: false },
      { key: "chatty-prefix", label: `4 workers × ${rate} lines/s, --worker-output prefix`, args: ["--worker-output", "prefix", ...base], program: chatty, scrape: false },
    ];
    const samples: Record<string, Sample[]> = Object.fromEntries(scenarios.map((s) => [s.key, []]));
    for (let r = 1; r <= ctx.runs; r++) {
      // Pairs side by side, order alternating between runs.
      const pairs = [[scenarios[0]!, scenarios[1]!], [scenarios[2]!, scenarios[3]!]];
      for (const pair of pairs) {
        const order = r % 2 === 1 ? pair : [...pair].reverse();
        for (const sc of order) samples[sc.key]!.push(await measure(ctx, sc, r, windowMs));
      }
    }
    const results: Record<string, unknown> = {};
    const summary = [];
    const med = (k: string, f: keyof Sample) => median(samples[k]!.map((x) => x[f] as number));
    for (const sc of scenarios) {
      results[sc.key] = {
        cpu_ms_per_s_median: round(med(sc.key, "cpu_ms_per_s")),
        sched_cpu_ms_per_s_median: round(med(sc.key, "sched_cpu_ms_per_s")),
        rss_mb_median: round(med(sc.key, "rss_mb"), 1),
        hwm_mb_median: round(med(sc.key, "hwm_mb"), 1),
        scrape_ms_p50_median: sc.scrape ? round(med(sc.key, "scrape_ms_p50"), 2) : null,
        log_mb_per_window_median: round(med(sc.key, "log_mb"), 2),
      };
      const plain = sc.key === "metrics" ? "idle" : sc.key === "chatty-prefix" ? "chatty-inherit" : null;
      summary.push({
        measure: `master CPU and RSS, ${sc.label}`,
        value: `${med(sc.key, "cpu_ms_per_s").toFixed(1)} ms/s, ${med(sc.key, "rss_mb").toFixed(1)} MB`,
        detail: `schedstat ${med(sc.key, "sched_cpu_ms_per_s").toFixed(2)} ms/s; peak RSS ${med(sc.key, "hwm_mb").toFixed(1)} MB; ${samples[sc.key]!.length} × ${windowMs / 1000} s${sc.scrape ? `; scrape+healthz p50 ${med(sc.key, "scrape_ms_p50").toFixed(2)} ms` : ""}${sc.key.startsWith("chatty") ? `; log +${med(sc.key, "log_mb").toFixed(1)} MB per window` : ""}`,
        reference: plain ? `plain (${plain}): ${med(plain, "cpu_ms_per_s").toFixed(1)} ms/s (schedstat ${med(plain, "sched_cpu_ms_per_s").toFixed(2)}), ${med(plain, "rss_mb").toFixed(1)} MB, same run` : undefined,
      });
    }
    return { parameters: { window_ms: windowMs, lines_per_s_per_worker: rate, workers: 4, scenarios }, samples, results, summary };
  },
};

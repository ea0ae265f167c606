// rollout-limit: how close an upgrade comes to what the machine allows.
//
// Two kinds of worker (bench/workers/ack-now.py, -m manual):
//   cpu   burns BURN ms of CPU (interpreter start included) before it ACKs.
//         No schedule can start N of them faster than the cores can run them:
//           limit = N x C / cores,  C = the measured start CPU per worker
//         (schedstat of the new workers once they ACKed and went idle).
//   wait  sleeps WAIT ms, then ACKs. With at most M unACKed at once the
//         upgrade runs in waves of k = min(M, what is left) workers (fleet:
//         one wave of N), and a wave cannot end before its interpreters have
//         started (C ms of CPU each, measured like the cpu workers', about
//         15 ms for python3 -S) and then slept:
//           limit = sum over waves of (WAIT + max(C, k x C / cores))
//         which is (WAIT + C) x ceil(N / M) while k <= cores. The issue's
//         literal WAIT x ceil(N / M) is reported too (ratio_sleep_only): with
//         32 interpreters starting at once on 2 cores, their 220 ms of CPU is
//         no longer negligible next to a 300 ms wait.
// For N = 4, 8, 32, smooth (`upgrade`) with max-unacked M = cores, 2 x cores
// and N, and fleet (`upgrade_fleet`). Each figure: the upgrade's wall time
// (request to "Upgrade done") over the limit.
//
// The machine is shared: other processes' CPU during each upgrade is measured
// (busy time from /proc/stat minus what the master and the new workers used;
// the old workers' exits and the preflight count as others, a few ms) and shown as a second ratio, wall / ((N x C + others) / cores),
// i.e. against what was left of the cores. Wall times from a busy machine are
// noisy; the load average at start and end is in the results file.
//
// "Old workers keep serving": a poller reads `state json` every 100 ms during
// the upgrade; the smallest number of ACKed, not-retiring workers it saw
// (either generation) is recorded, and must never drop below N.
import { readFileSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import {
  type Benchmark, type BenchContext, CLK_TCK, fmtMs, median, pollState, readState, realPython, round, schedCpuMs, startMaster, waitForAcked, WORKERS_DIR,
} from "./harness";
import { timedUpgrade } from "./upgrade-common";

const WORKER = join(WORKERS_DIR, "ack-now.py");

type Kind = "cpu" | "wait";
type Mode = "smooth" | "fleet";

interface Sample {
  kind: Kind; mode: Mode; n: number; max_unacked: number; run: number;
  wall_ms: number; limit_ms: number; ratio: number; ratio_sleep_only: number | null;
  start_cpu_ms_mean: number; others_cpu_ms: number; einhorn_cpu_ms: number; ratio_vs_cpu_left: number | null;
  min_serving: number | null; ok: boolean; final: string;
}

/** Busy CPU of the whole machine so far, ms (all cores). */
function machineBusyMs(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  return ((f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + f[7]!) * 1000) / CLK_TCK;
}

/** A process's own CPU (utime+stime, all threads), ms. */
function selfMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

const cpuOf = (pid: number) => { try { return schedCpuMs(pid); } catch { return 0; } };

async function measure(ctx: BenchContext, py: string, kind: Kind, mode: Mode, n: number, m: number, amountMs: number, runs: number): Promise<Sample[]> {
  const cores = availableParallelism();
  const label = `rollout-limit-${kind}-${mode}-${n}-m${m}`;
  const slow = kind === "cpu" ? ["--burn", String(amountMs)] : ["--delay", String(amountMs)];
  const master = startMaster(["-n", String(n), "-m", "manual", "--max-unacked", String(m)], [py, "-S", WORKER, "--ack", ...slow, "--delay-while", "SLOWFLAG"], { label });
  const out: Sample[] = [];
  try {
    await waitForAcked(master, n, { timeoutMs: 120_000, everyMs: 20 });
    writeFileSync(join(master.dir, "SLOWFLAG"), "");
    for (let r = 1; r <= runs; r++) {
      const before = await readState(master.sockPath);
      const oldPids = new Set(before.workers.map((w) => w.pid));
      const busy0 = machineBusyMs();
      const ours0 = selfMs(master.pid);
      // Who is serving: polled while the upgrade runs.
      let minServing: number | null = null;
      let polling = true;
      const poller = (async () => {
        while (polling) {
          try {
            const s = await readState(master.sockPath, 5_000);
            const serving = s.workers.filter((w) => w.acked && !w.retiring).length;
            if (polling) minServing = minServing === null ? serving : Math.min(minServing, serving);
          } catch { /* the master is re-executing: try again */ }
          await Bun.sleep(100);
        }
      })();
      const up = await timedUpgrade(master.sockPath, 600_000, mode === "fleet" ? "upgrade_fleet" : "upgrade");
      polling = false;
      await poller;
      const busy1 = machineBusyMs();
      const ours1 = selfMs(master.pid);
      if (!up.ok) {
        // A failed or refused upgrade leaves the old generation serving: say so and go on.
        ctx.note(`${label} run ${r}: the upgrade did not end with "Upgrade done" after ${fmtMs(up.total_ms)}: ${up.final}`);
        await pollState(master, (s) => s.workers.length === n && s.workers.every((w) => w.acked && !w.retiring), `${n} workers serving after failed run ${r}`, { timeoutMs: 120_000, everyMs: 20 });
        continue;
      }
      const after = await pollState(master, (s) => s.workers.length === n && s.workers.every((w) => w.acked && !w.retiring && !oldPids.has(w.pid)), `old workers gone after run ${r}`, { timeoutMs: 120_000, everyMs: 20 });
      const starts = after.state.workers.map((w) => cpuOf(w.pid));
      const startMean = starts.reduce((a, x) => a + x, 0) / starts.length;
      // The master's own CPU in the window (its reaped children would bring in the old workers' whole lives).
      const einhorn = Math.max(0, ours1 - ours0);
      const others = Math.max(0, busy1 - busy0 - einhorn - starts.reduce((a, x) => a + x, 0));
      const waves = mode === "fleet" ? 1 : Math.ceil(n / m);
      const waveSizes = mode === "fleet" ? [n] : Array.from({ length: waves }, (_, i) => Math.min(m, n - i * m));
      const limit = kind === "cpu"
        ? (n * startMean) / cores
        : waveSizes.reduce((a, k) => a + amountMs + Math.max(startMean, (k * startMean) / cores), 0);
      const cpuLeft = kind === "cpu" ? (n * startMean + others) / cores : null;
      const s: Sample = {
        kind, mode, n, max_unacked: m, run: r,
        wall_ms: up.total_ms, limit_ms: round(limit, 1), ratio: round(up.total_ms / limit, 3),
        ratio_sleep_only: kind === "wait" ? round(up.total_ms / (amountMs * waves), 3) : null,
        start_cpu_ms_mean: round(startMean, 1), others_cpu_ms: round(others, 0), einhorn_cpu_ms: round(einhorn, 0),
        ratio_vs_cpu_left: cpuLeft === null ? null : round(up.total_ms / cpuLeft, 3),
        min_serving: minServing, ok: up.ok, final: up.final,
      };
      if (minServing !== null && minServing < n) ctx.note(`${label} run ${r}: only ${minServing} of ${n} workers were serving at one point`);
      ctx.log(`${label} run ${r}: ${fmtMs(s.wall_ms)} vs limit ${fmtMs(s.limit_ms)} = ${s.ratio}×${s.ratio_vs_cpu_left === null ? "" : ` (${s.ratio_vs_cpu_left}× of the CPU left; others used ${s.others_cpu_ms} ms)`}, start CPU ${s.start_cpu_ms_mean} ms, serving ≥ ${minServing}`);
      out.push(s);
    }
  } finally {
    await master.stop(15_000);
  }
  return out;
}

export const rolloutLimit: Benchmark = {
  name: "rollout-limit",
  description: "upgrade wall time against the machine's limit: workers burning a set CPU before they ACK (limit N x CPU / cores) or sleeping (limit sleep x ceil(N / max-unacked)); N = 4, 8, 32; smooth with max-unacked cores, 2 x cores, N; fleet",
  runs: { full: 3, quick: 1 },
  async run(ctx) {
    const py = realPython();
    const cores = availableParallelism();
    const burnMs = ctx.quick ? 100 : 200;
    const waitMs = ctx.quick ? 150 : 300;
    const ns = ctx.quick ? [4, 8] : [4, 8, 32];
    const samples: Sample[] = [];
    const results: Record<string, unknown> = {};
    const summary = [];
    for (const kind of ["cpu", "wait"] as const) {
      for (const n of ns) {
        const ms = [...new Set([cores, 2 * cores, n].filter((x) => x <= n))];
        const cases: Array<[Mode, number]> = [...ms.map((x): [Mode, number] => ["smooth", x]), ["fleet", cores]];
        for (const [mode, m] of cases) {
          const got = await measure(ctx, py, kind, mode, n, m, kind === "cpu" ? burnMs : waitMs, ctx.runs);
          samples.push(...got);
          const med = (f: (s: Sample) => number | null) => { const xs = got.map(f).filter((x): x is number => x !== null); return xs.length ? round(median(xs), 3) : null; };
          const key = `${kind}/${mode}/n=${n}${mode === "smooth" ? `/max_unacked=${m}` : ""}`;
          const r = {
            wall_ms: med((s) => s.wall_ms), limit_ms: med((s) => s.limit_ms), ratio: med((s) => s.ratio), ratio_sleep_only: med((s) => s.ratio_sleep_only), ratio_vs_cpu_left: med((s) => s.ratio_vs_cpu_left),
            start_cpu_ms: med((s) => s.start_cpu_ms_mean), others_cpu_ms: med((s) => s.others_cpu_ms), einhorn_cpu_ms: med((s) => s.einhorn_cpu_ms),
            min_serving: Math.min(...got.map((s) => s.min_serving ?? Infinity)), ratios_all: got.map((s) => s.ratio), all_ok: got.every((s) => s.ok),
          };
          results[key] = r;
          const within = r.ratio !== null && r.ratio <= 1.3;
          summary.push({
            measure: `${kind === "cpu" ? `${burnMs} ms CPU` : `${waitMs} ms wait`} per start, N=${n}, ${mode}${mode === "smooth" ? `, max-unacked ${m}${m === cores ? " (default)" : m === n ? " (=N)" : ""}` : ""}`,
            value: r.ratio === null ? "–" : `${r.ratio}× limit`,
            detail: `${r.wall_ms === null ? "?" : fmtMs(r.wall_ms)} vs ${r.limit_ms === null ? "?" : fmtMs(r.limit_ms)}${r.ratio_sleep_only === null ? "" : ` (${r.ratio_sleep_only}× the sleep alone)`}${r.ratio_vs_cpu_left === null ? "" : `; ${r.ratio_vs_cpu_left}× of the CPU others left (they used ${r.others_cpu_ms} ms)`}; einhorn ${r.einhorn_cpu_ms} ms CPU; serving ≥ ${r.min_serving === Infinity ? "?" : r.min_serving} of ${n}; runs ${r.ratios_all.join(", ")}`,
            reference: `target ≤ 1.3×${within ? "" : " (missed)"}`,
          });
        }
      }
    }
    return {
      parameters: {
        worker: `${py} -S bench/workers/ack-now.py --ack (--burn ${burnMs} | --delay ${waitMs}) --delay-while FLAG (-m manual)`, ns, cores, burn_ms: burnMs, wait_ms: waitMs,
        model: "cpu: limit = N x mean measured start CPU / cores; wait: limit = sum over waves of k = min(max_unacked, left) workers (fleet: one wave of N) of (wait + max(C, k x C / cores)), C = measured start CPU; ratio_sleep_only = wall / (wait x waves). ratio = wall (request to 'Upgrade done') / limit; ratio_vs_cpu_left also counts the CPU other processes used during the upgrade. One master per case; the first generation starts without the burn or wait.",
      },
      samples,
      results,
      summary,
    };
  },
};

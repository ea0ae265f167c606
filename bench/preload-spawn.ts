// preload-spawn: the same Bun worker module started as `bun worker.ts` and as
// `einhorn -p worker.ts` (the runtime built into the einhorn binary calls its
// einhorn_main), N = 8 workers with manual ACK, side by side in alternating
// runs: spawn-to-ACK time per worker and each worker's RSS once settled.
//
// A JavaScript runtime cannot fork, so preload here is not Ruby's shared
// copy-on-write image: every worker loads the module itself, and the figures
// show what starting through the einhorn binary costs or saves against
// starting through `bun` (a different executable of the same Bun version).
import { join } from "node:path";
import {
  type Benchmark, BUN, distribution, fmtMB, fmtMs, median, procStatusKb, round, sleep, startMaster, waitForAcked, WORKERS_DIR,
} from "./harness";

const WORKER = join(WORKERS_DIR, "preload-worker.ts");
type Mode = "bun" | "preload";

interface RunSample {
  mode: Mode; run: number;
  /** acked_at - spawned_at per worker (master clock, ms resolution). */
  spawn_to_ack_ms: number[];
  /** Master spawn to the last ACK (includes, for preload, the module check before any worker starts). */
  master_to_all_up_ms: number | null;
  rss_kb: number[]; rss_anon_kb: number[]; rss_file_kb: number[];
}

export const preloadSpawn: Benchmark = {
  name: "preload-spawn",
  description: "Bun worker started as `bun worker.ts` vs `einhorn -p worker.ts` (same module, einhorn_main), N=8: spawn-to-ACK time and per-worker RSS, side by side",
  runs: { full: 3, quick: 1 },
  async run(ctx) {
    const n = 8;
    const settleMs = ctx.quick ? 500 : 1500;
    const samples: RunSample[] = [];
    for (let r = 1; r <= ctx.runs; r++) {
      // Alternate the order: bun, preload; then preload, bun; ...
      const order: Mode[] = r % 2 === 1 ? ["bun", "preload"] : ["preload", "bun"];
      for (const mode of order) {
        const args = ["-n", String(n), "-m", "manual", ...(mode === "preload" ? ["-p", WORKER] : [])];
        const program = mode === "preload" ? [] : [BUN, WORKER];
        const m = startMaster(args, program, { label: `preload-${mode}-${r}` });
        try {
          const seen = await waitForAcked(m, n, { timeoutMs: 60_000, everyMs: 10 });
          await sleep(settleMs);
          const ws = seen.state.workers;
          const s: RunSample = { mode, run: r, spawn_to_ack_ms: [], master_to_all_up_ms: null, rss_kb: [], rss_anon_kb: [], rss_file_kb: [] };
          for (const w of ws) {
            if (w.ackedAtMs !== null && w.spawnedAtMs !== null) s.spawn_to_ack_ms.push(w.ackedAtMs - w.spawnedAtMs);
            const st = procStatusKb(w.pid);
            if (st.VmRSS) { s.rss_kb.push(st.VmRSS); s.rss_anon_kb.push(st.RssAnon ?? 0); s.rss_file_kb.push(st.RssFile ?? 0); }
          }
          const acks = ws.map((w) => w.ackedAtMs).filter((x): x is number => x !== null);
          s.master_to_all_up_ms = acks.length === n ? Math.max(...acks) - m.spawnedAtMs : null;
          ctx.log(`${mode} run ${r}: spawn-to-ACK median ${median(s.spawn_to_ack_ms)} ms, RSS median ${fmtMB(median(s.rss_kb))}, all up ${s.master_to_all_up_ms} ms`);
          samples.push(s);
        } finally {
          await m.stop();
        }
      }
    }
    const agg = (mode: Mode) => {
      const ss = samples.filter((s) => s.mode === mode);
      return {
        spawn_to_ack_ms: distribution(ss.flatMap((s) => s.spawn_to_ack_ms)),
        rss_kb: distribution(ss.flatMap((s) => s.rss_kb)),
        rss_anon_kb: distribution(ss.flatMap((s) => s.rss_anon_kb)),
        rss_file_kb: distribution(ss.flatMap((s) => s.rss_file_kb)),
        master_to_all_up_ms: round(median(ss.map((s) => s.master_to_all_up_ms ?? NaN).filter(Number.isFinite))),
        // Per run medians, for the spread between runs.
        run_medians_spawn_to_ack_ms: ss.map((s) => round(median(s.spawn_to_ack_ms))),
        run_medians_rss_kb: ss.map((s) => round(median(s.rss_kb))),
      };
    };
    const bun = agg("bun");
    const pre = agg("preload");
    const ratio = {
      spawn_to_ack_preload_over_bun: round(pre.spawn_to_ack_ms.p50 / bun.spawn_to_ack_ms.p50, 3),
      rss_preload_over_bun: round(pre.rss_kb.p50 / bun.rss_kb.p50, 3),
      master_to_all_up_preload_over_bun: round(pre.master_to_all_up_ms / bun.master_to_all_up_ms, 3),
    };
    if (pre.rss_kb.n !== bun.rss_kb.n) ctx.note(`RSS read for ${bun.rss_kb.n} bun and ${pre.rss_kb.n} preload workers (some had gone?)`);
    const pct = (x: number) => `${x >= 1 ? "+" : "−"}${Math.abs((x - 1) * 100).toFixed(0)}%`;
    return {
      parameters: { n, ack: "-m manual, ack() from einhorn/worker", worker: "bench/workers/preload-worker.ts", bun: BUN, settle_ms: settleMs, runs: ctx.runs, order: "alternating per run" },
      samples,
      results: { bun, preload: pre, ratio },
      summary: [
        { measure: "spawn to ACK, per worker, N=8: bun worker.ts → einhorn -p", value: `${fmtMs(bun.spawn_to_ack_ms.p50)} → ${fmtMs(pre.spawn_to_ack_ms.p50)}`, detail: `preload/bun ${ratio.spawn_to_ack_preload_over_bun} (${pct(ratio.spawn_to_ack_preload_over_bun)}); p90 ${fmtMs(bun.spawn_to_ack_ms.p90)} → ${fmtMs(pre.spawn_to_ack_ms.p90)}; ${bun.spawn_to_ack_ms.n}+${pre.spawn_to_ack_ms.n} workers` },
        { measure: "RSS per worker, N=8: bun worker.ts → einhorn -p", value: `${fmtMB(bun.rss_kb.p50)} → ${fmtMB(pre.rss_kb.p50)}`, detail: `preload/bun ${ratio.rss_preload_over_bun} (${pct(ratio.rss_preload_over_bun)}); anon ${fmtMB(bun.rss_anon_kb.p50)} → ${fmtMB(pre.rss_anon_kb.p50)}, file ${fmtMB(bun.rss_file_kb.p50)} → ${fmtMB(pre.rss_file_kb.p50)}`, reference: "not shared copy-on-write: each worker loads the module" },
        { measure: "master start to 8 workers up: bun → einhorn -p", value: `${fmtMs(bun.master_to_all_up_ms)} → ${fmtMs(pre.master_to_all_up_ms)}`, detail: `preload/bun ${ratio.master_to_all_up_preload_over_bun}; preload includes the module check before any worker starts` },
      ],
    };
  },
};

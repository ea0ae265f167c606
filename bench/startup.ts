// startup: wall time of `einhorn --version`, the cost of starting the binary
// at all (every `einhorn sh` call and every master re-exec pays it).
import { BIN, type Benchmark, distribution, fmtMs, median, round, scratchDir, which } from "./harness";
import { join } from "node:path";
import { readFileSync } from "node:fs";

const TARGET_MS = 20;

/** Our own timing: spawn, wait for exit, nothing else; after a few warm-up runs. */
async function ownTiming(runs: number, warmup: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const t0 = performance.now();
    const p = Bun.spawn([BIN, "--version"], { stdin: "ignore", stdout: "ignore", stderr: "ignore" });
    const code = await p.exited;
    const dt = performance.now() - t0;
    if (code !== 0) throw new Error(`${BIN} --version exited with ${code}`);
    if (i >= warmup) out.push(round(dt));
  }
  return out;
}

function hyperfineTiming(hyperfine: string, runs: number, warmup: number): { times_ms: number[]; version: string | null } {
  const json = join(scratchDir("startup"), "hyperfine.json");
  // -N: no intermediate shell, so the figure is the binary's own start-up.
  const r = Bun.spawnSync([hyperfine, "-N", "--warmup", String(warmup), "--runs", String(runs), "--export-json", json, `${BIN} --version`], { stdout: "pipe", stderr: "pipe", timeout: 120_000 });
  if (r.exitCode !== 0) throw new Error(`hyperfine failed: ${r.stderr}`);
  const doc = JSON.parse(readFileSync(json, "utf8"));
  const v = Bun.spawnSync([hyperfine, "--version"], { stdout: "pipe" }).stdout.toString().trim();
  return { times_ms: (doc.results[0].times as number[]).map((t) => round(t * 1000)), version: v || null };
}

export const startup: Benchmark = {
  name: "startup",
  description: "Wall time of `einhorn --version` (process start to exit), median of N runs, hyperfine when installed",
  runs: { full: 20, quick: 5 },
  async run(ctx) {
    const runs = Math.max(ctx.runs, 3);
    const warmup = ctx.quick ? 1 : 3;
    const hyperfine = which("hyperfine");
    const own = await ownTiming(runs, warmup);
    let hf: ReturnType<typeof hyperfineTiming> | null = null;
    if (hyperfine) hf = hyperfineTiming(hyperfine, runs, warmup);
    else ctx.note("hyperfine is not installed; the figure is this harness's own timing (Bun.spawn to exit), which adds the spawn cost of the harness itself");
    const headline = hf ? median(hf.times_ms) : median(own);
    const tool = hf ? "hyperfine" : "own timing";
    if (headline > TARGET_MS) ctx.note(`--version takes ${headline.toFixed(1)} ms, above the ${TARGET_MS} ms target`);
    return {
      parameters: { command: ["einhorn", "--version"], runs, warmup, tool, hyperfine_version: hf?.version ?? null },
      samples: { hyperfine_ms: hf?.times_ms ?? null, own_timing_ms: own },
      results: {
        median_ms: round(headline),
        tool,
        hyperfine_ms: hf ? distribution(hf.times_ms) : null,
        own_timing_ms: distribution(own),
        target_ms: TARGET_MS,
        ratio_to_target: round(headline / TARGET_MS),
      },
      summary: [{
        measure: "`--version` wall time",
        value: fmtMs(headline),
        detail: `${tool}, ${runs} runs; min ${fmtMs(Math.min(...(hf?.times_ms ?? own)))}, max ${fmtMs(Math.max(...(hf?.times_ms ?? own)))}${hf ? `; own timing ${fmtMs(median(own))}` : ""}`,
        reference: `target < ${TARGET_MS} ms; Ruby Einhorn side by side: vs-ruby`,
      }],
    };
  },
};

// Benchmarks for einhorn (not part of the test suite).
//
//   node_modules/.bin/bun bench/run.ts [--quick] [--runs N] [--out DIR] [--load wrk|builtin] [NAME...]
//
// Runs the named benchmarks (all by default), writes OUT/NAME.json for each
// and OUT/summary.md (rebuilt from every NAME.json in OUT), and prints the
// summary table. OUT is bench/results, or bench/results/quick with --quick so
// a smoke run never overwrites the committed figures. EINHORN_BIN selects the
// binary under test (default dist/einhorn). See bench/README.md.
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";
import {
  BENCH_DIR, BIN, type BenchContext, type Benchmark, cleanupNotes, cpuAccounting, ensureDir, killAllNow, machineInfo, removeScratch, ROOT,
  othersCpuShare, round, stopAll, type SummaryRow,
} from "./harness";

/** Above this share of the machine used by other processes, a benchmark's figures get a note. */
const NOISY_SHARE = 0.05;
import { commandRoundtrip } from "./command-roundtrip";
import { dataPath } from "./data-path";
import { masterCpu } from "./master-cpu";
import { opsOverhead } from "./ops-overhead";
import { masterMemory } from "./master-memory";
import { preloadSpawn } from "./preload-spawn";
import { rolloutTime } from "./rollout-time";
import { upgradeUnderLoad } from "./upgrade-under-load";
import { spawnLatency } from "./spawn-latency";
import { startup } from "./startup";
import { serveThroughput } from "./serve-throughput";
import { upgradeCost } from "./upgrade-cost";
import { rolloutLimit } from "./rollout-limit";
import { vsRuby } from "./vs-ruby";

/**
 * Every benchmark, in the order a full run takes them. Cheap, quiet ones
 * first; the data path (which loads both cores) last but one.
 */
const REGISTRY: Benchmark[] = [
  startup,
  spawnLatency,
  commandRoundtrip,
  masterMemory,
  masterCpu,
  opsOverhead,
  dataPath,

  // --- Upgrade benchmarks: add them here. -----------------------------------------
  // Planned (another engineer): smooth upgrade of 4 workers under load and of 8
  // idle workers (command to "Upgrade done"), failed requests across upgrades
  // under load, and an upgrade whose new workers crash at once. Each is a
  // Benchmark (bench/harness.ts) in a file of its own named by what it
  // measures; startMaster/pollState/command in harness.ts drive the master,
  // and runBuiltinLoad in load.ts gives load with a per-100 ms series of
  // successes and errors by kind.
  rolloutTime,
  upgradeCost,
  rolloutLimit,
  upgradeUnderLoad,
  preloadSpawn,
  serveThroughput,
  // The anchor, side by side: Ruby Einhorn 1.1.1 on the rows the README compares.
  vsRuby,
];

interface Args { names: string[]; quick: boolean; runs: number | null; out: string | null; load: string | null; list: boolean; help: boolean; summaryOnly: boolean }

function parseArgs(argv: string[]): Args {
  const a: Args = { names: [], quick: false, runs: null, out: null, load: null, list: false, help: false, summaryOnly: false };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i]!;
    const value = () => { const v = argv[++i]; if (v === undefined) throw new Error(`${x} needs a value`); return v; };
    if (x === "--quick") a.quick = true;
    else if (x === "--runs") a.runs = Number(value());
    else if (x === "--out") a.out = value();
    else if (x === "--load") a.load = value();
    else if (x === "--list") a.list = true;
    else if (x === "--summary") a.summaryOnly = true;
    else if (x === "-h" || x === "--help") a.help = true;
    else if (x.startsWith("-")) throw new Error(`unknown option ${x}`);
    else a.names.push(x);
  }
  if (a.runs !== null && (!Number.isInteger(a.runs) || a.runs < 1)) throw new Error("--runs needs a whole number >= 1");
  if (a.load !== null && !["wrk", "builtin", "auto"].includes(a.load)) throw new Error("--load is wrk, builtin or auto");
  return a;
}

const USAGE = `usage: bun bench/run.ts [--quick] [--runs N] [--out DIR] [--load wrk|builtin|auto] [--list] [--summary] [NAME...]
  --quick   a ~30 s smoke run (fewer runs, shorter windows); results go to bench/results/quick
  --runs N  runs per figure (overrides each benchmark's default)
  --out DIR where NAME.json and summary.md go (default bench/results)
  --load    load generator for data-path (default: wrk when installed)
  --summary rebuild OUT/summary.md from the NAME.json files there, running nothing
  EINHORN_BIN=/path/to/einhorn selects the binary under test (default dist/einhorn)`;

interface ResultFile {
  benchmark: string;
  description: string;
  status: "ok" | "failed";
  error: string | null;
  started_at: string;
  finished_at: string;
  duration_s: number;
  quick: boolean;
  runs: number;
  machine: ReturnType<typeof machineInfo>;
  /** Share of all cores' CPU time used by processes outside this run while the benchmark ran (0..1). */
  other_processes_cpu_share: number;
  load_average_at_end: number[];
  parameters: Record<string, unknown>;
  samples: unknown;
  results: Record<string, unknown>;
  summary: SummaryRow[];
  notes: string[];
}

function esc(s: string | undefined): string {
  return (s ?? "").replace(/\|/g, "\\|").replace(/\n/g, " ");
}

/** The markdown summary of these result files. */
function summaryMarkdown(files: ResultFile[], title: string): string {
  const out: string[] = [`# ${title}`, ""];
  const m = files[0]?.machine;
  if (m) {
    out.push(
      `Machine: ${m.cpu_model ?? "unknown CPU"}, ${m.cores} cores, ${(m.memory_total_mb / 1024).toFixed(1)} GB, Linux ${m.kernel}, Bun ${m.bun_version}.`,
      `Binary: ${m.einhorn_version ?? "version unknown"} (sha256 ${m.einhorn_binary_sha256?.slice(0, 12) ?? "?"})${m.einhorn_binary_note ? `: ${m.einhorn_binary_note}` : ""}. Harness: repo at ${m.repo_commit?.slice(0, 10) ?? "?"}${m.repo_dirty ? " (with uncommitted changes)" : ""}.`,
      "",
    );
  }
  out.push("| benchmark | measure | median | detail | reference |", "| --- | --- | --- | --- | --- |");
  for (const f of files) {
    if (f.status !== "ok") {
      out.push(`| ${f.benchmark} | **failed** | – | ${esc(f.error?.split("\n")[0])} | |`);
      continue;
    }
    for (const r of f.summary) out.push(`| ${f.benchmark} | ${esc(r.measure)} | ${esc(r.value)} | ${esc(r.detail)} | ${esc(r.reference)} |`);
  }
  out.push("");
  const differs = files.some((f) => f.machine.einhorn_binary_sha256 !== m?.einhorn_binary_sha256);
  out.push("Measured:", "");
  for (const f of files) {
    const others = typeof f.other_processes_cpu_share === "number" ? `, other processes ${(f.other_processes_cpu_share * 100).toFixed(0)}% of the CPU` : "";
    out.push(`- ${f.benchmark}: ${f.started_at} (${f.quick ? "quick" : "full"} run, ${f.runs} run(s) per figure, ${f.duration_s} s${others})${differs ? `, binary ${f.machine.einhorn_version ?? "version unknown"} (sha256 ${f.machine.einhorn_binary_sha256?.slice(0, 12) ?? "?"})` : ""}`);
  }
  const notes = files.flatMap((f) => f.notes.map((n) => `- ${f.benchmark}: ${n}`));
  if (notes.length) out.push("", "Notes:", "", ...notes);
  return `${out.join("\n")}\n`;
}

/** OUT/summary.md: every benchmark with a result file in OUT, in registry order. */
function writeSummary(outDir: string): void {
  const all: ResultFile[] = [];
  for (const b of REGISTRY) {
    const p = join(outDir, `${b.name}.json`);
    if (!existsSync(p)) continue;
    try { all.push(JSON.parse(readFileSync(p, "utf8"))); } catch { /* unreadable: left out */ }
  }
  for (const f of readdirSync(outDir)) {
    // Result files of benchmarks not (or no longer) in the registry are left out of the summary.
    if (f.endsWith(".json") && !REGISTRY.some((b) => `${b.name}.json` === f)) console.error(`(${f} in ${outDir} is not a known benchmark; left out of summary.md)`);
  }
  writeFileSync(join(outDir, "summary.md"), summaryMarkdown(all, "einhorn benchmarks"));
}

async function main(): Promise<number> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (args.help) { console.log(USAGE); return 0; }
  if (args.list) {
    for (const b of REGISTRY) console.log(`${b.name.padEnd(18)} ${b.description}`);
    return 0;
  }
  const unknown = args.names.filter((n) => !REGISTRY.some((b) => b.name === n));
  if (unknown.length) {
    console.error(`unknown benchmark(s): ${unknown.join(", ")}; known: ${REGISTRY.map((b) => b.name).join(", ")}`);
    return 2;
  }
  if (args.summaryOnly) {
    const outDir = resolve(args.out ?? join(BENCH_DIR, "results", ...(args.quick ? ["quick"] : [])));
    writeSummary(outDir);
    console.error(`rebuilt ${relative(ROOT, join(outDir, "summary.md"))}`);
    return 0;
  }
  if (!existsSync(BIN)) {
    console.error(`the binary under test does not exist: ${BIN} (build it with 'node_modules/.bin/bun scripts/build.ts', or set EINHORN_BIN)`);
    return 2;
  }
  if (args.load) process.env.BENCH_LOAD = args.load;
  const selected = args.names.length ? REGISTRY.filter((b) => args.names.includes(b.name)) : REGISTRY;
  const outDir = ensureDir(resolve(args.out ?? join(BENCH_DIR, "results", ...(args.quick ? ["quick"] : []))));
  const machine = machineInfo();
  console.error(`einhorn benchmarks: ${selected.map((b) => b.name).join(", ")}${args.quick ? " (quick)" : ""}`);
  console.error(`binary under test: ${BIN} (${machine.einhorn_version ?? "no --version output"}); results in ${relative(ROOT, outDir) || "."}`);

  const thisRun: ResultFile[] = [];
  const runStarted = performance.now();
  for (const b of selected) {
    const runs = args.runs ?? (args.quick ? b.runs.quick : b.runs.full);
    const notes: string[] = [];
    const ctx: BenchContext = {
      quick: args.quick,
      runs,
      log: (msg) => console.error(`  [${b.name}] ${msg}`),
      note: (msg) => { notes.push(msg); console.error(`  [${b.name}] NOTE: ${msg}`); },
    };
    const startedAt = new Date();
    const t0 = performance.now();
    console.error(`\n== ${b.name}: ${b.description}`);
    let file: ResultFile;
    const base = { benchmark: b.name, description: b.description, started_at: startedAt.toISOString(), quick: args.quick, runs, machine: machineInfo() };
    const cleanupBefore = cleanupNotes.length;
    const cpu0 = cpuAccounting();
    // What else ran on the machine meanwhile (measured after every process of ours was reaped).
    const noise = () => {
      const share = othersCpuShare(cpu0, cpuAccounting());
      if (share > NOISY_SHARE) notes.push(`other processes used ${(share * 100).toFixed(0)}% of the machine's CPU during this benchmark; its figures may be disturbed`);
      return { other_processes_cpu_share: round(share, 3), load_average_at_end: machineInfo().load_average_at_start };
    };
    try {
      const r = await b.run(ctx);
      await stopAll();
      notes.push(...cleanupNotes.slice(cleanupBefore));
      const n = noise();
      file = { ...base, status: "ok", error: null, finished_at: new Date().toISOString(), duration_s: round((performance.now() - t0) / 1000, 1), ...n, ...r, notes };
    } catch (e) {
      await stopAll();
      notes.push(...cleanupNotes.slice(cleanupBefore));
      const n = noise();
      const msg = (e as Error).stack ?? String(e);
      console.error(`  [${b.name}] FAILED: ${msg}`);
      file = { ...base, status: "failed", error: (e as Error).message ?? String(e), finished_at: new Date().toISOString(), duration_s: round((performance.now() - t0) / 1000, 1), ...n, parameters: {}, samples: null, results: {}, summary: [], notes };
    }
    writeFileSync(join(outDir, `${b.name}.json`), `${JSON.stringify(file, null, 2)}\n`);
    thisRun.push(file);
    console.error(`  [${b.name}] ${file.status} in ${file.duration_s} s`);
  }
  removeScratch();

  writeSummary(outDir);
  console.log(`\n${summaryMarkdown(thisRun, `einhorn benchmarks: this run (${round((performance.now() - runStarted) / 1000, 1)} s)`)}`);
  console.error(`results: ${relative(ROOT, outDir)}/*.json, ${relative(ROOT, join(outDir, "summary.md"))}`);
  return thisRun.every((f) => f.status === "ok") ? 0 : 1;
}

// Whatever happens, no process a benchmark started outlives the run.
process.on("exit", () => killAllNow());
for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(sig, () => {
    console.error(`\n${sig}: stopping every process the benchmarks started`);
    killAllNow();
    removeScratch();
    process.exit(130);
  });
}

process.exit(await main());

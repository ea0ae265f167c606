// upgrade-cost: the supervisor's own CPU per smooth upgrade of 4 `sleep`
// workers, by process, and per `einhorn sh -e state`; with a profile summary.
//
// Processes counted (issue 15's definition: the master, every helper process
// it starts and the shell that asked):
//   shell      `einhorn sh -d SOCK -e upgrade`, from its wait4 rusage (µs).
//   master     its own utime+stime delta over all the upgrades (/proc; all
//              threads and every image, since the re-exec keeps the pid).
//     re-exec  the part of it from writing the handoff to the new image being
//              in charge, as the master logs it ("the re-exec took N ms of CPU").
//   preflight `NEW --upgrade-check`: the master's cutime+cstime delta (children
//              it reaped) minus what the old workers had used; cross-checked by
//              running the same command directly (rusage).
//   workers    the `sleep` workers themselves (old ones exiting, new ones
//              starting) are the program's cost, not einhorn's: shown apart.
// /proc counts in clock ticks (10 ms), so the per-upgrade figures are totals
// over all upgrades divided by their number, which averages the rounding out.
//
// The profile (when `perf` is installed and usable): one more master and
// shell, each under `perf record`, for a few upgrades; the summary is the
// share of samples by process and by where the time went (the kernel, e.g.
// exec and page faults of the 100 MB binary; the runtime's native code in the
// binary; JIT-compiled JavaScript; libc). Profiling costs CPU itself, so its
// figures are shares, and the CPU figures above come from unprofiled runs.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runLoad, wrkPath } from "./load";
import {
  BIN, type Benchmark, ROOT, realPython, type BenchContext, capture, CLK_TCK, fmtMs, median, pollState, round, schedCpuMs, scratchDir, sleep, spawnTracked, startMaster, which,
} from "./harness";

const WORKERS = 4;
const SLEEPER = ["sleep", "100000"];

/** A process's own CPU and that of the children it has reaped, in ms (clock-tick resolution). */
function procCpu(pid: number): { self: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ms = (x: string | undefined) => (Number(x) * 1000) / CLK_TCK;
  return { self: ms(f[11]) + ms(f[12]), children: ms(f[13]) + ms(f[14]) };
}

/** A live worker's CPU in ms at nanosecond resolution (schedstat): a `sleep` uses under one clock tick. */
function cpuOf(pid: number): number {
  try { return schedCpuMs(pid); } catch { return 0; }
}

/** Run a command to its end; its CPU (user + system, from wait4) in ms, and its exit code and output. */
async function timedRun(cmd: string[], env?: Record<string, string>): Promise<{ cpuMs: number; wallMs: number; code: number | null; stdout: string; stderr: string }> {
  const t0 = performance.now();
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: env ?? process.env as Record<string, string> });
  const [stdout, stderr] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const wallMs = performance.now() - t0;
  const ru = p.resourceUsage();
  const cpuMs = ru ? Number(ru.cpuTime.user + ru.cpuTime.system) / 1000 : NaN;
  return { cpuMs, wallMs, code: p.exitCode, stdout, stderr };
}

const REEXEC_CPU = /the re-exec took (\d+(?:\.\d+)?) ms of CPU/g;

interface UpgradeSample { run: number; shell_cpu_ms: number; wall_ms: number; ok: boolean }

async function measureUpgrades(ctx: BenchContext, upgrades: number) {
  const m = startMaster(["-n", String(WORKERS), "-m", "0"], SLEEPER, { label: "upgrade-cost" });
  try {
    let s = await pollState(m, (x) => x.workers.length === WORKERS && x.workers.every((w) => w.acked && !w.retiring), `${WORKERS} workers up`, { timeoutMs: 30_000 });
    await sleep(300);
    const before = procCpu(m.pid);
    let oldWorkersCpu = 0;
    const samples: UpgradeSample[] = [];
    for (let r = 1; r <= upgrades; r++) {
      const oldPids = s.state.workers.map((w) => w.pid);
      // Idle `sleep` workers: what they used so far is what they will have used when reaped (bar their exit).
      oldWorkersCpu += oldPids.reduce((a, pid) => a + cpuOf(pid), 0);
      const run = await timedRun([BIN, "sh", "-d", m.sockPath, "-e", "upgrade"]);
      const ok = run.code === 0 && /Upgrade done/.test(run.stdout);
      if (!ok) ctx.note(`upgrade ${r}: einhorn sh exited ${run.code}: ${(run.stdout + run.stderr).trim().split("\n").slice(-2).join(" | ")}`);
      samples.push({ run: r, shell_cpu_ms: round(run.cpuMs), wall_ms: round(run.wallMs), ok });
      // The old generation gone (and reaped) before the next upgrade.
      s = await pollState(m, (x) => x.workers.length === WORKERS && x.workers.every((w) => w.acked && !w.retiring && !oldPids.includes(w.pid)), `old workers gone after upgrade ${r}`, { timeoutMs: 30_000 });
      await sleep(100);
    }
    const after = procCpu(m.pid);
    const newWorkersCpu = s.state.workers.reduce((a, w) => a + cpuOf(w.pid), 0);
    // `state`: the shell's own CPU, and the master's share over many requests.
    const stateShell: number[] = [];
    const st0 = procCpu(m.pid).self;
    const stateRuns = ctx.quick ? 10 : 30;
    for (let i = 0; i < stateRuns; i++) {
      const run = await timedRun([BIN, "sh", "-d", m.sockPath, "-e", "state"]);
      if (run.code !== 0) throw new Error(`einhorn sh -e state exited ${run.code}: ${run.stderr}`);
      stateShell.push(run.cpuMs);
    }
    const stateMaster = (procCpu(m.pid).self - st0) / stateRuns;
    const reexecs = [...m.log().matchAll(REEXEC_CPU)].map((x) => Number(x[1]));
    return { samples, before, after, oldWorkersCpu, newWorkersCpu, stateShell, stateMaster, reexecs };
  } finally {
    await m.stop(10_000);
  }
}

/** `NEW --upgrade-check` run directly, as the master runs it (same binary, same environment). */
async function measurePreflight(runs: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const r = await timedRun([BIN, "--upgrade-check"]);
    if (r.code !== 0) throw new Error(`${BIN} --upgrade-check exited ${r.code}: ${r.stderr || r.stdout}`);
    out.push(r.cpuMs);
  }
  return out;
}

/** The floor of any process start: `--version`, against a minimal compiled Bun program of the same runtime. */
async function measureStartFloor(runs: number): Promise<{ version_ms: number[]; hello_ms: number[] | null }> {
  const version: number[] = [];
  for (let i = 0; i < runs; i++) version.push((await timedRun([BIN, "--version"])).cpuMs);
  let hello: number[] | null = null;
  const dir = mkdtempSync(join(scratchDir("upgrade-cost-floor"), "hello-"));
  try {
    writeFileSync(join(dir, "hello.ts"), "process.exitCode = 0;\n");
    const built = Bun.spawnSync([process.execPath, "build", "--compile", "--bytecode", "--minify", join(dir, "hello.ts"), "--outfile", join(dir, "hello")], { stdout: "ignore", stderr: "pipe" });
    if (built.exitCode === 0) {
      hello = [];
      for (let i = 0; i < runs; i++) hello.push((await timedRun([join(dir, "hello")])).cpuMs);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { version_ms: version, hello_ms: hello };
}

interface ProfileRow { what: string; share: number; ms: number }

/** `perf report` shares of one data file grouped by `sort` (e.g. "comm,dso"), with the sample count. */
function perfShares(file: string, sort: string, freq: number, limit: number, keep: (what: string) => boolean = () => true): { samples: number; rows: ProfileRow[] } {
  const text = capture(["perf", "report", "-i", file, "--stdio", "--sort", sort, "-g", "none", "--percent-limit", "0.3"], 60_000) ?? "";
  // "# Samples: 5K of event 'cpu-clock:pppH'" is rounded; the per-event count line is exact when present.
  const exact = /# Event count \(approx\.\): (\d+)/.exec(text);
  const samplesLine = /# Samples: (\d+)(K?)/.exec(text);
  const samples = samplesLine ? Number(samplesLine[1]) * (samplesLine[2] ? 1000 : 1) : NaN;
  const rows: ProfileRow[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s+(\d+\.\d+)%\s+(.*\S)\s*$/.exec(line);
    if (!m || !keep(m[2]!)) continue;
    rows.push({ what: m[2]!.replace(/\s{2,}/g, "  "), share: round(Number(m[1]) / 100, 4), ms: 0 });
    if (rows.length >= limit) break;
  }
  // Samples are one per 1/freq s of CPU: shares of the exact count give ms.
  const count = exact ? Number(exact[1]) : samples;
  const perSampleMs = exact ? 1 / 1e6 : 1000 / freq; // cpu-clock event counts are ns
  return { samples, rows: rows.map((r) => ({ ...r, ms: round(r.share * count * perSampleMs, 1) })) };
}

/** One master and its shells under perf for a few upgrades; shares by process and by code, or why there is none. */
async function profile(ctx: BenchContext, upgrades: number): Promise<Record<string, unknown>> {
  const perf = which("perf");
  if (!perf) return { skipped: "perf is not installed (Debian: linux-perf)" };
  const dir = scratchDir("upgrade-cost-perf");
  const freq = 4999;
  const masterData = join(dir, "master.perf");
  const shellData = join(dir, "shell.perf");
  const probe = Bun.spawnSync([perf, "record", "-F", String(freq), "-o", join(dir, "probe.perf"), "--", "true"], { stdout: "ignore", stderr: "pipe" });
  if (probe.exitCode !== 0) return { skipped: `perf record does not work here: ${probe.stderr.toString().trim().split("\n").pop()}` };
  const sock = join(dir, "einhorn.sock");
  // perf follows the master's children (preflights, workers) and its re-exec (same pid).
  const rec = spawnTracked([perf, "record", "-F", String(freq), "-o", masterData, "--", BIN, "-d", sock, "-e", join(dir, "einhorn.pid"), "-f", join(dir, "einhorn.lock"), "-n", String(WORKERS), "-m", "0", "--", ...SLEEPER], { dir, label: "perf-master" });
  try {
    const handle = { ...rec, dir, sockPath: sock, spawnedAtMs: Date.now(), spawnedAtPerf: performance.now() };
    await pollState(handle, (x) => x.workers.length === WORKERS && x.workers.every((w) => w.acked && !w.retiring), "profiled master up", { timeoutMs: 30_000 });
    const script = Array.from({ length: upgrades }, () => `'${BIN}' sh -d '${sock}' -e upgrade >/dev/null && sleep 0.3`).join(" && ");
    const sh = Bun.spawnSync([perf, "record", "-F", String(freq), "-o", shellData, "--", "sh", "-c", script], { stdout: "ignore", stderr: "pipe", timeout: 120_000 });
    if (sh.exitCode !== 0) ctx.note(`profiled shells exited ${sh.exitCode}: ${sh.stderr.toString().trim().split("\n").slice(-2).join(" | ")}`);
    // TERM the master itself (not perf), then let perf finish writing.
    process.kill(Number(readFileSync(join(dir, "einhorn.pid"), "utf8").trim()), "SIGTERM");
    await Promise.race([rec.proc.exited, sleep(15_000)]);
  } finally {
    await rec.stop(5000);
  }
  const einhornOnly = (w: string) => !/^(sleep|sh|perf)\b/.test(w);
  return {
    frequency_hz: freq,
    upgrades,
    note: "profiled separately from the CPU figures (sampling costs CPU); the master's data also covers its start-up and its exit",
    master_preflight_and_workers: perfShares(masterData, "comm,dso", freq, 16),
    shells: perfShares(shellData, "comm,dso", freq, 10, einhornOnly),
    master_top_kernel_symbols: perfShares(masterData, "sym", freq, 10, (w) => w.startsWith("[k]")).rows,
  };
}

/**
 * The same upgrade under load (issue 15 item 3): 4 graceful Python HTTP
 * workers (examples/python-worker.py, the kind the Ruby Einhorn figures were
 * taken with), `wrk -t2 -c16` saturating both cores, and K smooth upgrades
 * by `einhorn sh -e upgrade` a few seconds apart: each upgrade's wall time
 * (the shell's), einhorn's CPU per upgrade (master + preflight + shell) and
 * wrk's errors, which must be 0.
 */
async function underLoad(ctx: BenchContext, upgrades: number): Promise<Record<string, unknown>> {
  if (!wrkPath()) return { skipped: "wrk is not installed (Debian: wrk)" };
  const py = realPython();
  const m = startMaster(["-b", "127.0.0.1:0", "-n", String(WORKERS), "-m", "manual"], [py, join(ROOT, "examples", "python-worker.py")], { label: "upgrade-cost-load" });
  try {
    const up = await pollState(m, (x) => x.workers.length === WORKERS && x.workers.every((w) => w.acked && !w.retiring) && x.listenPorts.length > 0, `${WORKERS} HTTP workers up`, { timeoutMs: 30_000 });
    const port = up.state.listenPorts[0]!;
    const gapMs = 2500;
    const durationMs = 2000 + upgrades * gapMs + 1000;
    const load = runLoad({ url: `http://127.0.0.1:${port}/`, durationMs, connections: 16, threads: 2, tool: "wrk" });
    await sleep(2000);
    const before = procCpu(m.pid);
    const rows: Array<{ wall_ms: number; shell_cpu_ms: number; ok: boolean }> = [];
    let state = up.state;
    for (let k = 0; k < upgrades; k++) {
      const t0 = performance.now();
      const oldPids = state.workers.map((w) => w.pid);
      const run = await timedRun([BIN, "sh", "-d", m.sockPath, "-e", "upgrade"]);
      const ok = run.code === 0 && /Upgrade done/.test(run.stdout);
      if (!ok) ctx.note(`under load, upgrade ${k + 1}: einhorn sh exited ${run.code}: ${(run.stdout + run.stderr).trim().split("\n").slice(-2).join(" | ")}`);
      rows.push({ wall_ms: round(run.wallMs), shell_cpu_ms: round(run.cpuMs), ok });
      state = (await pollState(m, (x) => x.workers.length === WORKERS && x.workers.every((w) => !oldPids.includes(w.pid)), "old HTTP workers gone", { timeoutMs: 60_000 })).state;
      const left = gapMs - (performance.now() - t0);
      if (left > 0 && k < upgrades - 1) await sleep(left);
    }
    const after = procCpu(m.pid);
    const result = await load;
    // The master's children under load are mostly the old HTTP workers: count the master's own CPU, and the preflight from upgrade-cost's idle figure.
    const masterPer = (after.self - before.self) / upgrades;
    const shellPer = rows.reduce((a, r) => a + r.shell_cpu_ms, 0) / rows.length;
    if (result.error_total > 0) ctx.note(`under load: ${result.error_total} failed requests (${JSON.stringify(result.errors)})`);
    return {
      upgrades,
      wall_ms: rows.map((r) => r.wall_ms),
      wall_ms_median: round(median(rows.map((r) => r.wall_ms)), 1),
      master_cpu_ms_per_upgrade: round(masterPer, 1),
      shell_cpu_ms_per_upgrade: round(shellPer, 1),
      all_ok: rows.every((r) => r.ok),
      load: { tool: result.tool, connections: result.connections, threads: result.threads, duration_ms: result.duration_ms, successes: result.successes, rps: result.rps, errors: result.errors, error_total: result.error_total, latency_ms: result.latency_ms },
    };
  } finally {
    await m.stop(10_000);
  }
}

export const upgradeCost: Benchmark = {
  name: "upgrade-cost",
  description: "einhorn's own CPU per smooth upgrade of 4 sleep workers by process (master with its re-exec, preflight, the einhorn sh that asked) and per `einhorn sh -e state`; profile summary with perf",
  runs: { full: 20, quick: 5 },
  async run(ctx) {
    const upgrades = ctx.runs;
    const u = await measureUpgrades(ctx, upgrades);
    const preflightDirect = await measurePreflight(ctx.quick ? 5 : 20);
    const floor = await measureStartFloor(ctx.quick ? 5 : 20);
    const prof = await profile(ctx, ctx.quick ? 2 : 5);
    const loaded = await underLoad(ctx, ctx.quick ? 1 : 3);

    const masterSelf = (u.after.self - u.before.self) / upgrades;
    const reaped = (u.after.children - u.before.children) / upgrades;
    const oldWorkers = u.oldWorkersCpu / upgrades;
    const preflightByDiff = Math.max(0, reaped - oldWorkers);
    const shell = median(u.samples.map((x) => x.shell_cpu_ms));
    const shellMean = u.samples.reduce((a, x) => a + x.shell_cpu_ms, 0) / u.samples.length;
    const reexec = u.reexecs.length ? median(u.reexecs) : null;
    const total = masterSelf + preflightByDiff + shellMean;
    const stateShell = median(u.stateShell);
    const stateTotal = stateShell + u.stateMaster;
    const version = median(floor.version_ms);
    const hello = floor.hello_ms ? median(floor.hello_ms) : null;
    const TARGET_UPGRADE = 130;
    const TARGET_STATE = 20;
    if (total > TARGET_UPGRADE) ctx.note(`CPU per upgrade ${round(total, 1)} ms is over the target of ${TARGET_UPGRADE} ms`);
    if (stateTotal > TARGET_STATE) ctx.note(`CPU per 'einhorn sh -e state' ${round(stateTotal, 1)} ms (shell + master) is over the target of ${TARGET_STATE} ms`);
    const results = {
      upgrades,
      per_upgrade_ms: {
        total: round(total, 1),
        master: round(masterSelf, 1),
        master_reexec: reexec === null ? null : round(reexec, 1),
        master_other: reexec === null ? null : round(masterSelf - reexec, 1),
        preflight: round(preflightByDiff, 1),
        shell: round(shellMean, 1),
        shell_median: round(shell, 1),
        workers_old_reaped: round(oldWorkers, 1),
        workers_new_started: round(u.newWorkersCpu / upgrades, 1),
      },
      ratio_to_target: round(total / TARGET_UPGRADE, 2),
      preflight_run_directly_ms: round(median(preflightDirect), 1),
      reexec_cpu_ms_all: u.reexecs,
      state_ms: { total: round(stateTotal, 1), shell: round(stateShell, 1), master: round(u.stateMaster, 1), ratio_to_target: round(stateTotal / TARGET_STATE, 2) },
      start_floor_ms: { einhorn_version: round(version, 1), minimal_compiled_bun: hello === null ? null : round(hello, 1) },
      profile: prof,
      under_load: loaded,
      references: {
        target_upgrade_ms: TARGET_UPGRADE, target_state_ms: TARGET_STATE,
        issue_15_reported_before_ms: "350-390 (master + preflight + shell, 4 sleep workers)",
        ruby_einhorn_ms: "790-930 per upgrade of 4 sleep workers (issue 15's figure, another machine and day; not re-measured)",
      },
    };
    const p = results.per_upgrade_ms;
    const summary = [
      {
        measure: "CPU per smooth upgrade of 4 sleep workers (master + preflight + einhorn sh)",
        value: fmtMs(total),
        detail: `${results.ratio_to_target}× the 130 ms target; master ${fmtMs(p.master)} (re-exec ${p.master_reexec === null ? "?" : fmtMs(p.master_reexec)}), preflight ${fmtMs(p.preflight)} (run directly: ${fmtMs(results.preflight_run_directly_ms)}), shell ${fmtMs(p.shell)}; workers apart: ${fmtMs(p.workers_old_reaped)} old + ${fmtMs(p.workers_new_started)} new; ${upgrades} upgrades`,
        reference: "Ruby Einhorn 1.1.1: 790–930 ms (issue 15, another machine and day); target ≤ 130 ms",
      },
      {
        measure: "CPU per `einhorn sh -e state` (shell + master)",
        value: fmtMs(stateTotal),
        detail: `${results.state_ms.ratio_to_target}× the 20 ms target; shell ${fmtMs(stateShell)} (median of ${u.stateShell.length}), master ${fmtMs(u.stateMaster)}`,
        reference: "target ≤ 20 ms",
      },
      {
        measure: "CPU of a process start: `einhorn --version` vs a minimal compiled Bun program",
        value: fmtMs(version),
        detail: hello === null ? "minimal program could not be built" : `minimal compiled Bun program ${fmtMs(hello)}: the runtime's floor`,
      },
    ];
    if (typeof loaded.wall_ms_median === "number") {
      const l = loaded as { wall_ms_median: number; master_cpu_ms_per_upgrade: number; shell_cpu_ms_per_upgrade: number; upgrades: number; load: { successes: number; error_total: number; rps: number } };
      summary.push({
        measure: "smooth upgrade of 4 Python HTTP workers under wrk -t2 -c16 (einhorn sh -e upgrade, wall)",
        value: fmtMs(l.wall_ms_median),
        detail: `einhorn CPU per upgrade: master ${fmtMs(l.master_cpu_ms_per_upgrade)} + shell ${fmtMs(l.shell_cpu_ms_per_upgrade)} (+ preflight, as idle); ${l.load.error_total} failed of ${l.load.successes + l.load.error_total} requests (${Math.round(l.load.rps)} req/s); ${l.upgrades} upgrade(s)`,
        reference: "Ruby Einhorn side by side (Bun workers, built-in load): vs-ruby",
      });
    }
    return {
      parameters: { workers: WORKERS, worker: SLEEPER.join(" "), master_args: ["-n", String(WORKERS), "-m", "0"], upgrades, state_runs: u.stateShell.length },
      samples: { upgrades: u.samples, state_shell_cpu_ms: u.stateShell.map((x) => round(x)), preflight_direct_cpu_ms: preflightDirect.map((x) => round(x)), version_cpu_ms: floor.version_ms.map((x) => round(x)), minimal_bun_cpu_ms: floor.hello_ms?.map((x) => round(x)) ?? null },
      results,
      summary,
    };
  },
};

// The whole test suite, several runs in a row, beside busy loops that keep
// every core busy: the acceptance run for "tests wait on events, not on the
// clock" (docs/performance.md, "The test suite under load").
//
//   bun scripts/test-beside-hogs.ts [--hogs N] [--runs R]      (default 4 hogs, 3 runs)
//
// Each run is exactly `npm test`'s (bun scripts/test.ts). The busy loops are
// plain shell loops started before the first run and killed after the last
// (or when this script is stopped). Every run goes on even after a failure,
// so the record says how many of R passed; the exit code is 0 only if all
// did. One line per run is printed, each run's output is kept in the temp
// directory, and the record is written to bench/results/suite-beside-hogs.json.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "..");
const args = process.argv.slice(2);
const opt = (name: string, dflt: number) => {
  const at = args.indexOf(name);
  const v = at >= 0 ? Number(args[at + 1]) : dflt;
  if (!Number.isInteger(v) || v < 0) {
    console.error(`${name} takes a whole number, got ${args[at + 1]}`);
    process.exit(2);
  }
  return v;
};
const HOGS = opt("--hogs", 4);
const RUNS = opt("--runs", 3);

const loadavg = () => readFileSync("/proc/loadavg", "latin1").split(" ").slice(0, 3).map(Number);
/** Seconds of CPU the whole machine spent busy and in all, from /proc/stat (to report how loaded the cores were). */
function cpuTicks(): { busy: number; all: number } {
  const f = readFileSync("/proc/stat", "latin1").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  const all = f.reduce((a, b) => a + b, 0);
  return { busy: all - f[3]! - (f[4] ?? 0), all };
}

const hogs = Array.from({ length: HOGS }, () => Bun.spawn(["sh", "-c", "while :; do :; done"], { stdio: ["ignore", "ignore", "ignore"] }));
const stopHogs = () => { for (const h of hogs) h.kill("SIGKILL"); };
/** The suite run in progress: stopped with this script (Ctrl-C reaches the whole process group anyway; `kill` reaches only this process). */
let current: Bun.Subprocess | null = null;
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => { stopHogs(); current?.kill("SIGINT"); process.exit(130); });

interface RunRecord { run: number; passed: boolean; exitCode: number; seconds: number; loadAverage1mAtEnd: number; coresBusy: number; summary: string[] }
const runs: RunRecord[] = [];
console.log(`${HOGS} busy loops on ${cpus().length} cores; ${RUNS} runs of the whole suite (bun scripts/test.ts)`);
for (let i = 1; i <= RUNS; i++) {
  const t0 = performance.now();
  const c0 = cpuTicks();
  const p = Bun.spawn([process.execPath, "scripts/test.ts"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  current = p;
  const [stdout, stderr, exitCode] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  current = null;
  const out = stdout + stderr;
  const c1 = cpuTicks();
  const rec: RunRecord = {
    run: i,
    passed: exitCode === 0,
    exitCode,
    seconds: Math.round((performance.now() - t0) / 1000),
    loadAverage1mAtEnd: loadavg()[0]!,
    coresBusy: Math.round(((c1.busy - c0.busy) / Math.max(1, c1.all - c0.all)) * 1000) / 10,
    // bun test's totals and every failure line, for the record.
    summary: out.split("\n").filter((l) => /^\s*\d+ (pass|fail|skip)$|^\(fail\)|^== /.test(l)).map((l) => l.trim()),
  };
  runs.push(rec);
  const log = join(tmpdir(), `einhorn-suite-beside-hogs-run${i}.log`);
  writeFileSync(log, out);
  console.log(`run ${i}: ${rec.passed ? "passed" : `FAILED (exit ${rec.exitCode})`} in ${rec.seconds} s; cores ${rec.coresBusy}% busy; load average ${rec.loadAverage1mAtEnd} at the end; output in ${log}`);
  for (const l of rec.summary.filter((x) => x.startsWith("(fail)"))) console.log(`  ${l}`);
}
stopHogs();
mkdirSync(join(ROOT, "bench/results"), { recursive: true });
writeFileSync(join(ROOT, "bench/results/suite-beside-hogs.json"), `${JSON.stringify({
  date: new Date().toISOString(), hogs: HOGS, cores: cpus().length, runs,
}, null, 2)}\n`);
const passed = runs.filter((r) => r.passed).length;
console.log(`${passed} of ${RUNS} runs passed beside ${HOGS} busy loops`);
process.exit(passed === RUNS ? 0 : 1);

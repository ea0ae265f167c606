// The whole test suite, as `npm test` runs it (the README's command, and .ci/run's).
//   bun scripts/test.ts                    system tools, build, then every test file in two phases
//   bun scripts/test.ts --fast             the fast tier (`npm run test:fast`): see FAST below
//   bun scripts/test.ts --update-timings   the whole suite, then rewrite test/timings.json
//   bun scripts/test.ts FILE-OR-FILTER...  build, then one plain `bun test` over those
//
// First the system tools the suite drives (scripts/system-tools.ts): as root
// on Debian, the missing ones are installed with one printed apt-get line;
// otherwise the run stops at once with the command to run. No test then
// fails or skips for a missing tool.
//
// Why two phases. Most integration tests wait on the clock (a worker's ACK, a
// drain, a re-exec), not on the CPU: a serial run kept this 2-core machine only
// 59% busy. So the files run two at a time (`--parallel=2`), the slowest first,
// from the per-file durations in test/timings.json. The signals acceptance test
// is the exception: it loads both cores with busy loops on purpose, and sharing
// them with other files would make it measure those files instead. It runs
// alone, after the rest. Both phases always run; the exit code is 1 if either
// failed (bun test's own 1), 0 otherwise.
//
// Each test file still gets its own process state (`--parallel` implies
// `--isolate`), its own temp dirs, ports and leak check (test/setup.ts): files
// running side by side share nothing but the machine.
import { chmodSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadAveragePerCore } from "../test/load";
import { ensureSystemTools } from "./system-tools";

const ROOT = resolve(import.meta.dir, "..");
const BUN = process.execPath;
const TIMINGS = "test/timings.json";
/** The file that must run alone (see above), relative to the project root; also the first phase's ignore pattern. */
const ALONE = "test/integration/signals.test.ts";
/**
 * The per-test limit for tests that set none: 60 s on a quiet machine, a
 * last resort against a hang. Under load an integration test takes several
 * times its quiet time, so the limit is scaled like the harness's bounds
 * (test/harness.ts, loadFactor and within): by the load average per core
 * when the run starts, and at least doubled for a whole run, whose load
 * changes as files come and go. EINHORN_TEST_SUITE tells the harness so.
 */
const TIMEOUT = ["--timeout", String(Math.round(60_000 * Math.max(2, loadAveragePerCore())))];
/**
 * The fast tier, for iterating on the core, the master, the command socket
 * and upgrades: every unit and ffi test, and the integration files that run
 * the master with local workers. Left to the whole suite: the package and
 * release builds and npm installs (registry access), the servers and
 * frameworks under wrk, the long reliability, hostile-client and
 * compatibility runs, and the signals acceptance test.
 */
const FAST = [
  "test/unit", "test/ffi",
  ...["master", "command-socket", "upgrade", "generations", "config-file", "config-trust", "retire-signal", "status",
    "shell", "start-up", "robustness", "spawn-image", "worker", "worker-output", "systemd-unit"].map((f) => `test/integration/${f}.test.ts`),
];

/** The run's own temp directory (see below), once made. */
let runTmp: string | null = null;

function run(label: string, argv: string[]): number {
  const t0 = performance.now();
  console.log(`\n== ${label}: ${argv.slice(1).join(" ")}`);
  const r = Bun.spawnSync(argv, { cwd: ROOT, stdio: ["inherit", "inherit", "inherit"], env: { ...process.env, EINHORN_TEST_SUITE: "1", ...(runTmp ? { TMPDIR: runTmp } : {}) } });
  const code = r.exitCode ?? 1;
  console.log(`== ${label}: ${code === 0 ? "passed" : `FAILED (exit ${code})`} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  return code;
}

const args = process.argv.slice(2);
const update = args.includes("--update-timings");
const fast = args.includes("--fast");
const named = args.filter((a) => a !== "--update-timings" && a !== "--fast");

const started = performance.now();
if (ensureSystemTools({ install: true }) !== 0) process.exit(1);
if (run("build", [BUN, "scripts/build.ts"]) !== 0) process.exit(1);

// The run's own temp directory: TMPDIR for every test process, each of which
// works in a directory of its own inside it (test/setup.ts). Anything left
// in it afterwards was left by a test and fails the run, whatever else runs
// on the machine. The shared temp directory is compared too, but only
// reported: other programs (another run of the suite, say) write there.
const TMP = tmpdir();
const tmpBefore = new Set(readdirSync(TMP));
const RUN_TMP = mkdtempSync(join(TMP, "einhorn-suite-"));
chmodSync(RUN_TMP, 0o755); // tests acting as a second uid reach directories inside it
runTmp = RUN_TMP;

const codes: number[] = [];
if (fast) {
  codes.push(run("fast tier, two files at a time", [BUN, "test", ...TIMEOUT, "--parallel=2", ...FAST]));
} else if (named.length > 0) {
  codes.push(run("tests", [BUN, "test", ...TIMEOUT, ...named]));
} else {
  codes.push(run("tests, two files at a time", [
    BUN, "test", ...TIMEOUT, "--parallel=2", `--path-ignore-patterns=${ALONE}`,
    `--timings=${TIMINGS}`, ...(update ? ["--update-timings"] : []),
  ]));
  codes.push(run("signals acceptance test, alone", [BUN, "test", ...TIMEOUT, ALONE]));
}
const leftInRun = readdirSync(RUN_TMP);
rmSync(RUN_TMP, { recursive: true, force: true });
if (leftInRun.length > 0) {
  console.log(`\n== FAILED: left in the run's temp directory by its tests: ${leftInRun.join(" ")}`);
  codes.push(1);
}
const newInTmp = readdirSync(TMP).filter((name) => !tmpBefore.has(name));
if (newInTmp.length > 0) console.log(`\n== new in ${TMP} since the run started (by the tests, or by anything else on this machine): ${newInTmp.join(" ")}`);
const failed = codes.some((c) => c !== 0);
console.log(`\n== all: ${failed ? "FAILED" : "passed"} in ${((performance.now() - started) / 1000).toFixed(0)} s`);
process.exit(failed ? 1 : 0);

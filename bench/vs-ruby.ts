// vs-ruby: the README's performance rows that have an anchor, measured
// against the original, Ruby Einhorn 1.1.1, side by side in the same run on
// the same machine. Figures from another machine or another day are not
// comparable (machines here differ up to 5x in speed), so every row is a
// ratio einhorn / Ruby of runs made here and now, alternating which goes
// first; the absolute figures are kept as an example of this machine.
//
//   1. `--version` wall time: einhorn, a hello-world compiled Bun binary (the
//      floor any compiled Bun program pays) and Ruby Einhorn, in rounds that
//      rotate the order.
//   2. master RSS with 8 idle `sleep` workers (-m 0), after settling.
//   3. smooth upgrade of 8 Python workers that ACK at once (-m manual), idle
//      machine otherwise: `upgrade` to "Upgrade done", with the default
//      flags, and with `-s 0.01` (Ruby paces new workers by its spin-up
//      interval, -s, 1 s by default and > 0; einhorn does not: -s 0.01 shows the
//      machinery without that pacing).
//   4. smooth upgrade of 4 Bun HTTP workers (examples/http-worker.ts, the
//      same program under both masters: serve() speaks the Einhorn worker
//      protocol both implement) under load from the built-in generator:
//      upgrade time and failed requests. Each upgrade gets its own load
//      window (1 s steady, the upgrade until the old workers are gone, 0.5 s
//      of tail), the two masters taking turns.
//
// The anchor is ../shared/anchors/einhorn-ruby (EINHORN_RUBY_DIR overrides),
// run with the system's `ruby` and RUBYLIB pointing at its lib/.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { createServer } from "node:net";
import {
  BIN, BUN, type Benchmark, type BenchContext, capture, distribution, fmtMB, fmtMs, type MasterHandle, median, pollState, procStatusKb,
  ROOT, realPython, round, scratchDir, sleep, startMaster, waitForAcked, which, WORKERS_DIR,
} from "./harness";
import { runBuiltinLoad } from "./load";
import { timedUpgrade } from "./upgrade-common";

export const RUBY_DIR = resolve(process.env.EINHORN_RUBY_DIR ?? join(ROOT, "..", "shared", "anchors", "einhorn-ruby"));

type Name = "einhorn" | "ruby";
interface Impl { name: Name; bin: string[]; env: Record<string, string> }

function impls(ruby: string): Impl[] {
  return [
    { name: "einhorn", bin: [BIN], env: {} },
    // Its re-exec runs bin/einhorn itself (#!/usr/bin/env ruby); RUBYLIB is inherited.
    { name: "ruby", bin: [ruby, join(RUBY_DIR, "bin", "einhorn")], env: { RUBYLIB: join(RUBY_DIR, "lib") } },
  ];
}

/** Run `i` alternates the order: A B, B A, ... */
const inTurn = <T>(xs: T[], i: number): T[] => (i % 2 === 0 ? xs : [...xs].reverse());

const ratio = (a: number, b: number) => round(a / b, 3);

async function wallMs(cmd: string[], env?: Record<string, string>): Promise<number> {
  const t0 = performance.now();
  const p = Bun.spawn(cmd, { stdin: "ignore", stdout: "ignore", stderr: "ignore", env: { ...process.env, ...env } });
  const code = await p.exited;
  const dt = performance.now() - t0;
  if (code !== 0) throw new Error(`${cmd.join(" ")} exited with ${code}`);
  return round(dt);
}

/** 1. `--version` of each, and of a hello-world compiled Bun binary, in rotating order. */
async function versionTimes(ctx: BenchContext, all: Impl[], runs: number, warmup: number) {
  const dir = mkdtempSync(join(scratchDir("vs-ruby-hello"), "hello-"));
  writeFileSync(join(dir, "hello.ts"), 'console.log("hello");\n');
  // The same flags scripts/compile.ts gives einhorn's own binary that matter for start-up.
  const built = Bun.spawnSync([BUN, "build", "--compile", "--bytecode", "--minify", join(dir, "hello.ts"), "--outfile", join(dir, "hello")], { stdout: "ignore", stderr: "pipe" });
  if (built.exitCode !== 0) throw new Error(`bun build --compile of hello.ts failed: ${built.stderr}`);
  const cmds: Array<{ key: string; cmd: string[]; env?: Record<string, string> }> = [
    { key: "einhorn", cmd: [BIN, "--version"] },
    { key: "hello_compiled_bun", cmd: [join(dir, "hello")] },
    ...all.filter((i) => i.name === "ruby").map((i) => ({ key: "ruby", cmd: [...i.bin, "--version"], env: i.env })),
  ];
  const times: Record<string, number[]> = Object.fromEntries(cmds.map((c) => [c.key, []]));
  try {
    for (let r = 0; r < warmup + runs; r++) {
      // Rotate: round r starts with command r mod 3.
      const order = cmds.map((_, k) => cmds[(k + r) % cmds.length]!);
      for (const c of order) {
        const t = await wallMs(c.cmd, c.env);
        if (r >= warmup) times[c.key]!.push(t);
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const rb = all.find((i) => i.name === "ruby")!;
  const rubyVersion = Bun.spawnSync([...rb.bin, "--version"], { env: { ...process.env, ...rb.env }, stdout: "pipe" }).stdout.toString().trim() || null;
  ctx.log(`--version: einhorn ${fmtMs(median(times.einhorn!))}, hello ${fmtMs(median(times.hello_compiled_bun!))}, ruby ${fmtMs(median(times.ruby!))}`);
  return { times, ruby_version_output: rubyVersion };
}

/** 2. Master RSS with 8 idle workers, alternating which master runs first. */
async function memory(ctx: BenchContext, all: Impl[], runs: number, settleMs: number) {
  const out: Array<{ impl: Name; run: number; rss_kb: number; hwm_kb: number; rss_anon_kb: number | null; rss_file_kb: number | null; up_ms: number }> = [];
  for (let r = 0; r < runs; r++) {
    for (const impl of inTurn(all, r)) {
      const m = startMaster(["-n", "8", "-m", "0"], ["sleep", "100000"], { label: `vs-mem-${impl.name}-${r}`, bin: impl.bin, env: impl.env });
      try {
        const seen = await waitForAcked(m, 8, { timeoutMs: 60_000, everyMs: 20 });
        await sleep(settleMs);
        const samples: Array<Record<string, number>> = [];
        for (let i = 0; i < 5; i++) { samples.push(procStatusKb(m.pid)); if (i < 4) await sleep(200); }
        const last = samples[samples.length - 1]!;
        out.push({ impl: impl.name, run: r + 1, rss_kb: median(samples.map((s) => s.VmRSS!)), hwm_kb: last.VmHWM!, rss_anon_kb: last.RssAnon ?? null, rss_file_kb: last.RssFile ?? null, up_ms: seen.seenAtMs - m.spawnedAtMs });
        ctx.log(`memory ${impl.name} run ${r + 1}: VmRSS ${fmtMB(out[out.length - 1]!.rss_kb)}`);
      } finally {
        await m.stop(10_000);
      }
    }
  }
  return out;
}

async function waitOldGone(m: MasterHandle, oldPids: Set<number>, n: number, what: string, everyMs: number) {
  return pollState(m, (s) => s.workers.filter((w) => w.acked && !w.retiring && !oldPids.has(w.pid)).length >= n && s.workers.every((w) => !oldPids.has(w.pid)), what, { timeoutMs: 60_000, everyMs });
}

/** 3. Smooth upgrades of N instantly-ACKing workers, the masters taking turns. */
async function idleUpgrades(ctx: BenchContext, all: Impl[], py: string, extraArgs: string[], runs: number, tag: string) {
  const n = 8;
  const masters = all.map((impl) => ({ impl, m: startMaster(["-n", String(n), "-m", "manual", ...extraArgs], [py, "-S", join(WORKERS_DIR, "ack-now.py"), "--ack"], { label: `vs-up-${tag}-${impl.name}`, bin: impl.bin, env: impl.env }) }));
  const out: Array<{ impl: Name; run: number; total_ms: number; old_gone_ms: number; ok: boolean; final: string }> = [];
  try {
    for (const x of masters) await waitForAcked(x.m, n, { timeoutMs: 60_000, everyMs: 20 });
    for (let r = 0; r < runs; r++) {
      for (const { impl, m } of inTurn(masters, r)) {
        const before = await pollState(m, () => true, "state before upgrade", { timeoutMs: 10_000 });
        const oldPids = new Set(before.state.workers.map((w) => w.pid));
        const up = await timedUpgrade(m.sockPath, 120_000);
        const gone = await waitOldGone(m, oldPids, n, `old workers gone (${impl.name}, ${tag}, run ${r + 1})`, 20);
        if (!up.ok) ctx.note(`${impl.name} ${tag} upgrade ${r + 1} did not end with "Upgrade done": ${up.final}`);
        out.push({ impl: impl.name, run: r + 1, total_ms: up.total_ms, old_gone_ms: gone.seenAtMs - up.sentAtMs, ok: up.ok, final: up.final });
        ctx.log(`upgrade ${tag} ${impl.name} run ${r + 1}: ${fmtMs(up.total_ms)}`);
        await sleep(300);
      }
    }
  } finally {
    for (const x of masters) await x.m.stop(10_000);
  }
  return out;
}

/** A port nobody holds right now (the kernel's pick for a probe socket, then released). */
async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => { const p = (s.address() as { port: number }).port; s.close(() => res(p)); });
  });
}

/** 4. Smooth upgrades of 4 Bun HTTP workers under load, one load window per upgrade, the masters taking turns. */
async function loadedUpgrades(ctx: BenchContext, all: Impl[], runs: number) {
  const workers = 4, connections = 16, leadMs = 1000, tailMs = 500;
  const program = [BUN, join(ROOT, "examples", "http-worker.ts")];
  const masters: Array<{ impl: Impl; m: MasterHandle; url: string }> = [];
  const out: Array<{ impl: Name; run: number; total_ms: number; old_gone_ms: number; ok: boolean; final: string; window_ms: number; successes: number; errors: Record<string, number>; error_total: number; rps: number }> = [];
  try {
    for (const impl of all) {
      const port = await freePort();
      const m = startMaster(["-b", `127.0.0.1:${port}`, "-n", String(workers), "-m", "manual"], program, { label: `vs-load-${impl.name}`, bin: impl.bin, env: impl.env });
      masters.push({ impl, m, url: `http://127.0.0.1:${port}/` });
      await waitForAcked(m, workers, { timeoutMs: 60_000, everyMs: 20 });
    }
    for (const x of masters) {
      const r = await fetch(x.url, { headers: { connection: "close" } });
      if (r.status !== 200) throw new Error(`${x.impl.name}: ${x.url} answered ${r.status}`);
      await r.text();
      await runBuiltinLoad({ url: x.url, durationMs: 1000, connections }); // warm-up, not counted
    }
    for (let r = 0; r < runs; r++) {
      for (const { impl, m, url } of inTurn(masters, r)) {
        const before = await pollState(m, () => true, "state before upgrade", { timeoutMs: 10_000 });
        const oldPids = new Set(before.state.workers.map((w) => w.pid));
        const stop = new AbortController();
        const loadP = runBuiltinLoad({ url, durationMs: 120_000, connections, timeoutMs: 2000, signal: stop.signal });
        let up, gone;
        try {
          await sleep(leadMs);
          up = await timedUpgrade(m.sockPath, 90_000);
          gone = await waitOldGone(m, oldPids, workers, `old workers gone (${impl.name}, under load, run ${r + 1})`, 10);
          await sleep(tailMs);
        } finally {
          stop.abort();
        }
        const load = await loadP;
        if (!up.ok) ctx.note(`${impl.name} upgrade under load ${r + 1} did not end with "Upgrade done": ${up.final}`);
        if (load.error_total) ctx.note(`${impl.name} upgrade under load ${r + 1}: ${load.error_total} failed request(s): ${JSON.stringify(load.errors)}`);
        out.push({ impl: impl.name, run: r + 1, total_ms: up.total_ms, old_gone_ms: gone.seenAtMs - up.sentAtMs, ok: up.ok, final: up.final, window_ms: load.duration_ms, successes: load.successes, errors: load.errors, error_total: load.error_total, rps: load.rps });
        ctx.log(`upgrade under load ${impl.name} run ${r + 1}: ${fmtMs(up.total_ms)}, ${load.successes} served, ${load.error_total} failed`);
      }
    }
  } finally {
    for (const x of masters) await x.m.stop(35_000);
  }
  return out;
}

function pairRatios<T extends { impl: Name; run: number }>(xs: T[], f: (x: T) => number): number[] {
  const runs = [...new Set(xs.map((x) => x.run))];
  return runs.map((r) => ratio(f(xs.find((x) => x.run === r && x.impl === "einhorn")!), f(xs.find((x) => x.run === r && x.impl === "ruby")!)));
}

export const vsRuby: Benchmark = {
  name: "vs-ruby",
  description: "einhorn against Ruby Einhorn 1.1.1 (the anchor), side by side in one run: --version (and a hello-world compiled Bun binary), master RSS with 8 idle workers, smooth upgrade of 8 instantly-ACKing workers (default flags and -s 0.01), smooth upgrade of 4 HTTP workers under load with failed requests",
  runs: { full: 5, quick: 1 },
  async run(ctx) {
    const ruby = which("ruby");
    if (!ruby) throw new Error("`ruby` is not installed (Debian: apt-get install -y ruby); the anchor cannot run");
    if (!existsSync(join(RUBY_DIR, "bin", "einhorn"))) throw new Error(`no Ruby Einhorn at ${RUBY_DIR} (set EINHORN_RUBY_DIR)`);
    const all = impls(ruby);
    const py = realPython();
    const rubyVersion = capture([ruby, "--version"]);
    const versionRuns = ctx.quick ? 5 : 20;
    const memRuns = ctx.quick ? 1 : 3;
    const s0Runs = ctx.quick ? 1 : 3;

    const v = await versionTimes(ctx, all, versionRuns, ctx.quick ? 1 : 3);
    const mem = await memory(ctx, all, memRuns, ctx.quick ? 1000 : 2000);
    const idle = await idleUpgrades(ctx, all, py, [], ctx.runs, "default");
    const idleS0 = await idleUpgrades(ctx, all, py, ["-s", "0.01"], s0Runs, "s0.01");
    const loaded = await loadedUpgrades(ctx, all, ctx.runs);

    const med = <T extends { impl: Name }>(xs: T[], impl: Name, f: (x: T) => number) => round(median(xs.filter((x) => x.impl === impl).map(f)));
    const vE = median(v.times.einhorn!), vH = median(v.times.hello_compiled_bun!), vR = median(v.times.ruby!);
    const mE = med(mem, "einhorn", (x) => x.rss_kb), mR = med(mem, "ruby", (x) => x.rss_kb);
    const aE = med(mem, "einhorn", (x) => x.rss_anon_kb ?? NaN), aR = med(mem, "ruby", (x) => x.rss_anon_kb ?? NaN);
    const uE = med(idle, "einhorn", (x) => x.total_ms), uR = med(idle, "ruby", (x) => x.total_ms);
    const sE = med(idleS0, "einhorn", (x) => x.total_ms), sR = med(idleS0, "ruby", (x) => x.total_ms);
    const lE = med(loaded, "einhorn", (x) => x.total_ms), lR = med(loaded, "ruby", (x) => x.total_ms);
    const sum = (impl: Name, f: (x: (typeof loaded)[number]) => number) => loaded.filter((x) => x.impl === impl).reduce((a, x) => a + f(x), 0);
    const failedE = sum("einhorn", (x) => x.error_total), failedR = sum("ruby", (x) => x.error_total);
    const servedE = sum("einhorn", (x) => x.successes), servedR = sum("ruby", (x) => x.successes);
    const range = (xs: number[]) => `${Math.min(...xs)}–${Math.max(...xs)}`;
    const uRatios = pairRatios(idle, (x) => x.total_ms), sRatios = pairRatios(idleS0, (x) => x.total_ms), lRatios = pairRatios(loaded, (x) => x.total_ms);
    const mRatios = pairRatios(mem, (x) => x.rss_kb);
    const fmtN = (n: number) => n.toLocaleString("en-US");

    return {
      parameters: {
        anchor: "Ruby Einhorn 1.1.1 (../shared/anchors/einhorn-ruby), run as `ruby bin/einhorn` with RUBYLIB=lib",
        ruby_version: rubyVersion,
        ruby_einhorn_version_output: v.ruby_version_output,
        order: "pairs alternate which master goes first (A B, B A, ...); --version rotates einhorn, hello, ruby",
        version: { runs: versionRuns, warmup: ctx.quick ? 1 : 3, timing: "Bun.spawn to exit (wall), stdout/stderr ignored", hello: "console.log(\"hello\") built with bun build --compile --bytecode --minify" },
        memory: { workers: 8, worker: "sleep 100000", ack: "-m 0", runs: memRuns, settle_ms: ctx.quick ? 1000 : 2000, samples: "5 × /proc/PID/status 200 ms apart, VmRSS median" },
        idle_upgrade: { workers: 8, worker: "python3 -S bench/workers/ack-now.py --ack", ack: "-m manual", runs: ctx.runs, runs_s0: s0Runs, timing: "writing `upgrade` to the \"Upgrade done\" answer line" },
        loaded_upgrade: { workers: 4, worker: "bun examples/http-worker.ts (-m manual, drains on SIGUSR2)", runs: ctx.runs, load: "built-in generator, 16 keep-alive connections, 2 s request timeout; one window per upgrade: 1 s steady, the upgrade until none of the old workers is left, 0.5 s tail", timing: "writing `upgrade` to the \"Upgrade done\" answer line" },
      },
      samples: { version_ms: v.times, memory: mem, idle_upgrade: idle, idle_upgrade_s0: idleS0, loaded_upgrade: loaded },
      results: {
        version_ms: { einhorn: distribution(v.times.einhorn!), hello_compiled_bun: distribution(v.times.hello_compiled_bun!), ruby: distribution(v.times.ruby!), ratio_einhorn_ruby: ratio(vE, vR), ratio_einhorn_hello: ratio(vE, vH) },
        master_rss_8_idle_kb: { einhorn: mE, ruby: mR, einhorn_anon: aE, ruby_anon: aR, ratio_einhorn_ruby: ratio(mE, mR), pair_ratios: mRatios },
        idle_upgrade_8_ms: { einhorn: uE, ruby: uR, ratio_einhorn_ruby: ratio(uE, uR), pair_ratios: uRatios },
        idle_upgrade_8_s0_ms: { einhorn: sE, ruby: sR, ratio_einhorn_ruby: ratio(sE, sR), pair_ratios: sRatios },
        loaded_upgrade_4_ms: { einhorn: lE, ruby: lR, ratio_einhorn_ruby: ratio(lE, lR), pair_ratios: lRatios },
        loaded_failed: { einhorn: failedE, einhorn_served: servedE, ruby: failedR, ruby_served: servedR },
      },
      summary: [
        { measure: "`--version` wall time: einhorn / Ruby Einhorn", value: `${ratio(vE, vR)}×`, detail: `einhorn ${fmtMs(vE)}, Ruby ${fmtMs(vR)}, hello-world compiled Bun ${fmtMs(vH)} (einhorn / hello ${ratio(vE, vH)}×); ${versionRuns} rounds, rotating order`, reference: "same run" },
        { measure: "master RSS, 8 idle workers: einhorn / Ruby Einhorn", value: `${ratio(mE, mR)}×`, detail: `einhorn ${fmtMB(mE)} (anon ${fmtMB(aE)}), Ruby ${fmtMB(mR)} (anon ${fmtMB(aR)}); ${memRuns} runs each, alternating`, reference: "same run" },
        { measure: "smooth upgrade, 8 instantly-ACKing workers, idle: einhorn / Ruby Einhorn", value: `${ratio(uE, uR)}×`, detail: `einhorn ${fmtMs(uE)}, Ruby ${fmtMs(uR)}; default flags; ${ctx.runs} upgrades each, alternating; per-pair ratios ${range(uRatios)}`, reference: "same run" },
        { measure: "the same with -s 0.01 (next to no spin-up pacing)", value: `${ratio(sE, sR)}×`, detail: `einhorn ${fmtMs(sE)}, Ruby ${fmtMs(sR)}; ${s0Runs} upgrades each; per-pair ratios ${range(sRatios)}`, reference: "same run" },
        { measure: "smooth upgrade, 4 HTTP workers under load: einhorn / Ruby Einhorn", value: `${ratio(lE, lR)}×`, detail: `median einhorn ${fmtMs(lE)}, Ruby ${fmtMs(lR)}; ${ctx.runs} upgrades each, alternating; per-pair ratios ${range(lRatios)}`, reference: "same run" },
        { measure: "failed requests across those upgrades", value: `einhorn ${failedE}, Ruby ${failedR}`, detail: `einhorn ${failedE} of ${fmtN(servedE + failedE)}; Ruby ${failedR} of ${fmtN(servedR + failedR)} (the windows differ in length: Ruby's upgrades take longer)`, reference: "target 0" },
      ],
    };
  },
};

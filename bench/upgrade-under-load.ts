// upgrade-under-load: 4 graceful Bun HTTP workers (examples/http-worker.ts,
// -m manual, drain on SIGUSR2) under constant load from the built-in
// generator (16 keep-alive connections, per-100 ms series), and K consecutive
// smooth upgrades (5; quick: 2) with steady traffic between them. Reports
// requests served, errors of every kind, upgrade times, and latency
// percentiles of requests that ended inside an upgrade window (from the
// `upgrade` request until the last old worker is gone) vs outside them
// (steady state). Writes an SVG chart: successes per 100 ms, errors as red
// marks, upgrade windows shaded.
//
// The built-in generator is used (not wrk) because only it records the time
// series and tells error kinds apart; it runs in this process and shares the
// 2 cores with the workers, so its req/s are below wrk's (see data-path).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  BENCH_DIR, type Benchmark, BUN, distribution, ensureDir, fmtMs, median, pollState, ROOT, round, sleep, startMaster, waitForAcked,
} from "./harness";
import { type LoadResult, runBuiltinLoad } from "./load";
import { timedUpgrade, type UpgradeMessage } from "./upgrade-common";

const WORKER = join(ROOT, "examples", "http-worker.ts");
/** Every error kind the built-in generator can report; listed with 0 when none occurred. */
const ERROR_KINDS = ["connect-refused", "connect-reset", "connect-error", "reset", "eof-before-response", "eof-mid-response", "timeout", "bad-response", "non-2xx"];

interface Window { k: number; start_ms: number; done_ms: number; old_gone_ms: number | null; total_ms: number; reexec_ms: number | null; ok: boolean; final: string; messages: UpgradeMessage[] }

function svgChart(series: NonNullable<LoadResult["series"]>, windows: Window[], durationMs: number, title: string): string {
  const W = 960, H = 340, L = 64, R = 16, T = 40, B = 50;
  const pw = W - L - R, ph = H - T - B;
  const maxOk = Math.max(1, ...series.map((p) => p.ok));
  const yMax = Math.ceil((maxOk * 1.1) / 50) * 50;
  const x = (t: number) => L + (t / durationMs) * pw;
  const y = (v: number) => T + ph - (v / yMax) * ph;
  const f = (v: number) => v.toFixed(1);
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${title}</text>`);
  for (const w of windows) {
    out.push(`<rect x="${f(x(w.start_ms))}" y="${T}" width="${f(Math.max(1, x(w.done_ms) - x(w.start_ms)))}" height="${ph}" fill="#9ecae1" opacity="0.6"><title>upgrade ${w.k}: ${fmtMs(w.total_ms)} to "Upgrade done"</title></rect>`);
    if (w.old_gone_ms !== null && w.old_gone_ms > w.done_ms) out.push(`<rect x="${f(x(w.done_ms))}" y="${T}" width="${f(x(w.old_gone_ms) - x(w.done_ms))}" height="${ph}" fill="#deebf7" opacity="0.8"><title>upgrade ${w.k}: old workers draining</title></rect>`);
    out.push(`<text x="${f(x(w.start_ms))}" y="${T - 4}" font-size="10" fill="#3182bd">U${w.k}</text>`);
  }
  // Axes and grid.
  for (let v = 0; v <= yMax; v += yMax / 5) {
    out.push(`<line x1="${L}" x2="${L + pw}" y1="${f(y(v))}" y2="${f(y(v))}" stroke="#ddd"/>`);
    out.push(`<text x="${L - 6}" y="${f(y(v) + 4)}" text-anchor="end">${Math.round(v)}</text>`);
  }
  const step = durationMs > 20_000 ? 5000 : 2000;
  for (let t = 0; t <= durationMs; t += step) {
    out.push(`<line x1="${f(x(t))}" x2="${f(x(t))}" y1="${T + ph}" y2="${T + ph + 5}" stroke="#333"/>`);
    out.push(`<text x="${f(x(t))}" y="${T + ph + 18}" text-anchor="middle">${t / 1000} s</text>`);
  }
  out.push(`<line x1="${L}" x2="${L}" y1="${T}" y2="${T + ph}" stroke="#333"/><line x1="${L}" x2="${L + pw}" y1="${T + ph}" y2="${T + ph}" stroke="#333"/>`);
  out.push(`<text x="16" y="${T + ph / 2}" transform="rotate(-90 16 ${T + ph / 2})" text-anchor="middle">requests served per 100 ms</text>`);
  // Throughput line (each point at the middle of its interval).
  const pts = series.map((p) => `${f(x(p.t_ms + 50))},${f(y(p.ok))}`).join(" ");
  out.push(`<polyline points="${pts}" fill="none" stroke="#08519c" stroke-width="1.5"/>`);
  // Errors: a red mark at the bottom of every interval with errors, labelled with the count.
  for (const p of series) {
    if (!p.errors) continue;
    const kinds = Object.entries(p.error_kinds ?? {}).map(([k, v]) => `${k} ${v}`).join(", ");
    out.push(`<g fill="#d62728"><rect x="${f(x(p.t_ms))}" y="${T + ph - 10}" width="${f(Math.max(2, x(100) - x(0)))}" height="10"><title>${p.errors} error(s) at ${(p.t_ms / 1000).toFixed(1)} s: ${kinds}</title></rect><text x="${f(x(p.t_ms + 50))}" y="${T + ph - 14}" text-anchor="middle" font-size="10">${p.errors}</text></g>`);
  }
  const totalErr = series.reduce((a, p) => a + p.errors, 0);
  const ly = H - 12;
  out.push(`<line x1="${L}" x2="${L + 24}" y1="${ly - 4}" y2="${ly - 4}" stroke="#08519c" stroke-width="2"/><text x="${L + 30}" y="${ly}">successes per 100 ms</text>`);
  out.push(`<rect x="${L + 190}" y="${ly - 10}" width="14" height="10" fill="#9ecae1"/><text x="${L + 210}" y="${ly}">upgrade → "Upgrade done"</text>`);
  out.push(`<rect x="${L + 380}" y="${ly - 10}" width="14" height="10" fill="#deebf7" stroke="#9ecae1"/><text x="${L + 400}" y="${ly}">old workers draining</text>`);
  out.push(`<rect x="${L + 550}" y="${ly - 10}" width="14" height="10" fill="#d62728"/><text x="${L + 570}" y="${ly}">errors (${totalErr} in total)</text>`);
  out.push("</svg>");
  return `${out.join("\n")}\n`;
}

export const upgradeUnderLoad: Benchmark = {
  name: "upgrade-under-load",
  description: "4 graceful Bun HTTP workers under constant load, K consecutive smooth upgrades: requests served, errors by kind, upgrade times, latency during upgrades vs steady state; SVG chart",
  runs: { full: 5, quick: 2 },
  async run(ctx) {
    const k = ctx.runs; // upgrades
    const workers = 4;
    const connections = 16;
    const leadMs = ctx.quick ? 2000 : 3000;
    const slotMs = ctx.quick ? 4000 : 5000;
    const durationMs = leadMs + k * slotMs + 1000;
    const m = startMaster(["-b", "127.0.0.1:0", "-n", String(workers), "-m", "manual"], [BUN, WORKER], { label: "upgrade-load" });
    const seen = await waitForAcked(m, workers, { timeoutMs: 30_000 });
    const port = seen.state.listenPorts[0];
    if (!port) throw new Error("state json shows no listening port");
    const url = `http://127.0.0.1:${port}/`;
    const check = await fetch(url, { headers: { connection: "close" } });
    if (check.status !== 200) throw new Error(`${url} answered ${check.status}`);
    await check.text();
    // Warm-up (JIT of the workers and the generator), not counted.
    await runBuiltinLoad({ url, durationMs: 1000, connections });

    const tEnd: number[] = [];
    const lat: number[] = [];
    const okFlag: boolean[] = [];
    const loadStart = performance.now();
    const loadP = runBuiltinLoad({
      url, durationMs, connections, timeoutMs: 2000, seriesIntervalMs: 100,
      onSample: (t, l, ok) => { tEnd.push(t); lat.push(l); okFlag.push(ok); },
    });
    const windows: Window[] = [];
    try {
      for (let i = 1; i <= k; i++) {
        const at = leadMs + (i - 1) * slotMs;
        const wait = loadStart + at - performance.now();
        if (wait > 0) await sleep(wait);
        if (performance.now() - loadStart > durationMs - 1500) { ctx.note(`upgrade ${i} skipped: the previous ones ran past their slots`); break; }
        const before = await pollState(m, () => true, "state before upgrade", { timeoutMs: 5000 });
        const oldPids = new Set(before.state.workers.map((w) => w.pid));
        const up = await timedUpgrade(m.sockPath, 60_000);
        const start = up.sentAtPerf - loadStart;
        let oldGone: number | null = null;
        try {
          await pollState(m, (s) => s.workers.every((w) => !oldPids.has(w.pid)) && s.workers.filter((w) => w.acked).length >= workers, `old workers gone after upgrade ${i}`, { timeoutMs: 30_000, everyMs: 10 });
          oldGone = round(performance.now() - loadStart);
        } catch (e) {
          ctx.note(`upgrade ${i}: ${(e as Error).message}`);
        }
        const w: Window = { k: i, start_ms: round(start), done_ms: round(start + up.total_ms), old_gone_ms: oldGone, total_ms: up.total_ms, reexec_ms: up.reexec_ms, ok: up.ok, final: up.final, messages: up.messages };
        if (!up.ok) ctx.note(`upgrade ${i} did not end with "Upgrade done": ${up.final}`);
        ctx.log(`upgrade ${i}: ${fmtMs(up.total_ms)} to "${up.final}", old workers gone ${oldGone === null ? "?" : fmtMs(oldGone - start)} after the request`);
        windows.push(w);
      }
    } finally {
      // The load ends by itself at durationMs.
    }
    const load = await loadP;
    const finalState = await pollState(m, () => true, "final state", { timeoutMs: 5000 });
    const reexecs = (finalState.state.raw as any)?.master?.reexecs ?? null;
    await m.stop();

    const inWindow = (t: number) => windows.some((w) => t >= w.start_ms && t <= (w.old_gone_ms ?? w.done_ms));
    const during: number[] = [], steady: number[] = [];
    let errDuring = 0, errSteady = 0, okDuring = 0, okSteady = 0;
    for (let i = 0; i < tEnd.length; i++) {
      const d = inWindow(tEnd[i]!);
      if (okFlag[i]) { (d ? during : steady).push(lat[i]!); if (d) okDuring++; else okSteady++; } else if (d) errDuring++; else errSteady++;
    }
    const errors: Record<string, number> = Object.fromEntries(ERROR_KINDS.map((kind) => [kind, 0]));
    for (const [kind, v] of Object.entries(load.errors)) {
      const key = kind.startsWith("status-") ? "non-2xx" : kind;
      errors[key] = (errors[key] ?? 0) + v;
    }
    const windowMs = windows.reduce((a, w) => a + ((w.old_gone_ms ?? w.done_ms) - w.start_ms), 0);
    const latDuring = distribution(during), latSteady = distribution(steady);
    const totals = windows.map((w) => w.total_ms);
    const svgDir = ensureDir(join(BENCH_DIR, "results", ...(ctx.quick ? ["quick"] : [])));
    const svgPath = join(svgDir, "upgrade-under-load.svg");
    writeFileSync(svgPath, svgChart(load.series ?? [], windows, durationMs, `${windows.length} smooth upgrades of 4 Bun HTTP workers under load (${connections} connections): ${load.successes} requests, ${load.error_total} errors`));
    if (load.error_total > 0) ctx.note(`${load.error_total} failed request(s): ${JSON.stringify(load.errors)} (target: 0)`);
    const { series, ...loadRest } = load;
    return {
      parameters: {
        workers, worker: `${BUN} examples/http-worker.ts (-m manual, serve() drains on SIGUSR2)`, upgrades: k, lead_ms: leadMs, slot_ms: slotMs, duration_ms: durationMs,
        load: { tool: "builtin", connections, timeout_ms: 2000, series_interval_ms: 100, warmup_ms: 1000 },
        window_definition: "from writing `upgrade` to the poll (every 10 ms) that saw none of the old workers left; requests are assigned by the time they ended",
        chart: svgPath.slice(ROOT.length + 1),
      },
      samples: { windows, series },
      results: {
        requests_served: load.successes, rps: load.rps, errors, error_total: load.error_total, connects: load.connects,
        upgrade_total_ms: distribution(totals), upgrade_total_ms_median: round(median(totals)), reexec_ms_median: round(median(windows.map((w) => w.reexec_ms ?? NaN).filter(Number.isFinite))),
        window_to_old_gone_ms_median: round(median(windows.map((w) => (w.old_gone_ms ?? NaN) - w.start_ms).filter(Number.isFinite))),
        all_upgrades_ok: windows.every((w) => w.ok), master_reexecs: reexecs,
        during_upgrades: { ms: round(windowMs), requests: okDuring, errors: errDuring, rps: round(okDuring / (windowMs / 1000), 1), latency_ms: latDuring },
        steady_state: { ms: round(durationMs - windowMs), requests: okSteady, errors: errSteady, rps: round(okSteady / ((durationMs - windowMs) / 1000), 1), latency_ms: latSteady },
        load_overall: loadRest,
      },
      summary: [
        { measure: `${windows.length} upgrades of 4 HTTP workers under load: command to "Upgrade done"`, value: fmtMs(median(totals)), detail: `min ${fmtMs(Math.min(...totals))}, max ${fmtMs(Math.max(...totals))}; master re-exec ${fmtMs(median(windows.map((w) => w.reexec_ms ?? NaN).filter(Number.isFinite)))}; old workers gone ${fmtMs(median(windows.map((w) => (w.old_gone_ms ?? NaN) - w.start_ms).filter(Number.isFinite)))} after the request`, reference: "target < 1 s; Ruby Einhorn side by side: vs-ruby" },
        { measure: "failed requests across the upgrades", value: `${load.error_total} of ${load.successes + load.error_total}`, detail: Object.entries(errors).filter(([, v]) => v).map(([kind, v]) => `${kind} ${v}`).join(", ") || "no connect, read/reset, timeout or non-2xx errors", reference: "target 0; Ruby Einhorn side by side: vs-ruby" },
        { measure: "latency p50 / p99: during upgrades vs steady state", value: `${fmtMs(latDuring.p50)} / ${fmtMs(latDuring.p99)} vs ${fmtMs(latSteady.p50)} / ${fmtMs(latSteady.p99)}`, detail: `max ${fmtMs(latDuring.max)} vs ${fmtMs(latSteady.max)}; req/s ${round(okDuring / (windowMs / 1000), 0)} vs ${round(okSteady / ((durationMs - windowMs) / 1000), 0)} (built-in generator, ${connections} connections)` },
      ],
    };
  },
};

// serve-throughput: requests per second of the worker helper's HTTP paths
// against the fastest way to serve the same handler without einhorn, same
// process count, same load, side by side in one run:
//   bun:  serve({ fetch }) under einhorn (Bun.serve adopted onto the shared
//         socket)  vs  Bun.serve({ reusePort: true }) in as many processes
//   node: listen(http.createServer(h)) under einhorn  vs  the same server
//         listening on the same inherited descriptor by itself
//         (server.listen({ fd })), under the same master
// Every setup stays up for the whole benchmark; each pair alternates its
// order run by run (A B, B A, ...), and each ratio is taken within one pair,
// so drift on a shared machine hits both sides alike.
import { join } from "node:path";
import * as sock from "../ffi/socket";
import {
  type Benchmark, BUN, median, ROOT, round, scratchDir, sleep, type Spawned, spawnTracked, startMaster, waitForAcked, which, WORKERS_DIR,
  type MasterHandle,
} from "./harness";
import { connectionsPerWorker } from "./data-path";
import { type LoadResult, runWrk, wrkPath } from "./load";

const BUN_WORKER = join(WORKERS_DIR, "serve-worker.ts");
const NODE_WORKER = join(WORKERS_DIR, "node-http-worker.mjs");

type Side = "helper" | "direct";
interface Pair {
  run: number; order: Side[]; helper: number; direct: number; ratio: number; errors: { helper: number; direct: number };
  /** How wrk's connections were spread over the processes, halfway through each side's run (from ss). */
  spread: { helper: number[] | null; direct: number[] | null };
}

async function checkServes(url: string): Promise<void> {
  const res = await fetch(url, { headers: { connection: "close" } });
  const body = await res.text();
  if (res.status !== 200 || !body.startsWith("hello from an einhorn bench worker")) throw new Error(`${url} answered ${res.status}: ${body.slice(0, 200)}`);
}

function port(s: { listenPorts: number[] }): number {
  const p = s.listenPorts[0];
  if (!p) throw new Error("the master's state does not report its listening port");
  return p;
}

export const serveThroughput: Benchmark = {
  name: "serve-throughput",
  description: "req/s of serve({fetch}) vs Bun.serve({reusePort}) and of listen(node:http) vs node:http listening on the fd itself, same handler and process count, side by side",
  runs: { full: 5, quick: 1 },
  async run(ctx) {
    const wrk = wrkPath();
    if (!wrk) throw new Error("serve-throughput needs wrk (Debian package wrk)");
    const node = which("node");
    const durationMs = ctx.quick ? 2000 : 3000;
    const warmupMs = ctx.quick ? 1000 : 2000;
    const workers = 2;
    const connections = 32;
    const threads = 2;

    // The Node side imports the package's built module, as a user's program would.
    const b = Bun.spawnSync([BUN, join(ROOT, "scripts/build-package.ts"), "--no-types"], { cwd: ROOT });
    if (b.exitCode !== 0) throw new Error(`building pkg/ failed: ${b.stderr}`);

    const masters: MasterHandle[] = [];
    const copies: Spawned[] = [];
    let holder: number | null = null;
    const urls: Record<string, Record<Side, string>> = {};
    const pairs: Record<string, Pair[]> = { bun: [], node: [] };
    const raw: Record<string, Record<Side, LoadResult[]>> = { bun: { helper: [], direct: [] }, node: { helper: [], direct: [] } };
    try {
      // bun/helper: einhorn + serve({ fetch }).
      const mb = startMaster(["-b", "127.0.0.1:0", "-n", String(workers), "-m", "manual"], [BUN, BUN_WORKER], { label: "serve-bun" });
      masters.push(mb);
      // bun/direct: Bun.serve reusePort copies on a port held meanwhile by a bound SO_REUSEPORT socket.
      holder = sock.socket("inet");
      sock.setsockoptInt(holder, sock.SOL_SOCKET, sock.SO_REUSEPORT, 1);
      sock.bind(holder, { family: "inet", host: "127.0.0.1", port: 0 });
      const a = sock.getsockname(holder);
      const reusePort = a.family === "inet" ? a.port : 0;
      const dir = scratchDir("serve-reuseport");
      for (let i = 0; i < workers; i++) copies.push(spawnTracked([BUN, BUN_WORKER], { dir, label: `bun-reuseport-${i}`, env: { BENCH_BUN_REUSEPORT: String(reusePort) } }));
      const deadline = Date.now() + 30_000;
      while (!copies.every((c) => c.log().includes("listening on"))) {
        const dead = copies.find((c) => c.proc.exitCode !== null);
        if (dead) throw new Error(`reusePort worker ${dead.pid} exited: ${dead.log().slice(-500)}`);
        if (Date.now() > deadline) throw new Error("reusePort workers did not start within 30 s");
        await sleep(20);
      }
      sock.close(holder);
      holder = null;
      const sb = await waitForAcked(mb, workers, { timeoutMs: 60_000, everyMs: 20 });
      if (/instead of Bun\.serve/.test(mb.log())) ctx.note("serve() fell back to node:http: " + (mb.log().match(/instead of Bun\.serve: .*/)?.[0] ?? ""));
      urls.bun = { helper: `http://127.0.0.1:${port(sb.state)}/`, direct: `http://127.0.0.1:${reusePort}/` };

      if (node) {
        const mh = startMaster(["-b", "127.0.0.1:0", "-n", String(workers), "-m", "manual"], [node, NODE_WORKER], { label: "node-listen" });
        // The direct side never ACKs: a 0.5 s timer counts it up.
        const md = startMaster(["-b", "127.0.0.1:0", "-n", String(workers), "-m", "0.5"], [node, NODE_WORKER], { label: "node-direct", env: { BENCH_NODE_DIRECT: "1" } });
        masters.push(mh, md);
        const [sh, sd] = await Promise.all([waitForAcked(mh, workers, { timeoutMs: 60_000, everyMs: 20 }), waitForAcked(md, workers, { timeoutMs: 60_000, everyMs: 20 })]);
        urls.node = { helper: `http://127.0.0.1:${port(sh.state)}/`, direct: `http://127.0.0.1:${port(sd.state)}/` };
      } else {
        ctx.note("node is not installed: the Node pair was skipped");
      }

      for (const u of Object.values(urls)) for (const url of Object.values(u)) await checkServes(url);
      const load = async (url: string, ms: number) => {
        let spread: Promise<number[] | null> = Promise.resolve(null);
        const t = setTimeout(() => { spread = connectionsPerWorker(Number(new URL(url).port)); }, ms / 2);
        const r = await runWrk({ url, durationMs: ms, connections, threads });
        clearTimeout(t);
        return { ...r, spread: await spread };
      };
      for (const u of Object.values(urls)) for (const url of Object.values(u)) await load(url, warmupMs);

      // Interleaved: bun pair, node pair, bun pair, ... each pair in alternating order.
      for (let r = 1; r <= ctx.runs; r++) {
        for (const kind of Object.keys(urls)) {
          const order: Side[] = r % 2 === 1 ? ["helper", "direct"] : ["direct", "helper"];
          const got: Partial<Record<Side, LoadResult & { spread: number[] | null }>> = {};
          for (const side of order) {
            got[side] = await load(urls[kind]![side], durationMs);
            raw[kind]![side].push(got[side]!);
          }
          const h = got.helper!;
          const d = got.direct!;
          pairs[kind]!.push({ run: r, order, helper: h.rps, direct: d.rps, ratio: round(h.rps / d.rps), errors: { helper: h.error_total, direct: d.error_total }, spread: { helper: h.spread, direct: d.spread } });
          ctx.log(`run ${r} ${kind}: helper ${h.rps} req/s (connections ${h.spread?.join("/")}), direct ${d.rps} req/s (connections ${d.spread?.join("/")}), ratio ${(h.rps / d.rps).toFixed(3)} (errors ${h.error_total}/${d.error_total})`);
        }
      }
    } finally {
      if (holder !== null) sock.close(holder);
      await Promise.all(copies.map((c) => c.stop()));
      await Promise.all(masters.map((m) => m.stop()));
    }

    const summarize = (kind: string) => {
      const ps = pairs[kind]!;
      const ratios = ps.map((p) => p.ratio);
      return {
        ratio_median: round(median(ratios)),
        ratio_min: round(Math.min(...ratios)),
        ratio_max: round(Math.max(...ratios)),
        helper_rps_median: round(median(ps.map((p) => p.helper)), 1),
        direct_rps_median: round(median(ps.map((p) => p.direct)), 1),
        errors: ps.reduce((n, p) => n + p.errors.helper + p.errors.direct, 0),
      };
    };
    const results: Record<string, unknown> = { bun: summarize("bun") };
    if (urls.node) results.node = summarize("node");
    const bun = results.bun as ReturnType<typeof summarize>;
    if (bun.ratio_median < 0.9) ctx.note(`serve() / Bun.serve(reusePort) is ${bun.ratio_median}, below the 0.9 target`);
    const summary = [
      {
        measure: "Bun: serve({fetch}) under einhorn / Bun.serve({reusePort}), 2 processes",
        value: `${bun.ratio_median.toFixed(2)}×`,
        detail: `median of ${pairs.bun!.length} per-pair ratios (range ${bun.ratio_min.toFixed(2)}–${bun.ratio_max.toFixed(2)}); medians ${Math.round(bun.helper_rps_median)} vs ${Math.round(bun.direct_rps_median)} req/s; wrk -t${threads} -c${connections}, ${durationMs / 1000} s per side per run; errors ${bun.errors}`,
        reference: "target ≥ 0.9×",
      },
    ];
    if (urls.node) {
      const n = results.node as ReturnType<typeof summarize>;
      summary.push({
        measure: "Node: listen(http server) under einhorn / the server listening on the fd itself, 2 processes",
        value: `${n.ratio_median.toFixed(2)}×`,
        detail: `median of ${pairs.node!.length} per-pair ratios (range ${n.ratio_min.toFixed(2)}–${n.ratio_max.toFixed(2)}); medians ${Math.round(n.helper_rps_median)} vs ${Math.round(n.direct_rps_median)} req/s; same load; errors ${n.errors}`,
        reference: "target ≥ 0.95×",
      });
    }
    return {
      parameters: {
        workers, connections, threads, duration_ms: durationMs, warmup_ms: warmupMs, bun: BUN, node,
        bun_worker: "bench/workers/serve-worker.ts (fixed 35-byte body)", node_worker: "bench/workers/node-http-worker.mjs (same body)",
        order: "per run: bun pair then node pair, each pair's order alternating run by run",
      },
      samples: { pairs, raw: Object.fromEntries(Object.entries(raw).map(([k, v]) => [k, { helper: v.helper.map((r) => ({ rps: r.rps, errors: r.errors, latency_ms: r.latency_ms })), direct: v.direct.map((r) => ({ rps: r.rps, errors: r.errors, latency_ms: r.latency_ms })) }])) },
      results,
      summary,
    };
  },
};

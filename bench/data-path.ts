// data-path: HTTP throughput and latency of 4 workers behind einhorn against
// the same worker program binding the port itself with SO_REUSEPORT (4
// copies), under the same load, side by side in one run. Einhorn only hands
// the listening socket over and is not in the data path, so the ratio should
// be about 1.0; what differs is how connections reach workers (one shared
// accept queue vs. the kernel hashing them over 4 queues).
//
// Both setups stay up for the whole benchmark; runs alternate A B, B A, ...
// after one warm-up each, and each ratio is taken within the same run pair.
import { join } from "node:path";
import * as sock from "../ffi/socket";
import { freeTcpPort } from "../test/free-port";
import {
  type Benchmark, BUN, fmtMs, median, readState, round, scratchDir, sleep, type Spawned, spawnTracked, startMaster, waitForAcked, which, WORKERS_DIR,
} from "./harness";
import { type LoadResult, loadTool, runLoad } from "./load";

const WORKER = join(WORKERS_DIR, "http-worker.ts");

type Setup = "einhorn" | "reuseport";

type Measured = LoadResult & { connections_per_worker: number[] | null };

function summarizeLoad(r: Measured) {
  return { connections_per_worker: r.connections_per_worker, rps: r.rps, successes: r.successes, error_total: r.error_total, errors: r.errors, latency_ms: r.latency_ms, duration_ms: r.duration_ms };
}

/**
 * Established connections on the server side of PORT, per accepting process
 * (from `ss -tnp`): how the connections were spread over the workers. Null
 * when ss is not installed.
 */
export async function connectionsPerWorker(port: number): Promise<number[] | null> {
  const ss = which("ss");
  if (!ss) return null;
  const p = Bun.spawn([ss, "-Htnp", "state", "established", `( sport = :${port} )`], { stdout: "pipe", stderr: "ignore", stdin: "ignore" });
  const out = await new Response(p.stdout).text();
  if ((await p.exited) !== 0) return null;
  const per = new Map<number, number>();
  for (const m of out.matchAll(/pid=(\d+)/g)) per.set(Number(m[1]), (per.get(Number(m[1])) ?? 0) + 1);
  return [...per.values()].sort((a, b) => b - a);
}


async function checkServes(url: string): Promise<void> {
  // Connection: close, so this check leaves no idle connection behind to skew the spread below.
  const res = await fetch(url, { headers: { connection: "close" } });
  const body = await res.text();
  if (res.status !== 200 || !body.startsWith("hello from an einhorn bench worker")) throw new Error(`${url} answered ${res.status}: ${body.slice(0, 200)}`);
}

export const dataPath: Benchmark = {
  name: "data-path",
  description: "HTTP req/s and latency, 4 workers behind einhorn vs the same program with SO_REUSEPORT (4 copies), same load, side by side",
  runs: { full: 5, quick: 1 },
  async run(ctx) {
    // Short alternating runs rather than a few long ones: drift on a shared machine hits both sides alike.
    const durationMs = ctx.quick ? 2000 : 3000;
    const warmupMs = ctx.quick ? 1000 : 2000;
    const workers = 4;
    const connections = 16;
    const threads = 2;
    const toolChoice = (process.env.BENCH_LOAD ?? "auto") as "wrk" | "builtin" | "auto";
    const tool = loadTool({ tool: toolChoice });
    if (tool === "builtin") ctx.note("wrk is not installed (or --load builtin): load from the built-in Bun generator, which shares the 2 cores with the workers and is slower than wrk");

    // A: einhorn binds 127.0.0.1:0 and hands the socket to 4 workers.
    let master = startMaster(["-b", "127.0.0.1:0", "-n", String(workers), "-m", "manual"], [BUN, WORKER], { label: "datapath-einhorn" });
    const copies: Spawned[] = [];
    let holder: number | null = null;
    const samples: Array<{ run: number; order: Setup[]; einhorn: ReturnType<typeof summarizeLoad>; reuseport: ReturnType<typeof summarizeLoad>; rps_ratio: number; p50_ratio: number; p99_ratio: number }> = [];
    const raw: Record<Setup, Measured[]> = { einhorn: [], reuseport: [] };
    try {
      const seen = await waitForAcked(master, workers, { timeoutMs: 60_000, everyMs: 20 });
      let einhornPort = seen.state.listenPorts[0];
      if (!einhornPort) {
        // A master without `state json` listeners (another implementation): give it a port
        // the kernel chose for a probe socket a moment ago instead.
        ctx.note("the master's state does not report its listening port; restarted it on a port chosen by binding a probe socket to port 0");
        await master.stop();
        einhornPort = freeTcpPort();
        master = startMaster(["-b", `127.0.0.1:${einhornPort}`, "-n", String(workers), "-m", "manual"], [BUN, WORKER], { label: "datapath-einhorn-2" });
        await waitForAcked(master, workers, { timeoutMs: 60_000, everyMs: 20 });
      }

      // B: a kernel-chosen port, held by a bound (not listening) SO_REUSEPORT socket
      // until the 4 copies have bound it too, so nobody else can take it meanwhile.
      holder = sock.socket("inet");
      sock.setsockoptInt(holder, sock.SOL_SOCKET, sock.SO_REUSEPORT, 1);
      sock.bind(holder, { family: "inet", host: "127.0.0.1", port: 0 });
      const addr = sock.getsockname(holder);
      const reusePort = addr.family === "inet" ? addr.port : 0;
      const dir = scratchDir("datapath-reuseport");
      for (let i = 0; i < workers; i++) {
        copies.push(spawnTracked([BUN, WORKER], { dir, label: `reuseport-${i}`, env: { BENCH_REUSEPORT: `127.0.0.1:${reusePort}` } }));
      }
      const deadline = Date.now() + 30_000;
      while (!copies.every((c) => c.log().includes("listening on"))) {
        const dead = copies.find((c) => c.proc.exitCode !== null);
        if (dead) throw new Error(`reuseport worker ${dead.pid} exited: ${dead.log().slice(-500)}`);
        if (Date.now() > deadline) throw new Error("reuseport workers did not start within 30 s");
        await sleep(20);
      }
      sock.close(holder);
      holder = null;

      const url: Record<Setup, string> = { einhorn: `http://127.0.0.1:${einhornPort}/`, reuseport: `http://127.0.0.1:${reusePort}/` };
      for (const s of ["einhorn", "reuseport"] as Setup[]) await checkServes(url[s]);
      const port: Record<Setup, number> = { einhorn: einhornPort, reuseport: reusePort };
      const load = async (s: Setup, ms: number) => {
        // Halfway through, note how the load's connections are spread over the workers.
        let spread: Promise<number[] | null> = Promise.resolve(null);
        const t = setTimeout(() => { spread = connectionsPerWorker(port[s]); }, ms / 2);
        const r = await runLoad({ url: url[s], durationMs: ms, connections, threads, tool: toolChoice });
        clearTimeout(t);
        return { ...r, connections_per_worker: await spread };
      };
      for (const s of ["einhorn", "reuseport"] as Setup[]) await load(s, warmupMs);

      for (let r = 1; r <= ctx.runs; r++) {
        const order: Setup[] = r % 2 === 1 ? ["einhorn", "reuseport"] : ["reuseport", "einhorn"];
        const got: Partial<Record<Setup, Measured>> = {};
        for (const s of order) {
          got[s] = await load(s, durationMs);
          raw[s]!.push(got[s]!);
        }
        const a = got.einhorn!;
        const b = got.reuseport!;
        samples.push({
          run: r,
          order,
          einhorn: summarizeLoad(a),
          reuseport: summarizeLoad(b),
          rps_ratio: round(a.rps / b.rps),
          p50_ratio: round(a.latency_ms.p50 / b.latency_ms.p50),
          p99_ratio: round(a.latency_ms.p99 / b.latency_ms.p99),
        });
        ctx.log(`run ${r}: einhorn ${a.rps} req/s (p50 ${a.latency_ms.p50} ms, p99 ${a.latency_ms.p99} ms, ${a.error_total} errors, connections per worker ${JSON.stringify(a.connections_per_worker)}); reuseport ${b.rps} req/s (p50 ${b.latency_ms.p50} ms, p99 ${b.latency_ms.p99} ms, ${b.error_total} errors, connections per worker ${JSON.stringify(b.connections_per_worker)})`);
      }
      if (master.proc.exitCode !== null) throw new Error("the master exited during the benchmark");
      const st = await readState(master.sockPath);
      if (st.workers.length !== workers) ctx.note(`einhorn had ${st.workers.length} workers at the end, not ${workers}`);
    } finally {
      if (holder !== null) sock.close(holder);
      await Promise.all(copies.map((c) => c.stop()));
      await master.stop();
    }

    const med = (s: Setup, f: (r: Measured) => number) => median(raw[s]!.map(f));
    const spreads = (s: Setup) => raw[s]!.map((r) => (r.connections_per_worker ? r.connections_per_worker.join("/") : "?")).join(", ");
    const rpsA = med("einhorn", (r) => r.rps);
    const rpsB = med("reuseport", (r) => r.rps);
    const p50A = med("einhorn", (r) => r.latency_ms.p50);
    const p50B = med("reuseport", (r) => r.latency_ms.p50);
    const p99A = med("einhorn", (r) => r.latency_ms.p99);
    const p99B = med("reuseport", (r) => r.latency_ms.p99);
    const errA = raw.einhorn!.reduce((n, r) => n + r.error_total, 0);
    const errB = raw.reuseport!.reduce((n, r) => n + r.error_total, 0);
    if (errA || errB) ctx.note(`errors under load: einhorn ${errA}, reuseport ${errB} (see samples)`);
    for (const s of ["einhorn", "reuseport"] as Setup[]) {
      const fewest = Math.min(...raw[s]!.map((r) => r.connections_per_worker?.length ?? workers));
      if (fewest < workers) ctx.note(`${s}: in some runs only ${fewest} of ${workers} workers held the load's ${connections} connections (per worker: ${spreads(s)}); the others sat idle`);
    }
    const rpsRatio = median(samples.map((s) => s.rps_ratio));
    if (Math.abs(rpsRatio - 1) > 0.1) ctx.note(`throughput ratio einhorn/reuseport is ${rpsRatio.toFixed(2)}, more than 10% away from 1.0`);
    return {
      parameters: {
        workers, worker: "bench/workers/http-worker.ts (einhorn/worker serve(), fixed 35-byte body)", bun: BUN,
        einhorn_args: ["-b", "127.0.0.1:0", "-n", String(workers), "-m", "manual"],
        reuseport: "4 copies, each binding 127.0.0.1:PORT with SO_REUSEPORT, backlog 100",
        load: { tool, connections, threads: tool === "wrk" ? threads : null, duration_ms: durationMs, warmup_ms: warmupMs, version: raw.einhorn![0]?.tool_version ?? null },
      },
      samples: { pairs: samples, raw },
      results: {
        einhorn: { rps_median: round(rpsA, 1), p50_ms_median: round(p50A), p99_ms_median: round(p99A), errors: errA },
        reuseport: { rps_median: round(rpsB, 1), p50_ms_median: round(p50B), p99_ms_median: round(p99B), errors: errB },
        rps_ratio_median: round(rpsRatio),
        p50_ratio_median: round(median(samples.map((s) => s.p50_ratio))),
        p99_ratio_median: round(median(samples.map((s) => s.p99_ratio))),
        ratio_of_medians: { rps: round(rpsA / rpsB), p50: round(p50A / p50B), p99: round(p99A / p99B) },
      },
      summary: [
        {
          measure: "HTTP throughput, 4 workers: einhorn / SO_REUSEPORT",
          value: `${rpsRatio.toFixed(2)}×`,
          detail: `median of ${samples.length} per-pair ratios (range ${Math.min(...samples.map((s) => s.rps_ratio)).toFixed(2)}–${Math.max(...samples.map((s) => s.rps_ratio)).toFixed(2)}); medians einhorn ${Math.round(rpsA)} req/s, reuseport ${Math.round(rpsB)} req/s; ${tool}${tool === "wrk" ? ` -t${threads}` : ""} -c${connections}, ${samples.length} × ${durationMs / 1000} s each; connections per worker: einhorn ${spreads("einhorn")}; reuseport ${spreads("reuseport")}`,
          reference: "≈ 1.0 (einhorn is not in the data path)",
        },
        {
          measure: "HTTP latency p50 / p99, einhorn",
          value: `${fmtMs(p50A)} / ${fmtMs(p99A)}`,
          detail: `reuseport ${fmtMs(p50B)} / ${fmtMs(p99B)}; ratios p50 ${median(samples.map((s) => s.p50_ratio)).toFixed(2)}, p99 ${median(samples.map((s) => s.p99_ratio)).toFixed(2)}; errors ${errA} / ${errB}`,
        },
      ],
    };
  },
};

// command-roundtrip: latency of `state` (YAML) and `state json` on the
// command socket of a master with 4 workers, sequential requests on one
// connection and on a fresh connection each. The clock runs from writing the
// request (or from connecting) to the last byte of the answer line; the
// answer is decoded only outside the timed part, to check it.
import { join } from "node:path";
import { decodeLine } from "../src/protocol";
import {
  type Benchmark, CommandConnection, distribution, fmtMs, median, realPython, requestLine, round, startMaster, waitForAcked, WORKERS_DIR,
} from "./harness";

type Mode = "one-connection" | "fresh-connections";

function check(line: string, json: boolean): number {
  const a = decodeLine(line) as Record<string, unknown>;
  if (typeof a?.message !== "string") throw new Error(`unexpected answer: ${line.slice(0, 200)}`);
  if (a.error) throw new Error(`the master answered with an error: ${a.message}`);
  if (json) JSON.parse(a.message);
  return Buffer.byteLength(line) + 1;
}

async function measure(sockPath: string, args: string[], mode: Mode, requests: number, warmup: number): Promise<{ ms: number[]; answerBytes: number }> {
  const line = requestLine("state", args);
  const json = args[0] === "json";
  const ms: number[] = [];
  let answerBytes = 0;
  if (mode === "one-connection") {
    const c = await CommandConnection.open(sockPath);
    try {
      for (let i = 0; i < warmup + requests; i++) {
        const t0 = performance.now();
        const answer = await c.rawRoundtrip(line);
        const dt = performance.now() - t0;
        if (i === 0) answerBytes = check(answer, json);
        if (i >= warmup) ms.push(round(dt));
      }
      // The connection carried them all: the last answer is checked too.
      check(await c.rawRoundtrip(line), json);
    } finally {
      c.close();
    }
  } else {
    for (let i = 0; i < warmup + requests; i++) {
      const t0 = performance.now();
      const c = await CommandConnection.open(sockPath);
      let answer: string;
      try {
        answer = await c.rawRoundtrip(line);
      } finally {
        c.close();
      }
      const dt = performance.now() - t0;
      if (i === 0) answerBytes = check(answer, json);
      if (i >= warmup) ms.push(round(dt));
    }
  }
  return { ms, answerBytes };
}

export const commandRoundtrip: Benchmark = {
  name: "command-roundtrip",
  description: "`state` and `state json` p50/p99 over sequential requests, on one connection and on fresh connections, master with 4 workers",
  runs: { full: 3, quick: 1 },
  async run(ctx) {
    const requests = ctx.quick ? 100 : 500;
    const warmup = 20;
    const workers = 4;
    const py = realPython();
    const m = startMaster(["-n", String(workers), "-m", "manual"], [py, "-S", join(WORKERS_DIR, "ack-now.py"), "--ack"], { label: "roundtrip" });
    const samples: Record<string, number[][]> = {};
    const bytes: Record<string, number> = {};
    try {
      await waitForAcked(m, workers, { timeoutMs: 30_000 });
      for (let r = 0; r < ctx.runs; r++) {
        for (const args of [[], ["json"]]) {
          for (const mode of ["one-connection", "fresh-connections"] as Mode[]) {
            const key = `${["state", ...args].join(" ")} / ${mode}`;
            const { ms, answerBytes } = await measure(m.sockPath, args, mode, requests, warmup);
            (samples[key] ??= []).push(ms);
            bytes[key] = answerBytes;
          }
        }
      }
      if (m.proc.exitCode !== null) throw new Error("the master exited during the benchmark");
    } finally {
      await m.stop();
    }
    const results: Record<string, unknown> = {};
    const summary = [];
    for (const [key, runs] of Object.entries(samples)) {
      const perRun = runs.map((ms) => distribution(ms));
      const p50 = median(perRun.map((d) => d.p50));
      const p99 = median(perRun.map((d) => d.p99));
      results[key] = { p50_ms: round(p50), p99_ms: round(p99), per_run: perRun, pooled: distribution(runs.flat()), answer_bytes: bytes[key] };
      summary.push({
        measure: `\`${key.split(" / ")[0]}\` round trip, ${key.split(" / ")[1]!.replace("-", " ")}`,
        value: `p50 ${fmtMs(p50)}`,
        detail: `p99 ${fmtMs(p99)}; ${requests} requests × ${runs.length} run${runs.length === 1 ? "" : "s"}; answer ${bytes[key]} bytes`,
      });
    }
    return {
      parameters: { workers, worker: "bench/workers/ack-now.py --ack (manual ACK)", requests_per_run: requests, warmup, sequential: true },
      samples,
      results,
      summary,
    };
  },
};

// --max-memory: a worker that allocates past the limit while serving load is
// replaced the graceful way (successor up first, then SIGUSR2), once, counted,
// with zero failed requests.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ask, fetchLine, FIXTURES, quietFor, runBinary, sleep, startMaster, stateJson, stopMaster, tempDir, waitFor, within } from "../harness";

const WORKER = join(FIXTURES, "memory-worker.py");

describe("--max-memory", () => {
  test("a worker growing past the limit under load is replaced gracefully, once, with zero failed requests", async () => {
    const dir = tempDir();
    // The young window at 2 s instead of 10 (EINHORN_TIMEOUTS, docs/operations.md): the worker must outlive it before it grows.
    const m = startMaster(["--max-memory", "60M", "--metrics", "127.0.0.1:0", "-n", "2", "-m", "manual", "-b", "127.0.0.1:0", "--", "python3", WORKER, "--grow", "120"], { dir, env: { EINHORN_TIMEOUTS: "max-memory-young=2" } });
    const port = Number((await m.waitForOutput(/Bound 127\.0\.0\.1:0 on fd \d+ as 127\.0\.0\.1:(\d+)/))[1]);
    const metricsPort = Number((await m.waitForOutput(/Serving metrics on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
    const s0 = await waitFor("2 workers up", async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.filter((w) => w.acked).length === 2 ? s : null;
    }, 20_000);
    const big = s0.workers.find((w) => w.index === 0)!;
    const small = s0.workers.find((w) => w.index === 1)!;

    // Load: 4 clients in a loop until told to stop.
    let running = true;
    let ok = 0;
    const failures: string[] = [];
    const answeredBy = new Set<string>();
    const client = async () => {
      while (running) {
        try {
          const line = await fetchLine(port, "127.0.0.1", 10_000);
          if (!/^\d+ \d+\n$/.test(line)) failures.push(`bad answer ${JSON.stringify(line)}`);
          else { ok++; answeredBy.add(line.split(" ")[0]!); }
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    };
    const clients = Promise.all([client(), client(), client(), client()]);
    await waitFor("load flowing", () => ok > 50, 20_000);

    // Past its first 2 s: a worker over the limit sooner is taken as too big by nature (see the test below).
    // A wait on the master's clock (spawned_at), which no load stretches.
    await sleep(Math.max(0, Date.parse(big.spawned_at!) + 2_500 - Date.now()));
    writeFileSync(join(dir, "grow"), "");
    const log = await m.waitForOutput(new RegExp(`WARN: Replacing worker ${big.pid} \\(index 0\\): RSS [\\d.]+M above --max-memory 60\\.0M for 3 checks in a row; its successor starts first, then it is retired \\(SIGUSR2\\)`), 30_000);
    expect(log).toBeTruthy();
    await m.waitForOutput(new RegExp(`Worker ${big.pid} \\(index 0\\) is replaced`), 30_000);
    // Keep the load on a little longer, then look.
    const okAtReplace = ok;
    await waitFor("more load after the replacement", () => ok > okAtReplace + 50, 20_000);
    running = false;
    await clients;
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(100);

    const out = m.output();
    // The successor was up before the old worker was asked to leave.
    const successorUp = out.search(/Worker \d+ \(index 2\) is up: manual ACK/);
    const retired = out.search(new RegExp(`Replacement of worker ${big.pid} \\(index 0\\) is up; retiring it`));
    expect(successorUp).toBeGreaterThan(0);
    expect(retired).toBeGreaterThan(successorUp);
    expect(out).toMatch(new RegExp(`===> Worker ${big.pid} \\(index 0\\) exited with status 0`));
    const s1 = await stateJson(m.sockPath);
    expect(s1.workers).toHaveLength(2);
    expect(s1.workers.map((w) => w.pid)).toContain(small.pid);
    expect(s1.workers.map((w) => w.pid)).not.toContain(big.pid);
    // Once only: the successor does not grow, nothing else is replaced.
    await quietFor(4000);
    expect(m.output().match(/WARN: Replacing worker/g)).toHaveLength(1);
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toContain("einhorn_max_memory_replacements_total 1\n");
    expect(metrics).toContain('einhorn_worker_spawns_total{cause="max_memory"} 1\n');
    expect(metrics).toContain(`einhorn_max_memory_bytes ${60 * 1024 * 1024}\n`);
    expect(metrics).toContain('einhorn_worker_exits_total{cause="retired",signal="none",code="0"} 1\n');
    expect(metrics).toContain('einhorn_worker_retirements_total{reason="max_memory"} 1\n');
    expect(await ask(m.sockPath, "status")).toContain("workers 2/2 up");
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(120_000));

  test("a worker over the limit from its start is reported once, with its size and the limit, and not replaced for ever", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "grow"), ""); // index 0 allocates 120 MB as it starts
    const m = startMaster(["--max-memory", "60M", "-n", "2", "-m", "manual", "-b", "127.0.0.1:0", "--", "python3", WORKER, "--grow", "120"], { dir });
    const s0 = await waitFor("2 workers up", async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.filter((w) => w.acked).length === 2 ? s : null;
    }, 20_000);
    const big = s0.workers.find((w) => w.index === 0)!;
    await m.waitForOutput(new RegExp(`WARN: Worker ${big.pid} \\(index 0, version 0\\) is over the limit [\\d.]+s after its start: RSS [\\d.]+M above --max-memory 60\\.0M for 3 checks in a row\\. That looks like the program's normal size, so version 0's workers are not replaced for memory`), 20_000);
    await quietFor(4000);
    const out = m.output();
    expect(out.match(/is over the limit/g)).toHaveLength(1);
    expect(out).not.toContain("Replacing worker");
    expect((await stateJson(m.sockPath)).workers.map((w) => w.pid)).toContain(big.pid);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(60_000));

  test("bad sizes are usage errors", async () => {
    for (const bad of ["lots", "0", "12X", "100"]) {
      const r = await runBinary(["--max-memory", bad, "--", "true"]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`--max-memory wants a size of at least 1M`);
    }
  });
});

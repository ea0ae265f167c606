// --metrics: /metrics read by a real Prometheus text parser (the Python
// client's, Debian python3-prometheus-client), /healthz flipping during a
// failing upgrade, the port and the counters kept across the master's
// re-execs, and scrapers that misbehave on purpose.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { freeTcpPort } from "../free-port";
import { ask, command, FIXTURES, httpGet, onCleanup, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor, within } from "../harness";

const CRASH_OR_SERVE = join(FIXTURES, "crash-or-serve.sh");

/** A python3 that has prometheus_client (Debian's package installs it for /usr/bin/python3). */
function parserPython(): string {
  for (const py of ["/usr/bin/python3", "python3"]) {
    const r = Bun.spawnSync([py, "-c", "import prometheus_client.parser"], { stderr: "ignore" });
    if (r.exitCode === 0) return py;
  }
  throw new Error("no python3 with prometheus_client: apt-get install python3-prometheus-client (npm test installs it (scripts/system-tools.ts))");
}

const PARSE = `
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        out.setdefault(s.name, []).append({"labels": s.labels, "value": s.value, "type": f.type})
print(json.dumps(out))
`;

type Parsed = Record<string, Array<{ labels: Record<string, string>; value: number; type: string }>>;

function parse(py: string, text: string): Parsed {
  const r = Bun.spawnSync([py, "-c", PARSE], { stdin: Buffer.from(text), stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`the Prometheus parser refused the text: ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString());
}

function value(p: Parsed, name: string, labels: Record<string, string> = {}): number {
  const hit = (p[name] ?? []).find((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  if (!hit) throw new Error(`no sample ${name}${JSON.stringify(labels)}; have ${Object.keys(p).join(", ")}`);
  return hit.value;
}

describe("--metrics", () => {
  test("Prometheus text and /healthz, through a failing and a good upgrade; same port and continued counters after each re-exec", async () => {
    const py = parserPython();
    const dir = tempDir();
    writeFileSync(join(dir, "mode"), "serve");
    const m = startMaster(["--metrics", "127.0.0.1:0", "-n", "2", "-m", "manual", "-s", "0.3", "-b", "127.0.0.1:0", "--", CRASH_OR_SERVE], { dir });
    const port = Number((await m.waitForOutput(/Serving metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics and health on http:\/\/127\.0\.0\.1:\d+\/healthz/))[1]);
    await waitFor("healthz 200", async () => (await httpGet(port, { path: "/healthz" })).status === 200, 20_000);
    expect((await httpGet(port, { path: "/healthz" })).body).toBe("ok: 2 of 2 workers up\n");

    const first = await httpGet(port, { path: "/metrics" });
    expect(first.status).toBe(200);
    expect(first.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
    let p = parse(py, first.body);
    expect(p.einhorn_workers!.find((s) => s.labels.state === "up" && s.labels.generation === "0")!.value).toBe(2);
    expect(p.einhorn_workers![0]!.type).toBe("gauge");
    expect(value(p, "einhorn_workers_wanted")).toBe(2);
    expect(value(p, "einhorn_worker_spawns_total", { cause: "initial" })).toBe(2);
    expect(p.einhorn_worker_spawns_total![0]!.type).toBe("counter");
    expect(value(p, "einhorn_worker_ack_latency_seconds_count")).toBe(2);
    expect(value(p, "einhorn_worker_ack_latency_seconds_bucket", { le: "+Inf" })).toBe(2);
    expect(p.einhorn_worker_ack_latency_seconds_bucket![0]!.type).toBe("histogram");
    expect(value(p, "einhorn_worker_ack_latency_seconds_sum")).toBeGreaterThan(0);
    expect(value(p, "process_resident_memory_bytes")).toBeGreaterThan(5e6);
    expect(value(p, "process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(p.einhorn_build_info).toHaveLength(1);
    expect(Object.keys(p.einhorn_build_info![0]!.labels)).toEqual(["version"]);
    expect(p.einhorn_worker_resident_memory_bytes).toHaveLength(2);
    expect(value(p, "einhorn_upgrade_in_progress")).toBe(0);
    // A worker that dies on its own counts as a restart.
    const victim = (await stateJson(m.sockPath)).workers[0]!;
    process.kill(victim.pid, "SIGKILL");
    // Two ACKed workers, the victim not among them (right after the kill, the master may not have reaped it yet).
    await waitFor("the replacement up", async () => {
      const ws = (await stateJson(m.sockPath)).workers;
      return ws.filter((w) => w.acked).length === 2 && !ws.some((w) => w.pid === victim.pid);
    }, 20_000);

    // A failing upgrade: new workers crash at once. /healthz says so while it fails.
    writeFileSync(join(dir, "mode"), "crash");
    let answers = "";
    const upgrading = command(m.sockPath, "upgrade", [], 60_000).then(
      (a) => { answers = a.map((x) => String(x.message)).join("\n"); },
      (e: Error) => { answers = `no answer: ${e.message}`; },
    );
    const seen: string[] = [];
    await waitFor("the upgrade to fail", async () => {
      const h = await httpGet(port, { path: "/healthz" });
      seen.push(`${h.status} ${h.body.trim()}`);
      return /Upgrade failed/.test(answers);
    }, 60_000, 20);
    await upgrading;
    expect(seen.some((s) => /^503 upgrade to version 1 failing: \d new worker\(s\) in a row died before ACKing$/.test(s))).toBe(true);
    await waitFor("healthz back to 200 with the old workers serving", async () => (await httpGet(port, { path: "/healthz" })).status === 200, 20_000);
    p = parse(py, (await httpGet(port, { path: "/metrics" })).body);
    expect(value(p, "einhorn_upgrades_total", { result: "failure" })).toBe(1);
    expect(value(p, "einhorn_upgrades_started_total")).toBe(1);
    expect(value(p, "einhorn_master_reexecs_total")).toBe(1);
    expect(value(p, "einhorn_worker_exits_total", { cause: "died_before_ack" })).toBeGreaterThanOrEqual(3);
    expect(value(p, "einhorn_worker_exits_total", { cause: "died" })).toBe(1);
    expect(value(p, "einhorn_worker_restarts_total")).toBeGreaterThanOrEqual(4);
    // Counters from before the re-exec continue.
    expect(value(p, "einhorn_worker_spawns_total", { cause: "initial" })).toBe(2);
    expect(value(p, "einhorn_worker_spawns_total", { cause: "respawn" })).toBe(1);

    // A good upgrade, on the same port.
    writeFileSync(join(dir, "mode"), "serve");
    const answersOk = await (await import("../harness")).command(m.sockPath, "upgrade", [], 60_000);
    expect(String(answersOk[answersOk.length - 1]!.message)).toBe("Upgrade done");
    p = parse(py, (await httpGet(port, { path: "/metrics" })).body);
    expect(value(p, "einhorn_upgrades_total", { result: "success" })).toBe(1);
    expect(value(p, "einhorn_upgrades_total", { result: "failure" })).toBe(1);
    expect(value(p, "einhorn_master_reexecs_total")).toBe(2);
    expect(value(p, "einhorn_upgrade_duration_seconds_count")).toBe(1);
    expect(value(p, "einhorn_last_upgrade_duration_seconds")).toBeGreaterThan(0);
    expect(value(p, "einhorn_worker_spawns_total", { cause: "upgrade" })).toBeGreaterThanOrEqual(5);
    const version = String((await stateJson(m.sockPath)).master.version);
    expect(value(p, "einhorn_workers", { state: "up", generation: version })).toBe(2);
    expect(value(p, "einhorn_generation")).toBe(Number(version));
    expect((await httpGet(port, { path: "/healthz" })).status).toBe(200);
    expect((await httpGet(port, { path: "/nope" })).status).toBe(404);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(120_000));

  test("a slow or hostile scraper cannot stall the master or lock other scrapers out", async () => {
    const m = startMaster(["--metrics", "127.0.0.1:0", "-n", "1", "-m", "0", "--", "sleep", "1000"]);
    const port = Number((await m.waitForOutput(/Serving metrics on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
    await waitFor("healthz 200", async () => (await httpGet(port, { path: "/healthz" })).status === 200, 20_000);
    // Raw connections, not the harness's httpGet: these scrapers stall, dribble and never finish a request.
    const socks: net.Socket[] = [];
    const open = (first?: string) => new Promise<net.Socket>((res) => {
      const s = net.createConnection({ host: "127.0.0.1", port }, () => { if (first) s.write(first); res(s); });
      s.on("error", () => {});
      socks.push(s);
    });
    // 100 connections that never send a request, one that sends half a request head,
    // one that sends a head too large, and one that asks for /metrics and never reads.
    for (let i = 0; i < 100; i++) await open();
    const half = await open("GET /metr");
    let halfClosed = false;
    half.on("close", () => { halfClosed = true; });
    const big = await open(`GET /metrics HTTP/1.1\r\nX-Junk: ${"j".repeat(20_000)}`);
    let bigAnswer = "";
    big.on("data", (d) => { bigAnswer += d.toString(); });
    const lazy = await open("GET /metrics HTTP/1.1\r\n\r\n");
    lazy.pause();
    // Meanwhile every ordinary scrape and command is answered at once.
    for (let i = 0; i < 5; i++) {
      const t = Date.now();
      const r = await httpGet(port, { path: "/metrics" });
      expect(r.status).toBe(200);
      expect(r.body).toContain("einhorn_workers_wanted 1");
      expect(Date.now() - t).toBeLessThan(5_000);
    }
    expect(await ask(m.sockPath, "status")).toContain(`master ${m.pid}`);
    // A bare request line with no headers at all (printf ... | nc) is a request too.
    const bare = await open("GET /healthz HTTP/1.0\r\n\r\n");
    let bareAnswer = "";
    bare.on("data", (d) => { bareAnswer += d.toString(); });
    await waitFor("the bare request answered", () => bareAnswer.includes("ok: 1 of 1 workers up"), 10_000);
    expect(bareAnswer).toStartWith("HTTP/1.1 200 OK\r\n");
    await waitFor("the too-large head refused", () => bigAnswer.startsWith("HTTP/1.1 431 "), 10_000);
    // The half request is cut off after the head timeout (5 s).
    await waitFor("the half request closed", () => halfClosed, 15_000);
    for (const s of socks) s.destroy();
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(60_000));

  test("a request head over 8 KiB gets 431 however it arrives: whole in one write or in pieces", async () => {
    const m = startMaster(["--metrics", "127.0.0.1:0", "-n", "1", "-m", "0", "--", "sleep", "1000"]);
    const port = Number((await m.waitForOutput(/Serving metrics on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
    // By hand, not with httpGet: the request head is written in pieces, as a client may send it.
    const exchange = (pieces: string[]) => new Promise<string>((res) => {
      let got = "";
      const s = net.createConnection({ host: "127.0.0.1", port }, async () => {
        for (const p of pieces) { s.write(p); await Bun.sleep(20); }
      });
      s.on("data", (d) => { got += d.toString(); });
      s.on("close", () => res(got));
      s.on("error", () => res(got));
    });
    const head = (junk: number) => `GET /healthz HTTP/1.1\r\nX-Junk: ${"j".repeat(junk)}\r\n\r\n`;
    expect(await exchange([head(8000)])).toStartWith("HTTP/1.1 ");
    expect(await exchange([head(8000)])).not.toStartWith("HTTP/1.1 431");
    for (const size of [9_000, 20_000, 60_000]) {
      expect(await exchange([head(size)])).toStartWith("HTTP/1.1 431 ");
      const h = head(size);
      expect(await exchange([h.slice(0, 4000), h.slice(4000, 8500), h.slice(8500)])).toStartWith("HTTP/1.1 431 ");
    }
    expect(m.output()).not.toContain("--metrics-allow-remote");
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  });

  test("--metrics on a non-loopback address warns at start, unless --metrics-allow-remote says it is meant", async () => {
    const m = startMaster(["--metrics", "0.0.0.0:0", "-n", "1", "-m", "0", "--", "sleep", "1000"]);
    await m.waitForOutput(/WARN: --metrics 0\.0\.0\.0:0 is reachable from other hosts and \/metrics needs no credentials to read; bind 127\.0\.0\.1 or \[::1\], or pass --metrics-allow-remote if this is meant/);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
    const quiet = startMaster(["--metrics", "0.0.0.0:0", "--metrics-allow-remote", "-n", "1", "-m", "0", "--", "sleep", "1000"]);
    await quiet.waitForOutput(/Serving metrics on/);
    await waitFor("a worker", async () => (await stateJson(quiet.sockPath)).workers.length === 1);
    expect(quiet.output()).not.toContain("reachable from other hosts");
    expect(await stopMaster(quiet, "SIGTERM")).toBe(0);
  });

  test("bad --metrics values are usage errors", async () => {
    const { runBinary } = await import("../harness");
    for (const bad of ["9100", "unix:/tmp/x", "127.0.0.1:9100,r", "localhost:port"]) {
      const r = await runBinary(["--metrics", bad, "--", "true"]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`--metrics wants HOST:PORT (like 127.0.0.1:9100, [::1]:9100 or 0.0.0.0:0), got '${bad}'`);
    }
  });

  test("a real Prometheus (Debian's) scrapes a master through 3 upgrades, a crash and a rollback: its API has the exit and rollback series, and no pid label", async () => {
    const prometheus = Bun.which("prometheus");
    if (!prometheus) throw new Error("no prometheus: apt-get install prometheus (npm test installs it (scripts/system-tools.ts))");
    const dir = tempDir();
    writeFileSync(join(dir, "mode"), "serve");
    const port = freeTcpPort();
    const m = startMaster(["--metrics", `127.0.0.1:${port}`, "-n", "2", "-m", "manual", "-s", "0.3", "--upgrade-bake", "60", "--upgrade-max-deaths", "1", "--", CRASH_OR_SERVE], { dir });
    await m.waitForOutput(/Serving metrics on/);
    const web = freeTcpPort();
    writeFileSync(join(dir, "prometheus.yml"), `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: einhorn\n    static_configs:\n      - targets: ["127.0.0.1:${port}"]\n`);
    const prom = Bun.spawn([prometheus, `--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "tsdb")}`, `--web.listen-address=127.0.0.1:${web}`], { stdout: "ignore", stderr: "ignore" });
    onCleanup(async () => { prom.kill("SIGKILL"); await prom.exited; });
    type Sample = { metric: Record<string, string>; value: [number, string] };
    const query = async (q: string): Promise<Sample[]> => {
      const r = await (await fetch(`http://127.0.0.1:${web}/api/v1/query?query=${encodeURIComponent(q)}`)).json() as { status: string; data: { result: Sample[] } };
      if (r.status !== "success") throw new Error(`query ${q}: ${JSON.stringify(r)}`);
      return r.data.result;
    };
    const scalar = async (q: string) => { const r = await query(q); return r.length ? Number(r[0]!.value[1]) : null; };

    const live = (generation: number) => waitFor(`2 workers of generation ${generation} up`, async () => {
      const s = await stateJson(m.sockPath);
      const up = s.workers.filter((w) => w.version === generation && w.acked && !w.retiring);
      return up.length === 2 && s.master.bake?.version === generation ? up : null;
    }, 30_000);
    await waitFor("2 workers up", async () => (await stateJson(m.sockPath)).workers.filter((w) => w.acked).length === 2, 20_000);
    const upgrade = () => runBinary(["sh", "-d", m.sockPath, "--timeout", "120", "-e", "upgrade"], { dir, timeoutMs: 130_000 });
    // Upgrades 1 and 2: each bakes until the next one cuts its bake short.
    const u1 = upgrade();
    await live(1);
    const u2 = upgrade();
    const gen2 = await live(2);
    expect((await u1).stdout).toContain("its bake was cut short by a newer upgrade");
    // The crash: one unasked exit in generation 2's bake (the limit is more than 1).
    process.kill(gen2[0]!.pid, "SIGKILL");
    await waitFor("the crash replaced", async () => (await stateJson(m.sockPath)).workers.filter((w) => w.version === 2 && w.acked && !w.retiring).length === 2, 30_000);
    // Upgrade 3, then two of its workers killed in its bake: rolled back.
    const u3 = upgrade();
    const gen3 = await live(3);
    expect((await u2).code).toBe(0);
    process.kill(gen3[0]!.pid, "SIGKILL");
    process.kill(gen3[1]!.pid, "SIGKILL");
    const r3 = await u3;
    // A rollback fails the upgrade: said on stderr, exit status non-zero.
    expect(r3.stderr).toContain("rolled back");
    expect(r3.code).not.toBe(0);
    await waitFor("the rollback's generation up", async () => (await stateJson(m.sockPath)).workers.filter((w) => w.version === 4 && w.acked && !w.retiring).length === 2, 30_000);

    // Prometheus has it all once it scraped after the rollback's workers came up.
    await waitFor("Prometheus to scrape the rollback", async () => (await scalar("einhorn_rollbacks_total")) === 1 && (await scalar('einhorn_workers{state="up",generation="4"}')) === 2, 60_000, 500);
    expect(await scalar('sum(einhorn_worker_exits_total{cause="died",signal="SIGKILL",code="none"})')).toBe(3);
    expect(await scalar('einhorn_upgrades_total{result="rolled_back"}')).toBe(1);
    expect(await scalar('einhorn_upgrades_total{result="success"}')).toBe(2);
    // Generations 0 and 1 were retired well before (generation 2's may still be leaving at that scrape).
    expect(await scalar('einhorn_worker_retirements_total{reason="upgrade"}')).toBeGreaterThanOrEqual(4);
    expect(await scalar("up")).toBe(1);
    // No series, ever, with a pid label; per-worker series by index and generation only.
    expect(await query('count by (__name__) ({__name__=~"einhorn_.+", pid!=""})')).toEqual([]);
    const memory = await query("einhorn_worker_resident_memory_bytes");
    for (const s of memory) expect(Object.keys(s.metric).sort()).toEqual(["__name__", "generation", "index", "instance", "job"]);
    expect(await scalar("process_open_fds")).toBeGreaterThan(3);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(180_000));

  test("across 20 upgrades and a crash the number of series stays flat, and promtool check metrics finds nothing", async () => {
    const promtool = Bun.which("promtool");
    if (!promtool) throw new Error("no promtool: apt-get install prometheus (npm test installs it (scripts/system-tools.ts))");
    const m = startMaster(["--metrics", "127.0.0.1:0", "-n", "2", "-m", "0", "--max-unacked", "2", "--", "sleep", "1000"]);
    const port = Number((await m.waitForOutput(/Serving metrics on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
    const settled = (generation: number) => waitFor(`generation ${generation} alone and up`, async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.length === 2 && s.workers.every((w) => w.version === generation && w.acked) ? s : null;
    }, 30_000);
    const series = async () => {
      const text = (await httpGet(port, { path: "/metrics" })).body;
      return { text, count: text.split("\n").filter((l) => l && !l.startsWith("#")).length };
    };
    const s0 = await settled(0);
    // One crash first, so that every kind of exit the run will see has its series.
    process.kill(s0.workers[0]!.pid, "SIGKILL");
    await waitFor("the crash replaced", async () => (await stateJson(m.sockPath)).workers.filter((w) => w.acked && w.pid !== s0.workers[0]!.pid).length === 2, 20_000);
    const counts: number[] = [];
    for (let g = 1; g <= 20; g++) {
      const r = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { timeoutMs: 30_000 });
      expect(r.stdout).toContain("Upgrade done");
      await settled(g);
      counts.push((await series()).count);
    }
    expect(new Set(counts)).toEqual(new Set([counts[0]!]));
    const { text } = await series();
    expect(text).not.toMatch(/pid="/);
    const check = Bun.spawnSync([promtool, "check", "metrics"], { stdin: Buffer.from(text), stdout: "pipe", stderr: "pipe" });
    expect(`${check.stdout}${check.stderr}`.trim()).toBe("");
    expect(check.exitCode).toBe(0);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(180_000));
});

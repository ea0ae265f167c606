// The pure parts of --metrics: the counters derived from core steps, the
// text rendering, /healthz's verdict and the HTTP routing.
import { describe, expect, test } from "bun:test";
import { step, type Event } from "../../src/core/step";
import { DEFAULT_SETTINGS, initialState, type State } from "../../src/core/state";
import { health, Metrics, renderMetrics } from "../../src/master/metrics";
import { answer, isLoopbackAddress, PROMETHEUS_TEXT } from "../../src/master/metrics-server";

function drive(events: Array<[Event, number]>, number = 2): { m: Metrics; s: State } {
  const m = new Metrics();
  let s = initialState({ ...DEFAULT_SETTINGS, number, ackMode: { kind: "manual" } }, 0);
  let pid = 100;
  const queue: Array<[Event, number]> = [...events];
  while (queue.length) {
    const [e, at] = queue.shift()!;
    const r = step(s, e, at);
    m.observe(e, s, r.state, r.effects, at);
    s = r.state;
    for (const fx of r.effects) if (fx.type === "spawn") queue.unshift([{ type: "spawned", spawnId: fx.spawnId, pid: ++pid }, at]);
  }
  return { m, s };
}

const live = (s: State, readings = false) => ({
  state: s, einhornVersion: "0.1.0", master: { cpuSeconds: 1.5, rssBytes: 4e7, startTimeSeconds: 1e9 }, reexecs: 0,
  workerRss: new Map<number, number>(readings ? s.workers.map((w) => [w.pid, 3e7]) : []),
  workerCpu: new Map<number, number>(readings ? s.workers.map((w) => [w.pid, 0.25]) : []),
  fds: { open: 12, max: 1024 }, virtualMemoryBytes: 1e9, output: null, maxMemoryBytes: null,
});

describe("metrics", () => {
  test("spawns, exits by cause, restarts and ACK latency come from the core's steps", () => {
    const { m, s } = drive([
      [{ type: "start" }, 0],
      [{ type: "ack", pid: 101 }, 250],
      [{ type: "ack", pid: 102 }, 3000],
      [{ type: "exited", pid: 101, code: 1, signal: null }, 4000],
      [{ type: "tick" }, 6000],
    ]);
    expect(m.spawns).toEqual({ initial: 2, respawn: 1, upgrade: 0, max_memory: 0 });
    expect(m.exits).toEqual({ "died\0none\x001": 1 });
    expect(m.restarts).toBe(1);
    expect(m.ack.count).toBe(2);
    expect(m.ack.sum).toBeCloseTo(3.25);
    // 0.25 s falls in the 0.25 bucket (le is inclusive); 3 s in the 5 bucket.
    expect(m.ack.counts[m.ack.buckets.indexOf(0.25)]).toBe(1);
    expect(m.ack.counts[m.ack.buckets.indexOf(2.5)]).toBe(1);
    expect(m.ack.counts[m.ack.buckets.indexOf(5)]).toBe(2);
    const text = renderMetrics(m, live(s));
    expect(text).toContain('einhorn_worker_exits_total{cause="died",signal="none",code="1"} 1\n');
    expect(text).toContain('einhorn_worker_ack_latency_seconds_bucket{le="+Inf"} 2\n');
    expect(text).toContain("# TYPE einhorn_worker_ack_latency_seconds histogram\n");
    expect(text).toContain("process_resident_memory_bytes 40000000\n");
    // Every sample line belongs to a family announced by # TYPE before it.
    let family = "";
    for (const line of text.trimEnd().split("\n")) {
      if (line.startsWith("# TYPE ")) family = line.split(" ")[2]!;
      else if (!line.startsWith("#")) expect(line.startsWith(family)).toBe(true);
    }
  });

  test("counters survive a round trip through the handoff", () => {
    const { m } = drive([[{ type: "start" }, 0], [{ type: "ack", pid: 101 }, 100]]);
    const next = new Metrics();
    next.restore(JSON.parse(JSON.stringify(m.toJSON())));
    expect(next.toJSON()).toEqual(m.toJSON());
    const newer = new Metrics();
    newer.restore({ ...m.toJSON(), schema: 99 });
    expect(newer.spawns.initial).toBe(0);
  });

  test("/healthz: up, short, stopping, a failing upgrade", () => {
    const base = drive([[{ type: "start" }, 0], [{ type: "ack", pid: 101 }, 100], [{ type: "ack", pid: 102 }, 100]]).s;
    expect(health(base)).toEqual({ ok: true, message: "ok: 2 of 2 workers up" });
    const short = drive([[{ type: "start" }, 0], [{ type: "ack", pid: 101 }, 100]]).s;
    expect(health(short)).toEqual({ ok: false, message: "1 of 2 workers up" });
    expect(health({ ...base, stopping: { signal: "SIGUSR2", since: 0 } })).toEqual({ ok: false, message: "stopping (SIGUSR2)" });
    const failing = { ...base, version: 1, upgrade: { mode: "smooth" as const, startedAt: 0, fromVersion: 0, deathsBeforeAck: 2 } };
    expect(health(failing)).toEqual({ ok: false, message: "upgrade to version 1 failing: 2 new worker(s) in a row died before ACKing" });
    expect(health({ ...failing, upgrade: { ...failing.upgrade, deathsBeforeAck: 0 } }).ok).toBe(true);
  });

  test("HTTP routing", () => {
    const routes = { metrics: () => "m 1\n", health: () => ({ ok: false, message: "1 of 2 workers up" }) };
    expect(answer("GET /metrics HTTP/1.1\r\nHost: x", routes)).toEqual({ status: 200, body: "m 1\n", contentType: PROMETHEUS_TEXT, head: false });
    expect(answer("HEAD /metrics?x=1 HTTP/1.0", routes)).toMatchObject({ status: 200, head: true });
    expect(answer("GET /healthz HTTP/1.1", routes)).toMatchObject({ status: 503, body: "1 of 2 workers up\n" });
    expect(answer("POST /metrics HTTP/1.1", routes)).toMatchObject({ status: 405 });
    expect(answer("GET /nope HTTP/1.1", routes)).toMatchObject({ status: 404 });
    expect(answer("garbage", routes)).toMatchObject({ status: 400 });
  });
});

/** Debian's promtool (the prometheus package; npm test installs it (scripts/system-tools.ts)). */
function promtool(): string {
  const p = Bun.which("promtool");
  if (!p) throw new Error("no promtool: apt-get install prometheus (npm test installs it (scripts/system-tools.ts))");
  return p;
}

/**
 * Step the core like the shell does, with a world where every spawn starts,
 * every worker ACKs at once and every worker asked to leave exits 0.
 */
function world(m: Metrics, s: State, first: Event, at: number): State {
  let pid = Math.max(100, ...s.workers.map((w) => w.pid));
  const queue: Event[] = [first];
  while (queue.length) {
    const e = queue.shift()!;
    const r = step(s, e, at);
    m.observe(e, s, r.state, r.effects, at);
    s = r.state;
    for (const fx of r.effects) {
      if (fx.type === "spawn") { const p = ++pid; queue.push({ type: "spawned", spawnId: fx.spawnId, pid: p }, { type: "ack", pid: p }); }
      if (fx.type === "kill" && fx.signal === "SIGUSR2") queue.push({ type: "exited", pid: fx.pid, code: 0, signal: null });
    }
  }
  return s;
}

describe("metrics by Prometheus' conventions", () => {
  test("promtool check metrics is clean; no pid label; one meaning per label; series stay flat across 20 upgrades and crashes", () => {
    const m = new Metrics();
    let s = initialState({ ...DEFAULT_SETTINGS, number: 3, ackMode: { kind: "manual" }, maxUnacked: 3 }, 0);
    let t = 0;
    s = world(m, s, { type: "start" }, t);
    const seriesAfter: number[] = [];
    for (let u = 0; u < 20; u++) {
      s = world(m, s, { type: "upgrade", mode: "fleet" }, t += 1000);
      s = world(m, s, { type: "tick" }, t += 1000);
      // A crash after every upgrade: the first with SIGKILL, the rest alternating a status and SIGSEGV.
      const victim = s.workers[u % s.workers.length]!;
      s = world(m, s, u % 2 ? { type: "exited", pid: victim.pid, code: 3, signal: null } : { type: "exited", pid: victim.pid, code: null, signal: u ? "SIGSEGV" : "SIGKILL" }, t += 100);
      s = world(m, s, { type: "tick" }, t += 60_000);
      const text = renderMetrics(m, live(s, true));
      seriesAfter.push(text.split("\n").filter((l) => l && !l.startsWith("#")).length);
      if (u === 19) {
        const r = Bun.spawnSync([promtool(), "check", "metrics"], { stdin: Buffer.from(text), stdout: "pipe", stderr: "pipe" });
        expect(`${r.stdout}${r.stderr}`.trim()).toBe("");
        expect(r.exitCode).toBe(0);
        expect(text).not.toMatch(/pid="/);
        expect(text).toContain('einhorn_build_info{version="0.1.0"} 1\n');
        expect(text).toContain(`einhorn_workers{state="up",generation="20"} 3\n`);
        expect(text).toContain("einhorn_generation 20\n");
        expect(text).toContain('einhorn_worker_exits_total{cause="died",signal="SIGKILL",code="none"} 1\n');
        expect(text).toContain('einhorn_worker_exits_total{cause="died",signal="SIGSEGV",code="none"} 9\n');
        expect(text).toContain('einhorn_worker_exits_total{cause="died",signal="none",code="3"} 10\n');
        expect(text).toContain('einhorn_worker_exits_total{cause="retired",signal="none",code="0"} 60\n');
        expect(text).toContain('einhorn_worker_retirements_total{reason="upgrade"} 60\n');
        expect(text).toContain('einhorn_upgrades_total{result="success"} 20\n');
        expect(text).toMatch(/einhorn_worker_cpu_seconds_total\{index="\d",generation="20"\} 0\.25\n/);
        for (const name of ["process_cpu_seconds_total", "process_open_fds", "process_max_fds", "process_virtual_memory_bytes", "process_resident_memory_bytes", "process_start_time_seconds"]) {
          expect(text).toContain(`\n${name} `);
        }
        // `version` labels only the release; workers are labelled by `generation`.
        expect(text.split("\n").filter((l) => l.includes('version="'))).toEqual(['einhorn_build_info{version="0.1.0"} 1']);
      }
    }
    // From the third upgrade on (every exit kind seen), the number of series never grows.
    expect(new Set(seriesAfter.slice(2))).toEqual(new Set([seriesAfter[2]!]));
  });

  test("counters from a schema-1 handoff (exits by cause only) continue as signal and code \"unknown\"", () => {
    const m = new Metrics();
    // An older writer's document: the type no longer describes it.
    m.restore({ schema: 1, exits: { retired: 4, died: 2, died_before_ack: 0 } } as unknown as Parameters<Metrics["restore"]>[0]);
    expect(m.exits).toEqual({ "retired\0unknown\0unknown": 4, "died\0unknown\0unknown": 2, "died_before_ack\0unknown\0unknown": 0 });
  });
});

describe("isLoopbackAddress: the --metrics warning reads the address the listener is bound to", () => {
  test.each([
    [{ family: "inet", host: "127.0.0.1", port: 9100 }, true],
    [{ family: "inet", host: "127.3.2.1", port: 9100 }, true],
    [{ family: "inet6", host: "::1", port: 9100 }, true],
    [{ family: "inet6", host: "::ffff:7f00:1", port: 9100 }, true],
    [{ family: "inet6", host: "::ffff:127.0.0.1", port: 9100 }, true],
    [{ family: "unix", path: "/run/einhorn/metrics.sock" }, true],
    [{ family: "inet", host: "0.0.0.0", port: 9100 }, false],
    [{ family: "inet", host: "10.1.2.3", port: 9100 }, false],
    [{ family: "inet6", host: "::", port: 9100 }, false],
    [{ family: "inet6", host: "::ffff:a01:203", port: 9100 }, false],
  ] as const)("%j -> %p", (a, loopback) => {
    expect(isLoopbackAddress(a)).toBe(loopback);
  });
});

// The pure parts of --metrics: the counters derived from core steps, the
// text rendering, /healthz's verdict and the HTTP routing.
import { describe, expect, test } from "bun:test";
import { step, type Event } from "../../src/core/step";
import { DEFAULT_SETTINGS, initialState, type State } from "../../src/core/state";
import { health, Metrics, renderMetrics } from "../../src/master/metrics";
import { answer, PROMETHEUS_TEXT } from "../../src/master/metrics-server";

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

const live = (s: State) => ({ state: s, einhornVersion: "0.1.0", masterPid: 1, master: { cpuSeconds: 1.5, rssBytes: 4e7, startTimeSeconds: 1e9 }, reexecs: 0, workerRss: new Map<number, number>(), output: null, maxMemoryBytes: null });

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
    expect(m.exits).toEqual({ retired: 0, died_before_ack: 0, died: 1 });
    expect(m.restarts).toBe(1);
    expect(m.ack.count).toBe(2);
    expect(m.ack.sum).toBeCloseTo(3.25);
    // 0.25 s falls in the 0.25 bucket (le is inclusive); 3 s in the 5 bucket.
    expect(m.ack.counts[m.ack.buckets.indexOf(0.25)]).toBe(1);
    expect(m.ack.counts[m.ack.buckets.indexOf(2.5)]).toBe(1);
    expect(m.ack.counts[m.ack.buckets.indexOf(5)]).toBe(2);
    const text = renderMetrics(m, live(s));
    expect(text).toContain('einhorn_worker_exits_total{cause="died"} 1\n');
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

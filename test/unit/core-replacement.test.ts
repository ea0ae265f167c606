// --max-memory's graceful replacement in the decision core: successor first,
// then the retire signal, one at a time.
import { describe, expect, test } from "bun:test";
import { type Effect, type Event, step } from "../../src/core/step";
import { DEFAULT_SETTINGS, initialState, type State } from "../../src/core/state";

class Drive {
  s: State;
  now = 0;
  pid = 100;
  constructor(number: number) {
    this.s = initialState({ ...DEFAULT_SETTINGS, number, ackMode: { kind: "manual" }, seconds: 0.1 }, 0);
  }
  send(e: Event, dt = 10): Effect[] {
    this.now += dt;
    const all: Effect[] = [];
    const queue = [e];
    while (queue.length) {
      const r = step(this.s, queue.shift()!, this.now);
      this.s = r.state;
      expect(JSON.parse(JSON.stringify(r.state))).toEqual(r.state);
      for (const fx of r.effects) if (fx.type === "spawn") queue.push({ type: "spawned", spawnId: fx.spawnId, pid: ++this.pid });
      all.push(...r.effects);
    }
    return all;
  }
  up(): number[] {
    this.send({ type: "start" });
    for (const w of this.s.workers) this.send({ type: "ack", pid: w.pid });
    return this.s.workers.map((w) => w.pid);
  }
}

const kills = (fx: Effect[]) => fx.filter((f) => f.type === "kill").map((f) => (f as { pid: number; signal: string }).pid);
const spawns = (fx: Effect[]) => fx.filter((f) => f.type === "spawn").length;

describe("graceful replacement", () => {
  test("the successor starts, ACKs, and only then is the old worker retired; the pool ends as wanted", () => {
    const d = new Drive(2);
    const [a, b] = d.up() as [number, number];
    const fx = d.send({ type: "replace", pid: a!, reason: "RSS 90M above --max-memory 50M" }, 20_000);
    expect(spawns(fx)).toBe(1);
    expect(kills(fx)).toEqual([]);
    expect(d.s.replacement).toMatchObject({ pid: a, reason: "RSS 90M above --max-memory 50M" });
    const successor = d.s.workers.find((w) => w.pid !== a && w.pid !== b)!;
    // Time passes, nothing else happens: no second spawn, no kill (the successor is not culled as an extra).
    const idle = d.send({ type: "tick" }, 5000);
    expect(spawns(idle)).toBe(0);
    expect(kills(idle)).toEqual([]);
    const acked = d.send({ type: "ack", pid: successor.pid });
    expect(kills(acked)).toEqual([a]);
    expect(acked).toContainEqual({ type: "kill", pid: a!, signal: "SIGUSR2" });
    const gone = d.send({ type: "exited", pid: a!, code: 0, signal: null });
    expect(spawns(gone)).toBe(0);
    expect(d.s.replacement).toBeNull();
    expect(d.s.workers.map((w) => w.pid).sort()).toEqual([b, successor.pid].sort());
    expect(gone.some((f) => f.type === "log" && /is replaced/.test(f.message))).toBe(true);
  });

  test("one at a time; refused during an upgrade, for unACKed or unknown workers", () => {
    const d = new Drive(2);
    const [a, b] = d.up() as [number, number];
    d.send({ type: "replace", pid: a!, reason: "r1" }, 20_000);
    const second = d.send({ type: "replace", pid: b!, reason: "r2" });
    expect(spawns(second)).toBe(0);
    expect(d.s.replacement!.pid).toBe(a);
    expect(second.some((f) => f.type === "log" && /one at a time/.test(f.message))).toBe(true);
    d.send({ type: "replace", pid: 99999, reason: "r3" });
    expect(d.s.replacement!.pid).toBe(a);

    const e = new Drive(1);
    const [x] = e.up() as [number];
    e.send({ type: "upgrade", mode: "smooth" }, 1000);
    e.send({ type: "replace", pid: x!, reason: "r" });
    expect(e.s.replacement).toBeNull();
  });

  test("the old worker dying first ends the replacement; its successor fills the hole", () => {
    const d = new Drive(1);
    const [a] = d.up() as [number];
    d.send({ type: "replace", pid: a!, reason: "r" }, 20_000);
    const succ = d.s.workers.find((w) => w.pid !== a)!;
    const fx = d.send({ type: "exited", pid: a!, code: null, signal: "SIGKILL" });
    expect(d.s.replacement).toBeNull();
    expect(spawns(fx)).toBe(0);
    d.send({ type: "ack", pid: succ.pid });
    expect(d.s.workers.map((w) => w.pid)).toEqual([succ.pid]);
  });

  test("an upgrade supersedes a replacement", () => {
    const d = new Drive(1);
    const [a] = d.up() as [number];
    d.send({ type: "replace", pid: a!, reason: "r" }, 20_000);
    d.send({ type: "upgrade", mode: "smooth" });
    expect(d.s.replacement).toBeNull();
  });
});

describe("--max-memory backs off and gives up on a program too big from its start", () => {
  /** Replace the first current worker whenever the core lets it, `every` ms apart, for `forMs`; the successor ACKs at once. */
  function loop(d: Drive, every: number, forMs: number): number[] {
    const started: number[] = [];
    for (let t = 0; t < forMs; t += every) {
      const w = d.s.workers.find((x) => x.ackedAt !== null && x.signals.length === 0)!;
      const fx = d.send({ type: "replace", pid: w.pid, reason: "RSS 90M above --max-memory 50M for 3 checks in a row" }, every);
      if (d.s.replacement?.pid === w.pid && fx.some((f) => f.type === "spawn")) started.push(d.now);
      for (const n of d.s.workers.filter((x) => x.ackedAt === null)) d.send({ type: "ack", pid: n.pid }, 0);
      for (const k of d.s.workers.filter((x) => x.signals.length)) d.send({ type: "exited", pid: k.pid, code: 0, signal: null }, 0);
    }
    return started;
  }

  test("replacements in a row are paced like a crash loop: seconds * 1.5^n apart, up to 30 s", () => {
    const d = new Drive(2);
    d.s.settings.seconds = 1;
    d.up();
    d.send({ type: "tick" }, 20_000); // past the young-worker window
    // Workers that pass the limit 12 s after their start (past the young window), the guard asking at once each time.
    const starts = loop(d, 12_000, 300_000);
    const gaps = starts.map((t, i) => (i ? t - starts[i - 1]! : 0)).slice(1);
    // Without the backoff: one every 12 s, 25 in 5 minutes.
    expect(starts.length).toBeLessThan(20);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]!).toBeGreaterThanOrEqual(gaps[i - 1]!);
    expect(gaps[0]).toBe(12_000);
    // Capped like the crash loop's: 30 s, met at the guard's next request.
    expect(Math.max(...gaps)).toBe(36_000);
    expect(d.s.replaceBackoff!.streak).toBeGreaterThan(8);
    // A quiet spell (over 60 s) starts a new streak: the next replacement is at once.
    d.send({ type: "tick" }, 61_000);
    const w = d.s.workers.find((x) => x.signals.length === 0)!;
    d.send({ type: "replace", pid: w.pid, reason: "r" }, 1);
    expect(d.s.replacement?.pid).toBe(w.pid);
    expect(d.s.replaceBackoff!.streak).toBe(1);
  });

  test("a worker over the limit within its first 10 s is reported once, with its size and the limit, and its generation is not replaced for memory", () => {
    const d = new Drive(2);
    const [a, b] = d.up() as [number, number];
    const reason = "RSS 612M above --max-memory 512M for 3 checks in a row";
    const fx = d.send({ type: "replace", pid: a, reason }, 4000);
    expect(d.s.replacement).toBeNull();
    expect(spawns(fx)).toBe(0);
    const warns = fx.filter((f) => f.type === "log" && f.level === "warn").map((f) => (f as { message: string }).message);
    expect(warns).toEqual([`Worker ${a} (index 0, version 0) is over the limit 4.0s after its start: ${reason}. That looks like the program's normal size, so version 0's workers are not replaced for memory (a successor would be as big); raise --max-memory or make the program smaller, then upgrade`]);
    // Later requests, for it or its siblings, even when old: refused quietly.
    for (const p of [a, b, a]) {
      const again = d.send({ type: "replace", pid: p, reason }, 30_000);
      expect(d.s.replacement).toBeNull();
      expect(again.filter((f) => f.type === "log" && f.level !== "debug")).toEqual([]);
    }
    // It crosses the re-exec with the generation; an upgrade's new generation is judged afresh.
    expect(JSON.parse(JSON.stringify(d.s)).generations["0"].overLimitAtStart).toMatchObject({ pid: a, reason });
    d.send({ type: "upgrade", mode: "fleet" }, 10);
    expect(d.s.generations["1"]!.overLimitAtStart).toBeUndefined();
  });

  test("the young window is the event's youngSeconds when given (EINHORN_TIMEOUTS's max-memory-young): 4 s old is past a 3 s window", () => {
    const young = new Drive(2);
    const [a] = young.up() as [number, number];
    young.send({ type: "replace", pid: a, reason: "r", youngSeconds: 5 }, 4000);
    expect(young.s.replacement).toBeNull();
    expect(young.s.generations["0"]!.overLimitAtStart).toMatchObject({ pid: a });
    const old = new Drive(2);
    const [b] = old.up() as [number, number];
    old.send({ type: "replace", pid: b, reason: "r", youngSeconds: 3 }, 4000);
    expect(old.s.replacement).toEqual({ pid: b, reason: "r" });
  });
});

describe("MemoryGuard", () => {
  test("asks for one replacement after 3 readings in a row above the limit, the largest first; never during a replacement", async () => {
    const { MemoryGuard } = await import("../../src/master/memory-guard");
    const d = new Drive(3);
    const [a, b, c] = d.up() as [number, number, number];
    const g = new MemoryGuard(100);
    const rss: Record<number, number> = { [a]: 150, [b]: 90, [c]: 200 };
    expect(g.check(d.s, (p) => rss[p]!)).toBeNull();
    rss[c] = 50; // a dip resets c's count
    expect(g.check(d.s, (p) => rss[p]!)).toBeNull();
    rss[c] = 300;
    const r = g.check(d.s, (p) => rss[p]!);
    expect(r).toEqual({ pid: a, reason: "RSS 150B above --max-memory 100B for 3 checks in a row" });
    d.send({ type: "replace", pid: a, reason: r!.reason }, 20_000);
    for (let i = 0; i < 5; i++) expect(g.check(d.s, (p) => rss[p]!)).toBeNull();
  });
});

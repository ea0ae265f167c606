// Table-driven tests for the pure decision core: step(state, event, now),
// driven by the shared core simulator (test/core-sim.ts).
import { describe, expect, test } from "bun:test";
import { step, MAX_WORKERS, type Effect, type Event } from "../../src/core/step";
import type { SignalName } from "../../src/signal-names";
import { DEFAULT_SETTINGS, STATE_SCHEMA, upgradeState, type State, type Worker } from "../../src/core/state";
import { exits, finished, kills, logs, MANUAL, nonLog, range, ready, Sim, spawns, timer } from "../core-sim";

// ---------------------------------------------------------------------------------------------

describe("first start", () => {
  for (const n of [1, 2, 5, 16]) {
    test(`number=${n}, maxUnacked=1: the start step spawns all ${n} at once with indexes 0..${n - 1}`, () => {
      const sim = new Sim({ number: n, maxUnacked: 1 });
      const first = step(sim.state, { type: "start" }, 0);
      expect(spawns(first.effects).map((s) => s.index)).toEqual(range(n));
      expect(spawns(first.effects).every((s) => s.version === 0)).toBe(true);
      expect(new Set(spawns(first.effects).map((s) => s.spawnId)).size).toBe(n);
      expect(first.state.pending.map((p) => p.index)).toEqual(range(n));
      expect(logs(first.effects, "info")).toContain(`Launching ${n} new worker${n === 1 ? "" : "s"}`);

      const fx = sim.send({ type: "start" }, 0);
      expect(spawns(fx)).toHaveLength(n);
      expect(sim.state.pending).toEqual([]);
      expect(sim.state.workers.map((w) => w.index).sort((a, b) => a - b)).toEqual(range(n));
      expect(new Set(sim.pids()).size).toBe(n);
      expect(sim.state.workers.every((w) => w.spawnedAt === 0 && w.version === 0 && w.ackedAt === null)).toBe(true);
      expect(sim.state.started).toBe(true);
      expect(sim.state.lastSpawnAt).toBe(0);
    });
  }

  test("while spawns are in flight nothing is re-requested and no wake-up is needed", () => {
    const sim = new Sim({ number: 3 });
    sim.autoSpawn = false;
    sim.send({ type: "start" }, 0);
    expect(sim.outstanding.map((s) => s.index)).toEqual([0, 1, 2]);
    expect(spawns(sim.tick(5000))).toEqual([]);
    expect(sim.state.pending).toHaveLength(3);
    sim.completeSpawns(5000);
    expect(sim.state.workers.map((w) => [w.index, w.spawnedAt])).toEqual([[0, 5000], [1, 5000], [2, 5000]]);
    expect(sim.wakeAt).toBe(6000); // default timer ACK of 1 s
  });

  test("the same spawn reported twice is logged as an error and adds no worker", () => {
    const sim = new Sim({ number: 1 });
    sim.send({ type: "start" }, 0);
    const spawnId = sim.spawnLog()[0]!.spawnId;
    const before = sim.state;
    const fx = sim.send({ type: "spawned", spawnId, pid: 999 }, 10);
    expect(logs(fx, "error")).toEqual([`Spawn ${spawnId} reported twice (pid 999)`]);
    expect(sim.state.workers).toEqual(before.workers);
  });
});

describe("ACKs", () => {
  for (const T of [0, 0.25, 1, 2.5]) {
    test(`timer ACK T=${T}s: a worker counts as up exactly at spawnedAt + T`, () => {
      const sim = new Sim({ number: 2, ackMode: timer(T) }, 1000);
      const fx = sim.send({ type: "start" }, 1000);
      const due = 1000 + T * 1000;
      if (T === 0) {
        expect(sim.state.workers.map((w) => w.ackedAt)).toEqual([1000, 1000]);
        expect(logs(fx, "info").filter((m) => m.includes("timer ACK"))).toHaveLength(2);
        expect(sim.wakeAt).toBeNull();
        return;
      }
      expect(sim.state.workers.map((w) => w.ackedAt)).toEqual([null, null]);
      expect(sim.wakeAt).toBe(due);
      sim.tick(due - 1);
      expect(sim.state.workers.map((w) => w.ackedAt)).toEqual([null, null]);
      expect(sim.wakeAt).toBe(due);
      const at = sim.tick(due);
      expect(sim.state.workers.map((w) => w.ackedAt)).toEqual([due, due]);
      expect(logs(at, "info")).toContain(`Worker ${sim.pids()[0]} (index 0) is up: alive for ${T}s (timer ACK)`);
      expect(sim.wakeAt).toBeNull();
    });
  }

  test("a late wake-up still records the ACK at spawnedAt + T", () => {
    const sim = new Sim({ number: 1, ackMode: timer(1) });
    sim.send({ type: "start" }, 0);
    sim.tick(7777);
    expect(sim.state.workers[0]!.ackedAt).toBe(1000);
  });

  const exitCases: [number, boolean][] = [[999, false], [1000, true], [4000, true]];
  for (const [exitAt, wasUp] of exitCases) {
    test(`timer mode: a worker exiting at ${exitAt} ms (T=1 s, no tick in between) ${wasUp ? "was" : "was not"} up`, () => {
      const sim = new Sim({ number: 1, ackMode: timer(1) });
      sim.send({ type: "start" }, 0);
      const [pid] = sim.pids();
      sim.exit(pid!, exitAt, 1);
      expect(sim.state.consecutiveDeaths).toBe(wasUp ? 0 : 1);
      expect(sim.state.exits["0"]).toEqual({ total: 1, beforeAck: wasUp ? 0 : 1, unasked: 1, lastCode: 1, lastSignal: null, lastAt: exitAt });
    });
  }

  test("manual mode: only an explicit ACK counts, at the time it arrives", () => {
    const sim = new Sim({ number: 2, ackMode: MANUAL });
    sim.send({ type: "start" }, 0);
    expect(sim.wakeAt).toBeNull();
    sim.tick(1_000_000);
    expect(sim.state.workers.map((w) => w.ackedAt)).toEqual([null, null]);
    const [a, b] = sim.pids();
    const fx = sim.ack(a!, 1_000_500);
    expect(sim.w(a!).ackedAt).toBe(1_000_500);
    expect(sim.w(b!).ackedAt).toBeNull();
    expect(logs(fx, "info")).toEqual([`Worker ${a} (index 0) is up: manual ACK`]);
    expect(nonLog(fx)).toEqual([]);
  });

  test("ping records time and request id; unknown pid is logged", () => {
    const sim = ready(1);
    const [pid] = sim.pids();
    sim.send({ type: "ping", pid: pid!, requestId: "r-1" }, 50);
    expect(sim.w(pid!).lastPing).toEqual({ at: 50, requestId: "r-1" });
    const fx = sim.send({ type: "ping", pid: 4242, requestId: 7 }, 60);
    expect(logs(fx, "warn")).toEqual(["Received a ping from pid 4242, which is not a live worker; ignoring"]);
  });

  // Each case: a sim in a settled state, the ACK that must be ignored, and the
  // log line (a warning, but info for the timer-mode case: workers using the
  // einhorn/worker helper always ACK, so that one is expected).
  const ignored: [string, () => { sim: Sim; pid: number }, string, ("warn" | "info")?][] = [
    ["ACK for an unknown pid", () => ({ sim: ready(2), pid: 99999 }),
      "Received an ACK for pid 99999, which is not a live worker; ignoring"],
    ["ACK for a worker that was already reaped", () => {
      const sim = ready(2, { seconds: 5 });
      const [a] = sim.pids();
      sim.exit(a!, 100, 0); // respawn waits until 5000
      return { sim, pid: a! };
    }, "Received an ACK for pid 100, which is not a live worker; ignoring"],
    ["second ACK (does not reset the death counter either)", () => {
      const sim = new Sim({ number: 2, ackMode: MANUAL });
      sim.send({ type: "start" }, 0);
      const [a, b] = sim.pids();
      sim.ack(a!, 10);
      sim.exit(b!, 20, 1); // death before ACK: consecutiveDeaths 1
      expect(sim.state.consecutiveDeaths).toBe(1);
      return { sim, pid: a! };
    }, "Worker 100 ACKed a second time; ignoring"],
    ["manual ACK in timer mode", () => {
      const sim = new Sim({ number: 1, ackMode: timer(5) });
      sim.send({ type: "start" }, 0);
      return { sim, pid: sim.pids()[0]! };
    }, "Received a manual ACK from 100 in timer ACK mode; ignoring", "info"],
  ];
  for (const [name, setup, message, level = "warn"] of ignored) {
    test(`${name} is logged and ignored`, () => {
      const { sim, pid } = setup();
      sim.now += 30;
      const before = structuredClone(sim.state);
      const fx = sim.ack(pid);
      expect(fx).toEqual([{ type: "log", level, message }]);
      expect(sim.state).toStrictEqual(before);
    });
  }

  test("a manual ACK ignored in timer mode does not prevent the later timer ACK", () => {
    const sim = new Sim({ number: 1, ackMode: timer(5) });
    sim.send({ type: "start" }, 0);
    sim.ack(sim.pids()[0]!, 100);
    expect(sim.state.workers[0]!.ackedAt).toBeNull();
    sim.advance(5000);
    expect(sim.state.workers[0]!.ackedAt).toBe(5000);
  });
});

describe("reaping and respawning", () => {
  test("an ACKed worker that exits long after the last spawn is replaced at once, same index", () => {
    const sim = ready(3, { seconds: 1 });
    const victim = sim.byIndex(1).pid;
    const fx = sim.exit(victim, 60_000, 3);
    expect(logs(fx, "error")).toContain(`===> Worker ${victim} (index 1) exited with status 3`);
    expect(spawns(fx).map((s) => [s.index, s.version])).toEqual([[1, 0]]);
    expect(sim.state.consecutiveDeaths).toBe(0);
    expect(sim.state.exits["1"]).toEqual({ total: 1, beforeAck: 0, unasked: 1, lastCode: 3, lastSignal: null, lastAt: 60_000 });
    expect(sim.state.workers).toHaveLength(3);
  });

  test("killed by a signal is recorded as such", () => {
    const sim = ready(1);
    const pid = sim.pids()[0]!;
    const fx = sim.send({ type: "exited", pid, code: null, signal: "SIGSEGV" }, 60_000);
    expect(logs(fx, "error")).toContain(`===> Worker ${pid} (index 0) killed by SIGSEGV`);
    expect(sim.state.exits["0"]).toMatchObject({ total: 1, lastCode: null, lastSignal: "SIGSEGV" });
  });

  test("an ACKed worker dying soon after the last spawn waits for `seconds` after that spawn", () => {
    const sim = ready(1, { seconds: 2, ackMode: timer(1) }); // spawn 0, ACK 1000
    const pid = sim.pids()[0]!;
    const fx = sim.exit(pid, 1200, 1);
    expect(spawns(fx)).toEqual([]);
    expect(sim.state.consecutiveDeaths).toBe(0);
    expect(sim.wakeAt).toBe(2000);
    expect(spawns(sim.tick(1999))).toEqual([]);
    const s = spawns(sim.tick(2000));
    expect(s.map((x) => x.index)).toEqual([0]);
  });

  test("a reaped pid that is not a worker is only logged at debug level", () => {
    const sim = ready(1);
    const before = structuredClone(sim.state);
    const fx = sim.exit(31337, 100);
    expect(fx).toEqual([{ type: "log", level: "debug", message: "Reaped 31337, which is not a worker" }]);
    expect(sim.state).toStrictEqual(before);
  });

  test("death before ACK increments consecutiveDeaths and is logged as such", () => {
    const sim = new Sim({ number: 1, ackMode: timer(1) });
    sim.send({ type: "start" }, 0);
    const pid = sim.pids()[0]!;
    const fx = sim.exit(pid, 500, 1);
    expect(sim.state.consecutiveDeaths).toBe(1);
    expect(logs(fx, "error")).toEqual([`===> Worker ${pid} (index 0) exited with status 1 before ACKing (1 in a row)`]);
    expect(sim.state.exits["0"]).toEqual({ total: 1, beforeAck: 1, unasked: 1, lastCode: 1, lastSignal: null, lastAt: 500 });
    expect(spawns(fx)).toEqual([]);
    expect(sim.wakeAt).toBe(1500); // last spawn 0 + 1 s * 1.5^1
  });

  // seconds, expected gaps (ms) between consecutive spawns while every worker dies at once
  const backoffCases: [number, number[]][] = [
    [1, [1500, 2250, 3375, 5062.5, 7593.75, 11390.625, 17085.9375, 25628.90625, 30000, 30000, 30000]],
    [2, [3000, 4500, 6750, 10125, 15187.5, 22781.25, 30000, 30000]],
    [0.5, [750, 1125, 1687.5, 2531.25, 3796.875]],
    [20, [30000, 30000, 30000]],
  ];
  for (const [seconds, gaps] of backoffCases) {
    test(`backoff seconds=${seconds}: wakeAt = last spawn + seconds*1.5^deaths (cap 30 s), nothing spawns earlier`, () => {
      const sim = new Sim({ number: 1, seconds, ackMode: timer(1) });
      sim.afterSpawn = (pid) => [{ type: "exited", pid, code: 1, signal: null }];
      sim.send({ type: "start" }, 0);
      let last = 0;
      for (const [i, gap] of gaps.entries()) {
        expect(sim.state.consecutiveDeaths).toBe(i + 1);
        expect(sim.wakeAt).toBe(last + gap);
        expect(spawns(sim.tick(last + gap - 1))).toEqual([]);
        expect(sim.wakeAt).toBe(last + gap);
        expect(spawns(sim.tick(last + gap))).toHaveLength(1);
        last += gap;
      }
    });
  }

  test("an ACK resets the counter: the next crash starts the backoff from 1.5 again", () => {
    const sim = new Sim({ number: 1, seconds: 1, ackMode: timer(1) });
    sim.send({ type: "start" }, 0);
    sim.exit(sim.pids()[0]!, 0, 1); // deaths 1
    sim.advance(1500);
    sim.exit(sim.pids()[0]!, 1500, 1); // deaths 2
    sim.advance(3750);
    sim.exit(sim.pids()[0]!, 3750, 1); // deaths 3
    expect(sim.state.consecutiveDeaths).toBe(3);
    expect(sim.wakeAt).toBe(3750 + 3375);
    sim.advance(7125);
    expect(sim.spawnLog().map((s) => s.at)).toEqual([0, 1500, 3750, 7125]);
    sim.advance(8125); // timer ACK of the 4th worker
    expect(sim.state.workers[0]!.ackedAt).toBe(8125);
    expect(sim.state.consecutiveDeaths).toBe(0);
    // an ACKed worker exiting is replaced after the plain interval
    const fx = sim.exit(sim.pids()[0]!, 20_000, 1);
    expect(spawns(fx)).toHaveLength(1);
    expect(sim.state.consecutiveDeaths).toBe(0);
    // and a new crash counts from 1
    sim.exit(sim.pids()[0]!, 20_100, 1);
    expect(sim.state.consecutiveDeaths).toBe(1);
    expect(sim.wakeAt).toBe(21_500);
  });

  test("a manual ACK resets the counter too", () => {
    const sim = new Sim({ number: 2, ackMode: MANUAL });
    sim.send({ type: "start" }, 0);
    const [a, b] = sim.pids();
    sim.exit(b!, 10, 1);
    expect(sim.state.consecutiveDeaths).toBe(1);
    sim.ack(a!, 20);
    expect(sim.state.consecutiveDeaths).toBe(0);
  });

  test("spawn-failed counts as a death before ACK and is retried with backoff, same index", () => {
    const sim = new Sim({ number: 2, seconds: 1, ackMode: timer(1) });
    sim.failNextSpawns = 1;
    const fx = sim.send({ type: "start" }, 0);
    expect(sim.state.workers.map((w) => w.index)).toEqual([1]);
    expect(sim.state.pending).toEqual([]);
    expect(sim.state.consecutiveDeaths).toBe(1);
    expect(sim.state.exits["0"]).toEqual({ total: 1, beforeAck: 1, unasked: 1, lastCode: null, lastSignal: null, lastAt: 0 });
    expect(logs(fx, "error")).toEqual(["Could not start a worker (index 0): ENOENT: no such program; next try in 1.5s"]);
    // the surviving worker's timer ACK (1000) resets the counter: next try after the plain 1 s
    expect(sim.wakeAt).toBe(1000);
    const at1000 = sim.tick(1000);
    expect(spawns(at1000).map((s) => s.index)).toEqual([0]);
  });

  test("spawn-failed twice in a row backs off 1.5 s then 2.25 s", () => {
    const sim = new Sim({ number: 1, seconds: 1, ackMode: timer(1) });
    sim.failNextSpawns = 3;
    sim.send({ type: "start" }, 0);
    expect(sim.wakeAt).toBe(1500);
    sim.advance(1500);
    expect(sim.state.consecutiveDeaths).toBe(2);
    expect(sim.wakeAt).toBe(1500 + 2250);
    sim.advance(3750);
    expect(sim.state.consecutiveDeaths).toBe(3);
    expect(sim.spawnLog().map((s) => s.at)).toEqual([0, 1500, 3750]);
    expect(sim.wakeAt).toBe(3750 + 3375);
  });

  test("spawn-failed for an unknown spawn id changes nothing", () => {
    const sim = ready(1);
    const before = structuredClone(sim.state);
    const fx = sim.send({ type: "spawn-failed", spawnId: 777, reason: "x" }, 100);
    expect(fx).toEqual([]);
    expect(sim.state).toStrictEqual(before);
  });

  test("crash loop: 50 immediate deaths, gaps grow then stay at 30 s, no idle wake-ups", () => {
    const sim = new Sim({ number: 1, seconds: 1, ackMode: timer(1) });
    sim.afterSpawn = (pid) => [{ type: "exited", pid, code: 1, signal: null }];
    sim.send({ type: "start" }, 0);
    let ticks = 0;
    while (sim.state.consecutiveDeaths < 50) {
      expect(sim.wakeAt).not.toBeNull();
      expect(sim.wakeAt!).toBeGreaterThan(sim.now);
      const fx = sim.tick(sim.wakeAt!);
      expect(spawns(fx)).toHaveLength(1); // every wake-up makes progress
      if (++ticks > 100) throw new Error("crash loop does not converge");
    }
    const times = sim.spawnLog().map((s) => s.at);
    expect(times).toHaveLength(50);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps.slice(0, 9)).toEqual([1500, 2250, 3375, 5062.5, 7593.75, 11390.625, 17085.9375, 25628.90625, 30000]);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]!).toBeGreaterThanOrEqual(gaps[i - 1]!);
    expect(gaps.slice(8).every((g) => g === 30_000)).toBe(true);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(1000);
    expect(sim.wakeAt).toBe(times.at(-1)! + 30_000);
    expect(sim.state.exits["0"]).toMatchObject({ total: 50, beforeAck: 50 });
    expect(sim.spins).toEqual([]);
  });

  test("crash loop with 3 workers: after the first start, one spawn at a time with growing gaps", () => {
    const sim = new Sim({ number: 3, seconds: 1, maxUnacked: 3, ackMode: timer(1) });
    sim.afterSpawn = (pid) => [{ type: "exited", pid, code: 1, signal: null }];
    sim.send({ type: "start" }, 0);
    expect(sim.state.consecutiveDeaths).toBe(3);
    for (let i = 0; i < 12; i++) sim.tick(sim.wakeAt!);
    const log = sim.spawnLog();
    expect(log.slice(0, 3).map((s) => s.at)).toEqual([0, 0, 0]);
    const later = log.slice(3).map((s) => s.at);
    expect(later).toHaveLength(12);
    const gaps = later.map((t, i) => t - (i === 0 ? 0 : later[i - 1]!));
    expect(gaps.slice(0, 4)).toEqual([3375, 5062.5, 7593.75, 11390.625]);
    expect(gaps.slice(6)).toEqual([30000, 30000, 30000, 30000, 30000, 30000]);
    expect(log.slice(3).every((s) => s.index === 0)).toBe(true);
  });
});

describe("EINHORN_CHILD_INDEX", () => {
  test("a replacement takes the smallest free index", () => {
    const sim = ready(4);
    const i2 = sim.byIndex(2).pid;
    const i0 = sim.byIndex(0).pid;
    sim.exit(i2, 10_000);
    expect(sim.spawnLog().at(-1)).toMatchObject({ index: 2, at: 10_000 });
    sim.ackAll(10_050);
    sim.exit(i0, 10_100); // next spawn waits for the interval
    sim.advance(11_000);
    expect(sim.spawnLog().at(-1)).toMatchObject({ index: 0, at: 11_000 });
    expect(sim.state.workers.map((w) => w.index).sort()).toEqual([0, 1, 2, 3]);
  });

  test("two missing workers: the smaller index first, then the next smallest", () => {
    const sim = ready(4);
    sim.exit(sim.byIndex(3).pid, 10_000);
    sim.exit(sim.byIndex(1).pid, 10_000);
    sim.ackAll(10_050);
    sim.advance(11_000);
    expect(sim.spawnLog().slice(4).map((s) => [s.index, s.at])).toEqual([[3, 10_000], [1, 11_000]]);
  });

  test("a spawn in flight holds its index", () => {
    const sim = ready(3, { maxUnacked: 3 });
    sim.autoSpawn = false;
    sim.exit(sim.byIndex(0).pid, 10_000);
    sim.exit(sim.byIndex(1).pid, 11_000);
    expect(sim.outstanding.map((s) => s.index)).toEqual([0, 1]);
  });

  test("indexes held by an older generation are skipped, and reused once it is gone", () => {
    const sim = ready(3, { maxUnacked: 1 });
    const [a, b] = sim.pids();
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    expect(sim.spawnLog().at(-1)).toMatchObject({ index: 3, version: 1 });
    const n1 = sim.pids(1)[0]!;
    const fx = sim.ack(n1, 1100);
    expect(kills(fx)).toEqual([[a!, "SIGUSR2"]]);
    expect(sim.spawnLog().at(-1)).toMatchObject({ index: 4, version: 1, at: 1100 }); // 0 still held by retiring a
    sim.exit(a!, 1200);
    const n2 = sim.pids(1)[1]!;
    const fx2 = sim.ack(n2, 1300);
    expect(kills(fx2)).toEqual([[b!, "SIGUSR2"]]);
    expect(sim.spawnLog().at(-1)).toMatchObject({ index: 0, version: 1, at: 1300 });
  });
});

describe("max_unacked while replenishing", () => {
  test("manual ACK, number=4, maxUnacked=2: at most 2 new unacknowledged workers at a time", () => {
    const sim = ready(4, { maxUnacked: 2, seconds: 1 });
    expect(sim.spawnLog()).toHaveLength(4); // the first start ignores maxUnacked
    for (const pid of sim.pids()) sim.exit(pid, 10_000);
    expect(sim.spawnLog().slice(4).map((s) => s.at)).toEqual([10_000]);
    sim.tick(11_000);
    expect(sim.spawnLog().slice(4).map((s) => s.at)).toEqual([10_000, 11_000]);
    expect(spawns(sim.tick(12_000))).toEqual([]); // 2 unacked
    expect(spawns(sim.tick(20_000))).toEqual([]);
    const [n1] = sim.pids();
    const fx = sim.ack(n1!, 20_500);
    expect(spawns(fx)).toHaveLength(1); // one slot freed, interval long past
    expect(spawns(sim.tick(21_500))).toEqual([]); // 2 unacked again
    sim.ackAll(22_000);
    expect(sim.spawnLog().slice(4).map((s) => s.at)).toEqual([10_000, 11_000, 20_500, 22_000]);
    expect(sim.state.workers).toHaveLength(4);
    // never more than 2 unacked current workers + pending after the start
    for (const r of sim.history.filter((h) => h.at >= 10_000)) {
      const unacked = r.state.workers.filter((w) => w.ackedAt === null && w.signals.length === 0).length + r.state.pending.length;
      expect(unacked).toBeLessThanOrEqual(2);
    }
  });

  test("timer ACK frees the slot: next spawn once the previous one has lived T", () => {
    const sim = ready(2, { maxUnacked: 1, seconds: 1, ackMode: timer(3) });
    const [a, b] = sim.pids();
    sim.exit(a!, 10_000);
    sim.exit(b!, 10_000);
    expect(sim.spawnLog().slice(2).map((s) => s.at)).toEqual([10_000]);
    expect(spawns(sim.tick(11_000))).toEqual([]);
    expect(spawns(sim.tick(12_999))).toEqual([]);
    expect(spawns(sim.tick(13_000))).toHaveLength(1);
  });
});

describe("inc / dec / set-workers", () => {
  test("inc adds one worker with the next index", () => {
    const sim = ready(2);
    const fx = sim.send({ type: "inc" }, 5000);
    expect(sim.state.settings.number).toBe(3);
    expect(logs(fx, "info")).toContain("Number of workers: 2 -> 3");
    expect(spawns(fx).map((s) => s.index)).toEqual([2]);
  });

  test("dec retires an unACKed worker first, with SIGUSR2", () => {
    const sim = new Sim({ number: 3, ackMode: MANUAL });
    sim.send({ type: "start" }, 0);
    const [a, b, c] = sim.pids();
    sim.ack(a!, 10);
    sim.ack(c!, 10);
    const fx = sim.send({ type: "dec" }, 100);
    expect(sim.state.settings.number).toBe(2);
    expect(kills(fx)).toEqual([[b!, "SIGUSR2"]]);
    expect(sim.w(b!).signals).toEqual([{ signal: "SIGUSR2", at: 100 }]);
    // its exit is expected: no crash counted, no replacement
    const fx2 = sim.exit(b!, 200, 0);
    expect(sim.state.consecutiveDeaths).toBe(0);
    expect(spawns(fx2)).toEqual([]);
    expect(logs(fx2, "info")).toContain(`===> Worker ${b} (index 1) exited with status 0`);
    expect(sim.state.exits["1"]).toMatchObject({ total: 1, beforeAck: 1 });
    sim.advance(100_000);
    expect(sim.state.workers).toHaveLength(2);
  });

  test("dec among ACKed workers retires the newest", () => {
    const sim = ready(3, { seconds: 1 });
    const c = sim.byIndex(2).pid;
    sim.exit(c, 5000);
    const d = sim.byIndex(2).pid;
    sim.ack(d, 5100);
    const fx = sim.send({ type: "dec" }, 6000);
    expect(kills(fx)).toEqual([[d, "SIGUSR2"]]);
  });

  test("dec never goes below 1", () => {
    const sim = ready(1);
    const before = structuredClone(sim.state);
    const fx = sim.send({ type: "dec" }, 100);
    expect(sim.state.settings.number).toBe(1);
    expect(fx).toEqual([]);
    expect(sim.state).toStrictEqual(before);
  });

  const setCases: [number, number][] = [
    [0, 1], [-5, 1], [1, 1], [7, 7], [2.9, 2], [MAX_WORKERS, 1000], [1001, 1000], [1e9, 1000],
  ];
  for (const [input, expected] of setCases) {
    test(`set-workers ${input} -> number ${expected}`, () => {
      const sim = ready(3);
      sim.send({ type: "set-workers", number: input }, 100);
      expect(sim.state.settings.number).toBe(expected);
    });
  }

  test("set-workers 1 with 3 workers retires two; set-workers 4 adds them back one per interval", () => {
    const sim = ready(3, { seconds: 1 });
    const fx = sim.send({ type: "set-workers", number: 1 }, 10_000);
    expect(kills(fx).map((k) => k[1])).toEqual(["SIGUSR2", "SIGUSR2"]);
    for (const [pid] of kills(fx)) sim.exit(pid, 10_100);
    const up = sim.send({ type: "set-workers", number: 4 }, 20_000);
    expect(spawns(up)).toHaveLength(1);
    for (const t of [20_100, 21_000, 21_100, 22_000, 22_100, 23_000]) {
      sim.ackAll(t); // manual mode, maxUnacked=1: each new worker ACKs before the next one
      sim.tick(t);
    }
    expect(sim.state.workers).toHaveLength(4);
    expect(sim.spawnLog().slice(3).map((s) => s.at)).toEqual([20_000, 21_000, 22_000]);
  });
});

describe("stopping", () => {
  // The core takes canonical names only: every spelling is parsed at the edges (test/unit/signal-names.test.ts).
  const cases: [SignalName, SignalName][] = [["SIGUSR2", "SIGUSR2"], ["SIGTERM", "SIGTERM"], ["SIGINT", "SIGINT"]];
  for (const [given, sent] of cases) {
    test(`stop ${given}: ${sent} to every worker, no respawn, exit 0 only after the last one`, () => {
      const sim = ready(3);
      const pids = sim.pids();
      const fx = sim.send({ type: "stop", signal: given }, 1000);
      expect(kills(fx)).toEqual(pids.map((p) => [p, sent]));
      expect(sim.state.stopping).toEqual({ signal: sent, since: 1000 });
      expect(exits(fx)).toEqual([]);
      expect(sim.wakeAt).toBe(1000 + 30_000); // only the retire-grace warning is due
      const all: Effect[] = [];
      all.push(...sim.exit(pids[0]!, 1100, 0));
      all.push(...sim.tick(60_000));
      all.push(...sim.exit(pids[1]!, 60_100, null, sent));
      expect(exits(all)).toEqual([]);
      expect(spawns(all)).toEqual([]);
      const last = sim.exit(pids[2]!, 60_200, 1);
      expect(exits(last)).toEqual([{ type: "exit", code: 0 }]);
      expect(spawns(last)).toEqual([]);
      expect(sim.wakeAt).toBeNull();
      expect(sim.state.consecutiveDeaths).toBe(0);
    });
  }

  test("stop with no workers exits at once", () => {
    const sim = new Sim({ number: 2 });
    const fx = sim.send({ type: "stop", signal: "SIGUSR2" }, 0);
    expect(nonLog(fx)).toEqual([{ type: "exit", code: 0 }]);
  });

  test("a spawn in flight when stopping gets the stop signal when it arrives; exit waits for it", () => {
    const sim = new Sim({ number: 2 });
    sim.autoSpawn = false;
    sim.send({ type: "start" }, 0);
    const fx = sim.send({ type: "stop", signal: "SIGTERM" }, 10);
    expect(nonLog(fx)).toEqual([]); // no worker yet, two spawns pending
    const fx2 = sim.completeSpawns(20);
    expect(kills(fx2)).toEqual([[100, "SIGTERM"], [101, "SIGTERM"]]);
    expect(exits(fx2)).toEqual([]);
    sim.exit(100, 30);
    expect(exits(sim.exit(101, 40))).toEqual([{ type: "exit", code: 0 }]);
  });

  test("workers that die unACKed while stopping do not count as crashes", () => {
    const sim = new Sim({ number: 2, ackMode: MANUAL });
    sim.send({ type: "start" }, 0);
    sim.send({ type: "stop", signal: "SIGUSR2" }, 10);
    sim.exit(100, 20, 1);
    expect(sim.state.consecutiveDeaths).toBe(0);
  });

  test("a second stop signal is passed on; the first is not repeated", () => {
    const sim = ready(2);
    sim.send({ type: "stop", signal: "SIGUSR2" }, 100);
    const fx = sim.send({ type: "stop", signal: "SIGTERM" }, 200);
    expect(kills(fx)).toEqual([[100, "SIGTERM"], [101, "SIGTERM"]]);
    const fx2 = sim.send({ type: "stop", signal: "SIGTERM" }, 300);
    expect(kills(fx2)).toEqual([]);
  });

  test("quit: SIGQUIT to all and exit in the same step, with status 1 (Einhorn's exit(1))", () => {
    const sim = ready(3);
    const fx = sim.send({ type: "quit" }, 500);
    expect(nonLog(fx)).toEqual([
      { type: "kill", pid: 100, signal: "SIGQUIT" },
      { type: "kill", pid: 101, signal: "SIGQUIT" },
      { type: "kill", pid: 102, signal: "SIGQUIT" },
      { type: "exit", code: 1 },
    ]);
    expect(sim.wakeAt).toBeNull();
  });

  test("quit while stopping still QUITs everyone and exits", () => {
    const sim = ready(2);
    sim.send({ type: "stop", signal: "SIGUSR2" }, 100);
    const fx = sim.send({ type: "quit" }, 200);
    expect(kills(fx)).toEqual([[100, "SIGQUIT"], [101, "SIGQUIT"]]);
    expect(exits(fx)).toEqual([{ type: "exit", code: 1 }]);
  });

  test("signal timeout: SIGKILL exactly T after the stop signal, only to survivors, only once", () => {
    const sim = ready(3, { signalTimeout: 5 });
    const [a, b, c] = sim.pids();
    sim.send({ type: "stop", signal: "SIGUSR2" }, 10_000);
    expect(sim.wakeAt).toBe(15_000);
    sim.exit(a!, 12_000);
    expect(kills(sim.tick(14_999))).toEqual([]);
    const fx = sim.tick(15_000);
    expect(kills(fx)).toEqual([[b!, "SIGKILL"], [c!, "SIGKILL"]]);
    expect(logs(fx, "warn")).toEqual([
      `Worker ${b} (index 1, version 0) is still alive 5s after SIGUSR2; sending SIGKILL (-t 5)`,
      `Worker ${c} (index 2, version 0) is still alive 5s after SIGUSR2; sending SIGKILL (-t 5)`,
    ]);
    expect(sim.wakeAt).toBeNull();
    expect(kills(sim.tick(99_000))).toEqual([]);
    sim.exit(b!, 99_001, null, "SIGKILL");
    expect(exits(sim.exit(c!, 99_002, null, "SIGKILL"))).toEqual([{ type: "exit", code: 0 }]);
  });

  test("signal timeout after a stop with any signal (die USR1): escalated like a retiring one", () => {
    const sim = ready(2, { signalTimeout: 3 });
    const [a, b] = sim.pids();
    expect(kills(sim.send({ type: "stop", signal: "SIGUSR1" }, 10_000))).toEqual([[a!, "SIGUSR1"], [b!, "SIGUSR1"]]);
    expect(sim.wakeAt).toBe(13_000);
    expect(kills(sim.tick(13_000))).toEqual([[a!, "SIGKILL"], [b!, "SIGKILL"]]);
  });

  test("a USR1 sent before the stop (by signal) does not start the stop's clock early", () => {
    const sim = ready(1, { signalTimeout: 3 });
    const [a] = sim.pids();
    sim.send({ type: "signal-workers", signals: ["SIGUSR1"] }, 1_000);
    sim.send({ type: "stop", signal: "SIGUSR1" }, 10_000);
    expect(sim.wakeAt).toBe(13_000);
    expect(kills(sim.tick(12_999))).toEqual([]);
    expect(kills(sim.tick(13_000))).toEqual([[a!, "SIGKILL"]]);
  });

  test("no signal timeout: never escalated", () => {
    const sim = ready(1, { signalTimeout: null });
    sim.send({ type: "stop", signal: "SIGTERM" }, 100);
    expect(sim.wakeAt).toBe(30_100); // the retire-grace warning, nothing more
    expect(kills(sim.tick(30_100))).toEqual([]);
    expect(sim.wakeAt).toBeNull();
    expect(kills(sim.tick(10_000_000))).toEqual([]);
  });
});

describe("signal-workers", () => {
  test("records every signal on every worker, in order", () => {
    const sim = ready(2);
    const [a, b] = sim.pids();
    const fx = sim.send({ type: "signal-workers", signals: ["SIGHUP", "SIGUSR1"] }, 1000);
    expect(kills(fx)).toEqual([[a!, "SIGHUP"], [b!, "SIGHUP"], [a!, "SIGUSR1"], [b!, "SIGUSR1"]]);
    for (const pid of [a!, b!]) expect(sim.w(pid).signals).toEqual([{ signal: "SIGHUP", at: 1000 }, { signal: "SIGUSR1", at: 1000 }]);
  });

  test("a HUP is never escalated and leaves the worker serving", () => {
    const sim = ready(2, { signalTimeout: 5 });
    sim.send({ type: "signal-workers", signals: ["SIGHUP"] }, 1000);
    expect(sim.wakeAt).toBeNull();
    const fx = sim.tick(1_000_000);
    expect(nonLog(fx)).toEqual([]);
    // still counted as serving: no replacement, and an exit is a normal (replaced) exit
    const fx2 = sim.exit(100, 1_000_001, 1);
    expect(spawns(fx2)).toHaveLength(1);
  });

  test("a USR2 via signal-workers retires: escalated after T, replaced only after exit", () => {
    const sim = ready(2, { signalTimeout: 5 });
    const fx = sim.send({ type: "signal-workers", signals: ["SIGUSR2"] }, 10_000);
    expect(spawns(fx)).toEqual([]);
    expect(sim.wakeAt).toBe(15_000);
    expect(kills(sim.tick(15_000))).toEqual([[100, "SIGKILL"], [101, "SIGKILL"]]);
    const fx2 = sim.exit(100, 15_100, null, "SIGKILL");
    expect(spawns(fx2).map((s) => s.index)).toEqual([0]);
    expect(sim.state.consecutiveDeaths).toBe(0);
  });

  test("a worker retired by dec is escalated too", () => {
    const sim = ready(2, { signalTimeout: 2 });
    sim.send({ type: "dec" }, 1000);
    expect(sim.wakeAt).toBe(3000);
    expect(kills(sim.tick(3000)).map((k) => k[1])).toEqual(["SIGKILL"]);
  });
});

describe("smooth upgrade", () => {
  test("manual ACK, number=3, maxUnacked=1: one old worker retires per new ACK; spawns not paced by `seconds`", () => {
    const sim = ready(3, { seconds: 5, maxUnacked: 1 });
    const old = sim.pids(0);
    const fx = sim.send({ type: "upgrade", mode: "smooth" }, 100_000);
    expect(logs(fx, "info")).toContain("Starting smooth upgrade to version 1");
    expect(sim.state.version).toBe(1);
    expect(sim.state.lastVersion).toBe(1);
    expect(sim.state.upgrade).toEqual({ mode: "smooth", startedAt: 100_000, fromVersion: 0, deathsBeforeAck: 0 });
    expect(spawns(fx)).toEqual([{ type: "spawn", spawnId: 4, index: 3, version: 1 }]);
    expect(kills(fx)).toEqual([]);

    const [n1] = sim.pids(1);
    const f1 = sim.ack(n1!, 100_100);
    expect(f1.filter((f) => f.type === "notify")).toEqual([
      { type: "notify", kind: "upgrade", message: `Upgrade progress: 1 of 3 new workers up (pid ${n1} ACKed)`, final: false, error: false },
    ]);
    expect(kills(f1)).toEqual([[old[0]!, "SIGUSR2"]]);
    expect(spawns(f1)).toHaveLength(1); // at once, not 5 s after the last spawn
    expect(finished(f1)).toEqual([]);

    const n2 = sim.pids(1)[1]!;
    const f2 = sim.ack(n2, 100_200);
    expect(kills(f2)).toEqual([[old[1]!, "SIGUSR2"]]);
    expect(spawns(f2)).toHaveLength(1);

    const n3 = sim.pids(1)[2]!;
    const f3 = sim.ack(n3, 100_300);
    expect(finished(f3)).toEqual([{ type: "upgrade-finished", ok: true, message: "Upgrade done" }]);
    expect(kills(f3)).toEqual([[old[2]!, "SIGUSR2"]]);
    expect(logs(f3, "info")).toContain("Upgrade to version 1 done in 0.300s");
    expect(sim.state.upgrade).toBeNull();
    expect(sim.spawnLog().slice(3).map((s) => s.at)).toEqual([100_000, 100_100, 100_200]);

    // no new worker was ever signalled; the old ones leave without respawns
    const newPids = new Set(sim.pids(1));
    expect(sim.history.flatMap((r) => kills(r.effects)).filter(([p]) => newPids.has(p))).toEqual([]);
    const rest: Effect[] = [];
    for (const p of old) rest.push(...sim.exit(p, 100_400));
    expect(spawns(rest)).toEqual([]);
    expect(sim.state.workers.map((w) => w.version)).toEqual([1, 1, 1]);
    expect(finished(sim.history.flatMap((r) => r.effects))).toHaveLength(1);
  });

  test("timer ACK: the rollout advances at each new worker's ACK time", () => {
    const sim = ready(2, { seconds: 10, maxUnacked: 1, ackMode: timer(1) });
    const old = sim.pids(0);
    sim.send({ type: "upgrade", mode: "smooth" }, 50_000);
    const f1 = sim.tick(51_000);
    expect(kills(f1)).toEqual([[old[0]!, "SIGUSR2"]]);
    expect(spawns(f1)).toHaveLength(1);
    const f2 = sim.tick(52_000);
    expect(finished(f2)).toEqual([{ type: "upgrade-finished", ok: true, message: "Upgrade done" }]);
    expect(kills(f2)).toEqual([[old[1]!, "SIGUSR2"]]);
    expect(sim.spawnLog().slice(2).map((s) => s.at)).toEqual([50_000, 51_000]);
  });

  test("maxUnacked >= number: the whole new generation starts at once", () => {
    const sim = ready(3, { maxUnacked: 3 });
    const fx = sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    expect(spawns(fx).map((s) => [s.index, s.version])).toEqual([[3, 1], [4, 1], [5, 1]]);
    expect(kills(fx)).toEqual([]);
  });

  test("an unACKed old worker is retired before an ACKed one", () => {
    const sim = new Sim({ number: 2, ackMode: MANUAL, maxUnacked: 2 });
    sim.send({ type: "start" }, 0);
    const [a, b] = sim.pids();
    sim.ack(a!, 10);
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    const fx = sim.ack(sim.pids(1)[0]!, 1100);
    expect(kills(fx)).toEqual([[b!, "SIGUSR2"]]);
  });

  test("a new worker dying before ACK delays the next new spawn by the backoff", () => {
    const sim = ready(2, { seconds: 1, maxUnacked: 1 });
    sim.send({ type: "upgrade", mode: "smooth" }, 10_000);
    const n1 = sim.pids(1)[0]!;
    const fx = sim.exit(n1, 10_050, 1);
    expect(spawns(fx)).toEqual([]);
    expect(sim.state.upgrade?.deathsBeforeAck).toBe(1);
    expect(sim.state.consecutiveDeaths).toBe(1);
    expect(sim.wakeAt).toBe(11_500);
    expect(spawns(sim.tick(11_499))).toEqual([]);
    expect(spawns(sim.tick(11_500)).map((s) => s.version)).toEqual([1]);
  });
});

describe("fleet upgrade", () => {
  test("all new workers at once; old ones retired only when every new one has ACKed", () => {
    const sim = ready(3, { maxUnacked: 1 });
    const old = sim.pids(0);
    const fx = sim.send({ type: "upgrade", mode: "fleet" }, 1000);
    expect(logs(fx, "info")).toContain("Starting fleet upgrade to version 1");
    expect(spawns(fx).map((s) => [s.index, s.version])).toEqual([[3, 1], [4, 1], [5, 1]]);
    const [n1, n2, n3] = sim.pids(1);
    expect(kills(sim.ack(n1!, 1100))).toEqual([]);
    expect(kills(sim.ack(n2!, 1200))).toEqual([]);
    const last = sim.ack(n3!, 1300);
    expect(finished(last)).toEqual([{ type: "upgrade-finished", ok: true, message: "Upgrade done" }]);
    expect(kills(last)).toEqual(old.map((p) => [p, "SIGUSR2"]));
  });
});

describe("maxUpgradeAdditional surge cap", () => {
  test("smooth, number=3, cap +1: never more than 4 workers alive (pending included); still completes", () => {
    const sim = ready(3, { maxUnacked: 3, maxUpgradeAdditional: 1 });
    const old = sim.pids(0);
    const fx = sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    expect(spawns(fx)).toHaveLength(1);
    let t = 1000;
    for (let round = 0; round < 3; round++) {
      const fresh = sim.state.workers.filter((w) => w.version === 1 && w.ackedAt === null);
      expect(fresh).toHaveLength(1);
      const f = sim.ack(fresh[0]!.pid, (t += 100));
      expect(spawns(f)).toEqual([]); // the retiring old worker still counts
      const [[victim]] = kills(f) as [[number, string]];
      expect(old).toContain(victim);
      const g = sim.exit(victim, (t += 100));
      expect(spawns(g)).toHaveLength(round < 2 ? 1 : 0);
      if (round === 2) expect(finished(f)).toHaveLength(1);
    }
    expect(sim.state.upgrade).toBeNull();
    for (const r of sim.history) expect(r.state.workers.length + r.state.pending.length).toBeLessThanOrEqual(4);
  });

  test("fleet, number=3, cap +3: all three new workers start at once", () => {
    const sim = ready(3, { maxUpgradeAdditional: 3 });
    expect(spawns(sim.send({ type: "upgrade", mode: "fleet" }, 1000))).toHaveLength(3);
  });

  test("fleet, number=3, cap +2: only two new workers start", () => {
    const sim = ready(3, { maxUpgradeAdditional: 2 });
    expect(spawns(sim.send({ type: "upgrade", mode: "fleet" }, 1000))).toHaveLength(2);
  });

  test("the cap does not apply outside an upgrade", () => {
    const sim = ready(2, { maxUpgradeAdditional: 0, maxUnacked: 2 });
    expect(spawns(sim.send({ type: "set-workers", number: 3 }, 10_000))).toHaveLength(1);
  });
});

describe("failed upgrades", () => {
  test("upgradeMaxDeaths consecutive new-generation deaths before ACK fail the upgrade", () => {
    const sim = ready(2, { seconds: 1, maxUnacked: 1, upgradeMaxDeaths: 3 });
    const old = sim.pids(0);
    sim.send({ type: "upgrade", mode: "smooth" }, 100_000);
    sim.exit(sim.pids(1)[0]!, 100_000, 1);
    sim.advance(101_500);
    expect(sim.state.upgrade?.deathsBeforeAck).toBe(1);
    sim.exit(sim.pids(1)[0]!, 101_500, 1);
    sim.advance(103_750);
    expect(sim.state.upgrade?.deathsBeforeAck).toBe(2);
    const fx = sim.exit(sim.pids(1)[0]!, 103_800, 1);
    const message = "Upgrade failed: 3 new workers in a row exited before they ACKed. Version 1 is being stopped; version 0 keeps serving.";
    expect(finished(fx)).toEqual([{ type: "upgrade-finished", ok: false, message }]);
    expect(logs(fx, "error")).toContain(message);
    expect(sim.state.upgrade).toBeNull();
    expect(sim.state.version).toBe(0);
    expect(sim.state.lastVersion).toBe(1);
    expect(sim.state.consecutiveDeaths).toBe(0);
    expect(kills(fx)).toEqual([]);
    expect(spawns(fx)).toEqual([]);
    expect(sim.pids()).toEqual(old);
    expect(sim.history.flatMap((r) => kills(r.effects))).toEqual([]); // old workers never touched
    expect(sim.wakeAt).toBeNull();
    expect(nonLog(sim.tick(1_000_000))).toEqual([]);
  });

  test("a death before ACK of an ACKed-generation peer resets the upgrade's count", () => {
    const sim = ready(2, { seconds: 1, maxUnacked: 1, upgradeMaxDeaths: 2 });
    sim.send({ type: "upgrade", mode: "smooth" }, 10_000);
    sim.exit(sim.pids(1)[0]!, 10_000, 1);
    sim.advance(11_500);
    sim.ack(sim.pids(1)[0]!, 11_600);
    expect(sim.state.upgrade?.deathsBeforeAck).toBe(0);
    sim.tick(11_600);
    sim.exit(sim.pids(1).find((p) => sim.w(p).ackedAt === null)!, 11_700, 1);
    expect(sim.state.upgrade?.deathsBeforeAck).toBe(1);
    expect(sim.state.upgrade).not.toBeNull();
  });

  test("ackTimeout: a new worker not ACKed in time fails the upgrade; the new generation is retired", () => {
    const sim = ready(2, { seconds: 1, maxUnacked: 1, ackTimeout: 30 });
    const [o1, o2] = sim.pids(0);
    sim.send({ type: "upgrade", mode: "smooth" }, 100_000);
    const n1 = sim.pids(1)[0]!;
    const f1 = sim.ack(n1, 100_100); // o1 retires, n2 spawns at 100_100
    expect(kills(f1)).toEqual([[o1!, "SIGUSR2"]]);
    const n2 = sim.pids(1)[1]!;
    expect(finished(sim.tick(130_099))).toEqual([]);
    const fx = sim.tick(130_100);
    expect(finished(fx)).toEqual([{
      type: "upgrade-finished", ok: false,
      message: `Upgrade failed: new worker ${n2} did not ACK within 30s. Version 1 is being stopped; version 0 keeps serving.`,
    }]);
    expect(kills(fx)).toEqual([[n1, "SIGUSR2"], [n2, "SIGUSR2"]]);
    expect(sim.state.version).toBe(0);
    expect(sim.w(o2!).signals).toEqual([]); // untouched, still serving
    // still counted: o1 (retiring) + o2 fill the pool, so nothing is spawned yet
    expect(spawns(fx)).toEqual([]);
    // when the retired o1 is gone, it is replaced with the old version, at its index
    const fx2 = sim.exit(o1!, 130_200);
    expect(spawns(fx2)).toEqual([{ type: "spawn", spawnId: 5, index: 0, version: 0 }]);
    sim.exit(n1, 130_300);
    sim.exit(n2, 130_300);
    expect(sim.state.workers.map((w) => w.version)).toEqual([0, 0]);
  });

  test("ackTimeout is decided by a tick only: ACKs stepped late (queued while the master was stopped) all count", () => {
    const sim = ready(4, { maxUnacked: 4, ackTimeout: 2 });
    sim.send({ type: "upgrade", mode: "fleet" }, 1000);
    const news = sim.pids(1);
    expect(news).toHaveLength(4);
    // The master resumes at 5 s, long past every deadline, with four ACKs waiting: the shell steps them before its tick.
    const fx = news.flatMap((p) => sim.ack(p, 5000));
    expect(finished([...fx, ...sim.tick(5000)])).toEqual([{ type: "upgrade-finished", ok: true, message: "Upgrade done" }]);
  });

  test("a step past the ACK deadline that is not a tick asks for a tick at once", () => {
    const sim = ready(2, { maxUnacked: 2, ackTimeout: 2 });
    sim.send({ type: "upgrade", mode: "fleet" }, 1000);
    const [n1] = sim.pids(1);
    sim.ack(n1!, 5000);
    expect(sim.state.upgrade).not.toBeNull();
    expect(sim.wakeAt).toBe(5000);
    expect(finished(sim.tick(5000)).map((f) => f.ok)).toEqual([false]);
  });

  test("fleet failure: every new worker gets SIGUSR2, old workers untouched", () => {
    const sim = ready(2, { maxUnacked: 1, ackTimeout: 10 });
    const old = sim.pids(0);
    sim.send({ type: "upgrade", mode: "fleet" }, 1000);
    const news = sim.pids(1);
    expect(news).toHaveLength(2);
    sim.ack(news[0]!, 2000);
    const fx = sim.tick(11_000);
    expect(finished(fx).map((f) => f.ok)).toEqual([false]);
    expect(kills(fx)).toEqual(news.map((p) => [p, "SIGUSR2"]));
    for (const p of old) expect(sim.w(p).signals).toEqual([]);
  });

  test("a later upgrade after a failed one gets a fresh version number", () => {
    const sim = ready(1, { ackTimeout: 5 });
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    sim.tick(6000);
    expect(sim.state.version).toBe(0);
    const fx = sim.send({ type: "upgrade", mode: "smooth" }, 7000);
    expect(sim.state.version).toBe(2);
    expect(sim.state.lastVersion).toBe(2);
    expect(spawns(fx).map((s) => s.version)).toEqual([2]);
    expect(logs(fx, "info")).toContain("Starting smooth upgrade to version 2");
  });

  test("an upgrade during an upgrade supersedes it (reference: bump the version and start over)", () => {
    const sim = ready(2);
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    expect(sim.state.version).toBe(1);
    const fx = sim.send({ type: "upgrade", mode: "fleet" }, 1100);
    expect(fx).toContainEqual({ type: "log", level: "info", message: "Upgrade to version 1 superseded; starting over" });
    expect(sim.state.version).toBe(2);
    expect(sim.state.upgrade).toEqual({ mode: "fleet", startedAt: 1100, fromVersion: 0, deathsBeforeAck: 0 });
    // Version 1 workers are not the current version any more: they are not counted as the new generation.
    expect(sim.state.workers.filter((w) => w.version === 2).length + sim.state.pending.length).toBeGreaterThan(0);
  });

  test("upgrade refused while stopping", () => {
    const sim = ready(2);
    sim.send({ type: "stop", signal: "SIGUSR2" }, 1000);
    const fx = sim.send({ type: "upgrade", mode: "smooth" }, 1100);
    expect(fx).toEqual([
      { type: "log", level: "warn", message: "Not upgrading: the master is stopping" },
    ]);
    expect(sim.state.version).toBe(0);
    expect(sim.state.lastVersion).toBe(0);
    expect(sim.state.upgrade).toBeNull();
  });

  test("stop during an upgrade signals both generations and drops the upgrade", () => {
    const sim = ready(2, { maxUnacked: 1 });
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    const fx = sim.send({ type: "stop", signal: "SIGTERM" }, 1100);
    expect(kills(fx)).toEqual([[100, "SIGTERM"], [101, "SIGTERM"], [102, "SIGTERM"]]);
    expect(sim.state.upgrade).toBeNull();
    expect(spawns(fx)).toEqual([]);
  });
});

// The shell calls step again with a tick at wakeAt. A wakeAt at (or before)
// `now` when nothing is due makes it wake again at once, forever: a busy loop.
describe("wake-ups never spin", () => {
  test("replenish blocked by max_unacked (manual ACK) asks for no wake-up", () => {
    const sim = ready(3, { seconds: 1, maxUnacked: 1 });
    const [a, b] = sim.pids();
    sim.exit(a!, 10_000); // replacement spawned at 10_000, never ACKs
    sim.exit(b!, 10_000);
    sim.advance(11_000);
    sim.tick(11_000); // blocked by max_unacked: nothing can happen until an ACK arrives
    expect(sim.wakeAt).toBeNull();
    expect(sim.spins).toEqual([]);
  });

  test("replenish blocked by max_unacked (timer ACK) wakes at the blocking worker's ACK time", () => {
    const sim = ready(2, { seconds: 1, maxUnacked: 1, ackMode: timer(5) });
    const [a, b] = sim.pids();
    sim.exit(a!, 10_000);
    sim.exit(b!, 10_000);
    sim.tick(11_000);
    expect(sim.wakeAt).toBe(15_000);
    expect(sim.spins).toEqual([]);
  });

  test("smooth upgrade waiting for a manual ACK asks for no wake-up", () => {
    const sim = ready(2, { maxUnacked: 1 });
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    expect(sim.wakeAt).toBeNull();
    expect(sim.spins).toEqual([]);
  });

  test("smooth upgrade waiting for a timer ACK wakes at that ACK", () => {
    const sim = ready(2, { maxUnacked: 1, ackMode: timer(1) });
    sim.send({ type: "upgrade", mode: "smooth" }, 10_000);
    expect(sim.wakeAt).toBe(11_000);
  });

  test("smooth upgrade waiting for an ackTimeout wakes at the timeout", () => {
    const sim = ready(2, { maxUnacked: 1, ackTimeout: 30 });
    sim.send({ type: "upgrade", mode: "smooth" }, 10_000);
    expect(sim.wakeAt).toBe(40_000);
  });

  test("upgrade held by the surge cap asks for no wake-up", () => {
    const sim = ready(2, { maxUnacked: 2, maxUpgradeAdditional: 1 });
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    sim.ack(sim.pids(1)[0]!, 1100); // one old retiring, 3 alive: capped until it exits
    expect(sim.wakeAt).toBe(1100 + 30_000); // not for a spawn: only the retiring worker's grace warning
    expect(sim.spins).toEqual([]);
  });
});

describe("purity and serialisation", () => {
  function deepFreeze<T>(o: T): T {
    if (o && typeof o === "object" && !Object.isFrozen(o)) {
      Object.freeze(o);
      for (const v of Object.values(o)) deepFreeze(v);
    }
    return o;
  }

  const events: Event[] = [
    { type: "start" }, { type: "tick" }, { type: "ack", pid: 100 }, { type: "ping", pid: 100, requestId: 1 },
    { type: "exited", pid: 100, code: 1, signal: null }, { type: "exited", pid: 102, code: 0, signal: null },
    { type: "spawn-failed", spawnId: 1, reason: "x" }, { type: "spawned", spawnId: 1, pid: 5 },
    { type: "inc" }, { type: "dec" }, { type: "set-workers", number: 7 }, { type: "set-workers", number: 1 },
    { type: "stop", signal: "SIGUSR2" }, { type: "quit" }, { type: "signal-workers", signals: ["SIGHUP", "SIGUSR2"] },
    { type: "upgrade", mode: "smooth" }, { type: "upgrade", mode: "fleet" },
    { type: "settings", patch: { seconds: 3, signalTimeout: 1 } },
  ];
  const states: [string, () => State][] = [
    ["fresh", () => new Sim({ number: 3 }).state],
    ["running, manual", () => ready(3).state],
    ["mid-upgrade", () => { const s = ready(3, { maxUnacked: 1, signalTimeout: 2 }); s.send({ type: "upgrade", mode: "smooth" }, 1000); s.ack(s.pids(1)[0]!, 1100); return s.state; }],
    ["stopping", () => { const s = ready(2, { signalTimeout: 2 }); s.send({ type: "stop", signal: "SIGTERM" }, 1000); return s.state; }],
    ["pending spawns", () => { const s = new Sim({ number: 2 }); s.autoSpawn = false; s.send({ type: "start" }, 0); return s.state; }],
  ];
  for (const [name, make] of states) {
    test(`step does not mutate a deep-frozen "${name}" state, for every event type`, () => {
      const st = deepFreeze(make());
      const snapshot = structuredClone(st);
      for (const e of events) {
        const r = step(st, e, 5000);
        expect(JSON.parse(JSON.stringify(r.state))).toStrictEqual(r.state);
        expect(r.state).not.toBe(st);
      }
      expect(st).toStrictEqual(snapshot);
    });
  }

  test("settings patch merges into settings", () => {
    const sim = ready(2);
    sim.send({ type: "settings", patch: { seconds: 4, signalTimeout: 9 } }, 100);
    expect(sim.state.settings).toMatchObject({ number: 2, seconds: 4, signalTimeout: 9, ackMode: { kind: "manual" } });
  });

  // Seeded random walk over all event kinds, checking invariants after every step
  // (the driver also checks no-mutation and JSON round trip).
  function mulberry32(seed: number): () => number {
    return () => {
      seed |= 0; seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  for (const seed of [1, 2, 3, 42, 1234]) {
    test(`random walk seed=${seed}: invariants hold`, () => {
      const rnd = mulberry32(seed);
      const pick = <T>(xs: T[]): T | undefined => xs[Math.floor(rnd() * xs.length)];
      const manual = rnd() < 0.5;
      const sim = new Sim({
        number: 1 + Math.floor(rnd() * 4), ackMode: manual ? MANUAL : timer(rnd() < 0.3 ? 0 : 1), maxUnacked: 1 + Math.floor(rnd() * 3),
        signalTimeout: rnd() < 0.5 ? null : 3, ackTimeout: rnd() < 0.5 ? null : 20, maxUpgradeAdditional: rnd() < 0.5 ? null : 2,
      });
      sim.send({ type: "start" }, 0);
      let upgrades = 0;
      for (let i = 0; i < 250 && !sim.history.some((r) => exits(r.effects).length); i++) {
        const at = sim.now + Math.floor(rnd() * 3000);
        const live = sim.pids();
        const r = rnd();
        if (r < 0.3) sim.tick(at);
        else if (r < 0.5 && live.length) sim.exit(pick(live)!, at, rnd() < 0.5 ? 0 : 1);
        else if (r < 0.65 && live.length) sim.ack(pick(live)!, at);
        else if (r < 0.7) sim.send({ type: "inc" }, at);
        else if (r < 0.75) sim.send({ type: "dec" }, at);
        else if (r < 0.78) sim.send({ type: "set-workers", number: Math.floor(rnd() * 6) }, at);
        else if (r < 0.83) { upgrades++; sim.send({ type: "upgrade", mode: rnd() < 0.5 ? "smooth" : "fleet" }, at); }
        else if (r < 0.86) sim.send({ type: "signal-workers", signals: [pick(["SIGHUP", "SIGUSR1", "SIGUSR2"])!] }, at);
        else if (r < 0.9) { sim.failNextSpawns = 1; sim.tick(at); }
        else if (r < 0.905) sim.send({ type: "stop", signal: pick(["SIGUSR2", "SIGTERM"])! }, at);
        else sim.tick(at);
      }
      for (const rec of sim.history) {
        const s = rec.state;
        const idx = [...s.workers.map((w) => w.index), ...s.pending.map((p) => p.index)];
        expect(new Set(idx).size).toBe(idx.length);
        expect(new Set(s.workers.map((w) => w.pid)).size).toBe(s.workers.length);
        expect(s.settings.number).toBeGreaterThanOrEqual(1);
        expect(s.settings.number).toBeLessThanOrEqual(MAX_WORKERS);
        expect(s.version).toBeLessThanOrEqual(s.lastVersion);
        if (s.upgrade) expect(s.version).toBe(s.lastVersion);
        expect(s.consecutiveDeaths).toBeGreaterThanOrEqual(0);
        if (s.stopping) expect(spawns(rec.effects)).toEqual([]);
        for (const e of exits(rec.effects)) {
          expect(e.code).toBe(0);
          if (rec.event.type !== "quit") expect(s.workers.length + s.pending.length).toBe(0);
        }
        for (const w of s.workers) {
          const kinds = w.signals.map((x) => x.signal);
          expect(kinds.filter((k) => k === "SIGKILL").length).toBeLessThanOrEqual(1);
          if (w.ackedAt !== null) expect(w.ackedAt).toBeGreaterThanOrEqual(w.spawnedAt);
        }
      }
      expect(finished(sim.history.flatMap((r) => r.effects)).length).toBeLessThanOrEqual(upgrades);
    });
  }
});

describe("upgradeState", () => {
  test("accepts an older document with missing fields and fills in defaults", () => {
    const doc = {
      // no schema: written before the field existed
      settings: { number: 4, seconds: 2 },
      version: 3,
      workers: [{ pid: 42, index: 1, version: 3, spawnedAt: 500 }, { pid: 43, index: 0, version: 3, ackedAt: 900 }],
      started: true,
    };
    const s = upgradeState(doc, 7000);
    expect(s.schema).toBe(STATE_SCHEMA);
    expect(s.settings).toEqual({ ...DEFAULT_SETTINGS, number: 4, seconds: 2 });
    expect(s.version).toBe(3);
    expect(s.lastVersion).toBe(3);
    expect(s.workers).toEqual([
      { pid: 42, index: 1, version: 3, spawnedAt: 500, ackedAt: null, signals: [], lastPing: null },
      { pid: 43, index: 0, version: 3, spawnedAt: 7000, ackedAt: 900, signals: [], lastPing: null },
    ]);
    expect(s.pending).toEqual([]);
    expect(s.nextSpawnId).toBe(1);
    expect(s.consecutiveDeaths).toBe(0);
    expect(s.lastSpawnAt).toBeNull();
    expect(s.stopping).toBeNull();
    expect(s.upgrade).toBeNull();
    expect(s.exits).toEqual({});
    expect(s.startedAt).toBe(7000);
    expect(JSON.parse(JSON.stringify(s))).toStrictEqual(s);
    // and the core runs on it: two workers missing, one spawned with a free index
    const r = step(s, { type: "tick" }, 8000);
    expect(spawns(r.effects)).toEqual([{ type: "spawn", spawnId: 1, index: 2, version: 3 }]);
  });

  test("a round trip through JSON and upgradeState gives back the same state", () => {
    const sim = ready(3, { maxUnacked: 1, signalTimeout: 4 });
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    sim.ack(sim.pids(1)[0]!, 1100);
    sim.send({ type: "ping", pid: sim.pids(1)[0]!, requestId: "abc" }, 1200);
    sim.exit(sim.pids(0)[0]!, 1300, 1);
    expect(sim.state.pending).toEqual([]);
    const doc = JSON.parse(JSON.stringify(sim.state));
    expect(upgradeState(doc, 99_999)).toStrictEqual(sim.state);
  });

  test("the restored master carries on: a pending timer ACK and escalation still fire", () => {
    const sim = ready(2, { ackMode: timer(2), signalTimeout: 3, maxUnacked: 1 });
    sim.send({ type: "upgrade", mode: "smooth" }, 10_000); // n1 = 102
    expect(kills(sim.tick(12_000))).toEqual([[100, "SIGUSR2"]]); // n1 up; n2 = 103 spawned at 12_000
    const restored = upgradeState(JSON.parse(JSON.stringify(sim.state)), 12_500);
    const r = step(restored, { type: "tick" }, 15_000);
    // n2's timer ACK (14_000) completes the upgrade; 100 ignored USR2 for 3 s
    expect(r.state.workers.find((w) => w.pid === 103)?.ackedAt).toBe(14_000);
    expect(finished(r.effects)).toEqual([{ type: "upgrade-finished", ok: true, message: "Upgrade done" }]);
    expect(kills(r.effects)).toEqual([[101, "SIGUSR2"], [100, "SIGKILL"]]);
  });

  const refused: [string, unknown, RegExp][] = [
    ["a newer schema", { schema: STATE_SCHEMA + 1, workers: [] }, /newer/],
    ["a much newer schema", { schema: 99 }, new RegExp(`99 is newer than this einhorn understands \\(${STATE_SCHEMA}\\)`)],
    ["null", null, /not a mapping/],
    ["an array", [], /not a mapping/],
    ["a string", "state", /not a mapping/],
    ["a number", 5, /not a mapping/],
  ];
  for (const [name, doc, err] of refused) test(`refuses ${name}`, () => expect(() => upgradeState(doc, 0)).toThrow(err));
});

// Questions about the core, written as the behaviour we think is right.
// Run with `bun test --todo` to see them fail.
describe("open questions", () => {
  test("set-workers with a non-number (NaN) leaves the count unchanged and the state JSON-safe", () => {
    const sim = ready(2);
    const r = step(sim.state, { type: "set-workers", number: Number("abc") }, 100);
    expect(r.state.settings.number).toBe(2);
  });

  test("an older state document with workers but no `started` flag is not treated as a first start", () => {
    const s = upgradeState({ settings: { number: 3 }, workers: [{ pid: 42, index: 0, version: 0, ackedAt: 1 }], consecutiveDeaths: 5, lastSpawnAt: 0 }, 1000);
    expect(s.started).toBe(true);
  });

  test("a smooth upgrade with maxUpgradeAdditional=0 can still make progress", () => {
    const sim = ready(2, { maxUnacked: 1, maxUpgradeAdditional: 0 });
    const fx = sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    expect(spawns(fx).length + kills(fx).length).toBeGreaterThan(0);
  });

  test("a fleet upgrade whose surge cap is below 2*number can still complete", () => {
    const sim = ready(3, { maxUpgradeAdditional: 1 });
    sim.send({ type: "upgrade", mode: "fleet" }, 1000);
    // Each round: ACK the new workers, let the old ones asked to leave exit.
    for (let t = 1100; t < 2000 && sim.state.upgrade; t += 100) {
      sim.ackAll(t);
      for (const w of sim.state.workers.filter((x) => x.version === 0 && x.signals.some((g) => g.signal === "SIGUSR2"))) sim.exit(w.pid, t + 10);
    }
    expect(sim.state.upgrade).toBeNull();
    // Never more than number + 1 alive at once.
    expect(sim.state.workers.length).toBeLessThanOrEqual(4);
    expect(sim.state.workers.every((w) => w.version === 1)).toBe(true);
  });
});

describe("spawn time", () => {
  test("a worker's spawnedAt is when the shell started it, when reported, not when the event was handled", async () => {
    const { step } = await import("../../src/core/step");
    const { initialState, DEFAULT_SETTINGS } = await import("../../src/core/state");
    let s = initialState({ ...DEFAULT_SETTINGS, number: 1, ackMode: { kind: "manual" } }, 0);
    const r = step(s, { type: "start" }, 1000);
    s = r.state;
    const spawn = r.effects.find((e) => e.type === "spawn") as { spawnId: number };
    s = step(s, { type: "spawned", spawnId: spawn.spawnId, pid: 42, at: 1001 }, 1050).state;
    expect(s.workers[0]!.spawnedAt).toBe(1001);
  });
});

describe("--retire-signal", () => {
  const choices: [string, SignalName][] = [["USR2", "SIGUSR2"], ["TERM", "SIGTERM"], ["QUIT", "SIGQUIT"], ["INT", "SIGINT"]];
  for (const [name, sig] of choices) {
    test(`${name}: smooth upgrade, dec, stop and die-without-a-name all send ${sig}`, () => {
      const sim = ready(2, { retireSignal: sig });
      const old = sim.pids(0);
      sim.send({ type: "upgrade", mode: "smooth" }, 1000);
      const n1 = sim.pids(1)[0]!;
      expect(kills(sim.ack(n1, 1100))).toEqual([[old[0]!, sig]]);
      const n2 = sim.pids(1)[1]!;
      expect(kills(sim.ack(n2, 1200))).toEqual([[old[1]!, sig]]);
      for (const p of old) sim.exit(p, 1300);
      expect(kills(sim.send({ type: "dec" }, 2000))).toHaveLength(1);
      expect(kills(sim.history.at(-1)!.effects)[0]![1]).toBe(sig);
      const live = sim.state.workers.filter((w) => w.signals.length === 0).map((w) => w.pid);
      expect(kills(sim.send({ type: "stop" }, 3000))).toEqual(live.map((p) => [p, sig]));
      expect(sim.state.stopping).toEqual({ signal: sig, since: 3000 });
    });
  }

  test("an explicit stop signal (TERM to the master, die QUIT) wins over the retire signal", () => {
    const sim = ready(2, { retireSignal: "SIGQUIT" });
    expect(kills(sim.send({ type: "stop", signal: "SIGTERM" }, 1000)).map(([, s]) => s)).toEqual(["SIGTERM", "SIGTERM"]);
  });

  test("fleet upgrade and the surge cap's room-making retire with it too", () => {
    const sim = ready(2, { retireSignal: "SIGTERM", maxUpgradeAdditional: 0 });
    sim.send({ type: "upgrade", mode: "fleet" }, 1000);
    const all = sim.history.flatMap((r) => kills(r.effects));
    expect(all.length).toBeGreaterThan(0);
    expect(all.every(([, s]) => s === "SIGTERM")).toBe(true);
  });

  test("a retiring worker still alive after the grace is named in one warning; no -t: never killed", () => {
    const sim = ready(1, { retireSignal: "SIGUSR2" });
    const [w] = sim.pids();
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    sim.ack(sim.pids(1)[0]!, 1100); // the old worker gets USR2 at 1100
    expect(sim.wakeAt).toBe(1100 + 30_000);
    expect(logs(sim.advance(1100 + 29_999), "warn")).toEqual([]);
    const warned = sim.advance(1100 + 30_000);
    expect(logs(warned, "warn")).toEqual([
      `Worker ${w} (index 0, version 0) is still alive 30s after SIGUSR2: does it handle SIGUSR2? (choose another with --retire-signal); it is never killed without -t`,
    ]);
    expect(kills(warned)).toEqual([]);
    expect(sim.wakeAt).toBeNull();
    expect(logs(sim.tick(1100 + 600_000), "warn")).toEqual([]); // once
    expect(sim.state.workers.map((x) => x.pid)).toContain(w!);
  });

  const escalation: [string, number, number[]][] = [
    ["-t 60: a warning at 30 s, then a warning and SIGKILL at 60 s", 60, [30_000, 60_000]],
    ["-t 10: no grace warning; a warning and SIGKILL at 10 s", 10, [10_000]],
    ["-t 30: one warning, with the SIGKILL", 30, [30_000]],
  ];
  for (const [title, t, warnAt] of escalation) {
    test(title, () => {
      const sim = ready(1, { signalTimeout: t, retireSignal: "SIGTERM" });
      const [w] = sim.pids();
      sim.send({ type: "stop" }, 5000);
      expect(sim.w(w!).signals.map((x) => x.signal)).toEqual(["SIGTERM"]);
      sim.advance(5000 + 120_000);
      const warnings: [number, string][] = [];
      for (const r of sim.history) for (const m of logs(r.effects, "warn")) if (m.includes(`Worker ${w} (index 0, version 0)`)) warnings.push([r.at - 5000, m]);
      expect(warnings.map(([a]) => a)).toEqual(warnAt);
      expect(warnings.at(-1)![1]).toBe(`Worker ${w} (index 0, version 0) is still alive ${t}s after SIGTERM; sending SIGKILL (-t ${t})`);
      if (warnAt.length === 2) expect(warnings[0]![1]).toContain(`SIGKILL in ${t - 30}s (-t ${t})`);
      expect(sim.history.flatMap((r) => kills(r.effects))).toContainEqual([w!, "SIGKILL"]);
    });
  }

  test("a state document from before --retire-signal reads as USR2", () => {
    const sim = ready(1);
    const doc = JSON.parse(JSON.stringify(sim.state));
    delete doc.generations;
    doc.schema = 1;
    expect(upgradeState(doc, 0).generations["0"]!.spec.retireSignal).toBe("SIGUSR2");
    const warned = { ...doc, workers: doc.workers.map((w: Worker) => ({ ...w, retireWarned: true })) };
    expect(upgradeState(warned, 0).workers[0]!.retireWarned).toBe(true);
  });
});

describe("workers found gone after a re-exec", () => {
  test("a vanished worker is dropped with a warning naming the reason, never signalled again, and replaced", () => {
    const sim = ready(2);
    const [a, b] = sim.pids();
    const fx = sim.send({ type: "vanished", pid: a!, reason: "reaped by another process" }, 5000);
    expect(logs(fx, "warn")).toEqual([`===> Worker ${a} (index 0) is gone (reaped by another process)`]);
    expect(sim.pids()).not.toContain(a);
    expect(sim.pids()).toContain(b!);
    expect(sim.state.exits["0"]).toEqual({ total: 1, beforeAck: 0, unasked: 1, lastCode: null, lastSignal: null, lastAt: 5000 });
    const later = [...spawns(fx), ...spawns(sim.advance(10_000))];
    expect(later.map((s) => s.index)).toEqual([0]);
    const stop = sim.send({ type: "stop", signal: "SIGTERM" }, 11_000);
    expect(kills(stop).map(([pid]) => pid)).not.toContain(a);
  });

  test("a vanished worker that never ACKed counts as a death before ACK (it drives the backoff)", () => {
    const sim = new Sim({ number: 1, ackMode: MANUAL });
    sim.send({ type: "start" }, 0);
    const [a] = sim.pids();
    sim.send({ type: "vanished", pid: a!, reason: "gone" }, 100);
    expect(sim.state.consecutiveDeaths).toBe(1);
    expect(sim.state.exits["0"]!.beforeAck).toBe(1);
  });

  test("a vanished pid that is not a worker changes nothing", () => {
    const sim = ready(1);
    const before = sim.state.workers;
    sim.send({ type: "vanished", pid: 4242, reason: "gone" }, 100);
    expect(sim.state.workers).toEqual(before);
  });
});

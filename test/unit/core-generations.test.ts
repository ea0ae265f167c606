// Worker generations, upgrades as transactions, and the bake/rollback
// decision (issue 22), through the shared core simulator.
import { describe, expect, test } from "bun:test";
import type { Effect } from "../../src/core/step";
import { DEFAULT_SETTINGS, upgradeState, type State } from "../../src/core/state";
import { specChanges, specDigest, type WorkerSpec } from "../../src/core/generation";
import { finished, kills, logs, ready, Sim, SPEC_A, spawns } from "../core-sim";

const SPEC_B: WorkerSpec = { ...SPEC_A, program: ["./server", "--broken"], programPath: "/srv/releases/2/server", retireSignal: "SIGTERM" };

const specOfSpawn = (sim: Sim, fx: Effect[]): WorkerSpec[] => spawns(fx).map((f) => sim.state.generations[String(f.version)]!.spec);
const notices = (fx: Effect[]) => fx.filter((f): f is Extract<Effect, { type: "notify" }> => f.type === "notify");

/** A pool of `n` ACKed workers of SPEC_A, upgraded to SPEC_B with every new worker up at `at`. */
function upgraded(n: number, settings: Parameters<typeof ready>[1] = {}, at = 1000): Sim {
  const sim = ready(n, settings);
  sim.send({ type: "upgrade", mode: "smooth", spec: SPEC_B }, at);
  for (let i = 0; i < n; i++) {
    const fresh = sim.state.workers.find((w) => w.version === sim.state.version && w.ackedAt === null);
    if (fresh) sim.ack(fresh.pid, at + 10 * (i + 1));
  }
  for (const w of sim.state.workers.filter((x) => x.version !== sim.state.version)) sim.exit(w.pid, at + 100);
  return sim;
}

describe("generations remember what they run", () => {
  test("the first generation's spec is the one the master started with, and every spawn names its generation", () => {
    const sim = ready(2);
    expect(Object.keys(sim.state.generations)).toEqual(["0"]);
    expect(sim.state.generations["0"]!.spec).toEqual(SPEC_A);
    expect(sim.spawnLog().map((s) => s.version)).toEqual([0, 0]);
  });

  test("an upgrade makes a new generation with the spec it was given; the old one stays while its workers live", () => {
    const sim = ready(2);
    sim.send({ type: "upgrade", mode: "smooth", spec: SPEC_B }, 1000);
    expect(sim.state.generations["1"]!.spec).toEqual(SPEC_B);
    expect(sim.state.generations["0"]!.spec).toEqual(SPEC_A);
  });

  test("an upgrade without a spec (an older image's handoff) runs the current generation's spec again", () => {
    const sim = ready(1);
    sim.send({ type: "upgrade", mode: "smooth" }, 1000);
    expect(sim.state.generations["1"]!.spec).toEqual(SPEC_A);
  });

  test("a generation no worker, spawn, fallback or bake needs is dropped", () => {
    const sim = upgraded(2);
    expect(sim.state.upgrade).toBeNull();
    expect(Object.keys(sim.state.generations)).toEqual(["1"]);
  });

  test("the log names the new spec and what changed, never an environment value", () => {
    const sim = ready(1);
    const secret: WorkerSpec = { ...SPEC_B, env: { API_KEY: "hunter2" } };
    const fx = sim.send({ type: "upgrade", mode: "smooth", spec: secret }, 1000);
    const line = logs(fx, "info").find((l) => l.startsWith("Version 1 runs spec"))!;
    expect(line).toContain(specDigest(secret));
    expect(line).toContain("program");
    expect(line).toContain("env (API_KEY)");
    expect(line).not.toContain("hunter2");
  });

  test("specChanges and specDigest: equal specs, equal digests; key order does not matter", () => {
    const reordered = Object.fromEntries(Object.entries(SPEC_A).reverse()) as unknown as WorkerSpec;
    expect(specDigest(reordered)).toBe(specDigest(SPEC_A));
    expect(specDigest(SPEC_B)).not.toBe(specDigest(SPEC_A));
    expect(specChanges(SPEC_A, SPEC_A)).toEqual([]);
    expect(specChanges(SPEC_A, SPEC_B)).toEqual([
      `program ["./server"] -> ["./server","--broken"]`,
      `programPath "/srv/releases/1/server" -> "/srv/releases/2/server"`,
      `retireSignal "SIGUSR2" -> "SIGTERM"`,
    ]);
  });
});

describe("an upgrade is a transaction", () => {
  /** SPEC_B's workers die before ACKing until the upgrade fails. */
  function failedUpgrade(n: number): Sim {
    const sim = ready(n, { upgradeMaxDeaths: 2 });
    sim.send({ type: "upgrade", mode: "smooth", spec: SPEC_B }, 1000);
    for (let t = 1100; sim.state.upgrade; t += 5000) {
      const fresh = sim.state.workers.find((w) => w.version === sim.state.version);
      if (fresh) sim.exit(fresh.pid, t, 1);
      else sim.advance(t);
    }
    return sim;
  }

  test("after a failed upgrade a killed old worker is replaced from the old spec, not the failed one", () => {
    const sim = failedUpgrade(2);
    expect(sim.state.version).toBe(0);
    const old = sim.pids(0);
    expect(old).toHaveLength(2);
    const fx = [...sim.exit(old[0]!, 60_000, null, "SIGKILL"), ...sim.advance(120_000)];
    expect(specOfSpawn(sim, fx)).toEqual([SPEC_A]);
    expect(spawns(fx).map((s) => s.version)).toEqual([0]);
    // The failed generation's spec is gone once its workers are.
    expect(Object.keys(sim.state.generations)).toEqual(["0"]);
  });

  test("the failure says which spec stays in force, before its final line", () => {
    const sim = ready(1, { upgradeMaxDeaths: 1 });
    sim.send({ type: "upgrade", mode: "smooth", spec: SPEC_B }, 1000);
    const fx = sim.exit(sim.pids(1)[0]!, 1100, 1);
    const n = notices(fx);
    expect(n.map((x) => x.message)).toEqual([`Version 0 replaces any worker it loses from its own spec (${specDigest(SPEC_A)}), not version 1's`]);
    expect(n[0]!.final).toBe(false);
    expect(finished(fx)).toHaveLength(1);
  });

  test("old workers retired during a partial rollout come back from the old spec", () => {
    const sim = ready(3, { upgradeMaxDeaths: 2 });
    sim.send({ type: "upgrade", mode: "smooth", spec: SPEC_B }, 1000);
    const n1 = sim.pids(1)[0]!;
    sim.ack(n1, 1100); // one old worker retires for it
    const retired = sim.pids(0).find((p) => sim.w(p).signals.length)!;
    sim.exit(retired, 1200);
    // Then the rollout fails: the next two new workers die before ACKing.
    for (let t = 2000; sim.state.upgrade; t += 5000) {
      const fresh = sim.state.workers.find((w) => w.version === sim.state.version && w.ackedAt === null);
      if (fresh) sim.exit(fresh.pid, t, 1);
      else sim.advance(t);
    }
    sim.advance(100_000);
    // Version 0 is made whole again from its own spec; the ACKed new worker is retired.
    expect(sim.pids(0)).toHaveLength(3);
    expect(sim.state.generations["0"]!.spec).toEqual(SPEC_A);
    expect(kills(sim.history.flatMap((r) => r.effects))).toContainEqual([n1, "SIGTERM"]);
  });

  test("each worker is asked to leave with its own generation's retire signal: upgrade, dec, stop", () => {
    const sim = ready(2, { retireSignal: "SIGUSR2" });
    const old = sim.pids(0);
    sim.send({ type: "upgrade", mode: "smooth", spec: SPEC_B }, 1000);
    sim.ack(sim.pids(1)[0]!, 1100);
    sim.ack(sim.pids(1)[1]!, 1200);
    const all = kills(sim.history.flatMap((r) => r.effects));
    expect(all).toEqual(old.map((p) => [p, "SIGUSR2"]));
    // One old worker has not left yet when a stop comes: it still gets USR2, the new ones TERM.
    sim.exit(old[0]!, 1300);
    expect(kills(sim.send({ type: "dec" }, 1400)).map(([, s]) => s)).toEqual(["SIGTERM"]);
    const unsignalled = sim.state.workers.filter((w) => w.signals.length === 0);
    expect(unsignalled.map((w) => w.version)).toEqual([1]);
    const stop = kills(sim.send({ type: "stop" }, 1500));
    expect(stop).toEqual(unsignalled.map((w) => [w.pid, "SIGTERM"]));
    expect(sim.state.stopping?.signal).toBe("SIGTERM");
  });

  test("a reload leaves the generations alone and says the new spec waits for an upgrade", () => {
    const sim = ready(1);
    sim.send({ type: "reexec-requested", kind: "reload", mode: null, requestId: 7 }, 1000);
    sim.send({ type: "preflight-done", ok: true, detail: "ok" }, 1100);
    const fx = sim.send({ type: "resumed", version: "0.2.0", pid: 1, spec: SPEC_B }, 1200);
    expect(Object.keys(sim.state.generations)).toEqual(["0"]);
    expect(sim.state.generations["0"]!.spec).toEqual(SPEC_A);
    expect(notices(fx).at(-1)!.message).toContain(`take effect at the next upgrade`);
  });

  test("an upgrade resumed in the new image rolls out the image's spec", () => {
    const sim = ready(1);
    sim.send({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: 7 }, 1000);
    sim.send({ type: "preflight-done", ok: true, detail: "ok" }, 1100);
    sim.send({ type: "resumed", version: "0.2.0", pid: 1, spec: SPEC_B }, 1200);
    expect(sim.state.generations[String(sim.state.version)]!.spec).toEqual(SPEC_B);
  });
});

describe("bake and rollback (--upgrade-bake)", () => {
  const BAKE = { upgradeBake: 10, upgradeMaxDeaths: 2 };

  test("no bake: the upgrade is done when its workers are up, the old spec let go", () => {
    const sim = upgraded(2);
    const done = sim.history.flatMap((r) => finished(r.effects));
    expect(done).toEqual([{ type: "upgrade-finished", ok: true, message: "Upgrade done" }]);
    expect(sim.state.bake).toBeNull();
  });

  test("with a bake, the upgrade is up but not done: the previous spec is kept, the waiters told, not released", () => {
    const sim = upgraded(2, BAKE);
    expect(sim.history.flatMap((r) => finished(r.effects))).toEqual([]);
    expect(sim.state.bake).toEqual({ version: 1, previous: 0, since: 1020, until: 11_020, deaths: 0 });
    expect(Object.keys(sim.state.generations).sort()).toEqual(["0", "1"]);
    const up = sim.history.flatMap((r) => notices(r.effects)).find((n) => n.message.includes("baking for 10s"))!;
    expect(up.final).toBe(false);
    expect(sim.wakeAt).toBe(11_020);
  });

  test("a quiet bake ends the upgrade at its deadline, and the previous spec is dropped", () => {
    const sim = upgraded(2, BAKE);
    expect(finished(sim.advance(11_019))).toEqual([]);
    const fx = sim.advance(11_020);
    expect(finished(fx)).toEqual([{ type: "upgrade-finished", ok: true, message: "Upgrade done: version 1 baked for 10s with 0 unasked exits" }]);
    expect(sim.state.bake).toBeNull();
    expect(Object.keys(sim.state.generations)).toEqual(["1"]);
  });

  test("up to --upgrade-max-deaths unasked exits are tolerated (and replaced from the new spec)", () => {
    const sim = upgraded(2, BAKE);
    sim.exit(sim.pids(1)[0]!, 2000, 1);
    sim.advance(5000);
    sim.ackAll(5000);
    sim.exit(sim.pids(1)[0]!, 6000, null, "SIGSEGV");
    expect(sim.state.bake?.deaths).toBe(2);
    expect(sim.history.flatMap((r) => finished(r.effects))).toEqual([]);
    expect(sim.spawnLog().filter((s) => s.at >= 2000).every((s) => s.version === 1)).toBe(true);
  });

  test("asked exits (dec, a stop signal from outside the bake) do not count", () => {
    const sim = upgraded(3, BAKE);
    sim.send({ type: "dec" }, 2000);
    const retiring = sim.state.workers.find((w) => w.signals.length)!;
    sim.exit(retiring.pid, 2100);
    expect(sim.state.bake?.deaths).toBe(0);
  });

  test("more than --upgrade-max-deaths unasked exits roll back: the previous spec as a new generation, same ACK rules", () => {
    const sim = upgraded(2, BAKE);
    for (const t of [2000, 4000]) { sim.exit(sim.pids(1)[0]!, t, 1); sim.advance(t + 1500); sim.ackAll(t + 1500); }
    const fx = sim.exit(sim.pids(1)[0]!, 7000, 1);
    expect(finished(fx)).toEqual([{
      type: "upgrade-finished", ok: false, rolledBack: true,
      message: `Upgrade to version 1 rolled back: 3 of its workers exited unasked within 6.0s of it coming up (more than --upgrade-max-deaths 2); rolling out version 0's spec (${specDigest(SPEC_A)}) again as version 2`,
    }]);
    expect(sim.state.version).toBe(2);
    expect(sim.state.generations["2"]).toEqual({ version: 2, spec: SPEC_A, createdAt: 7000, rollbackOf: 0 });
    expect(sim.state.upgrade).toMatchObject({ fromVersion: 1, rollback: true });
    expect(sim.state.bake).toBeNull();
    // The rollback spawns version 2 (SPEC_A); each ACK retires one bad worker, with the bad spec's signal.
    sim.advance(20_000);
    const bad = sim.pids(1);
    for (const w of sim.state.workers.filter((x) => x.version === 2 && x.ackedAt === null)) sim.ack(w.pid, 20_000);
    sim.advance(40_000);
    for (const w of sim.state.workers.filter((x) => x.version === 2 && x.ackedAt === null)) sim.ack(w.pid, 40_000);
    expect(sim.state.upgrade).toBeNull();
    const retired = kills(sim.history.filter((r) => r.at >= 20_000).flatMap((r) => r.effects));
    expect(retired.filter(([p]) => bad.includes(p)).map(([, s]) => s)).toEqual(bad.map(() => "SIGTERM"));
    // The rollout's end tells nobody again: its requester had the final line at the rollback.
    expect(sim.history.filter((r) => r.at >= 7001).flatMap((r) => finished(r.effects))).toEqual([]);
    for (const p of bad) sim.exit(p, 41_000);
    expect(Object.keys(sim.state.generations)).toEqual(["2"]);
    expect(sim.state.workers.every((w) => w.version === 2)).toBe(true);
  });

  test("a rollback that itself fails falls back to the baked generation, which is still serving", () => {
    const sim = upgraded(1, { ...BAKE, upgradeMaxDeaths: 1 });
    sim.exit(sim.pids(1)[0]!, 2000, 1); sim.advance(3500); sim.ackAll(3500);
    sim.exit(sim.pids(1)[0]!, 4000, 1);
    expect(sim.state.upgrade?.rollback).toBe(true);
    // No worker of version 1 is left with -n 1, so the rollback must bring version 2 up; let it die.
    sim.advance(6000);
    const fresh = sim.state.workers.find((w) => w.version === 2)!;
    const fx = sim.exit(fresh.pid, 6100, 1);
    expect(logs(fx, "error").some((l) => l.startsWith("Rollback failed: 1 new workers in a row exited before they ACKed. Version 2 is being stopped; version 1 keeps serving."))).toBe(true);
    expect(sim.state.version).toBe(1);
  });

  test("a newer upgrade cuts the bake short: its waiters get a final, successful line first", () => {
    const sim = upgraded(2, BAKE);
    const fx = sim.send({ type: "reexec-requested", kind: "upgrade", mode: "smooth", requestId: 9 }, 3000);
    const f = finished(fx);
    expect(f).toHaveLength(1);
    expect(f[0]).toMatchObject({ ok: true });
    expect((f[0] as { message: string }).message).toContain("its bake was cut short by a newer upgrade");
    expect(fx.findIndex((x) => x.type === "upgrade-finished")).toBeLessThan(fx.findIndex((x) => x.type === "enroll"));
    expect(sim.state.bake).toBeNull();
  });

  test("a stop during a bake ends it, and its waiters are told it did not complete", () => {
    const sim = upgraded(2, BAKE);
    const fx = sim.send({ type: "stop" }, 3000);
    expect(finished(fx)).toEqual([{ type: "upgrade-finished", ok: false, message: "Upgrade to version 1: its bake was cut short, the master is stopping (SIGTERM)" }]);
    expect(sim.state.bake).toBeNull();
  });

  test("a reload during a bake keeps the bake (the state crosses the re-exec)", () => {
    const sim = upgraded(2, BAKE);
    sim.send({ type: "reexec-requested", kind: "reload", mode: null, requestId: 9 }, 3000);
    sim.send({ type: "preflight-done", ok: true, detail: "ok" }, 3100);
    const doc = JSON.parse(JSON.stringify(sim.state)) as State;
    const resumed = upgradeState(doc, 3200);
    expect(resumed.bake).toEqual(sim.state.bake);
    expect(Object.keys(resumed.generations).sort()).toEqual(["0", "1"]);
  });
});

describe("state documents from before generations (schema 1)", () => {
  test("every generation still needed gets the caller's spec with the retire signal the writer recorded", () => {
    const doc = {
      schema: 1,
      settings: { ...DEFAULT_SETTINGS, retireSignal: "SIGQUIT" },
      version: 3, lastVersion: 3,
      upgrade: { mode: "smooth", startedAt: 0, fromVersion: 2, deathsBeforeAck: 0 },
      workers: [{ pid: 10, index: 0, version: 2, spawnedAt: 0, ackedAt: 1, signals: [], lastPing: null }],
    };
    const s = upgradeState(doc, 5, () => {}, SPEC_B);
    expect(Object.keys(s.generations).sort()).toEqual(["2", "3"]);
    for (const g of Object.values(s.generations)) expect(g.spec).toEqual({ ...SPEC_B, retireSignal: "SIGQUIT" });
    expect("retireSignal" in s.settings).toBe(false);
    expect(s.bake).toBeNull();
  });

  test("a generation whose retire signal is not a signal name is refused, naming the field", () => {
    const sim = ready(1);
    const doc = JSON.parse(JSON.stringify(sim.state));
    doc.generations["0"].spec.retireSignal = "SIGNOPE";
    expect(() => upgradeState(doc, 0)).toThrow(`the handed-over state's generations.0.spec.retireSignal is 'SIGNOPE', which is not a signal name`);
  });
});

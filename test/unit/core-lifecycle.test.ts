// The master's own lifecycle in the pure core: signals, upgrade and reload
// requests, preflight, exec, exec failure, resume and stop, as events and
// effects. Every path is a row: a starting point, the events, and what the
// core must answer (effects other than logs and kills) and leave in `reexec`.
import { describe, expect, test } from "bun:test";
import { type Effect, type Event, step } from "../../src/core/step";
import { DEFAULT_SETTINGS, initialState, type State, upgradeState } from "../../src/core/state";
import { parseSignal } from "../../src/signal-names";

const T0 = 1_000_000;

/** A master at rest with `n` ACKed workers of version 0. */
function atRest(n = 2): State {
  let s = initialState({ ...DEFAULT_SETTINGS, number: n, ackMode: { kind: "manual" } }, T0);
  let r = step(s, { type: "start" }, T0);
  s = r.state;
  for (const fx of r.effects) if (fx.type === "spawn") s = step(s, { type: "spawned", spawnId: fx.spawnId, pid: 100 + fx.index }, T0).state;
  for (const w of s.workers) s = step(s, { type: "ack", pid: w.pid }, T0 + 10).state;
  return s;
}

/** Feed events one after another (all at `at`); every effect, and the last state. */
function run(s: State, events: Event[], at = T0 + 1000): { state: State; effects: Effect[] } {
  const effects: Effect[] = [];
  for (const e of events) {
    const r = step(s, e, at);
    expect(JSON.parse(JSON.stringify(r.state))).toStrictEqual(r.state); // it crosses execve as JSON
    s = r.state;
    effects.push(...r.effects);
  }
  return { state: s, effects };
}

/** Effects that matter for the lifecycle (logs, kills and spawns are the pool's business). */
const lifecycle = (fx: Effect[]) => fx.filter((f) => !["log", "kill", "spawn"].includes(f.type));
const logs = (fx: Effect[]) => fx.filter((f): f is Extract<Effect, { type: "log" }> => f.type === "log").map((f) => f.message);

const upgrade = (requestId: number | null = 7, mode: "smooth" | "fleet" = "smooth"): Event => ({ type: "reexec-requested", kind: "upgrade", mode, requestId });
const reload = (requestId: number | null = 8): Event => ({ type: "reexec-requested", kind: "reload", mode: null, requestId });
const passed: Event = { type: "preflight-done", ok: true, detail: "new einhorn 9.9.9" };
const failed: Event = { type: "preflight-done", ok: false, reason: "preflight 'x --upgrade-check' exited with status 1" };
const resumed: Event = { type: "resumed", version: "9.9.9", pid: 4242 };
/** A signal to the master, as the signalfd edge names it ("HUP" -> SIGHUP). */
const sig = (short: string): Event => ({ type: "signal", signal: parseSignal(short)! });
const notify = (kind: "upgrade" | "reload", message: string, final = false, error = false): Effect => ({ type: "notify", kind, message, final, error });
const pendingUpgrade = { kind: "upgrade" as const, mode: "smooth" as const, requestedAt: T0 + 1000 };

describe("lifecycle: requests", () => {
  const rows: Array<[string, Event[], Effect[], State["reexec"]]> = [
    ["upgrade asked on the command socket: the requester waits, hears the opening, the preflight runs", [upgrade()],
      [{ type: "enroll", requestId: 7, kind: "upgrade" }, notify("upgrade", "Upgrading smoothly, as commanded"), { type: "run-preflight" }],
      { kind: "upgrade", mode: "smooth", requestedAt: T0 + 1000, phase: "preflight" }],
    ["upgrade_fleet", [upgrade(7, "fleet")],
      [{ type: "enroll", requestId: 7, kind: "upgrade" }, notify("upgrade", "Upgrading fleet, as commanded"), { type: "run-preflight" }],
      { kind: "upgrade", mode: "fleet", requestedAt: T0 + 1000, phase: "preflight" }],
    ["reload", [reload()],
      [{ type: "enroll", requestId: 8, kind: "reload" }, notify("reload", "Reloading einhorn, as commanded"), { type: "run-preflight" }],
      { kind: "reload", mode: null, requestedAt: T0 + 1000, phase: "preflight" }],
    ["HUP: a smooth upgrade nobody waits on", [sig("HUP")],
      [notify("upgrade", "Upgrading smoothly, as commanded"), { type: "run-preflight" }],
      { kind: "upgrade", mode: "smooth", requestedAt: T0 + 1000, phase: "preflight" }],
    ["ALRM (Einhorn's deprecated upgrade signal): a smooth upgrade nobody waits on, as HUP", [sig("ALRM")],
      [notify("upgrade", "Upgrading smoothly, as commanded"), { type: "run-preflight" }],
      { kind: "upgrade", mode: "smooth", requestedAt: T0 + 1000, phase: "preflight" }],
    ["a second request while the first's preflight runs is refused to its requester alone", [upgrade(1), reload(2)],
      [{ type: "enroll", requestId: 1, kind: "upgrade" }, notify("upgrade", "Upgrading smoothly, as commanded"), { type: "run-preflight" },
        { type: "refuse", requestId: 2, message: "Reload refused: an upgrade is already being prepared" }],
      { kind: "upgrade", mode: "smooth", requestedAt: T0 + 1000, phase: "preflight" }],
    ["HUP during the exec is answered by the re-exec under way", [reload(2), passed, sig("HUP")],
      [{ type: "enroll", requestId: 2, kind: "reload" }, notify("reload", "Reloading einhorn, as commanded"), { type: "run-preflight" },
        notify("reload", "Preflight passed (new einhorn 9.9.9); re-executing the master"), { type: "exec", pending: { kind: "reload", mode: null, requestedAt: T0 + 1000 } }],
      { kind: "reload", mode: null, requestedAt: T0 + 1000, phase: "exec" }],
    ["a request while stopping is refused", [sig("TERM"), upgrade(3)],
      [{ type: "refuse", requestId: 3, message: "Upgrade refused: the master is stopping" }], null],
  ];
  for (const [title, events, want, reexec] of rows) {
    test(title, () => {
      const r = run(atRest(), events);
      expect(lifecycle(r.effects)).toEqual(want);
      expect(r.state.reexec).toEqual(reexec);
    });
  }

  test("a reload while a rollout is under way is refused; an upgrade supersedes the rollout (its waiters are told first)", () => {
    const rolling = run(atRest(), [upgrade(1), passed, resumed]).state;
    expect(rolling.upgrade).not.toBeNull();
    expect(lifecycle(run(rolling, [reload(2)]).effects)).toEqual([{ type: "refuse", requestId: 2, message: "Reload refused: an upgrade (to version 1) is still rolling out" }]);
    const next = run(rolling, [upgrade(3)]);
    expect(lifecycle(next.effects)).toEqual([
      notify("upgrade", "Upgrade to version 1 superseded by a newer upgrade", true, true),
      { type: "enroll", requestId: 3, kind: "upgrade" }, notify("upgrade", "Upgrading smoothly, as commanded"), { type: "run-preflight" },
    ]);
  });
});

describe("lifecycle: preflight and exec", () => {
  test("a passing preflight asks for the exec with what the next image continues", () => {
    const r = run(atRest(), [upgrade(), passed]);
    expect(lifecycle(r.effects).slice(3)).toEqual([notify("upgrade", "Preflight passed (new einhorn 9.9.9); re-executing the master"), { type: "exec", pending: pendingUpgrade }]);
    expect(r.state.reexec?.phase).toBe("exec");
  });

  test("a failing preflight ends the wait with the reason; nothing changed; the next request is accepted", () => {
    const r = run(atRest(), [upgrade(), failed]);
    expect(lifecycle(r.effects).at(-1)).toEqual(notify("upgrade", "Upgrade failed: preflight 'x --upgrade-check' exited with status 1. Nothing was changed; the current workers keep serving.", true, true));
    expect(r.state.reexec).toBeNull();
    expect(r.state.version).toBe(0);
    expect(lifecycle(run(r.state, [reload(9)]).effects)[0]).toEqual({ type: "enroll", requestId: 9, kind: "reload" });
  });

  test("a failed execve ends the wait with the reason; this image goes on", () => {
    const r = run(atRest(), [reload(), passed, { type: "exec-failed", reason: "execve /x: ENOENT (No such file or directory)" }]);
    expect(lifecycle(r.effects).at(-1)).toEqual(notify("reload", "Reload failed: could not re-execute the master: execve /x: ENOENT (No such file or directory). Nothing was changed; the current workers keep serving.", true, true));
    expect(r.state.reexec).toBeNull();
  });

  const stray: Array<[string, Event[]]> = [
    ["a preflight result nobody waits for", [passed]],
    ["a preflight result during the exec", [upgrade(), passed, failed]],
    ["an exec failure with no exec under way", [upgrade(), { type: "exec-failed", reason: "x" }]],
  ];
  for (const [title, events] of stray) {
    test(`${title} is ignored`, () => {
      const before = run(atRest(), events.slice(0, -1));
      const after = run(before.state, events.slice(-1));
      expect(lifecycle(after.effects)).toEqual([]);
      expect(after.state.reexec).toEqual(before.state.reexec);
    });
  }
});

describe("lifecycle: signals in every phase", () => {
  const phases: Array<[string, Event[]]> = [
    ["at rest", []],
    ["during the preflight", [upgrade()]],
    ["during the exec", [upgrade(), passed]],
    ["during a rollout", [upgrade(), passed, resumed]],
  ];
  for (const [phase, before] of phases) {
    for (const [signal, workerSignal] of [["TERM", "SIGTERM"], ["INT", "SIGUSR2"], ["USR2", "SIGUSR2"]] as const) {
      test(`${signal} ${phase}: every worker gets ${workerSignal}; an upgrade or reload under way is abandoned (a preflight killed, an exec cancelled)`, () => {
        const s0 = run(atRest(), before).state;
        const r = run(s0, [sig(signal)]);
        expect(logs(r.effects)[0]).toBe(`Received SIG${signal}`);
        expect(r.state.stopping?.signal).toBe(workerSignal);
        const kills = r.effects.filter((f) => f.type === "kill");
        expect(kills.length).toBe(s0.workers.length);
        expect(kills.every((k) => k.type === "kill" && k.signal === workerSignal)).toBe(true);
        expect(r.state.reexec).toBeNull();
        const life = lifecycle(r.effects);
        if (phase === "at rest") expect(life).toEqual([]);
        if (phase === "during the preflight") expect(life).toEqual([{ type: "cancel-preflight" }, notify("upgrade", `Upgrade abandoned: the master is stopping (${workerSignal})`, true, true)]);
        if (phase === "during the exec") expect(life).toEqual([{ type: "cancel-exec" }, notify("upgrade", `Upgrade abandoned: the master is stopping (${workerSignal})`, true, true)]);
        if (phase === "during a rollout") expect(life).toEqual([{ type: "upgrade-finished", ok: false, message: `Upgrade abandoned: the master is stopping (${workerSignal})` }]);
        // A preflight result arriving after the stop changes nothing.
        expect(lifecycle(run(r.state, [passed]).effects)).toEqual([]);
      });
    }
    test(`QUIT ${phase}: QUIT to every worker, the preflight or exec (if any) cancelled, exit at once with status 1 (as Einhorn)`, () => {
      const r = run(run(atRest(), before).state, [sig("QUIT")]);
      const life = lifecycle(r.effects);
      expect(life.at(-1)).toEqual({ type: "exit", code: 1 });
      expect(life.some((f) => f.type === "cancel-exec")).toBe(phase === "during the exec");
      expect(life.some((f) => f.type === "cancel-preflight")).toBe(phase === "during the preflight");
    });
  }

  test("ALRM logs Einhorn's deprecation line at error level, then upgrades", () => {
    const r = run(atRest(), [sig("ALRM")]);
    const errors = r.effects.filter((f) => f.type === "log" && f.level === "error");
    expect(errors).toEqual([{ type: "log", level: "error", message: "Upgrading using SIGALRM is deprecated. Please switch to SIGHUP" }]);
    expect(logs(r.effects)).toEqual(["Received SIGALRM", "Upgrading using SIGALRM is deprecated. Please switch to SIGHUP", "Upgrading smoothly, as commanded"]);
  });

  test("ALRM while stopping is refused like HUP; during a rollout it supersedes it like HUP", () => {
    expect(run(atRest(), [sig("TERM"), sig("ALRM")]).state.reexec).toBeNull();
    const rolling = run(atRest(), [upgrade(1), passed, resumed]).state;
    expect(rolling.upgrade).not.toBeNull();
    expect(run(rolling, [sig("ALRM")]).state.reexec).toEqual({ kind: "upgrade", mode: "smooth", requestedAt: T0 + 1000, phase: "preflight" });
  });

  test("a signal the master has no use for is logged and changes nothing", () => {
    const s0 = atRest();
    const r = run(s0, [sig("WINCH")]);
    expect(logs(r.effects)).toEqual(["Received SIGWINCH", "No action for SIGWINCH"]);
    expect(r.state.stopping).toBeNull();
  });
});

describe("lifecycle: resume in the new image", () => {
  test("an upgrade: the state crosses the exec as JSON; the new image says so and rolls a new version", () => {
    const handed = upgradeState(JSON.parse(JSON.stringify(run(atRest(), [upgrade(), passed]).state)), T0 + 2000);
    expect(handed.reexec?.phase).toBe("exec");
    const r = run(handed, [resumed], T0 + 1250);
    expect(lifecycle(r.effects)[0]).toEqual(notify("upgrade", "Master re-executed as einhorn 9.9.9 (pid 4242 kept, 250 ms since the request); starting the new workers"));
    expect(r.state.reexec).toBeNull();
    expect(r.state.upgrade?.mode).toBe("smooth");
    expect(r.state.version).toBe(1);
    expect(r.effects.some((f) => f.type === "spawn" && f.version === 1)).toBe(true);
  });

  test("a reload: the wait ends; same version, same workers", () => {
    const s0 = run(atRest(), [reload(), passed]).state;
    const r = run(s0, [resumed], T0 + 1100);
    expect(lifecycle(r.effects)).toEqual([notify("reload", "Reload done: master 4242 is now einhorn 9.9.9 (100 ms)", true)]);
    expect(r.state.version).toBe(0);
    expect(r.state.workers.map((w) => w.pid)).toEqual(s0.workers.map((w) => w.pid));
  });

  test("a TERM pending across the exec, read before resuming: the upgrade is abandoned and no new worker starts", () => {
    const handed = run(atRest(), [upgrade(), passed]).state;
    const r = run(handed, [sig("TERM"), resumed]);
    expect(lifecycle(r.effects)).toEqual([{ type: "cancel-exec" }, notify("upgrade", "Upgrade abandoned: the master is stopping (SIGTERM)", true, true)]);
    expect(r.effects.some((f) => f.type === "spawn")).toBe(false);
  });

  test("from an einhorn whose state had no reexec: the handoff's pending says what to continue", () => {
    const old = JSON.parse(JSON.stringify(atRest()));
    delete old.reexec;
    const s = upgradeState(old, T0);
    expect(s.reexec).toBeNull();
    const r = run(s, [{ ...resumed, pending: { kind: "upgrade", mode: "fleet", requestedAt: T0 } } as Event]);
    expect(r.state.upgrade?.mode).toBe("fleet");
    const stopped = run(s, [sig("TERM"), { ...resumed, pending: { kind: "reload", mode: null, requestedAt: T0 } } as Event]);
    expect(lifecycle(stopped.effects)).toEqual([notify("reload", "Reload abandoned: the master is stopping (SIGTERM)", true, true)]);
  });

  test("a plain restart of a resumed image with nothing pending changes nothing", () => {
    const s0 = atRest();
    expect(lifecycle(run(s0, [resumed]).effects)).toEqual([]);
  });
});

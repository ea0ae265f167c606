// The core simulator every core test drives step() with: it plays the I/O
// shell, feeding events, performing "spawn" effects by immediately feeding
// { type: "spawned" } with fresh fake pids, and recording every step. On
// every step it checks that the input state was not mutated and that the new
// state survives a JSON round trip (it must cross the master's re-exec).
import { expect } from "bun:test";
import { step, type Effect, type Event, type StepResult } from "../src/core/step";
import type { SignalName } from "../src/signal-names";
import { DEFAULT_SETTINGS, initialState, type Settings, type State, type Worker } from "../src/core/state";
import { DEFAULT_SPEC, type WorkerSpec } from "../src/core/generation";

/** The core's settings, plus the first generation's retire signal (which lives in its spec). */
export type SimSettings = Partial<Settings> & { retireSignal?: SignalName };

/** The spec of a simulated master's first generation. */
export const SPEC_A: WorkerSpec = { ...DEFAULT_SPEC, program: ["./server"], programPath: "/srv/releases/1/server", cwd: "/srv/releases/1" };

export type SpawnFx = Extract<Effect, { type: "spawn" }>;
export type KillFx = Extract<Effect, { type: "kill" }>;
export type LogFx = Extract<Effect, { type: "log" }>;
export interface Rec { at: number; event: Event; effects: Effect[]; wakeAt: number | null; state: State }

export const MANUAL = { kind: "manual" } as const;
export const timer = (seconds: number) => ({ kind: "timer", seconds }) as const;

export class Sim {
  state: State;
  now: number;
  wakeAt: number | null = null;
  nextPid = 100;
  /** Perform spawn effects at once (as the shell does). Off: they wait in `outstanding`. */
  autoSpawn = true;
  outstanding: SpawnFx[] = [];
  /** The next N spawns fail (spawn-failed instead of spawned). */
  failNextSpawns = 0;
  /** Extra events the "world" produces right after a worker is spawned (e.g. it dies at once). */
  afterSpawn: ((pid: number, fx: SpawnFx) => Event[]) | null = null;
  history: Rec[] = [];
  /** Times at which a step returned wakeAt <= now (the shell would wake again at once). */
  spins: number[] = [];

  constructor({ retireSignal, ...settings }: SimSettings = {}, now = 0) {
    this.state = initialState({ ...DEFAULT_SETTINGS, ...settings }, now, { ...SPEC_A, ...(retireSignal ? { retireSignal } : {}) });
    this.now = now;
  }

  /** Feed one event at `at` (and everything it causes at the same instant); returns all effects. */
  send(event: Event, at = this.now): Effect[] {
    if (at < this.now) throw new Error(`time goes backwards: ${at} < ${this.now}`);
    this.now = at;
    const queue: Event[] = [event];
    const out: Effect[] = [];
    while (queue.length > 0) {
      const r = this.raw(queue.shift()!);
      out.push(...r.effects);
      for (const f of r.effects) {
        if (f.type !== "spawn") continue;
        if (this.autoSpawn) queue.push(...this.perform(f));
        else this.outstanding.push(f);
      }
    }
    return out;
  }

  /** With autoSpawn off: report the outstanding spawns now. */
  completeSpawns(at = this.now): Effect[] {
    const todo = this.outstanding.splice(0);
    const out: Effect[] = [];
    for (const f of todo) for (const ev of this.perform(f)) out.push(...this.send(ev, at));
    return out;
  }

  private perform(f: SpawnFx): Event[] {
    if (this.failNextSpawns > 0) {
      this.failNextSpawns--;
      return [{ type: "spawn-failed", spawnId: f.spawnId, reason: "ENOENT: no such program" }];
    }
    const pid = this.nextPid++;
    return [{ type: "spawned", spawnId: f.spawnId, pid }, ...(this.afterSpawn?.(pid, f) ?? [])];
  }

  private raw(ev: Event): StepResult {
    const input = this.state;
    const before = structuredClone(input);
    const r = step(input, ev, this.now);
    expect(input).toStrictEqual(before); // step never mutates its input
    expect(JSON.parse(JSON.stringify(r.state))).toStrictEqual(r.state); // state is JSON-safe
    if (r.wakeAt !== null && r.wakeAt <= this.now) this.spins.push(this.now);
    this.state = r.state;
    this.wakeAt = r.wakeAt;
    this.history.push({ at: this.now, event: ev, effects: r.effects, wakeAt: r.wakeAt, state: r.state });
    return r;
  }

  tick(at = this.now): Effect[] { return this.send({ type: "tick" }, at); }
  ack(pid: number, at = this.now): Effect[] { return this.send({ type: "ack", pid }, at); }
  exit(pid: number, at = this.now, code: number | null = 0, signal: SignalName | null = null): Effect[] {
    return this.send({ type: "exited", pid, code, signal }, at);
  }

  /** Follow wakeAt up to `to` (stops, without ticking, if the core asks to be woken at once). */
  advance(to: number): Effect[] {
    const out: Effect[] = [];
    while (this.wakeAt !== null && this.wakeAt <= to && this.wakeAt > this.now) out.push(...this.tick(this.wakeAt));
    if (to > this.now) this.now = to;
    return out;
  }

  pids(version?: number): number[] {
    return this.state.workers.filter((w) => version === undefined || w.version === version).map((w) => w.pid);
  }
  w(pid: number): Worker {
    const w = this.state.workers.find((x) => x.pid === pid);
    if (!w) throw new Error(`no live worker ${pid}`);
    return w;
  }
  byIndex(index: number): Worker {
    const w = this.state.workers.find((x) => x.index === index && !x.signals.length);
    if (!w) throw new Error(`no unsignaled worker with index ${index}`);
    return w;
  }
  /** Every spawn effect so far, with the time it was asked for. */
  spawnLog(): (SpawnFx & { at: number })[] {
    return this.history.flatMap((r) => spawns(r.effects).map((s) => ({ ...s, at: r.at })));
  }
  ackAll(at = this.now): void {
    for (const w of this.state.workers.filter((x) => x.ackedAt === null)) this.ack(w.pid, at);
  }
}

export const spawns = (fx: Effect[]): SpawnFx[] => fx.filter((f): f is SpawnFx => f.type === "spawn");
export const kills = (fx: Effect[]): [number, string][] => fx.filter((f): f is KillFx => f.type === "kill").map((k) => [k.pid, k.signal]);
export const logs = (fx: Effect[], level?: LogFx["level"]): string[] =>
  fx.filter((f): f is LogFx => f.type === "log" && (level === undefined || f.level === level)).map((l) => l.message);
export const nonLog = (fx: Effect[]): Effect[] => fx.filter((f) => f.type !== "log");
export const finished = (fx: Effect[]) => fx.filter((f) => f.type === "upgrade-finished");
export const exits = (fx: Effect[]) => fx.filter((f) => f.type === "exit");

/** N workers started at `at` and all ACKed (manual mode by default) 10 ms later. */
export function ready(n: number, settings: SimSettings = {}, at = 0): Sim {
  const sim = new Sim({ number: n, ackMode: MANUAL, seconds: 1, maxUnacked: 1, ...settings }, at);
  sim.send({ type: "start" }, at);
  if (sim.state.settings.ackMode.kind === "manual") sim.ackAll(at + 10);
  else sim.tick(at + sim.state.settings.ackMode.seconds * 1000);
  expect(sim.state.workers.every((w) => w.ackedAt !== null)).toBe(true);
  return sim;
}

export const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => from + i);


// The decision core: step(state, event, now) -> { state, effects, wakeAt }.
// No clock, no I/O, no Bun. The I/O shell turns signals, timers, child exits
// and command-socket messages into events, performs the effects in order and
// calls step again with { type: "tick" } at `wakeAt`.
import {
  ackedCurrentCount, backoffMs, REPLACE_STREAK_RESET_SECONDS, YOUNG_OVER_LIMIT_SECONDS, currentWorkers, findWorker, freeIndex, isAcked, isFleetRollout, isRetiring, missingCount,
  askedToLeave, otherVersionWorkers, replacementExtra, RETIRE_GRACE_SECONDS, RETIRING_SIGNALS, retireSignalOf, spawnIntervalMs, specOf, unackedCount, wasSent,
} from "./pool";
import { specChanges, specDigest, type WorkerSpec } from "./generation";
import type { SignalName } from "../signal-names";
import { RECENT_EXITS, type RetireReason, type Settings, type State, type Worker } from "./state";
import { isMasterSignal, MASTER_SIGNALS } from "./master-signals";

export type UpgradeMode = "smooth" | "fleet";

export type Event =
  | { type: "start" }
  | { type: "tick" }
  /** `at`: when the process was started (the shell may report it a little later); default: now. */
  | { type: "spawned"; spawnId: number; pid: number; at?: number }
  | { type: "spawn-failed"; spawnId: number; reason: string }
  /** `signal`: what killed it; null with `code` null only for a signal Linux has no name for (32, 33). */
  | { type: "exited"; pid: number; code: number | null; signal: SignalName | null }
  /**
   * A worker found gone without an exit status: another process reaped it
   * (a --reexec-as wrapper that ran while a worker died). Counted like an
   * exit of unknown cause; its pid is never signalled again.
   */
  | { type: "vanished"; pid: number; reason: string }
  | { type: "ack"; pid: number }
  | { type: "ping"; pid: number; requestId: unknown }
  | { type: "inc" }
  | { type: "dec" }
  | { type: "set-workers"; number: number }
  /**
   * Graceful stop: send `signal` (default: the retire signal) to every worker,
   * spawn no more, exit when none is left (INT, TERM, USR2, die).
   */
  | { type: "stop"; signal?: SignalName }
  /** QUIT: pass QUIT to every worker and exit at once, with status 1 (as Einhorn). */
  | { type: "quit" }
  | { type: "signal-workers"; signals: SignalName[] }
  /**
   * Roll a new generation running `spec` (default: the current generation's):
   * what `resumed` does for an upgrade, once the new master image runs.
   */
  | { type: "upgrade"; mode: UpgradeMode; spec?: WorkerSpec }
  | { type: "settings"; patch: Partial<Settings> }
  /**
   * Replace this worker gracefully: its successor first, then the retiring
   * signal (--max-memory). A worker younger than `youngSeconds` (default
   * YOUNG_OVER_LIMIT_SECONDS; the shell passes EINHORN_TIMEOUTS's
   * max-memory-young) is taken as the program's normal size instead.
   */
  | { type: "replace"; pid: number; reason: string; youngSeconds?: number }
  // --- the master's own lifecycle: upgrade / reload requests, preflight, exec, resume
  /** A signal to the master (CHLD excepted: the shell reaps). */
  | { type: "signal"; signal: SignalName }
  /**
   * An upgrade or reload asked for (command socket; HUP comes as `signal`).
   * `requestId` names the requester for `enroll`/`refuse` effects (null: nobody waits).
   */
  | { type: "reexec-requested"; kind: ReexecKind; mode: UpgradeMode | null; requestId: number | null }
  /** The preflight (`run-preflight`) finished. */
  | { type: "preflight-done"; ok: true; detail: string }
  | { type: "preflight-done"; ok: false; reason: string }
  /** The execve (`exec`) failed; this image goes on. */
  | { type: "exec-failed"; reason: string }
  /**
   * A new master image took over from the handoff and acted on the signals
   * pending since the exec. `pending` only from an einhorn whose state had no
   * `reexec` (older); `version` and `pid` are for the messages. `spec`: what
   * the new image's configuration says workers run, the candidate an upgrade
   * rolls out as its new generation (a reload leaves the generations alone).
   */
  | { type: "resumed"; version: string; pid: number; pending?: { kind: ReexecKind; mode: UpgradeMode | null; requestedAt: number } | null; spec?: WorkerSpec };

export type ReexecKind = "upgrade" | "reload";

export type LogLevel = "debug" | "info" | "warn" | "error";

export type Effect =
  | { type: "spawn"; spawnId: number; index: number; version: number }
  | { type: "kill"; pid: number; signal: SignalName }
  | { type: "log"; level: LogLevel; message: string }
  /**
   * An upgrade ended (its waiters are told, as by a final `notify`; metrics
   * count it): done (after its bake, when there is one), failed, or rolled
   * back after a bad bake.
   */
  | { type: "upgrade-finished"; ok: boolean; message: string; rolledBack?: boolean }
  | { type: "exit"; code: number }
  // --- lifecycle effects
  /** Requester `requestId` now waits for messages about `kind`. */
  | { type: "enroll"; requestId: number; kind: ReexecKind }
  /** Tell requester `requestId` (only) that its request was refused. */
  | { type: "refuse"; requestId: number; message: string }
  /** Tell everyone waiting on `kind`; `final` ends their wait. */
  | { type: "notify"; kind: ReexecKind; message: string; final: boolean; error: boolean }
  /** Run the next image's command with --upgrade-check; report with `preflight-done`. */
  | { type: "run-preflight" }
  /** Hand over and execve the next image (at a moment when no signal is in flight); report failure with `exec-failed`. */
  | { type: "exec"; pending: { kind: ReexecKind; mode: UpgradeMode | null; requestedAt: number } }
  /** Forget an `exec` not yet performed (a stop came first). */
  | { type: "cancel-exec" }
  /** End a preflight still running (a stop came first): its verdict is not wanted, and the master must not leave it behind. */
  | { type: "cancel-preflight" };

export interface StepResult { state: State; effects: Effect[]; wakeAt: number | null }

export const MAX_WORKERS = 1000;

/**
 * A worker's signal history stays bounded (a cron job sending `signal HUP`
 * daily would otherwise grow it, and with it every state copy and answer):
 * the first retiring signals, which drive escalation, are kept, plus the
 * most recent others.
 */
const MAX_SIGNAL_RECORDS = 32;
function trimSignals(list: Worker["signals"]): Worker["signals"] {
  const retiring = list.filter((x) => RETIRING_SIGNALS.has(x.signal)).slice(0, 8);
  const recent = list.filter((x) => !retiring.includes(x)).slice(-(MAX_SIGNAL_RECORDS - retiring.length - 8));
  return [...retiring, ...recent].sort((a, b) => a.at - b.at);
}

class Step {
  readonly fx: Effect[] = [];
  /** This step is a timer's wake-up (see checkUpgrade). */
  tick = false;
  constructor(readonly s: State, readonly now: number) {}

  log(level: LogLevel, message: string): void { this.fx.push({ type: "log", level, message }); }

  /** Send `sig`; a retiring one records why the worker was asked to leave (the first reason counts). */
  signal(w: Worker, sig: SignalName, reason: RetireReason = "signal"): void {
    if (RETIRING_SIGNALS.has(sig) && !w.retireReason) w.retireReason = reason;
    w.signals.push({ signal: sig, at: this.now });
    if (w.signals.length > MAX_SIGNAL_RECORDS) w.signals = trimSignals(w.signals);
    this.fx.push({ type: "kill", pid: w.pid, signal: sig });
  }

  spawn(): void {
    const s = this.s;
    const spawnId = s.nextSpawnId++;
    const index = freeIndex(s);
    s.pending.push({ spawnId, index, version: s.version });
    s.lastSpawnAt = this.now;
    this.fx.push({ type: "spawn", spawnId, index, version: s.version });
  }

  ack(w: Worker, at: number, how: string): void {
    const s = this.s;
    w.ackedAt = at;
    s.consecutiveDeaths = 0;
    this.log("info", `Worker ${w.pid} (index ${w.index}) is up: ${how}`);
    if (s.upgrade && w.version === s.version) {
      s.upgrade.deathsBeforeAck = 0;
      this.fx.push({
        type: "notify",
        kind: "upgrade",
        message: `Upgrade progress: ${ackedCurrentCount(s)} of ${s.settings.number} new workers up (pid ${w.pid} ACKed)`,
        final: false,
        error: false,
      });
    }
  }

  // --- time-driven housekeeping -------------------------------------------------

  timerAcks(): void {
    const mode = this.s.settings.ackMode;
    if (mode.kind !== "timer") return;
    for (const w of this.s.workers) {
      const due = w.spawnedAt + mode.seconds * 1000;
      if (!isAcked(w) && !isRetiring(w) && this.now >= due) this.ack(w, due, `alive for ${mode.seconds}s (timer ACK)`);
    }
  }

  /** Ask a worker to leave with its own generation's retire signal. */
  retire(w: Worker, reason: RetireReason): void {
    this.signal(w, retireSignalOf(this.s, w.version), reason);
  }

  /**
   * Workers asked to leave that are still alive: a warning naming each one
   * after RETIRE_GRACE_SECONDS (unless -t kills it sooner), and with -t, a
   * warning then SIGKILL at the signal timeout.
   */
  escalate(): void {
    const t = this.s.settings.signalTimeout;
    for (const w of this.s.workers) {
      const first = askedToLeave(this.s, w);
      if (!first || wasSent(w, "SIGKILL")) continue;
      const name = `Worker ${w.pid} (index ${w.index}, version ${w.version})`;
      if (t !== null && this.now >= first.at + t * 1000) {
        this.log("warn", `${name} is still alive ${t}s after ${first.signal}; sending SIGKILL (-t ${t})`);
        this.signal(w, "SIGKILL", w.retireReason ?? (this.s.stopping ? "stop" : "signal"));
      } else if (!w.retireWarned && this.now >= first.at + RETIRE_GRACE_SECONDS * 1000) {
        w.retireWarned = true;
        const next = t !== null ? `; SIGKILL in ${t - RETIRE_GRACE_SECONDS}s (-t ${t})` : "; it is never killed without -t";
        this.log("warn", `${name} is still alive ${RETIRE_GRACE_SECONDS}s after ${first.signal}: does it handle ${first.signal}? (choose another with --retire-signal)${next}`);
      }
    }
  }

  // --- upgrades --------------------------------------------------------------------

  failUpgrade(reason: string): void {
    const s = this.s;
    const up = s.upgrade!;
    const failed = s.version;
    s.version = up.fromVersion;
    s.upgrade = null;
    s.consecutiveDeaths = 0;
    const what = up.rollback ? "Rollback" : "Upgrade";
    const message = `${what} failed: ${reason}. Version ${failed} is being stopped; version ${up.fromVersion} keeps serving.`;
    this.log("error", message);
    // Said apart, before the final line: nothing of the failed spec stays in force.
    const kept = `Version ${up.fromVersion} replaces any worker it loses from its own spec (${specDigest(specOf(s, up.fromVersion))}), not version ${failed}'s`;
    this.log("info", kept);
    this.fx.push({ type: "notify", kind: "upgrade", message: kept, final: false, error: false });
    this.fx.push({ type: "upgrade-finished", ok: false, message });
  }

  checkUpgrade(): void {
    const s = this.s;
    const up = s.upgrade;
    if (!up) return;
    if (up.deathsBeforeAck >= s.settings.upgradeMaxDeaths) {
      this.failUpgrade(`${up.deathsBeforeAck} new workers in a row exited before they ACKed`);
      return;
    }
    const timeout = s.settings.ackTimeout;
    // A deadline is enforced by a tick only. The shell delivers a tick once
    // every input waiting in its sockets has been stepped (interpreter.ts,
    // onWake), so ACKs that arrived while the master was stopped or busy all
    // count; enforcing it on any step would let the first of them fail the
    // upgrade for the others still queued behind it.
    if (timeout !== null && this.tick) {
      const late = currentWorkers(s).find((w) => !isAcked(w) && !isRetiring(w) && this.now >= w.spawnedAt + timeout * 1000);
      if (late) {
        this.failUpgrade(`new worker ${late.pid} did not ACK within ${timeout}s`);
        return;
      }
    }
    if (ackedCurrentCount(s) >= s.settings.number) {
      s.upgrade = null;
      const secs = ((this.now - up.startedAt) / 1000).toFixed(3);
      if (up.rollback) {
        // Its requester was told at the rollback; this only ends the rollout.
        this.log("info", `Rollback done in ${secs}s: version ${s.version} (the spec of version ${s.generations[String(s.version)]?.rollbackOf ?? "?"}) is up`);
        return;
      }
      const bake = s.settings.upgradeBake;
      if (bake > 0) {
        s.bake = { version: s.version, previous: up.fromVersion, since: this.now, until: this.now + bake * 1000, deaths: 0 };
        const message = `Upgrade to version ${s.version} is up in ${secs}s; baking for ${bake}s (more than ${s.settings.upgradeMaxDeaths} unasked exits roll back to version ${up.fromVersion}'s spec)`;
        this.log("info", message);
        this.fx.push({ type: "notify", kind: "upgrade", message, final: false, error: false });
        return;
      }
      this.log("info", `Upgrade to version ${s.version} done in ${secs}s`);
      this.fx.push({ type: "upgrade-finished", ok: true, message: "Upgrade done" });
    }
  }

  // --- the bake window after an upgrade, and rollback -------------------------------

  /** The bake window ran out with the new generation healthy: the upgrade is done, the previous spec let go. */
  checkBake(): void {
    const b = this.s.bake;
    if (!b || this.now < b.until) return;
    this.s.bake = null;
    const message = `Upgrade done: version ${b.version} baked for ${((b.until - b.since) / 1000).toFixed(0)}s with ${b.deaths} unasked exit${b.deaths === 1 ? "" : "s"}`;
    this.log("info", message);
    this.fx.push({ type: "upgrade-finished", ok: true, message });
  }

  /** An unasked exit of a worker of the generation under bake: past the limit, roll back. */
  bakeDeath(w: Worker): void {
    const s = this.s;
    const b = s.bake;
    if (!b || w.version !== b.version) return;
    b.deaths++;
    if (b.deaths > s.settings.upgradeMaxDeaths) this.rollback(`${b.deaths} of its workers exited unasked within ${((this.now - b.since) / 1000).toFixed(1)}s of it coming up (more than --upgrade-max-deaths ${s.settings.upgradeMaxDeaths})`);
  }

  /**
   * Roll back a baked generation: the previous generation's spec becomes a
   * new generation, rolled out like an upgrade (same ACK rules, smooth), and
   * the bad generation is retired as its replacements come up. Its own
   * failure falls back to the bad generation, which is still serving then.
   */
  rollback(reason: string): void {
    const s = this.s;
    const b = s.bake!;
    s.bake = null;
    const prev = s.generations[String(b.previous)];
    if (!prev) {
      this.log("error", `Cannot roll back version ${b.version}: the spec of version ${b.previous} is gone`);
      return;
    }
    const next = ++s.lastVersion;
    s.generations[String(next)] = { version: next, spec: prev.spec, createdAt: this.now, rollbackOf: b.previous };
    s.upgrade = { mode: "smooth", startedAt: this.now, fromVersion: b.version, deathsBeforeAck: 0, rollback: true };
    s.replacement = null;
    s.version = next;
    s.consecutiveDeaths = 0;
    const message = `Upgrade to version ${b.version} rolled back: ${reason}; rolling out version ${b.previous}'s spec (${specDigest(prev.spec)}) again as version ${next}`;
    this.log("error", message);
    this.fx.push({ type: "upgrade-finished", ok: false, message, rolledBack: true });
  }

  /** Forget the specs no worker, spawn, fallback or bake needs any more. */
  pruneGenerations(): void {
    const s = this.s;
    const keep = new Set<string>([s.version, ...s.workers.map((w) => w.version), ...s.pending.map((p) => p.version)].map(String));
    if (s.upgrade) keep.add(String(s.upgrade.fromVersion));
    if (s.bake) { keep.add(String(s.bake.version)); keep.add(String(s.bake.previous)); }
    for (const v of Object.keys(s.generations)) if (!keep.has(v)) delete s.generations[v];
  }

  // --- the reconcile pass: replenish, then cull --------------------------------------

  surgeCapReached(): boolean {
    const s = this.s;
    const extra = s.settings.maxUpgradeAdditional;
    if (!s.upgrade || extra === null) return false;
    return s.workers.length + s.pending.length >= s.settings.number + extra;
  }

  /** Spawning waits on something other than the clock: unacked workers or the surge cap. */
  spawnBlocked(): boolean {
    const s = this.s;
    return (!isFleetRollout(s) && unackedCount(s) >= s.settings.maxUnacked) || this.surgeCapReached();
  }

  /**
   * With a surge cap, a rollout can reach a point where no new worker may
   * start until an old one leaves, and (fleet, or smooth with no new worker
   * in flight) no old one would leave until new ones ACK. Break that tie by
   * retiring old workers to make room, oldest first, once every new worker
   * started so far has ACKed: capacity dips by at most the room made.
   */
  makeRoom(): void {
    const s = this.s;
    if (!s.upgrade || !this.surgeCapReached() || unackedCount(s) > 0) return;
    const room = Math.min(missingCount(s), s.workers.length + s.pending.length - (s.settings.number + (s.settings.maxUpgradeAdditional ?? 0)) + 1);
    if (room <= 0) return;
    const old = otherVersionWorkers(s).filter((w) => !isRetiring(w)).sort(Step.retireOrder);
    const retiringOld = otherVersionWorkers(s).filter(isRetiring).length;
    // Old workers already on their way out will free room by themselves.
    const needed = room - retiringOld;
    for (const w of old.slice(0, Math.max(0, needed))) {
      this.log("info", `Surge cap reached: retiring old worker ${w.pid} to make room for the new version`);
      this.retire(w, "upgrade");
    }
  }

  replenish(): void {
    const s = this.s;
    let missing = missingCount(s) + replacementExtra(s);
    if (missing <= 0) return;
    if (!s.started) {
      // Reference: at the very first start every worker is spawned at once.
      s.started = true;
      this.log("info", `Launching ${missing} new worker${missing === 1 ? "" : "s"}`);
      while (missing-- > 0) this.spawn();
      return;
    }
    const fleet = isFleetRollout(s);
    while (missing > 0) {
      if (this.spawnBlocked()) return;
      const interval = spawnIntervalMs(s);
      if (!fleet && s.lastSpawnAt !== null && this.now < s.lastSpawnAt + interval) return;
      this.spawn();
      missing--;
      if (!fleet && interval > 0) return; // one spawn per interval
    }
  }

  /** Prefer retiring workers that are not serving yet, then the oldest. */
  static retireOrder(a: Worker, b: Worker): number {
    return Number(isAcked(a)) - Number(isAcked(b)) || a.spawnedAt - b.spawnedAt;
  }

  cull(): void {
    const s = this.s;
    const others = otherVersionWorkers(s).filter((w) => !isRetiring(w));
    if (s.upgrade?.mode === "smooth") {
      // Old workers leave one for one as new ones come up.
      const keep = Math.max(0, s.settings.number - ackedCurrentCount(s));
      others.sort(Step.retireOrder).slice(0, Math.max(0, others.length - keep)).forEach((w) => this.retire(w, "upgrade"));
    } else if (!s.upgrade) {
      for (const w of others) this.retire(w, "upgrade");
    }
    // Too many of the current version (after `dec`): unacked first, then the newest.
    const current = currentWorkers(s).filter((w) => !isRetiring(w));
    const excess = current.length - s.settings.number - replacementExtra(s);
    if (excess > 0) {
      current
        .sort((a, b) => Number(isAcked(a)) - Number(isAcked(b)) || b.spawnedAt - a.spawnedAt)
        .slice(0, excess)
        .forEach((w) => this.retire(w, "dec"));
    }
  }

  reconcile(): void {
    const s = this.s;
    this.timerAcks();
    if (s.stopping) {
      this.escalate();
      if (s.workers.length === 0 && s.pending.length === 0) {
        this.log("info", "Last worker is gone; exiting");
        this.fx.push({ type: "exit", code: 0 });
      }
      return;
    }
    this.checkUpgrade();
    this.checkBake();
    this.replenish();
    this.makeRoom();
    this.finishReplacement();
    this.cull();
    this.escalate();
  }

  wakeAt(): number | null {
    const s = this.s;
    const times: number[] = [];
    const mode = s.settings.ackMode;
    for (const w of s.workers) {
      if (mode.kind === "timer" && !isAcked(w) && !isRetiring(w)) times.push(w.spawnedAt + mode.seconds * 1000);
      const first = askedToLeave(s, w);
      if (first && !wasSent(w, "SIGKILL")) {
        if (s.settings.signalTimeout !== null) times.push(first.at + s.settings.signalTimeout * 1000);
        if (!w.retireWarned) times.push(first.at + RETIRE_GRACE_SECONDS * 1000);
      }
      if (s.upgrade && s.settings.ackTimeout !== null && w.version === s.version && !isAcked(w) && !isRetiring(w)) {
        times.push(w.spawnedAt + s.settings.ackTimeout * 1000);
      }
    }
    // Wake for the next spawn only when the interval is all that holds it back:
    // a spawn blocked by max_unacked or the surge cap waits for an ACK or an
    // exit, which are events of their own (waking "now" would spin).
    if (s.bake && !s.stopping) times.push(s.bake.until);
    if (!s.stopping && s.started && missingCount(s) + replacementExtra(s) > 0 && s.lastSpawnAt !== null && !this.spawnBlocked()) {
      times.push(s.lastSpawnAt + spawnIntervalMs(s));
    }
    return times.length ? Math.max(this.now, Math.min(...times)) : null;
  }

  // --- events -------------------------------------------------------------------------

  apply(e: Event): void {
    const s = this.s;
    switch (e.type) {
      case "start":
      case "tick":
        break;
      case "spawned": {
        const i = s.pending.findIndex((p) => p.spawnId === e.spawnId);
        if (i < 0) { this.log("error", `Spawn ${e.spawnId} reported twice (pid ${e.pid})`); break; }
        const [p] = s.pending.splice(i, 1);
        const w: Worker = { pid: e.pid, index: p!.index, version: p!.version, spawnedAt: e.at ?? this.now, ackedAt: null, signals: [], lastPing: null };
        s.workers.push(w);
        this.log("info", `===> Launched ${e.pid} (index ${w.index}, version ${w.version})`);
        if (s.stopping) this.signal(w, s.stopping.signal, "stop");
        break;
      }
      case "spawn-failed": {
        const i = s.pending.findIndex((p) => p.spawnId === e.spawnId);
        if (i < 0) break;
        const [p] = s.pending.splice(i, 1);
        this.recordDeath(p!.index, p!.version, null, null, false);
        this.log("error", `Could not start a worker (index ${p!.index}): ${e.reason}; next try in ${(backoffMs(s.settings.seconds, s.consecutiveDeaths) / 1000).toFixed(1)}s`);
        break;
      }
      case "exited":
      case "vanished": {
        const w = findWorker(s, e.pid);
        if (!w) { this.log("debug", `Reaped ${e.pid}, which is not a worker`); break; }
        s.workers = s.workers.filter((x) => x !== w);
        if (s.replacement?.pid === w.pid) {
          this.log("info", `Worker ${w.pid} (index ${w.index}) is replaced (${s.replacement.reason})`);
          s.replacement = null;
        }
        const how = e.type === "vanished" ? `is gone (${e.reason})` : e.signal ? `killed by ${e.signal}` : e.code === null ? "killed by a signal with no name" : `exited with status ${e.code}`;
        const code = e.type === "vanished" ? null : e.code;
        const signal = e.type === "vanished" ? null : e.signal;
        const expected = isRetiring(w) || s.stopping !== null;
        // A worker sent a stop signal that is not a retiring one (`die USR1`) was asked too.
        const asked: RetireReason | null = !expected ? null : w.retireReason ?? (s.stopping ? "stop" : "signal");
        if (!isAcked(w)) this.recordDeath(w.index, w.version, code, signal, expected);
        else this.recordExit(w.index, false, code, signal, expected);
        this.recordRecent({ at: this.now, pid: w.pid, index: w.index, version: w.version, code, signal, asked, acked: isAcked(w), ...(e.type === "vanished" ? { vanished: true } : {}) });
        const tail = !isAcked(w) && !expected ? ` before ACKing (${s.consecutiveDeaths} in a row)` : "";
        // Asked to leave: info. Left on its own: an error, unless it exited 0 (then a warning).
        this.log(expected ? "info" : code === 0 || e.type === "vanished" ? "warn" : "error", `===> Worker ${w.pid} (index ${w.index}) ${how}${tail}`);
        if (!expected) this.bakeDeath(w);
        break;
      }
      case "ack": {
        const w = findWorker(s, e.pid);
        if (!w) { this.log("warn", `Received an ACK for pid ${e.pid}, which is not a live worker; ignoring`); break; }
        // Expected from workers that always ACK (the einhorn/worker helper does): logged, ignored.
        if (s.settings.ackMode.kind !== "manual") { this.log("info", `Received a manual ACK from ${e.pid} in timer ACK mode; ignoring`); break; }
        if (isAcked(w)) { this.log("warn", `Worker ${e.pid} ACKed a second time; ignoring`); break; }
        this.ack(w, this.now, "manual ACK");
        break;
      }
      case "ping": {
        const w = findWorker(s, e.pid);
        if (!w) { this.log("warn", `Received a ping from pid ${e.pid}, which is not a live worker; ignoring`); break; }
        w.lastPing = { at: this.now, requestId: e.requestId };
        break;
      }
      case "inc":
        this.setNumber(s.settings.number + 1);
        break;
      case "dec":
        this.setNumber(s.settings.number - 1);
        break;
      case "set-workers":
        this.setNumber(e.number);
        break;
      case "stop": {
        // Without a signal named, each worker gets its own generation's retire signal.
        const sig = e.signal ?? retireSignalOf(s, s.version);
        s.stopping = { signal: sig, since: this.now };
        s.replacement = null;
        if (s.upgrade) this.fx.push({ type: "upgrade-finished", ok: false, message: `Upgrade abandoned: the master is stopping (${sig})` });
        else if (s.bake) this.fx.push({ type: "upgrade-finished", ok: false, message: `Upgrade to version ${s.bake.version}: its bake was cut short, the master is stopping (${sig})` });
        s.upgrade = null;
        s.bake = null;
        this.abandonReexec(sig);
        this.log("info", `Stopping: sending ${sig} to ${s.workers.length} worker(s); exiting once they are gone`);
        for (const w of s.workers) {
          const own = e.signal ?? retireSignalOf(s, w.version);
          if (!wasSent(w, own)) this.signal(w, own, "stop");
        }
        break;
      }
      case "quit":
        s.stopping = { signal: "SIGQUIT", since: this.now };
        this.abandonReexec("SIGQUIT");
        this.log("info", `Quitting: sending SIGQUIT to ${s.workers.length} worker(s) and exiting now`);
        for (const w of s.workers) this.signal(w, "SIGQUIT", "stop");
        // Einhorn 1.1.1's QUIT handler ends with exit(1): the master did not
        // wait for its workers, and supervisors and scripts read the status.
        this.fx.push({ type: "exit", code: 1 });
        return;
      case "signal-workers":
        for (const sig of e.signals) for (const w of s.workers) this.signal(w, sig);
        break;
      case "upgrade": {
        if (s.stopping) {
          this.log("warn", "Not upgrading: the master is stopping");
          break;
        }
        // Reference: an upgrade during an upgrade bumps the version and starts
        // over. The generation being rolled out is abandoned (it is not the
        // current version any more, so it is retired); a failure now falls
        // back to the version that was serving before the first one.
        const fromVersion = s.upgrade ? s.upgrade.fromVersion : s.version;
        if (s.upgrade) this.log("info", `Upgrade to version ${s.version} superseded; starting over`);
        // (requestReexec ends a bake before a new request enrolls; this is the safety net.)
        s.bake = null;
        const spec = e.spec ?? specOf(s, s.version);
        s.upgrade = { mode: e.mode, startedAt: this.now, fromVersion, deathsBeforeAck: 0 };
        // The rollout replaces every worker, the one being replaced included.
        s.replacement = null;
        s.version = ++s.lastVersion;
        s.generations[String(s.version)] = { version: s.version, spec, createdAt: this.now };
        s.consecutiveDeaths = 0;
        this.log("info", `Starting ${e.mode} upgrade to version ${s.version}`);
        const was = specOf(s, fromVersion);
        const changed = specChanges(was, spec);
        this.log("info", `Version ${s.version} runs spec ${specDigest(spec)}${changed.length ? `; changed from version ${fromVersion}'s (${specDigest(was)}): ${changed.join(", ")}` : ", as version " + fromVersion}`);
        break;
      }
      case "settings":
        s.settings = { ...s.settings, ...e.patch };
        break;
      case "replace":
        this.startReplacement(e.pid, e.reason, e.youngSeconds ?? YOUNG_OVER_LIMIT_SECONDS);
        break;
      case "signal":
        this.onSignal(e.signal);
        break;
      case "reexec-requested":
        this.requestReexec(e.kind, e.mode, e.requestId);
        break;
      case "preflight-done": {
        const r = s.reexec;
        if (!r || r.phase !== "preflight") { this.log("debug", "Preflight result with no re-exec waiting for it; ignored"); break; }
        if (!e.ok) { this.failReexec(e.reason); break; }
        this.fx.push({ type: "notify", kind: r.kind, message: `Preflight passed (${e.detail}); re-executing the master`, final: false, error: false });
        r.phase = "exec";
        this.fx.push({ type: "exec", pending: { kind: r.kind, mode: r.mode, requestedAt: r.requestedAt } });
        break;
      }
      case "exec-failed":
        if (!s.reexec || s.reexec.phase !== "exec") { this.log("debug", "Exec failure with no exec under way; ignored"); break; }
        this.failReexec(`could not re-execute the master: ${e.reason}`);
        break;
      case "resumed":
        this.resumed(e);
        break;
    }
  }

  // --- the master's own lifecycle --------------------------------------------------

  /** A signal to the master, by MASTER_SIGNALS (core/master-signals.ts). */
  onSignal(sig: SignalName): void {
    this.log("info", `Received ${sig}`);
    if (!isMasterSignal(sig)) {
      this.log("warn", `No action for ${sig}`);
      return;
    }
    const action = MASTER_SIGNALS[sig];
    switch (action) {
      case "graceful-stop":
        // Workers get the retire signal (USR2 unless --retire-signal).
        this.apply({ type: "stop" });
        break;
      case "stop":
        this.apply({ type: "stop", signal: sig });
        break;
      case "quit":
        this.apply({ type: "quit" });
        break;
      case "deprecated-upgrade":
        // Einhorn 1.1.1 still upgrades on ALRM, its old upgrade signal, with
        // this error-level line; an operator's old script must not kill the
        // master (ALRM's default action) where Einhorn would upgrade.
        this.log("error", "Upgrading using SIGALRM is deprecated. Please switch to SIGHUP");
        this.requestReexec("upgrade", "smooth", null);
        break;
      case "upgrade":
        this.requestReexec("upgrade", "smooth", null);
        break;
      default: {
        const unhandled: never = action;
        this.log("warn", `No action for ${sig} (${String(unhandled)})`);
      }
    }
  }

  /**
   * Upgrade or reload: every upgrade first re-executes the master (so a new
   * einhorn binary on disk is picked up too) after a preflight of the next
   * image; anything failing before the exec changes nothing.
   */
  requestReexec(kind: ReexecKind, mode: UpgradeMode | null, requestId: number | null): void {
    const s = this.s;
    const what = kind === "upgrade" ? "Upgrade" : "Reload";
    const refuse = (why: string) => {
      this.log("warn", `${what} refused: ${why}`);
      if (requestId !== null) this.fx.push({ type: "refuse", requestId, message: `${what} refused: ${why}` });
    };
    if (s.stopping) return refuse("the master is stopping");
    if (s.reexec) return refuse(`an ${s.reexec.kind} is already being prepared`);
    if (s.upgrade) {
      if (kind === "reload") return refuse(`an upgrade (to version ${s.version}) is still rolling out`);
      // Reference: a new upgrade supersedes a rollout in progress (one stuck on
      // workers that never ACK would otherwise block every later fix).
      this.fx.push({ type: "notify", kind: "upgrade", message: `Upgrade to version ${s.version} superseded by a newer upgrade`, final: true, error: true });
    } else if (s.bake && kind === "upgrade") {
      // A newer upgrade ends the bake: the generation it watched is what the
      // new one replaces, and a rollback target older than that is let go.
      const b = s.bake;
      s.bake = null;
      const message = `Upgrade done: version ${b.version} is up; its bake was cut short by a newer upgrade after ${((this.now - b.since) / 1000).toFixed(1)}s (${b.deaths} unasked exit${b.deaths === 1 ? "" : "s"})`;
      this.log("info", message);
      this.fx.push({ type: "upgrade-finished", ok: true, message });
    }
    if (requestId !== null) this.fx.push({ type: "enroll", requestId, kind });
    s.reexec = { kind, mode: kind === "upgrade" ? (mode ?? "smooth") : null, requestedAt: this.now, phase: "preflight" };
    const opening = kind === "reload" ? "Reloading einhorn, as commanded" : mode === "fleet" ? "Upgrading fleet, as commanded" : "Upgrading smoothly, as commanded";
    this.log("info", opening);
    this.fx.push({ type: "notify", kind, message: opening, final: false, error: false });
    this.fx.push({ type: "run-preflight" });
  }

  failReexec(reason: string): void {
    const r = this.s.reexec!;
    this.s.reexec = null;
    const message = `${r.kind === "upgrade" ? "Upgrade" : "Reload"} failed: ${reason}. Nothing was changed; the current workers keep serving.`;
    this.log("error", message);
    this.fx.push({ type: "notify", kind: r.kind, message, final: true, error: true });
  }

  /** A stop or quit ends an upgrade or reload that has not reached the new image. */
  abandonReexec(sig: SignalName): void {
    const r = this.s.reexec;
    if (!r) return;
    this.s.reexec = null;
    this.fx.push({ type: r.phase === "exec" ? "cancel-exec" : "cancel-preflight" });
    const message = `${r.kind === "upgrade" ? "Upgrade" : "Reload"} abandoned: the master is stopping (${sig})`;
    this.log("info", message);
    this.fx.push({ type: "notify", kind: r.kind, message, final: true, error: true });
  }

  resumed(e: Extract<Event, { type: "resumed" }>): void {
    const s = this.s;
    const r = s.reexec ?? (e.pending ? { ...e.pending, phase: "exec" as const } : null);
    s.reexec = null;
    if (!r) return;
    const took = this.now - r.requestedAt;
    if (s.stopping) {
      // Only reached for an older writer's handoff: a stop in this image abandons s.reexec itself.
      this.fx.push({ type: "notify", kind: r.kind, message: `${r.kind === "upgrade" ? "Upgrade" : "Reload"} abandoned: the master is stopping (${s.stopping.signal})`, final: true, error: true });
    } else if (r.kind === "upgrade") {
      this.fx.push({ type: "notify", kind: "upgrade", message: `Master re-executed as einhorn ${e.version} (pid ${e.pid} kept, ${took} ms since the request); starting the new workers`, final: false, error: false });
      this.apply({ type: "upgrade", mode: r.mode ?? "smooth", ...(e.spec ? { spec: e.spec } : {}) });
    } else {
      // A reload re-executes the master only: what workers run changes with an upgrade.
      const live = specOf(s, s.version);
      const later = e.spec && specDigest(e.spec) !== specDigest(live) ? `; the workers' new settings (spec ${specDigest(e.spec)}) take effect at the next upgrade` : "";
      if (later) this.log("info", `Reload: version ${s.version} keeps its spec (${specDigest(live)})${later}`);
      this.fx.push({ type: "notify", kind: "reload", message: `Reload done: master ${e.pid} is now einhorn ${e.version} (${took} ms)${later}`, final: true, error: false });
    }
  }

  /** A replacement's successor and the others are up: retire the replaced worker. */
  finishReplacement(): void {
    const s = this.s;
    const r = s.replacement;
    if (!r || replacementExtra(s) === 0) return;
    const others = currentWorkers(s).filter((w) => w.pid !== r.pid && isAcked(w) && !isRetiring(w)).length;
    if (others < s.settings.number) return;
    const w = findWorker(s, r.pid)!;
    this.log("info", `Replacement of worker ${w.pid} (index ${w.index}) is up; retiring it (${r.reason})`);
    this.retire(w, "max_memory");
  }

  startReplacement(pid: number, reason: string, youngSeconds: number): void {
    const s = this.s;
    const w = findWorker(s, pid);
    const gen = w ? s.generations[String(w.version)] : undefined;
    const b = s.replaceBackoff;
    const inRow = b !== null && this.now - b.lastAt <= REPLACE_STREAK_RESET_SECONDS * 1000;
    const nextAt = b && inRow ? b.lastAt + backoffMs(s.settings.seconds, b.streak) : null;
    const why = s.stopping ? "the master is stopping" : s.upgrade ? "an upgrade is rolling out (it replaces every worker)"
      : s.replacement ? `worker ${s.replacement.pid} is being replaced (one at a time)`
      : !w ? "it is not a live worker" : w.version !== s.version ? "it is of an old version" : isRetiring(w) ? "it is already retiring" : !isAcked(w) ? "it has not ACKed yet"
      : gen?.overLimitAtStart ? `version ${w.version}'s workers are over the limit from their start (worker ${gen.overLimitAtStart.pid}); replacing them would not end`
      : nextAt !== null && this.now < nextAt ? `backing off after ${b!.streak} replacement${b!.streak === 1 ? "" : "s"} in a row; the next no sooner than ${((nextAt - this.now) / 1000).toFixed(1)}s from now`
      : null;
    if (why) { this.log("debug", `Not replacing worker ${pid}: ${why}`); return; }
    const age = (this.now - w!.spawnedAt) / 1000;
    if (age < youngSeconds && gen) {
      // Its normal size, not a leak: a successor would be as big. Said once, with the size and the limit (in `reason`).
      gen.overLimitAtStart = { pid, at: this.now, reason };
      this.log("warn", `Worker ${pid} (index ${w!.index}, version ${w!.version}) is over the limit ${age.toFixed(1)}s after its start: ${reason}. `
        + `That looks like the program's normal size, so version ${w!.version}'s workers are not replaced for memory (a successor would be as big); raise --max-memory or make the program smaller, then upgrade`);
      return;
    }
    const streak = inRow ? b!.streak + 1 : 1;
    s.replaceBackoff = { streak, lastAt: this.now };
    s.replacement = { pid, reason };
    const pace = streak > 1 ? `; ${streak} replacements in a row, the next no sooner than ${(backoffMs(s.settings.seconds, streak) / 1000).toFixed(1)}s from now` : "";
    this.log("warn", `Replacing worker ${pid} (index ${w!.index}): ${reason}; its successor starts first, then it is retired (${retireSignalOf(s, w!.version)})${pace}`);
  }

  setNumber(n: number): void {
    const s = this.s;
    if (!Number.isFinite(n)) { this.log("warn", `Ignoring a worker count that is not a number: ${n}`); return; }
    const next = Math.min(MAX_WORKERS, Math.max(1, Math.floor(n)));
    if (next !== s.settings.number) this.log("info", `Number of workers: ${s.settings.number} -> ${next}`);
    s.settings.number = next;
  }

  recordExit(index: number, beforeAck: boolean, code: number | null, signal: SignalName | null, expected: boolean): void {
    const key = String(index);
    const c = this.s.exits[key] ?? { total: 0, beforeAck: 0, unasked: 0, lastCode: null, lastSignal: null, lastAt: null };
    c.total++;
    if (beforeAck) c.beforeAck++;
    if (!expected) c.unasked++;
    c.lastCode = code;
    c.lastSignal = signal;
    c.lastAt = this.now;
    this.s.exits[key] = c;
  }

  /** The recent-exits list (bounded: it crosses every re-exec) and the totals by reason. */
  recordRecent(r: State["recentExits"][number]): void {
    const s = this.s;
    s.recentExits.push(r);
    if (s.recentExits.length > RECENT_EXITS) s.recentExits.splice(0, s.recentExits.length - RECENT_EXITS);
    if (r.asked === null) s.exitTotals.unasked++;
    else s.exitTotals.asked[r.asked] = (s.exitTotals.asked[r.asked] ?? 0) + 1;
  }

  recordDeath(index: number, version: number, code: number | null, signal: SignalName | null, expected: boolean): void {
    const s = this.s;
    this.recordExit(index, true, code, signal, expected);
    // A worker we asked to leave is not a crash.
    if (expected) return;
    s.consecutiveDeaths++;
    if (s.upgrade && version === s.version) s.upgrade.deathsBeforeAck++;
  }
}

export function step(state: State, event: Event, now: number): StepResult {
  const st = new Step(structuredClone(state), now);
  st.tick = event.type === "tick";
  // Timer ACKs due by now count before the event: a worker that lived its
  // ACK period and then died was up, whatever order the wake-ups came in.
  st.timerAcks();
  st.apply(event);
  if (!st.fx.some((f) => f.type === "exit")) st.reconcile();
  st.pruneGenerations();
  if (st.fx.some((f) => f.type === "exit")) return { state: st.s, effects: st.fx, wakeAt: null };
  return { state: st.s, effects: st.fx, wakeAt: st.s.stopping && st.fx.some((f) => f.type === "exit") ? null : st.wakeAt() };
}

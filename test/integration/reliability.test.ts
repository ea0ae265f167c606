// The reliability suite of the "Benchmarks and a reliability suite" issue:
// chaos under load, crash-loop backoff, the master's own death, resource
// limits and a thousand workers, against the compiled binary.
//
// Bounded for CI (2 cores): every loop has a count and a time limit, all
// traffic goes to 127.0.0.1, and the whole file runs well under 90 s.
import { describe, expect, test } from "bun:test";
import { chownSync, existsSync, readdirSync, readFileSync, realpathSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BUN, command, CommandConnection, fetchLine, FIXTURES, httpGet, listenerPort, type Master, processesTagged, quietFor, type RequestError, ROOT, sleep, startMaster, stateJson, type StateReport, stopMaster, tempDir, waitFor, within } from "../harness";

const PY = ["python3", join(FIXTURES, "worker.py")];
const HTTP_WORKER = join(ROOT, "examples", "http-worker.ts");
const CRASH_OR_SERVE = join(FIXTURES, "crash-or-serve.sh");
const CLOCK_TICKS = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

// --- /proc readers ---------------------------------------------------------------------

/** /proc/PID/stat after the command name: [0] state, [1] ppid, [11] utime, [12] stime (ticks). */
function statFields(pid: number): string[] | null {
  try {
    const raw = readFileSync(`/proc/${pid}/stat`, "latin1");
    return raw.slice(raw.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** CPU time the process itself used so far (its children not included), in seconds. */
function cpuSeconds(pid: number): number {
  const f = statFields(pid);
  if (!f) throw new Error(`process ${pid} is gone`);
  return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
}

/** Exists and is not a zombie. */
function running(pid: number): boolean {
  const f = statFields(pid);
  return f !== null && f[0] !== "Z";
}

/** Children of `ppid`: the live ones and the zombies (exited, not reaped). */
function childrenOf(ppid: number): { live: number[]; zombies: number[] } {
  const live: number[] = [];
  const zombies: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const f = statFields(Number(entry));
    if (!f || Number(f[1]) !== ppid) continue;
    (f[0] === "Z" ? zombies : live).push(Number(entry));
  }
  return { live, zombies };
}

const fdNumbers = (pid: number): number[] => readdirSync(`/proc/${pid}/fd`).map(Number);
const fdCount = (pid: number): number => fdNumbers(pid).length;

/** Threads of every process whose real uid is `uid` (what RLIMIT_NPROC counts). */
function tasksOfUid(uid: number): number {
  let n = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const status = readFileSync(`/proc/${entry}/status`, "latin1");
      if (Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]) === uid) n += Number(/^Threads:\s+(\d+)/m.exec(status)?.[1] ?? 1);
    } catch { /* gone */ }
  }
  return n;
}

/** prlimit(1) on a running process; `as` runs it through setpriv (a process may change its own user's limits). */
function prlimit(pid: number, resource: "nofile" | "nproc", soft: number, hard: number, as: string[] = []): void {
  const r = Bun.spawnSync([...as, "prlimit", "--pid", String(pid), `--${resource}=${soft}:${hard}`]);
  if (r.exitCode !== 0) throw new Error(`prlimit --${resource}=${soft}:${hard} on ${pid}: ${r.stderr}`);
}

function hardLimit(pid: number, name: string): number {
  const line = readFileSync(`/proc/${pid}/limits`, "latin1").split("\n").find((l) => l.startsWith(name));
  const hard = line?.slice(name.length).trim().split(/\s+/)[1];
  return hard === "unlimited" ? Infinity : Number(hard);
}

// --- the master's side -------------------------------------------------------------------

interface LogLine { time: string; level: string; message: string }

/** The master's `--log-format json` lines so far (anything a worker wrote to stderr is skipped). */
function logLines(m: Master): LogLine[] {
  const out: LogLine[] = [];
  for (const line of m.output().split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const o = JSON.parse(line);
      if (o.role === "master") out.push(o);
    } catch { /* a worker's line */ }
  }
  return out;
}

/**
 * Exactly `n` workers, every one ACKed and not retiring, all of the current
 * version, no upgrade rolling and `number` set to `n`: a pool at rest.
 */
async function settled(sock: string, n: number, timeoutMs = 20_000, everyMs = 50): Promise<StateReport> {
  return waitFor(`${n} settled workers`, async () => {
    const s = await stateJson(sock);
    const ok = s.settings.number === n && s.master.upgrade === null && s.workers.length === n
      && s.workers.every((w) => w.acked && !w.retiring && w.version === s.master.version);
    return ok ? s : null;
  }, timeoutMs, everyMs);
}

// --- load ----------------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so a failing chaos run can be replayed by its seed. */
function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

// --- 1. chaos -------------------------------------------------------------------------------

describe("chaos", () => {
  const CLIENTS = 4;
  const CHAOS_MS = 9_000;
  const MAX_STEPS = 60;
  const MAX_REQUESTS = 100_000;
  const MIN_WORKERS = 2;
  const MAX_WORKERS = 5;

  test("random SIGKILLs, upgrades, inc and dec under HTTP load: only the killed workers' in-flight requests fail; pool, zombies and descriptors recover", async () => {
    const seed = Number(process.env.EINHORN_CHAOS_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const rand = seededRandom(seed);
    try {
      let number = 3;
      const m = startMaster(["--log-format", "json", "-n", String(number), "-m", "manual", "-s", "0.2", "-b", "127.0.0.1:0", "--", BUN, HTTP_WORKER], { cwd: ROOT });
      const s0 = await settled(m.sockPath, number, 30_000);
      const port = listenerPort(s0);
      // The workers' ACK connections are closed by now; what is left is the
      // master at rest: stdio, its event loop, the lock, the listening and
      // command sockets.
      await quietFor(300);
      const fdBaseline = fdCount(m.pid);

      // Load: CLIENTS loops, one request at a time each.
      let loadOn = true;
      let sent = 0;
      let ok = 0;
      const failures: Array<{ at: number; kind: string; message: string }> = [];
      const wrongAnswers: string[] = [];
      const client = async () => {
        while (loadOn && sent < MAX_REQUESTS) {
          sent++;
          try {
            const r = await httpGet(port, { timeoutMs: 15_000 });
            if (r.status === 200 && r.body.startsWith("Hello from worker")) ok++;
            else wrongAnswers.push(`${r.status}: ${r.body.slice(0, 80)}`);
          } catch (e) {
            const err = e as RequestError;
            failures.push({ at: Date.now(), kind: err.kind ?? "?", message: err.message });
          }
        }
      };
      const clients = Array.from({ length: CLIENTS }, client);

      // Chaos: each step draws its three random numbers whatever it does, so
      // one seed replays the same sequence of decisions.
      const kills: Array<{ at: number; pid: number; acked: boolean }> = [];
      const steps: string[] = [];
      const upgradeOutcomes: string[] = [];
      let upgrades = 0;
      let upgrading: Promise<void> | null = null;
      const t0 = Date.now();
      for (let i = 0; i < MAX_STEPS && Date.now() - t0 < CHAOS_MS; i++) {
        const [pause, pick, victimPick] = [rand(), rand(), rand()];
        await sleep(150 + Math.floor(pause * 350));
        const late = Date.now() - t0 > CHAOS_MS / 2;
        let action = pick < 0.6 ? "kill" : pick < 0.75 ? "upgrade" : pick < 0.875 ? "inc" : "dec";
        // Every run does each kind of damage at least once.
        if (late && upgrades === 0 && !upgrading) action = "upgrade";
        else if (late && kills.length === 0) action = "kill";
        if (action === "upgrade" && upgrading) action = "kill";
        if (action === "inc" && number >= MAX_WORKERS) action = "dec";
        if (action === "dec" && number <= MIN_WORKERS) action = "inc";

        if (action === "kill") {
          const live = (await stateJson(m.sockPath)).workers.filter((w) => running(w.pid));
          if (!live.length) { steps.push("kill: no live worker"); continue; }
          const victim = live[Math.floor(victimPick * live.length)]!;
          const at = Date.now(); // before the signal: its victims' failures come after it
          try {
            process.kill(victim.pid, "SIGKILL");
            kills.push({ at, pid: victim.pid, acked: victim.acked });
            steps.push(`kill ${victim.pid}${victim.acked ? "" : " (not ACKed yet)"}`);
          } catch {
            steps.push(`kill ${victim.pid}: already gone`);
          }
        } else if (action === "upgrade") {
          upgrades++;
          steps.push("upgrade");
          upgrading = command(m.sockPath, "upgrade", [], 60_000)
            .then((a) => { upgradeOutcomes.push(String(a[a.length - 1]!.message)); }, (e) => { upgradeOutcomes.push(`no answer: ${(e as Error).message}`); })
            .finally(() => { upgrading = null; });
        } else {
          const [answer] = await command(m.sockPath, action);
          number += action === "inc" ? 1 : -1;
          steps.push(`${action} -> ${number}`);
          expect(answer!.error).toBeUndefined();
        }
      }
      loadOn = false;
      await Promise.all(clients);
      await upgrading;

      // Every SIGKILL is noticed at once (SIGCHLD), not by the master's slow
      // safety poll; a kill just before the end may still be in flight.
      const reapedAt = () => {
        const at = new Map<number, number>();
        for (const l of logLines(m)) {
          const x = /^===> Worker (\d+) \(index \d+\) killed by SIGKILL/.exec(l.message);
          if (x) at.set(Number(x[1]), Date.parse(l.time));
        }
        return at;
      };
      const reaped = await waitFor("every killed worker reaped", () => {
        const at = reapedAt();
        return kills.every((k) => at.has(k.pid)) ? at : null;
      }, 10_000);
      const reapMs = kills.map((k) => reaped.get(k.pid)! - k.at);
      expect(Math.max(...reapMs), `ms from SIGKILL to reaped: ${reapMs.join(", ")}`).toBeLessThan(2_000);

      // The pool converges: the configured number, all ACKed, all of the current version.
      const end = await settled(m.sockPath, number, 45_000, 100);
      const kinds = Object.entries(Object.groupBy(failures, (f) => f.kind)).map(([k, v]) => `${k} ${v!.length}`).join(", ");
      const summary = `seed ${seed}: ${ok} ok / ${failures.length} failed requests (${kinds || "none"}), ${kills.length} kills, ${upgrades} upgrades (${upgradeOutcomes.join("; ")}), `
        + `${steps.filter((s) => /^(inc|dec)/.test(s)).length} inc/dec, ${number} workers at the end, reaped ${Math.max(...reapMs)} ms after a kill at most`;

      // Failed requests: only ones cut off by a SIGKILL. A request fails
      // only if the worker that accepted its connection died before
      // answering; the listening socket and its backlog belong to the master
      // and outlive any worker, and retiring workers drain. Each client has
      // at most one request in flight, so one kill can cut off at most
      // CLIENTS requests, and it cuts them off right away (the kernel resets
      // the dead process's connections).
      const unexplained = failures.filter((f) => !["ECONNRESET", "EPIPE", "EOF"].includes(f.kind) || !kills.some((k) => f.at >= k.at && f.at <= k.at + 2_000));
      expect(unexplained, summary).toEqual([]);
      expect(failures.length, summary).toBeLessThanOrEqual(kills.length * CLIENTS);
      expect(wrongAnswers, summary).toEqual([]);
      expect(ok, summary).toBeGreaterThan(200);
      expect(kills.length).toBeGreaterThan(0);
      expect(upgrades).toBeGreaterThan(0);
      // An upgrade ends done, or failed safe (new workers kept dying before they ACKed): never unanswered.
      for (const o of upgradeOutcomes) expect(o, summary).toMatch(/^Upgrade (done$|failed: )/);
      expect(upgradeOutcomes).toHaveLength(upgrades);

      // No zombie child; the live children are exactly the workers in `state`.
      const children = await waitFor("no zombie children of the master", () => {
        const c = childrenOf(m.pid);
        return c.zombies.length === 0 ? c : null;
      }, 3_000);
      expect(children.live.sort((a, b) => a - b)).toEqual(end.workers.map((w) => w.pid).sort((a: number, b: number) => a - b));

      // Descriptors: back to the baseline, give or take a command connection
      // of ours the master has not seen close yet.
      const fdsAfter = await waitFor("the master's descriptors back to the baseline", () => {
        const n = fdCount(m.pid);
        return Math.abs(n - fdBaseline) <= 2 ? n : null;
      }, 5_000).catch(() => fdCount(m.pid));
      expect(Math.abs(fdsAfter - fdBaseline), `${fdBaseline} descriptors before, ${fdsAfter} after`).toBeLessThanOrEqual(2);

      console.log(`chaos ${summary}; master descriptors ${fdBaseline} -> ${fdsAfter}`);
      expect(await stopMaster(m)).toBe(0);
    } catch (e) {
      console.error(`chaos test failed with seed ${seed}; replay with EINHORN_CHAOS_SEED=${seed}`);
      throw e;
    }
  }, within(80_000));
});

// --- 2. crash loop ---------------------------------------------------------------------------

describe("crash loop", () => {
  const S = 0.1;
  const launchTimes = (m: Master) => logLines(m).filter((l) => l.message.startsWith("===> Launched ")).map((l) => Date.parse(l.time));
  const crashes = (m: Master) => logLines(m).filter((l) => / exited with status 3 before ACKing /.test(l.message));
  /** The "(N in a row)" count of each crash line, as the master logged it. */
  const inARow = (lines: LogLine[]) => lines.map((l) => /\((\d+) in a row\)/.exec(l.message)?.[1]);
  /** Seconds between consecutive launches `from` .. `from + count`. */
  const gapsFrom = (times: number[], from: number, count: number) =>
    Array.from({ length: count }, (_, i) => (times[from + i + 1]! - times[from + i]!) / 1000);
  /**
   * Each gap at least seconds × 1.5^deaths (less 0.1 s); and each launch soon after
   * the later of the interval's end and the crash it replaces (a busy
   * machine may keep a worker alive longer than the interval; a respawn that
   * waited for the 5 s safety poll would show as seconds late).
   */
  const expectBackoff = (launches: number[], crashAt: number[], from: number, count: number, firstDeaths: number) => {
    for (let i = 0; i < count; i++) {
      const want = S * 1.5 ** (firstDeaths + i);
      const gap = (launches[from + i + 1]! - launches[from + i]!) / 1000;
      // The interval runs from the spawn, the log line follows it once posix_spawn
      // returned: on a loaded machine that lag differs by tens of ms between launches.
      expect(gap, `gap ${i + 1}: ${gap.toFixed(3)} s, formula ${want.toFixed(3)} s`).toBeGreaterThanOrEqual(want - 0.1);
      const due = Math.max(launches[from + i]! + want * 1000, crashAt[from + i]!);
      const late = (launches[from + i + 1]! - due) / 1000;
      expect(late, `launch ${from + i + 2}: ${late.toFixed(3)} s after the interval ended and the worker had crashed`).toBeLessThanOrEqual(2);
    }
  };
  const crashTimes = (m: Master) => logLines(m).filter((l) => / exited with status 3 /.test(l.message)).map((l) => Date.parse(l.time));

  test("respawn gaps follow seconds × 1.5^deaths, the master does not spin, and an ACK resets the backoff", async () => {
    const dir = tempDir();
    const mode = join(dir, "mode");
    // Seven crashes, then the fixture serves by itself: the eighth launch comes
    // S × 1.5^7 = 1.7 s after the seventh crash, and a test that flipped the
    // mode on seeing that crash could miss it when the machine is loaded.
    writeFileSync(mode, "crash 7");
    const m = startMaster(["--log-format", "json", "-n", "1", "-m", "manual", "-s", String(S), "--", CRASH_OR_SERVE], { dir });

    // Seven launches, six gaps: 0.15, 0.225, 0.34, 0.51, 0.76, 1.14 s. Watched
    // through the log alone, so that the test adds no work to the master.
    await waitFor("the first launch", () => launchTimes(m).length >= 1, 10_000, 10);
    const cpu0 = cpuSeconds(m.pid);
    const wall0 = performance.now();
    await waitFor("7 crashes", () => crashes(m).length >= 7, 20_000, 10);
    const cpuFraction = (cpuSeconds(m.pid) - cpu0) / ((performance.now() - wall0) / 1000);

    // The first seven (an eighth, the serving one, may have started by now).
    const times = launchTimes(m).slice(0, 7);
    expect(times.length).toBe(7);
    expectBackoff(times, crashTimes(m), 0, 6, 1);
    // A correctness check that the master sleeps between respawns, not a
    // speed benchmark: a spinning master would use a whole core.
    expect(cpuFraction, `master CPU: ${(cpuFraction * 100).toFixed(1)}% of one core`).toBeLessThan(0.2);
    expect(inARow(crashes(m))).toEqual(["1", "2", "3", "4", "5", "6", "7"]);
    const looping = await stateJson(m.sockPath);
    // Seven in a row, unless the eighth worker has already ACKed and reset it.
    const eighthUp = looping.workers.some((w) => w.acked);
    expect(looping.master.consecutive_deaths).toBe(eighthUp ? 0 : 7);
    expect(looping.exits["0"]).toMatchObject({ total: 7, before_ack: 7, last_code: 3 });

    // An ACKing worker resets the counter.
    const up = await waitFor("the serving worker's ACK", async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.length === 1 && s.workers[0]!.acked ? s : null;
    }, 15_000);
    expect(up.master.consecutive_deaths).toBe(0);
    expectBackoff(launchTimes(m), crashTimes(m), 6, 1, 7);

    // Crashing again starts from the base interval, not from 1.5^8.
    writeFileSync(mode, "crash");
    const before = launchTimes(m).length;
    const killedAt = Date.now();
    process.kill(up.workers[0]!.pid, "SIGKILL"); // it had ACKed: a kill, not a death before ACK
    await waitFor("4 more launches", () => launchTimes(m).length >= before + 4, 10_000, 10);
    const again = launchTimes(m);
    // The replacement for a worker that was up starts at once.
    expect(again[before]! - killedAt).toBeLessThan(1_000);
    // The killed worker's exit is not a crash (no status 3): its slot in the crash list is the kill.
    expectBackoff(again, [...crashTimes(m).slice(0, before - 1), killedAt, ...crashTimes(m).slice(before - 1)], before, 3, 1);
    const counts = inARow(crashes(m).slice(7).slice(0, 3));
    expect(counts).toEqual(["1", "2", "3"]);

    console.log(`crash loop: gaps ${gapsFrom(times, 0, 6).map((g) => g.toFixed(3)).join(", ")} s; after the reset ${gapsFrom(again, before, 3).map((g) => g.toFixed(3)).join(", ")} s; master CPU ${(cpuFraction * 100).toFixed(1)}% of one core`);
    expect(await stopMaster(m)).toBe(0);
  }, within(40_000));
});

// --- 3. the master's death -----------------------------------------------------------------

describe("master death", () => {
  test("SIGKILL with -k: every worker (serving on -b sockets until then) gets SIGUSR2 and exits; the port closes", async () => {
    const sig = tempDir();
    const m = startMaster(["-k", "-n", "3", "-m", "manual", "-b", "127.0.0.1:0", "--", ...PY, "--ack", "manual", "--signals", sig]);
    const s = await settled(m.sockPath, 3);
    const port = listenerPort(s);
    const pids: number[] = s.workers.map((w) => w.pid);
    await waitFor("signal handlers installed", () => pids.every((p) => existsSync(join(sig, `${p}.ready`))));
    for (let i = 0; i < 6; i++) {
      const [pid] = (await fetchLine(port)).split(" ");
      expect(pids).toContain(Number(pid));
    }

    m.proc.kill("SIGKILL");
    await m.exited;
    for (const pid of pids) {
      // Linux may deliver the parent-death signal more than once: USR2, and only USR2.
      await waitFor(`USR2 at ${pid}`, () => existsSync(join(sig, `${pid}.signals`)) && /^(USR2\n)+$/.test(readFileSync(join(sig, `${pid}.signals`), "utf8")));
      await waitFor(`worker ${pid} gone`, () => !running(pid), 5_000);
    }
    // Nobody holds the listening socket any more.
    await expect(fetchLine(port)).rejects.toThrow();
  });

  test("SIGKILL without -k: the workers keep serving on the socket", async () => {
    const m = startMaster(["-n", "2", "-m", "manual", "-b", "127.0.0.1:0", "--", ...PY, "--ack", "manual"]);
    const s = await settled(m.sockPath, 2);
    const port = listenerPort(s);
    const pids: number[] = s.workers.map((w) => w.pid);

    m.proc.kill("SIGKILL");
    await m.exited;
    await quietFor(300);
    for (let i = 0; i < 10; i++) {
      const line = await fetchLine(port);
      expect(line).toMatch(/^\d+ [01]\n$/);
      expect(pids).toContain(Number(line.split(" ")[0]));
    }
    expect(pids.every(running)).toBe(true);
    for (const pid of pids) process.kill(pid, "SIGTERM");
    await waitFor("orphaned workers gone", () => processesTagged(m.tag).length === 0);
  });
});

// --- 4. resource limits ------------------------------------------------------------------------

/**
 * A uid of its own is needed for RLIMIT_NPROC: root (with CAP_SYS_ADMIN or
 * CAP_SYS_RESOURCE) ignores it, and the limit counts every process of the
 * uid on the machine, so a shared one (65534) changes under the test's feet
 * when other suites run processes as nobody. No passwd entry is needed.
 */
const NPROC_UID = 40_000 + (process.pid % 20_000);
const AS_NOBODY = ["setpriv", `--reuid=${NPROC_UID}`, `--regid=${NPROC_UID}`, "--clear-groups"];
function nprocSkipReason(): string | null {
  if (process.getuid?.() !== 0) return `needs root, to run the master as uid ${NPROC_UID}`;
  if (!Bun.which("setpriv") || !Bun.which("prlimit")) return "needs setpriv and prlimit (util-linux)";
  const r = Bun.spawnSync([...AS_NOBODY, "prlimit", "--nproc=1", "sh", "-c", "/bin/true & wait"], { cwd: "/" });
  if (r.exitCode === 0) return `RLIMIT_NPROC is not enforced for uid ${NPROC_UID} here`;
  return null;
}
const nprocSkip = nprocSkipReason();
const noPrlimit = Bun.which("prlimit") ? null : "needs prlimit (util-linux)";

describe("resource limits", () => {
  const spawnFailure = /^Could not start a worker \(index \d+\): (.*); next try in ([\d.]+)s$/;
  const failures = (m: Master) => logLines(m).filter((l) => l.level === "error" && spawnFailure.test(l.message));

  test.skipIf(!!nprocSkip)(`RLIMIT_NPROC: failed spawns are logged with EAGAIN and retried with backoff; the master keeps answering and recovers${nprocSkip ? ` (SKIPPED: ${nprocSkip})` : ""}`, async () => {
    const dir = tempDir();
    chownSync(dir, NPROC_UID, NPROC_UID);
    const m = startMaster(["--log-format", "json", "-n", "2", "-m", "0", "-s", "0.1", "--", "/bin/sleep", "100000"], {
      dir, wrap: [...AS_NOBODY, "prlimit", "--nproc=1000:1000"],
    });
    const s0 = await settled(m.sockPath, 2);
    expect(s0.master.pid).toBe(m.pid);
    expect(readFileSync(`/proc/${m.pid}/status`, "latin1")).toMatch(new RegExp(`^Uid:\\s+${NPROC_UID}\\s`, "m"));

    // Room for exactly what the uid runs now (the master's threads and two
    // workers): the next process it starts fails with EAGAIN.
    prlimit(m.pid, "nproc", tasksOfUid(NPROC_UID), 1000, AS_NOBODY);
    const cpu0 = cpuSeconds(m.pid);
    const wall0 = performance.now();
    expect((await command(m.sockPath, "set_workers", ["4"]))[0]!.error).toBeUndefined();
    await waitFor("5 failed spawns", () => failures(m).length >= 5, 15_000, 20);
    const cpuFraction = (cpuSeconds(m.pid) - cpu0) / ((performance.now() - wall0) / 1000);

    const fails = failures(m);
    // The generation recorded the program's real path, which the spawn names (no PATH search).
    for (const f of fails) expect(spawnFailure.exec(f.message)![1]).toBe(`posix_spawn ${realpathSync("/bin/sleep")}: EAGAIN (Resource temporarily unavailable)`);
    // Retried with a growing interval, not in a loop.
    const nextTry = fails.map((f) => Number(spawnFailure.exec(f.message)![2]));
    for (let i = 1; i < nextTry.length; i++) expect(nextTry[i]!).toBeGreaterThanOrEqual(nextTry[i - 1]!);
    expect(nextTry[nextTry.length - 1]!).toBeGreaterThan(nextTry[0]!);
    const at = fails.map((f) => Date.parse(f.time));
    for (let i = 1; i < at.length; i++) expect(at[i]! - at[i - 1]!).toBeGreaterThanOrEqual(90);
    expect(cpuFraction, `master CPU: ${(cpuFraction * 100).toFixed(1)}% of one core`).toBeLessThan(0.2);

    // Still running and answering, with what it has.
    expect(m.exitCode()).toBeNull();
    const pressed = await stateJson(m.sockPath);
    expect(pressed.settings.number).toBe(4);
    expect(pressed.workers.length).toBeGreaterThanOrEqual(2);
    expect(pressed.workers.length).toBeLessThan(4);
    expect(pressed.workers.every((w) => w.acked)).toBe(true);
    expect(pressed.master.consecutive_deaths).toBeGreaterThanOrEqual(5);

    // An upgrade cannot start its preflight: it fails safe, naming EAGAIN.
    const upgrade = await command(m.sockPath, "upgrade", [], 30_000);
    const last = upgrade[upgrade.length - 1]!;
    expect(last.error).toBe(true);
    expect(String(last.message)).toMatch(/^Upgrade failed: preflight could not start .*: EAGAIN \(Resource temporarily unavailable\)\. Nothing was changed/);
    const after = await stateJson(m.sockPath);
    expect(after.master.version).toBe(0);
    expect(after.master.reexecs).toBe(0);
    expect(after.workers.map((w) => w.pid)).toEqual(pressed.workers.map((w) => w.pid));

    // Pressure away, one way: fewer workers wanted, so no more attempts.
    await command(m.sockPath, "set_workers", ["2"]);
    const settledCount = failures(m).length;
    await quietFor(1_000);
    expect(failures(m).length).toBe(settledCount);
    await settled(m.sockPath, 2);

    // The other way: the limit is raised, and the workers come.
    prlimit(m.pid, "nproc", 1000, 1000, AS_NOBODY);
    await command(m.sockPath, "set_workers", ["4"]);
    const recovered = await settled(m.sockPath, 4, 15_000);
    expect(recovered.master.consecutive_deaths).toBe(0);
    console.log(`nproc: ${failures(m).length} failed spawns, next tries ${nextTry.join(", ")} s; master CPU ${(cpuFraction * 100).toFixed(1)}% of one core`);
    expect(await stopMaster(m)).toBe(0);
  }, within(40_000));

  test.skipIf(!!noPrlimit)(`RLIMIT_NOFILE: socketpair EMFILE for -g workers is logged and retried with backoff; the master keeps answering and recovers after dec${noPrlimit ? ` (SKIPPED: ${noPrlimit})` : ""}`, async () => {
    // -g: each worker costs the master one descriptor (its end of the
    // worker's command connection; sleep never closes its own), and each
    // spawn needs two at once for the socketpair.
    const m = startMaster(["--log-format", "json", "-g", "-n", "2", "-m", "0", "-s", "0.1", "--", "sleep", "100000"]);
    await settled(m.sockPath, 2);
    const conn = await CommandConnection.open(m.sockPath);
    await conn.ask("ehlo");
    await quietFor(100);
    const hard = hardLimit(m.pid, "Max open files");
    // Four descriptor numbers left: three more workers, then socketpair fails.
    const limit = Math.max(...fdNumbers(m.pid)) + 1 + 4;
    prlimit(m.pid, "nofile", limit, hard);

    const cpu0 = cpuSeconds(m.pid);
    const wall0 = performance.now();
    expect((await conn.ask("set_workers", ["12"])).error).toBeUndefined();
    await waitFor("4 failed spawns", () => failures(m).length >= 4, 15_000, 20);
    const cpuFraction = (cpuSeconds(m.pid) - cpu0) / ((performance.now() - wall0) / 1000);
    const fails = failures(m);
    for (const f of fails) expect(spawnFailure.exec(f.message)![1]).toBe("socketpair: EMFILE (Too many open files)");
    const nextTry = fails.map((f) => Number(spawnFailure.exec(f.message)![2]));
    // Every retry waits at least the base interval (-s 0.1, shown rounded).
    // Growth is not asserted here: short of descriptors, the master also stops
    // accepting command connections, which frees one, so a spawn can succeed
    // in between and its ACK rightly resets the backoff (growth is covered by
    // the crash-loop test).
    for (const t of nextTry) expect(t).toBeGreaterThanOrEqual(0.1);
    expect(cpuFraction, `master CPU: ${(cpuFraction * 100).toFixed(1)}% of one core`).toBeLessThan(0.2);

    expect(m.exitCode()).toBeNull();
    const pressed = await conn.state();
    expect(pressed.settings.number).toBe(12);
    expect(pressed.workers.length).toBeGreaterThanOrEqual(2);
    expect(pressed.workers.length).toBeLessThan(12);
    expect(pressed.workers.every((w) => w.acked)).toBe(true);

    // An upgrade under this pressure either fails safe, or gets through: the
    // preflight reads its output through a descriptor it already has, and the
    // re-executed image's runtime raises the soft descriptor limit back to the
    // hard one when it starts, so the new generation can spawn all 12.
    const upgrade = await conn.ask("upgrade", [], 30_000);
    const after = await conn.state();
    if (upgrade.error) {
      expect(String(upgrade.message)).toMatch(/^Upgrade failed: .*Nothing was changed; the current workers keep serving\.$/);
      expect(after.master.version).toBe(0);
      expect(after.master.reexecs).toBe(0);
      expect(after.workers.map((w) => w.pid)).toEqual(pressed.workers.map((w) => w.pid));
    } else {
      expect(upgrade.message).toBe("Upgrade done");
      expect(after.master.reexecs).toBe(1);
      expect(after.workers.filter((w) => w.version === after.master.version && w.acked)).toHaveLength(12);
    }

    // Pressure away: dec back to what fits; the extra workers leave and free their descriptors.
    expect((await conn.ask("set_workers", ["2"])).error).toBeUndefined();
    const calm = await waitFor("2 workers", async () => {
      const s = await conn.state();
      return s.workers.length === 2 && s.workers.every((w) => w.acked && !w.retiring) ? s : null;
    });
    expect(calm.settings.number).toBe(2);
    const quiet = failures(m).length;
    await quietFor(500);
    expect(failures(m).length).toBe(quiet);
    conn.close();
    // New command connections are served again, and with the limit back, growth works.
    prlimit(m.pid, "nofile", hard, hard);
    await command(m.sockPath, "set_workers", ["5"]);
    await settled(m.sockPath, 5);
    console.log(`nofile: ${fails.length} failed spawns under a limit of ${limit} descriptors, next tries ${nextTry.join(", ")} s; master CPU ${(cpuFraction * 100).toFixed(1)}% of one core`);
    expect(await stopMaster(m)).toBe(0);
  }, within(40_000));

  // Found by this suite: with the descriptors exhausted, accept(2) on the
  // command socket failed with EMFILE and Bun's accept loop retried at once,
  // forever (a busy core, nothing logged). The master now watches its own
  // headroom and stops accepting while it is short; clients wait in the
  // kernel's queue and are served once descriptors are back.
  test("RLIMIT_NOFILE: short of descriptors, the master stops accepting command connections (logged, no spinning) and serves the waiting ones once descriptors are back", async () => {
    const m = startMaster(["--log-format", "json", "-n", "1", "-m", "0", "--", "sleep", "100000"]);
    await settled(m.sockPath, 1);
    const held = await CommandConnection.open(m.sockPath);
    await held.ask("ehlo");
    await quietFor(100);
    const hard = hardLimit(m.pid, "Max open files");
    // Two descriptor numbers left: below the master's reserve.
    prlimit(m.pid, "nofile", Math.max(...fdNumbers(m.pid)) + 1 + 2, hard);
    await waitFor("the warning", () => logLines(m).some((l) => l.level === "warn" && /EMFILE/.test(l.message) && /not accepting command connections/.test(l.message)), 5_000);

    const extra = await Promise.all(Array.from({ length: 5 }, () => CommandConnection.open(m.sockPath)));
    const answered = extra.map((c) => c.ask("ehlo", [], 20_000).then(() => true, () => false));
    const cpu0 = cpuSeconds(m.pid);
    const wall0 = performance.now();
    await sleep(2_000);
    const cpuFraction = (cpuSeconds(m.pid) - cpu0) / ((performance.now() - wall0) / 1000);
    expect(cpuFraction, `master CPU while connections wait: ${(cpuFraction * 100).toFixed(1)}% of one core`).toBeLessThan(0.2);
    expect(m.exitCode()).toBeNull();
    // A connection it already had is still served.
    expect((await held.state()).workers).toHaveLength(1);

    // Descriptors free up: every waiting connection is served.
    prlimit(m.pid, "nofile", hard, hard);
    expect((await Promise.all(answered)).filter(Boolean).length).toBe(5);
    await waitFor("the resume line", () => logLines(m).some((l) => /accepting command connections/.test(l.message) && l.level === "info"), 5_000);
    for (const c of [held, ...extra]) c.close();
    expect(await stopMaster(m)).toBe(0);
  });

  // BUG (src/master/master.ts, Master.preflight: the preflight's output is
  // read back with readFileSync(`/proc/self/fd/${outFd}`), which opens a new
  // descriptor, and any error there is swallowed as "no output"): with one
  // descriptor left, the memfd for the output is created, the preflight runs
  // and passes, but reading its output fails with EMFILE, and the upgrade
  // fails with "preflight '... --upgrade-check' did not report the state
  // format it reads (is it einhorn?)". It does fail safe, but the reason sends
  // the operator after the binary instead of the descriptor limit. Expected:
  // the reason names EMFILE. (A fix that reads the output through the
  // descriptor already open lets this upgrade go ahead instead; this test
  // should then expect "Upgrade done".)
  test("RLIMIT_NOFILE: an upgrade with one descriptor to spare reads its preflight through it and still completes or fails safe naming EMFILE", async () => {
    const m = startMaster(["--log-format", "json", "-n", "1", "-m", "0", "--", "sleep", "100000"]);
    const s0 = await settled(m.sockPath, 1);
    const conn = await CommandConnection.open(m.sockPath);
    await conn.ask("ehlo");
    await quietFor(100);
    const hard = hardLimit(m.pid, "Max open files");
    // One descriptor number left: enough for the preflight's output memfd only.
    prlimit(m.pid, "nofile", Math.max(...fdNumbers(m.pid)) + 1 + 1, hard);

    const answer = await conn.ask("upgrade", [], 30_000);
    const after = await conn.state();
    if (answer.error) {
      // Failing is fine if it is safe and says why.
      expect(String(answer.message)).toMatch(/^Upgrade failed: .*EMFILE.*Nothing was changed; the current workers keep serving\.$/);
      expect(after.master.reexecs).toBe(0);
      expect(after.workers.map((w) => w.pid)).toEqual(s0.workers.map((w) => w.pid));
    } else {
      expect(answer.message).toBe("Upgrade done");
      expect(after.master.reexecs).toBe(1);
    }
    conn.close();
    prlimit(m.pid, "nofile", hard, hard);
    expect(await stopMaster(m)).toBe(0);
  });
});

// --- 5. scale --------------------------------------------------------------------------------------

/** Why this machine cannot run 2000 extra processes at once (the upgrade's peak), or null. */
function scaleSkipReason(): string | null {
  const need = 2_100;
  const pidMax = Number(readFileSync("/proc/sys/kernel/pid_max", "latin1"));
  const threadsMax = Number(readFileSync("/proc/sys/kernel/threads-max", "latin1"));
  let tasks = 0;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try { tasks += readdirSync(`/proc/${entry}/task`).length; } catch { /* gone */ }
  }
  if (pidMax - tasks < need) return `pid_max is ${pidMax} with ${tasks} tasks running; the test needs room for ${need}`;
  if (threadsMax - tasks < need) return `threads-max is ${threadsMax} with ${tasks} tasks running; the test needs room for ${need}`;
  const limits = readFileSync("/proc/self/limits", "latin1");
  const nproc = /^Max processes\s+(\S+)/m.exec(limits)?.[1];
  if (process.getuid?.() !== 0 && nproc !== "unlimited") {
    const mine = tasksOfUid(process.getuid!());
    if (Number(nproc) - mine < need) return `ulimit -u is ${nproc} with ${mine} tasks of this user running; the test needs room for ${need}`;
  }
  const availKb = Number(/^MemAvailable:\s+(\d+)/m.exec(readFileSync("/proc/meminfo", "latin1"))?.[1] ?? 0);
  if (availKb < 1024 * 1024) return `only ${Math.round(availKb / 1024)} MiB of memory available; the test wants 1 GiB`;
  return null;
}
const scaleSkip = scaleSkipReason();

describe("scale", () => {
  test.skipIf(!!scaleSkip)(`1000 workers start with indexes 0..999, a smooth upgrade replaces them all, INT stops them all${scaleSkip ? ` (SKIPPED: ${scaleSkip})` : ""}`, async () => {
    const N = 1000;
    const m = startMaster(["-n", String(N), "-m", "0", "--max-unacked", String(N), "--", "sleep", "100000"]);
    // Polled slowly: each answer describes 1000 workers.
    const s0 = await settled(m.sockPath, N, 40_000, 250);
    const indexes = s0.workers.map((w) => w.index).sort((a: number, b: number) => a - b);
    expect(indexes).toEqual(Array.from({ length: N }, (_, i) => i));
    const oldPids = new Set<number>(s0.workers.map((w) => w.pid));
    expect(oldPids.size).toBe(N);

    const answers = await command(m.sockPath, "upgrade", [], 60_000);
    expect(answers[answers.length - 1]!.message).toBe("Upgrade done");
    const s1 = await settled(m.sockPath, N, 30_000, 250);
    expect(s1.master.version).toBe(1);
    expect(s1.workers.every((w) => w.version === 1)).toBe(true);
    expect(s1.workers.filter((w) => oldPids.has(w.pid))).toEqual([]);
    expect(new Set(s1.workers.map((w) => w.pid)).size).toBe(N);
    expect(new Set(s1.workers.map((w) => w.index)).size).toBe(N);
    await waitFor("the old workers reaped", () => childrenOf(m.pid).live.length === N, 10_000, 100);

    expect(await stopMaster(m, "SIGINT", 30_000)).toBe(0);
    const stopped = [...m.output().matchAll(/===> Worker (\d+) \(index \d+\) killed by SIGUSR2/g)].map((x) => Number(x[1]));
    const newPids: number[] = s1.workers.map((w) => w.pid);
    const stoppedSet = new Set(stopped);
    expect(newPids.filter((p) => !stoppedSet.has(p))).toEqual([]);
    expect(m.output()).toMatch(/Last worker is gone; exiting/);
    expect(processesTagged(m.tag)).toEqual([]);
  }, within(90_000));
});

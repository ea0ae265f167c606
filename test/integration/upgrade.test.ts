// Seamless upgrades against the compiled binary: the master re-executes
// itself (pid kept, binary replaced on disk), rolls the workers, and fails
// safe when the new version is broken.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { accessSync, constants as fsConstants, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BIN, FIXTURES, fetchLine, listenerPort, onCleanup, processesTagged, ROOT, runBinary, sleep, startMaster, stateJson, type StateReport, stopMaster, tempDir, waitFor,
} from "../harness";

const PY = ["python3", join(FIXTURES, "worker.py")];
const VERSIONED = join(FIXTURES, "versioned-worker.sh");

let buildDir = "";
/** A second binary of the same source, tagged "next", so a test can swap it in on disk. */
let NEXT_BIN = "";

beforeAll(() => {
  buildDir = mkdtempSync(join(tmpdir(), "einhorn-next-"));
  NEXT_BIN = join(buildDir, "einhorn-next");
  const p = Bun.spawnSync([process.execPath, join(ROOT, "scripts/build.ts"), "--outfile", NEXT_BIN, "--tag", "next"], { cwd: ROOT });
  if (p.exitCode !== 0) throw new Error(`building the tagged binary failed: ${p.stderr}`);
});
afterAll(() => rmSync(buildDir, { recursive: true, force: true }));

function sh(sock: string, script: string) {
  return runBinary(["sh", "-d", sock, "-e", script, "--timeout", "60"], { timeoutMs: 60_000 });
}

/** Wait until exactly `n` workers exist, all ACKed and not retiring (of `version` when given). */
async function serving(sock: string, n: number, version?: number) {
  return waitFor(`${n} acked workers${version === undefined ? "" : ` of version ${version}`}`, async () => {
    const s = await stateJson(sock);
    const ok = s.workers.length === n && s.workers.every((w) => w.acked && !w.retiring && (version === undefined || w.version === version));
    return ok ? s : null;
  }, 20_000);
}

const pids = (s: StateReport): number[] => s.workers.map((w) => w.pid).sort();

/** The first line a stream gives. */
async function firstLine(stream: ReadableStream<Uint8Array>): Promise<string> {
  const reader = stream.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    text += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  return text.split("\n")[0]!;
}

/** /proc/PID/stat of every process whose process group or session is `id` (which keeps that pid taken). */
function groupMembers(id: number): string[] {
  return readdirSync("/proc").filter((e) => /^\d+$/.test(e)).flatMap((e) => {
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "latin1");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      return Number(fields[2]) === id || Number(fields[3]) === id ? [stat.slice(0, 60)] : [];
    } catch { return []; }
  });
}

/** Pids of the running children of `parent` whose command name is `comm`. */
function childrenNamed(parent: number, comm: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "latin1");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === parent && stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) === comm) found.push(Number(entry));
    } catch { /* gone meanwhile */ }
  }
  return found;
}

describe("smooth upgrade", () => {
  test("re-executes the replaced binary in place; the waiting shell gets every message; the new program version serves", async () => {
    const dir = tempDir();
    const bin = join(dir, "einhorn");
    copyFileSync(BIN, bin);
    writeFileSync(join(dir, "mode"), "v1");
    const m = startMaster(["-n", "3", "-m", "manual", "-b", "127.0.0.1:0", "--", VERSIONED], { dir, bin });
    const s0 = await serving(m.sockPath, 3);
    const port = listenerPort(s0);
    expect(await fetchLine(port)).toMatch(/ v1\n$/);
    expect(s0.einhorn_version).not.toContain("next");
    const inodeBefore = statSync(`/proc/${m.pid}/exe`).ino;

    // A new einhorn binary and a new program version appear on disk.
    copyFileSync(NEXT_BIN, `${bin}.tmp`);
    renameSync(`${bin}.tmp`, bin);
    writeFileSync(join(dir, "mode"), "v2");

    const r = await sh(m.sockPath, "upgrade");
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split("\n");
    expect(lines[0]).toBe("Upgrading smoothly, as commanded");
    expect(lines).toContain("Preflight passed (new einhorn 0.1.0+next); re-executing the master");
    expect(lines.some((l) => /^Master re-executed as einhorn 0\.1\.0\+next \(pid \d+ kept/.test(l))).toBe(true);
    expect(lines.filter((l) => l.startsWith("Upgrade progress:"))).toHaveLength(3);
    expect(lines.at(-1)).toBe("Upgrade done");

    const s1 = await serving(m.sockPath, 3, 1);
    expect(s1.master.pid).toBe(m.pid);
    expect(s1.master.reexecs).toBe(1);
    expect(s1.einhorn_version).toBe("0.1.0+next");
    expect(statSync(`/proc/${m.pid}/exe`).ino).not.toBe(inodeBefore);
    expect(listenerPort(s1)).toBe(port);
    for (const p of pids(s0)) expect(pids(s1)).not.toContain(p);
    for (let i = 0; i < 5; i++) expect(await fetchLine(port)).toMatch(/ v2\n$/);
    expect(await stopMaster(m)).toBe(0);
  });

  test("with max-unacked 1, old workers leave one for one as new ones ACK; a second upgrade works too", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "mode"), "a");
    const m = startMaster(["-n", "3", "-m", "manual", "--max-unacked", "1", "--", VERSIONED], { dir });
    await serving(m.sockPath, 3);
    expect((await sh(m.sockPath, "upgrade")).code).toBe(0);
    // Order in the log: each new worker's ACK is followed by one old worker's exit before the next launch completes the set.
    const log = m.output();
    const upgradeLog = log.slice(log.indexOf("Starting smooth upgrade"));
    const events = [...upgradeLog.matchAll(/===> Launched \d+ \(index \d+, version (\d)\)|===> Worker \d+ \(index (\d+)\) exited/g)].map((x) => (x[1] ? `new` : "old-exit"));
    expect(events.filter((e) => e === "new")).toHaveLength(3);
    // Smooth: an old worker exits before the last new one is launched.
    expect(events.indexOf("old-exit")).toBeLessThan(events.lastIndexOf("new"));
    await serving(m.sockPath, 3, 1);
    expect((await sh(m.sockPath, "upgrade")).code).toBe(0);
    const s = await serving(m.sockPath, 3, 2);
    expect(s.master.reexecs).toBe(2);
    expect(await stopMaster(m)).toBe(0);
  });

  test("SIGHUP starts a smooth upgrade", async () => {
    const m = startMaster(["-n", "2", "-m", "0.1", "--", ...PY]);
    const s0 = await serving(m.sockPath, 2);
    m.proc.kill("SIGHUP");
    const s1 = await serving(m.sockPath, 2, 1);
    expect(s1.master.pid).toBe(s0.master.pid);
    expect(s1.master.reexecs).toBe(1);
    expect(await stopMaster(m)).toBe(0);
  });
});

describe("fleet upgrade and reload", () => {
  test("upgrade_fleet starts every new worker before any old one is asked to leave", async () => {
    const sig = tempDir();
    const m = startMaster(["-n", "3", "-m", "0.2", "--max-unacked", "1", "--", ...PY, "--signals", sig]);
    const s0 = await serving(m.sockPath, 3);
    const r = await sh(m.sockPath, "upgrade_fleet");
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe("Upgrading fleet, as commanded");
    const log = m.output().slice(m.output().indexOf("Starting fleet upgrade"));
    const lastLaunch = log.lastIndexOf("===> Launched");
    const firstOldExit = Math.min(...s0.workers.map((w) => log.indexOf(`===> Worker ${w.pid} `)).filter((i: number) => i >= 0));
    expect(lastLaunch).toBeGreaterThan(0);
    expect(firstOldExit).toBeGreaterThan(lastLaunch);
    await serving(m.sockPath, 3, 1);
    expect(await stopMaster(m)).toBe(0);
  });

  test("reload re-executes the master and keeps every worker", async () => {
    const m = startMaster(["-n", "2", "-m", "0", "--", ...PY]);
    const s0 = await serving(m.sockPath, 2);
    const r = await sh(m.sockPath, "reload");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Reloading einhorn, as commanded");
    expect(r.stdout.trim().split("\n").at(-1)).toMatch(/^Reload done: master \d+ is now einhorn /);
    const s1 = await stateJson(m.sockPath);
    expect(s1.master.reexecs).toBe(1);
    expect(pids(s1)).toEqual(pids(s0));
    expect(s1.master.version).toBe(0);
    expect(await stopMaster(m)).toBe(0);
  });
});

/**
 * Upgrades a two-worker master through a --reexec-as wrapper shell that sleeps
 * `wrapperSleepS` seconds before exec'ing einhorn, and SIGKILLs one worker
 * while the wrapper runs. The wrapper waits for its `sleep` with waitpid(-1),
 * so it reaps any of the master's workers that dies meanwhile; the exit status
 * is lost with it, and the pid is free for the kernel to hand out again.
 */
/**
 * Start an upgrade through a --reexec-as wrapper that holds the exec until
 * the test says `release()`, and kill a worker while it holds: the wrapper
 * (dash, waiting for its `sleep`, which reaps any child) reaps it. Released
 * by the test rather than after a fixed sleep: under load the test may see
 * "Re-executing" seconds late, and a kill after the new image started would
 * reach our own child, not the wrapper's. One long sleep, killed to release,
 * rather than a polling loop: each poll would fork, taking the pid the
 * pid-reuse test wants to hand to a stranger.
 */
async function killWorkerWhileWrapperRuns() {
  // (The preflight runs the wrapper too, with --upgrade-check: that one goes straight through.)
  const wrapper = `sh -c 'case " $* " in *" --upgrade-check "*) ;; *) sleep 600;; esac; exec "$0" "$@"' ${BIN}`;
  const m = startMaster(["-n", "2", "-m", "0", "-s", "0.1", "--reexec-as", wrapper, "--", ...PY]);
  const s0 = await serving(m.sockPath, 2);
  const victim = s0.workers[0]!;
  // Timer-ACKed at once, a worker may still be a launcher (pyenv's python3
  // shim is a bash script that forks helpers): killed then, it would leave
  // helpers behind in its process group, which keep its pid taken.
  await waitFor("the victim running python", () => { try { return readFileSync(`/proc/${victim.pid}/comm`, "latin1").startsWith("python"); } catch { return false; } });
  const upgrade = sh(m.sockPath, "upgrade");
  await m.waitForOutput(/Re-executing: sh -c /, 20_000);
  process.kill(victim.pid, "SIGKILL");
  await waitFor("the victim reaped by the wrapper", () => !existsSync(`/proc/${victim.pid}`));
  const holding = await waitFor("the wrapper's sleep", () => childrenNamed(m.pid, "sleep")[0]);
  return { m, victim, upgrade, release: () => process.kill(holding, "SIGKILL") };
}

describe("re-exec details", () => {
  test("--reexec-as runs the given command; --drop-env-var and the start environment are restored for new workers", async () => {
    const rep = tempDir();
    const m = startMaster(["-n", "1", "-m", "0", "--reexec-as", `${NEXT_BIN}`, "--drop-env-var", "TEST_DROP", "--", ...PY, "--report", rep],
      { env: { TEST_KEEP: "kept", TEST_DROP: "dropped" } });
    const s0 = await serving(m.sockPath, 1);
    const first = await waitFor("first report", () => existsSync(join(rep, `${s0.workers[0]!.pid}.json`)) && JSON.parse(readFileSync(join(rep, `${s0.workers[0]!.pid}.json`), "utf8")));
    expect(first.env.TEST_DROP).toBe("dropped");
    expect((await sh(m.sockPath, "upgrade")).code).toBe(0);
    const s1 = await serving(m.sockPath, 1, 1);
    expect(s1.einhorn_version).toBe("0.1.0+next");
    const second = await waitFor("second report", () => existsSync(join(rep, `${s1.workers[0]!.pid}.json`)) && JSON.parse(readFileSync(join(rep, `${s1.workers[0]!.pid}.json`), "utf8")));
    expect(second.env.TEST_KEEP).toBe("kept");
    expect(second.env.TEST_DROP).toBeUndefined();
    const environ = readFileSync(`/proc/${m.pid}/environ`, "latin1").split("\0");
    expect(environ).toContain("TEST_KEEP=kept");
    expect(environ.some((e) => e.startsWith("TEST_DROP="))).toBe(false);
    expect(await stopMaster(m)).toBe(0);
  });

  test("a worker that dies during the re-exec is reaped and replaced; a signal sent during it is not lost", async () => {
    const m = startMaster(["-n", "2", "-m", "0", "-s", "0.1", "--", ...PY]);
    const s0 = await serving(m.sockPath, 2);
    const victim = s0.workers[0]!;
    // Kill a worker and TERM the master the moment the preflight passed, which
    // is just before the execve: both land in or around the exec window.
    const shell = Bun.spawn([BIN, "sh", "-d", m.sockPath, "-e", "upgrade"], { stdout: "pipe", stderr: "pipe" });
    let out = "";
    const dec = new TextDecoder();
    for await (const chunk of shell.stdout) {
      out += dec.decode(chunk);
      if (out.includes("Preflight passed")) {
        process.kill(victim.pid, "SIGKILL");
        m.proc.kill("SIGTERM");
        break;
      }
    }
    const code = await Promise.race([m.exited, sleep(10_000).then(() => null)]);
    if (code === null) console.log(`master did not exit after TERM:\n${m.output()}`);
    expect(code).toBe(0);
    await shell.exited;
    expect(m.output()).toMatch(new RegExp(`Worker ${victim.pid} \\(index ${victim.index}\\) killed by SIGKILL`));
    expect(m.output()).toContain("Received SIGTERM");
    await waitFor("workers gone", () => processesTagged(m.tag).length === 0);
  });

  test("a worker that dies while a --reexec-as wrapper runs is reaped by the wrapper: the new master drops it, replaces it and exits on TERM", async () => {
    const { m, victim, upgrade, release } = await killWorkerWhileWrapperRuns();
    release();
    try {
      const r = await upgrade;
      expect(r.code).toBe(0);
      // Logged just after the rollout starts (the resume checks its children then), maybe after "Upgrade done".
      await m.waitForOutput(new RegExp(`Worker ${victim.pid} \\(index ${victim.index}\\) is gone \\(reaped by another process during the re-exec; exit status unknown\\)`));
      const s1 = await serving(m.sockPath, 2, 1);
      expect(pids(s1)).not.toContain(victim.pid);
      expect(s1.master.pid).toBe(m.pid);
      // dash clears the signal mask while it waits: the new image set it again.
      expect(m.output()).not.toContain("without a signalfd");
      expect(await stopMaster(m, "SIGTERM")).toBe(0);
    } catch (e) {
      console.log(`master output:\n${m.output()}`);
      throw e;
    }
  });

  test("through a wrapper that clears the signal mask, --metrics and --worker-output survive the extra self-exec", async () => {
    // The new image sets the mask again with one more exec of itself: every
    // descriptor the handoff names must be kept across that one too.
    const wrapper = `sh -c 'sleep 0.3; exec "$0" "$@"' ${BIN}`;
    const m = startMaster(["-n", "1", "-m", "0", "--metrics", "127.0.0.1:0", "--worker-output", "prefix", "--reexec-as", wrapper,
      "--", "sh", "-c", "while :; do echo tick-$$; sleep 0.1; done"]);
    try {
      const port = Number((await m.waitForOutput(/Serving metrics on http:\/\/127\.0\.0\.1:(\d+)\/metrics/))[1]);
      const s0 = await serving(m.sockPath, 1);
      await m.waitForOutput(new RegExp(`tick-${s0.workers[0]!.pid}`));
      expect((await sh(m.sockPath, "upgrade")).code).toBe(0);
      const s1 = await serving(m.sockPath, 1, 1);
      expect(s1.master.pid).toBe(m.pid);
      expect(m.output()).not.toContain("without a signalfd");
      // The metrics socket is the same one, still served; the new worker's output is still captured.
      const r = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(r.status).toBe(200);
      expect(await r.text()).toContain("einhorn_master_reexecs_total 1");
      await m.waitForOutput(new RegExp(`tick-${s1.workers[0]!.pid}`));
      expect(m.output()).not.toContain("did not survive the re-exec");
      expect(m.output()).not.toContain("could not be kept across the re-exec");
      expect(await stopMaster(m, "SIGTERM")).toBe(0);
    } catch (e) {
      console.log(`master output:\n${m.output()}`);
      throw e;
    }
  });

  // Writing ns_last_pid makes the kernel hand out a chosen pid next: the way
  // to make pid reuse happen on purpose (root only).
  const canChoosePids = (() => { try { accessSync("/proc/sys/kernel/ns_last_pid", fsConstants.W_OK); return process.getuid?.() === 0; } catch { return false; } })();
  const pidsSkip = canChoosePids ? "" : " (SKIPPED: needs root and a writable /proc/sys/kernel/ns_last_pid, to hand the reaped worker's pid to a stranger)";
  test.skipIf(!canChoosePids)(`a process that got the pid of a worker reaped by the wrapper is never signalled${pidsSkip}`, async () => {
    const { m, victim, upgrade, release } = await killWorkerWhileWrapperRuns();
    // The wrapper has reaped it: start a stranger under the same pid, then let
    // the new image start. The stranger is forked by a shell right after it
    // sets ns_last_pid (forking from here could lose the pid to a thread the
    // runtime starts meanwhile, which then holds it for good).
    const tries: number[] = [];
    let stranger: { pid: number; shell: ReturnType<typeof Bun.spawn> } | null = null;
    for (let i = 0; i < 50 && !stranger; i++) {
      const shell = Bun.spawn(["sh", "-c", `echo ${victim.pid - 1} > /proc/sys/kernel/ns_last_pid; sleep 60 & echo $!; wait`], { stdio: ["ignore", "pipe", "ignore"] });
      const pid = Number((await firstLine(shell.stdout as ReadableStream<Uint8Array>)).trim());
      tries.push(pid);
      if (pid === victim.pid) stranger = { pid, shell };
      else { try { process.kill(pid, "SIGKILL"); } catch { /* gone */ } shell.kill("SIGKILL"); }
    }
    // (Should another process on the machine fork right after a write to
    // ns_last_pid, it takes the pid, and holds it while it or a process of
    // its group lives: the message then names who.)
    expect(stranger?.pid, `pids the stranger got: ${tries.join(" ")}; ${victim.pid} is the group or session of: ${groupMembers(victim.pid).join(" | ") || "nobody"}`).toBe(victim.pid);
    release();
    const alive = (pid: number) => { try { return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "latin1")); } catch { return false; } };
    try {
      expect((await upgrade).code).toBe(0);
      await m.waitForOutput(new RegExp(`Worker ${victim.pid} \\(index ${victim.index}\\) is gone \\(reaped by another process`));
      await serving(m.sockPath, 2, 1);
      expect(await stopMaster(m, "SIGTERM")).toBe(0);
      // The master stopped every worker with TERM; the stranger never got it.
      expect(alive(stranger!.pid)).toBe(true);
      expect(stranger!.shell.exitCode).toBeNull();
    } catch (e) {
      console.log(`master output:\n${m.output()}`);
      throw e;
    } finally {
      if (stranger) { try { process.kill(stranger.pid, "SIGKILL"); } catch { /* gone */ } stranger.shell.kill("SIGKILL"); }
    }
  });

  test("no thread of a master ever takes the signals it handles: every other thread blocks them, and the main thread re-raises them for its signalfd", async () => {
    // What makes a signal survive the re-exec (src/master/signal-source.ts):
    // runtime threads inherit the blocked mask of the start-up self-exec and
    // of the main thread that creates them later (JIT and GC helpers
    // included), and the main thread never unblocks them; while it waits in
    // the event loop (with an empty mask) a delivery runs raise(3), which
    // makes the signal pending again.
    const handled = [1, 2, 3, 12, 14, 15, 17]; // HUP INT QUIT USR2 ALRM TERM CHLD
    const bits = handled.reduce((m, n) => m | (1n << BigInt(n - 1)), 0n);
    const field = (status: string, name: string) => BigInt(`0x${new RegExp(`^${name}:\\s*([0-9a-f]+)$`, "m").exec(status)![1]}`);
    const takers = (pid: number) => readdirSync(`/proc/${pid}/task`).filter((t) => {
      if (t === String(pid)) return false;
      try {
        return (field(readFileSync(`/proc/${pid}/task/${t}/status`, "latin1"), "SigBlk") & bits) !== bits;
      } catch { return false; }
    });
    const caught = (pid: number) => (field(readFileSync(`/proc/${pid}/status`, "latin1"), "SigCgt") & bits) === bits;
    const m = startMaster(["-n", "2", "-m", "0", "--", ...PY]);
    await serving(m.sockPath, 2);
    for (let i = 0; i < 200; i++) await stateJson(m.sockPath); // some work, some garbage: JIT and GC threads appear
    expect(readdirSync(`/proc/${m.pid}/task`).length).toBeGreaterThan(2);
    expect(takers(m.pid)).toEqual([]);
    expect(caught(m.pid)).toBe(true);
    expect((await sh(m.sockPath, "reload")).code).toBe(0);
    for (let i = 0; i < 200; i++) await stateJson(m.sockPath);
    expect(takers(m.pid)).toEqual([]);
    expect(caught(m.pid)).toBe(true);
    expect(m.output()).not.toContain("without a signalfd");
    expect(await stopMaster(m)).toBe(0);
  });

  test("a master started with --with-state-fd on a bad descriptor refuses clearly", async () => {
    const r = await runBinary(["--with-state-fd", "77", "--", "true"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^einhorn: cannot continue from the state on fd 77: /);
  });

  test("--upgrade-check reports the state formats this binary reads", async () => {
    const r = await runBinary(["--upgrade-check"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ einhorn: expect.any(String), handoffSchema: 1, stateSchema: 2 });
  });
});

describe("upgrades that fail safe", () => {
  test("TERM while the preflight runs: the preflight is killed at once, not left running while the workers drain; exit 0, nothing left behind", async () => {
    const dir = tempDir();
    // The next image's command, as --reexec-as gives it: its preflight (the
    // --upgrade-check run) hangs, as a slow or wedged binary would.
    const next = join(dir, "next-einhorn");
    writeFileSync(next, `#!/bin/sh\ncase " $* " in *" --upgrade-check "*) : > "${dir}/preflight-started"; exec sleep 600;; esac\nexec "${BIN}" "$@"\n`, { mode: 0o755 });
    // A worker that drains until the test lets it go: the master is still running meanwhile.
    const worker = ["sh", "-c", `trap 'while [ ! -e "${dir}/release" ]; do sleep 0.05; done; exit 0' TERM; while :; do sleep 0.05; done`];
    const m = startMaster(["-m", "0", `--reexec-as=${next}`, "--", ...worker], { dir });
    // Released on the way out even if the test fails early (cleanups run last-registered first: before the master's).
    onCleanup(() => writeFileSync(join(dir, "release"), ""));
    await waitFor("a worker", async () => (await stateJson(m.sockPath)).workers.length === 1);
    const shell = runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { dir });
    await waitFor("the preflight started", () => existsSync(join(dir, "preflight-started")));
    const preflight = await waitFor("the preflight's pid", () => processesTagged(m.tag).find((pid) => /^sleep\x00600\x00/.test(readFileSync(`/proc/${pid}/cmdline`, "latin1"))));
    m.proc.kill("SIGTERM");
    await waitFor("the preflight gone", () => !processesTagged(m.tag).includes(preflight));
    expect(m.exitCode()).toBeNull();
    await m.waitForOutput(/Upgrade abandoned: the master is stopping \(SIGTERM\)/);
    writeFileSync(join(dir, "release"), "");
    expect(await m.exited).toBe(0);
    expect((await shell).code).toBe(1);
  });

  test("a new version that exits at once: the upgrade fails with a reason, old workers keep serving, a later upgrade works", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "mode"), "v1");
    const m = startMaster(["-n", "3", "-m", "manual", "-s", "0.05", "-b", "127.0.0.1:0", "--", VERSIONED], { dir });
    const s0 = await serving(m.sockPath, 3);
    writeFileSync(join(dir, "mode"), "broken");
    const r = await sh(m.sockPath, "upgrade");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("Upgrade failed: 3 new workers in a row exited before they ACKed");
    const s1 = await serving(m.sockPath, 3, 0);
    expect(pids(s1)).toEqual(pids(s0));
    expect(s1.master.upgrade).toBeNull();
    expect(await fetchLine(listenerPort(s1))).toMatch(/ v1\n$/);

    writeFileSync(join(dir, "mode"), "v3");
    const again = await sh(m.sockPath, "upgrade");
    expect(again.code).toBe(0);
    const s2 = await serving(m.sockPath, 3);
    expect(s2.master.version).toBeGreaterThan(1); // the failed generation's number is not reused
    expect(await fetchLine(listenerPort(s2))).toMatch(/ v3\n$/);
    expect(await stopMaster(m)).toBe(0);
  });

  test("a new version that never ACKs: --ack-timeout fails the upgrade and stops the new workers", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "mode"), "v1");
    const m = startMaster(["-n", "2", "-m", "manual", "--ack-timeout", "1", "--", VERSIONED], { dir });
    const s0 = await serving(m.sockPath, 2);
    writeFileSync(join(dir, "mode"), "silent");
    const r = await sh(m.sockPath, "upgrade");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/Upgrade failed: new worker \d+ did not ACK within 1s/);
    const s1 = await serving(m.sockPath, 2, 0);
    expect(pids(s1)).toEqual(pids(s0));
    expect(await stopMaster(m)).toBe(0);
  });

  test("a failing preflight changes nothing and says why", async () => {
    const m = startMaster(["-n", "2", "-m", "0", "--reexec-as", "/bin/false", "--", ...PY]);
    const s0 = await serving(m.sockPath, 2);
    const r = await sh(m.sockPath, "upgrade");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("Upgrade failed: preflight '/bin/false --upgrade-check' exited with status 1");
    const s1 = await stateJson(m.sockPath);
    expect(pids(s1)).toEqual(pids(s0));
    expect(s1.master.reexecs).toBe(0);
    expect(s1.master.version).toBe(0);
    expect(await stopMaster(m)).toBe(0);
  });

  test("the preflight reads the very state the master would hand over: one the next binary cannot continue from fails the upgrade before the exec", async () => {
    // A wrapper that, for the preflight only, keeps a copy of the document
    // the master passed, then shows the next binary a document from a newer
    // einhorn instead (what a reader that cannot continue sees).
    const dir = tempDir();
    writeFileSync(join(dir, "newer.json"), JSON.stringify({ schema: 99 }));
    const wrapper = `sh -c 'case " $* " in *" --upgrade-check "*) cat /proc/self/fd/$EINHORN_UPGRADE_CHECK_STATE_FD > ${dir}/passed.json; exec 9< ${dir}/newer.json; export EINHORN_UPGRADE_CHECK_STATE_FD=9;; esac; exec "$0" "$@"' ${BIN}`;
    const m = startMaster(["-n", "2", "-m", "0", "--reexec-as", wrapper, "--", ...PY]);
    const s0 = await serving(m.sockPath, 2);
    const r = await sh(m.sockPath, "upgrade");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("cannot continue from the state this master would hand over: the handed-over state has schema 99; this einhorn reads up to 1");
    // What the master passed is its handoff: its state (these workers), its configuration, no descriptors of clients.
    const passed = JSON.parse(readFileSync(join(dir, "passed.json"), "utf8"));
    expect(passed.state.workers.map((w: { pid: number }) => w.pid).sort()).toEqual(pids(s0));
    expect(passed.config.program).toEqual(PY);
    expect(passed.pending.kind).toBe("upgrade");
    expect(passed.connections).toEqual([]);
    // Nothing changed: same master image, same workers.
    const s1 = await stateJson(m.sockPath);
    expect(pids(s1)).toEqual(pids(s0));
    expect(s1.master.reexecs).toBe(0);
    expect(await stopMaster(m)).toBe(0);
  });

  test("--upgrade-check with a handed-over document: a readable one passes, an unreadable one fails with the reason", async () => {
    const dir = tempDir();
    const check = async (doc: unknown) => {
      writeFileSync(join(dir, "doc.json"), JSON.stringify(doc));
      const p = Bun.spawn(["sh", "-c", `exec 9< ${join(dir, "doc.json")}; EINHORN_UPGRADE_CHECK_STATE_FD=9 exec ${BIN} --upgrade-check`], { stdin: "ignore", stdout: "pipe", stderr: "pipe", cwd: dir });
      const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
      return { code, stdout, stderr };
    };
    const minimal = { state: {}, config: { program: ["true"] }, listeners: [], commandFd: 5 };
    const good = await check(minimal);
    expect(good.code).toBe(0);
    expect(JSON.parse(good.stdout).handoffSchema).toBe(1);
    const bad = await check({ ...minimal, config: { program: ["true"], retireSignal: "SIGBOGUS" } });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain(`cannot continue from the state this master would hand over: the handed-over configuration's retireSignal is "SIGBOGUS"`);
    const none = await check({ schema: 1 });
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("the handed-over state lacks 'state'");
  });

  test("an upgrade stuck on workers that never ACK is superseded by the next upgrade, which can fix it", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "mode"), "v1");
    const m = startMaster(["-n", "1", "-m", "manual", "--", VERSIONED], { dir });
    await serving(m.sockPath, 1);
    writeFileSync(join(dir, "mode"), "silent");
    const first = Bun.spawn([BIN, "sh", "-d", m.sockPath, "-e", "upgrade"], { stdout: "pipe", stderr: "pipe" });
    await waitFor("rollout started", async () => (await stateJson(m.sockPath)).master.upgrade !== null);
    // A reload is refused while a rollout runs; a new upgrade supersedes it.
    const reload = await sh(m.sockPath, "reload");
    expect(reload.code).toBe(1);
    expect(reload.stderr).toMatch(/Reload refused: an upgrade \(to version 1\) is still rolling out/);
    writeFileSync(join(dir, "mode"), "v3");
    const second = await sh(m.sockPath, "upgrade");
    expect(second.code).toBe(0);
    expect(await first.exited).toBe(1);
    expect(await new Response(first.stderr).text()).toContain("Upgrade to version 1 superseded by a newer upgrade");
    const s = await serving(m.sockPath, 1, 2);
    expect(s.master.upgrade).toBeNull();
    expect(await stopMaster(m)).toBe(0);
  });
});

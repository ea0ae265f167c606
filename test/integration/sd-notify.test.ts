// sd_notify against the compiled binary (issue 24): each test plays systemd
// with its own AF_UNIX datagram socket (python3's socket module, a peer
// einhorn's code has no part in), passes it as NOTIFY_SOCKET, and reads what
// arrives, stamped with CLOCK_MONOTONIC on arrival.
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { monotonicMicros } from "../../ffi/clock";
import * as sock from "../../ffi/socket";
import { ask, FIXTURES, onCleanup, quietFor, runBinary, sleep, startMaster, stateJson, stopMaster, tempDir, waitFor, within } from "../harness";

const WORKER = join(FIXTURES, "worker.py");
const VERSIONED = join(FIXTURES, "versioned-worker.sh");

interface Datagram { t: number; msg: string }

/** systemd's side: everything received on `address` (a path or @name), in order. */
async function receiver(address: string) {
  const proc = Bun.spawn(["python3", join(FIXTURES, "notify-receiver.py"), address], { stdout: "pipe", stderr: "inherit" });
  onCleanup(async () => { proc.kill("SIGKILL"); await proc.exited; });
  const got: Datagram[] = [];
  let bound = false;
  (async () => {
    let buf = "";
    for await (const chunk of proc.stdout) {
      buf += new TextDecoder().decode(chunk);
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const j = JSON.parse(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
        if (j.bound) bound = true;
        else got.push(j);
      }
    }
  })();
  await waitFor("the notify socket to be bound", () => bound);
  const lines = () => got.flatMap((d) => d.msg.split("\n").map((l) => ({ t: d.t, line: l })));
  return {
    got,
    lines,
    /** State lines (READY=1, RELOADING=1, ...), without STATUS= and WATCHDOG=1. */
    states: () => lines().map((x) => x.line).filter((l) => !l.startsWith("STATUS=") && l !== "WATCHDOG=1"),
    statuses: () => lines().filter((x) => x.line.startsWith("STATUS=")).map((x) => ({ t: x.t, text: x.line.slice(7) })),
    waitLine: (re: RegExp, after = 0, timeoutMs = 20_000) =>
      waitFor(`a notify line ${re}`, () => lines().find((x) => x.t >= after && re.test(x.line)), timeoutMs),
  };
}

const now = () => Number(monotonicMicros()) / 1e6;

/** A worker's ACK sent the way a worker sends it, on the command socket. */
function ackFor(sockPath: string, pid: number): void {
  const fd = sock.socket("unix");
  try {
    sock.connect(fd, { family: "unix", path: sockPath });
    writeSync(fd, `${JSON.stringify({ command: "worker:ack", pid })}\n`);
  } finally {
    sock.close(fd);
  }
}

function environOf(pid: number): Record<string, string> {
  return Object.fromEntries(readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").filter(Boolean).map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
}

describe("sd_notify", () => {
  test("READY=1 only after the last ACK; workers get no NOTIFY_SOCKET or WATCHDOG_*; STOPPING=1 at the end", async () => {
    const dir = tempDir();
    const addr = join(dir, "notify");
    const sd = await receiver(addr);
    const m = startMaster(["-n", "2", "-m", "manual", "--", "python3", WORKER], { dir, env: { NOTIFY_SOCKET: addr, WATCHDOG_USEC: "30000000" } });
    const s = await waitFor("2 workers", async () => { const st = await stateJson(m.sockPath); return st.workers.length === 2 ? st : null; });
    const [a, b] = s.workers.map((w) => w.pid as number);
    for (const pid of [a!, b!]) {
      const env = await waitFor(`worker ${pid}'s environment`, () => { const e = environOf(pid); return e.EINHORN_MASTER_PID ? e : null; });
      expect(env.NOTIFY_SOCKET).toBeUndefined();
      expect(env.WATCHDOG_USEC).toBeUndefined();
      expect(env.EINHORN_TEST_TAG).toBe(m.tag);
    }
    ackFor(m.sockPath, a!);
    await sd.waitLine(/^STATUS=Starting: 1\/2 workers up, version 0$/);
    await quietFor(300);
    expect(sd.states()).toEqual([]);
    expect(sd.statuses().map((x) => x.text)).toEqual(["Starting: 0/2 workers up, version 0", "Starting: 1/2 workers up, version 0"]);
    const lastAck = now();
    ackFor(m.sockPath, b!);
    const ready = await sd.waitLine(/^READY=1$/);
    expect(ready.t).toBeGreaterThanOrEqual(lastAck);
    await sd.waitLine(/^STATUS=2\/2 workers up, version 0$/);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
    expect(sd.states()).toEqual(["READY=1", "STOPPING=1"]);
  }, within(60_000));

  test("an upgrade: RELOADING=1 with MONOTONIC_USEC=, MAINPID= after the re-exec, READY=1 once up; the watchdog keeps pinging across it", async () => {
    const dir = tempDir();
    const addr = join(dir, "notify");
    const sd = await receiver(addr);
    const m = startMaster(["-n", "1", "-m", "0.2", "--", "python3", WORKER], { dir, env: { NOTIFY_SOCKET: addr, WATCHDOG_USEC: "2000000" } });
    await sd.waitLine(/^READY=1$/);
    const asked = now();
    const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade", "--timeout", "60"], { dir, timeoutMs: 60_000 });
    expect(up.code).toBe(0);
    const done = now();
    const reloading = await sd.waitLine(/^RELOADING=1$/);
    const mono = sd.lines().find((x) => x.line.startsWith("MONOTONIC_USEC="))!;
    expect(mono.t).toBe(reloading.t); // the same datagram
    const usec = Number(mono.line.slice("MONOTONIC_USEC=".length)) / 1e6;
    expect(usec).toBeGreaterThanOrEqual(asked);
    expect(usec).toBeLessThanOrEqual(reloading.t);
    await sd.waitLine(/^READY=1$/, reloading.t);
    expect(sd.states()).toEqual(["READY=1", "RELOADING=1", `MONOTONIC_USEC=${mono.line.slice(15)}`, `MAINPID=${m.pid}`, "READY=1"]);
    // Pings all along, from both images (one just before the execve, one as
    // the new image starts): never a gap that would have made systemd act.
    const pingTimes = () => sd.lines().filter((x) => x.line === "WATCHDOG=1").map((x) => x.t);
    await waitFor("two pings after the upgrade", () => pingTimes().filter((t) => t > done).length >= 2, 10_000);
    const pings = pingTimes();
    const gaps = pings.slice(1).map((t, i) => t - pings[i]!);
    expect(Math.max(...gaps)).toBeLessThan(2.0);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));

  test("a failed upgrade: READY=1 again, and STATUS= says it failed", async () => {
    const dir = tempDir();
    const addr = join(dir, "notify");
    const sd = await receiver(addr);
    writeFileSync(join(dir, "mode"), "v1");
    const m = startMaster(["-n", "1", "-m", "manual", "-s", "0.2", "--upgrade-max-deaths", "2", "--", VERSIONED], { dir, env: { NOTIFY_SOCKET: addr } });
    await sd.waitLine(/^READY=1$/);
    writeFileSync(join(dir, "mode"), "broken");
    const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade", "--timeout", "60"], { dir, timeoutMs: 60_000 });
    expect(up.code).toBe(1);
    const failed = await sd.waitLine(/^STATUS=1\/1 workers up, version 0; Upgrade failed: 2 new workers in a row exited before they ACKed/, 0, 5000);
    expect(sd.states()).toEqual(["READY=1", "RELOADING=1", expect.stringMatching(/^MONOTONIC_USEC=\d+$/), `MAINPID=${m.pid}`, "READY=1"]);
    expect(failed.line).toMatch(/; last crash: index 1 \(pid \d+\) exited with status 1 at \d\d:\d\d:\d\d UTC$/);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));

  test("a rolled-back upgrade: READY=1 when the new generation is up, STATUS= while it bakes, RELOADING=1/READY=1 around the rollback", async () => {
    const dir = tempDir();
    const addr = join(dir, "notify");
    const sd = await receiver(addr);
    writeFileSync(join(dir, "mode"), "v1");
    const m = startMaster(["-n", "2", "-m", "manual", "-s", "0.2", "--upgrade-bake", "30", "--upgrade-max-deaths", "1", "--", VERSIONED], { dir, env: { NOTIFY_SOCKET: addr } });
    await sd.waitLine(/^READY=1$/);
    writeFileSync(join(dir, "mode"), "v2");
    const shell = runBinary(["sh", "-d", m.sockPath, "-e", "upgrade", "--timeout", "90"], { dir, timeoutMs: 90_000 });
    const baking = await sd.waitLine(/^STATUS=2\/2 workers up, version 1; baking version 1 \(30s window, 0 unasked exits\)$/, 0, 30_000);
    expect(sd.states().at(-1)).toBe("READY=1");
    const s = await stateJson(m.sockPath);
    for (const w of s.workers) if (w.version === 1) process.kill(w.pid, "SIGKILL");
    const r = await shell;
    expect(r.code).toBe(1);
    const rolling = await sd.waitLine(/^RELOADING=1$/, baking.t);
    await sd.waitLine(/^READY=1$/, rolling.t, 30_000);
    await sd.waitLine(/^STATUS=2\/2 workers up, version 2; Upgrade to version 1 rolled back: 2 of its workers exited unasked within [\d.]+s of it coming up; last crash: index \d \(pid \d+\) killed by SIGKILL at /, rolling.t);
    expect(sd.states().filter((l) => !l.startsWith("MONOTONIC_USEC="))).toEqual(["READY=1", "RELOADING=1", `MAINPID=${m.pid}`, "READY=1", "RELOADING=1", "READY=1"]);
    expect(await stopMaster(m)).toBe(0);
  }, within(90_000));

  test("STATUS= at most once a second, and the last state is what stays", async () => {
    const dir = tempDir();
    const addr = join(dir, "notify");
    const sd = await receiver(addr);
    const m = startMaster(["-n", "1", "-m", "0.05", "-s", "0.05", "--", "python3", WORKER], { dir, env: { NOTIFY_SOCKET: addr } });
    await sd.waitLine(/^READY=1$/);
    for (let i = 0; i < 5; i++) { await ask(m.sockPath, "inc"); await sleep(100); }
    await sd.waitLine(/^STATUS=6\/6 workers up, version 0$/, 0, 20_000);
    const times = sd.statuses().map((x) => x.t);
    // Start, READY and five incs, each spawn and ACK a change (over a dozen in
    // about a second and a half): a few lines stand for all of them.
    expect(times.length).toBeGreaterThanOrEqual(2);
    expect(times.length).toBeLessThanOrEqual(4);
    // The master sends them 1 s apart at least; arrival times may shift by
    // how late the receiver gets to run on a loaded machine.
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThan(0.8);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));

  test("an abstract NOTIFY_SOCKET; WATCHDOG=1 stops while the master is stopped; --pass-notify-socket hands NOTIFY_SOCKET (only) to workers", async () => {
    const dir = tempDir();
    const addr = `@einhorn-test-${process.pid}-${Date.now()}`;
    const sd = await receiver(addr);
    const m = startMaster(["-n", "1", "-m", "0.1", "--pass-notify-socket", "--", "python3", WORKER], { dir, env: { NOTIFY_SOCKET: addr, WATCHDOG_USEC: "400000" } });
    await sd.waitLine(/^READY=1$/);
    const s = await stateJson(m.sockPath);
    const env = environOf(s.workers[0]!.pid);
    expect(env.NOTIFY_SOCKET).toBe(addr);
    expect(env.WATCHDOG_USEC).toBeUndefined();
    await sd.waitLine(/^WATCHDOG=1$/);
    process.kill(m.pid, "SIGSTOP");
    const stopped = now();
    await sleep(1500);
    const resumed = now();
    process.kill(m.pid, "SIGCONT");
    await sd.waitLine(/^WATCHDOG=1$/, resumed);
    const pings = sd.lines().filter((x) => x.line === "WATCHDOG=1").map((x) => x.t);
    // A ping already in flight when the stop landed may arrive just after it.
    expect(pings.filter((t) => t > stopped + 0.3 && t < resumed)).toEqual([]);
    expect(pings.filter((t) => t < stopped).length).toBeGreaterThanOrEqual(1);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));

  test("without NOTIFY_SOCKET nothing is sent and nothing is said; a NOTIFY_SOCKET that cannot be used is one warning line", async () => {
    const dir = tempDir();
    const m = startMaster(["-n", "1", "-m", "0.1", "--", "python3", WORKER], { dir, env: { NOTIFY_SOCKET: "vsock:2:9999" } });
    await m.waitForOutput(/NOTIFY_SOCKET is 'vsock:2:9999', which is neither an absolute path nor an @abstract name; not notifying systemd/);
    await waitFor("a worker up", async () => (await stateJson(m.sockPath)).workers.some((w) => w.acked));
    const gone = join(dir, "no-such-socket");
    expect(await stopMaster(m)).toBe(0);
    const m2 = startMaster(["-n", "1", "-m", "0.1", "--", "python3", WORKER], { dir, env: { NOTIFY_SOCKET: gone } });
    await m2.waitForOutput(/Could not notify systemd at .*no-such-socket: sendto .*: ENOENT \(No such file or directory\)/);
    await waitFor("a worker up", async () => (await stateJson(m2.sockPath)).workers.some((w) => w.acked));
    expect(await stopMaster(m2)).toBe(0);
    expect(m2.output().match(/Could not notify systemd/g)).toHaveLength(1);
    expect(m2.output()).not.toContain("    at ");
  }, within(60_000));
});

// The master against real workers, sockets and clients: the compiled binary.
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as sock from "../../ffi/socket";
import { BUN, fetchLine, FIXTURES, listenerPort, processesTagged, quietFor, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor } from "../harness";

const PY = ["python3", join(FIXTURES, "worker.py")];

async function workersUp(sock: string, n: number, acked = true) {
  return waitFor(`${n} ${acked ? "acked " : ""}workers`, async () => {
    const s = await stateJson(sock);
    const ws = s.workers.filter((w) => !w.retiring && (!acked || w.acked));
    return ws.length === n ? s : null;
  });
}

/** Wait until every worker has its signal handlers installed (worker.py --signals DIR). */
async function handlersReady(dir: string, pids: number[]) {
  await waitFor("signal handlers installed", () => pids.every((p) => existsSync(join(dir, `${p}.ready`))));
}

/** What test/fixtures/worker.py --report writes: what the worker got from einhorn. */
interface WorkerReport {
  pid: number;
  pgid: number;
  env: Record<string, string>;
  fds: number[];
  nonblocking: Record<string, boolean>;
  sigblk: string;
  sigign: string;
}

function reports(dir: string): WorkerReport[] {
  return readdirSync(dir).filter((f) => f.endsWith(".json")).map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as WorkerReport);
}

describe("serving", () => {
  test("three Python workers share one TCP port; each gets exactly the reference environment and fds", async () => {
    const rep = tempDir();
    const m = startMaster(["-n", "3", "-m", "0.2", "-b", "127.0.0.1:0", "--", ...PY, "--report", rep], { env: { PASS_THROUGH: "yes" } });
    const s = await workersUp(m.sockPath, 3);
    const port = listenerPort(s);
    const fd = s.listeners[0]!.fd;
    expect(port).toBeGreaterThan(0);
    expect(s.workers.map((w) => w.index).sort()).toEqual([0, 1, 2]);

    const pids = new Set(s.workers.map((w) => String(w.pid)));
    for (let i = 0; i < 10; i++) expect(pids.has((await fetchLine(port)).split(" ")[0]!)).toBe(true);

    const rs = await waitFor("3 worker reports", () => (reports(rep).length === 3 ? reports(rep) : null));
    for (const r of rs) {
      expect(r.fds).toEqual([0, 1, 2, fd]);
      expect(r.env).toEqual({
        EINHORN_FD_COUNT: "1",
        EINHORN_FD_0: String(fd),
        EINHORN_SOCK_PATH: m.sockPath,
        EINHORN_MASTER_PID: String(m.pid),
        EINHORN_CHILD_INDEX: expect.stringMatching(/^[012]$/),
        PASS_THROUGH: "yes",
      });
      expect(r.pgid).toBe(r.pid); // its own process group
      expect(r.nonblocking[String(fd)]).toBe(false); // blocking unless `n`
    }
    expect(new Set(rs.map((r) => r.env.EINHORN_CHILD_INDEX)).size).toBe(3);
    expect(await stopMaster(m)).toBe(0);
  });

  test("a worker starts with an empty signal mask and default dispositions, in its own process group", async () => {
    // sleep(1) changes no signal disposition itself, so /proc shows what einhorn gave it.
    const m = startMaster(["-n", "1", "-m", "0", "--", "sleep", "1000"]);
    const s = await workersUp(m.sockPath, 1);
    const pid = s.workers[0]!.pid;
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    expect(status).toMatch(/^SigBlk:\s+0000000000000000$/m);
    expect(status).toMatch(/^SigIgn:\s+0000000000000000$/m);
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    expect(Number(stat[2])).toBe(pid); // pgrp
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  });

  test("a TypeScript worker serves on the inherited socket", async () => {
    const m = startMaster(["-n", "2", "-m", "0", "-b", "127.0.0.1:0", "--", BUN, join(FIXTURES, "ts-worker.ts")]);
    const s = await workersUp(m.sockPath, 2);
    const line = await waitFor("an answer", async () => (await fetchLine(listenerPort(s))) || null);
    expect(line).toMatch(/^\d+ [01]\n$/);
    expect(await stopMaster(m)).toBe(0);
  });

  test("IPv6, UNIX socket with mode, n and reuseport flags; two sockets in -b order", async () => {
    const dir = tempDir();
    const rep = tempDir();
    const unixPath = join(dir, "app.sock");
    writeFileSync(join(dir, "placeholder"), "");
    const m = startMaster(["-b", "[::1]:0,n,reuseport", "-b", `unix:${unixPath},mode=0660`, "-m", "0", "--", ...PY, "--report", rep]);
    const s = await workersUp(m.sockPath, 1);
    expect(s.listeners.map((l) => l.family)).toEqual(["inet6", "unix"]);
    expect(s.listeners[0]!.address).toMatch(/^\[::1\]:\d+$/);
    expect(statSync(unixPath).mode & 0o777).toBe(0o660);
    expect(statSync(m.sockPath).mode & 0o777).toBe(0o600);
    const r = await waitFor("report", () => reports(rep)[0]);
    expect(r.nonblocking[String(s.listeners[0]!.fd)]).toBe(true);
    expect(r.nonblocking[String(s.listeners[1]!.fd)]).toBe(false);
    expect(r.env.EINHORN_FD_COUNT).toBe("2");
    expect(r.env.EINHORN_FD_0).toBe(String(s.listeners[0]!.fd));
    expect(r.env.EINHORN_FD_1).toBe(String(s.listeners[1]!.fd));
    expect(await fetchLine(listenerPort(s), "::1")).toMatch(/^\d+ 0\n$/);
    const viaUnix = await fetchLine(unixPath);
    expect(viaUnix).toMatch(/^\d+ 0\n$/);
    expect(await stopMaster(m)).toBe(0);
    expect(existsSync(unixPath)).toBe(false);
  });

  test("-l sets the listen backlog (default 100)", async () => {
    const m = startMaster(["-l", "7", "-b", "127.0.0.1:0", "-b", "127.0.0.1:0,r", "-l", "7", "-m", "0", "--", "sleep", "1000"]);
    const s = await workersUp(m.sockPath, 1);
    const backlog = (port: number) => {
      const out = Bun.spawnSync(["ss", "-ltnH", `sport = :${port}`]).stdout.toString().trim().split(/\s+/);
      return Number(out[2]); // State Recv-Q Send-Q: for a listener, Send-Q is the backlog
    };
    expect(backlog(listenerPort(s))).toBe(7);
    expect(backlog(listenerPort(s, 1))).toBe(7);
    expect(await stopMaster(m)).toBe(0);
    const d = startMaster(["-b", "127.0.0.1:0", "-m", "0", "--", "sleep", "1000"]);
    const t = await workersUp(d.sockPath, 1);
    expect(backlog(listenerPort(t))).toBe(100);
    expect(await stopMaster(d)).toBe(0);
  });

  test("a stale UNIX socket file is replaced; a regular file at the path is refused", async () => {
    const dir = tempDir();
    const stale = join(dir, "stale.sock");
    // Bind and close without unlinking: a stale socket file stays behind.
    const fd = sock.socket("unix");
    sock.bind(fd, { family: "unix", path: stale });
    sock.close(fd);
    expect(existsSync(stale)).toBe(true);
    const m = startMaster(["-b", `unix:${stale}`, "-m", "0", "--", ...PY]);
    await workersUp(m.sockPath, 1);
    expect(await stopMaster(m)).toBe(0);

    const plain = join(dir, "plain");
    writeFileSync(plain, "data");
    const r = await runBinary(["-b", `unix:${plain}`, "--", ...PY]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${plain} exists and is not a socket`);
    expect(readFileSync(plain, "utf8")).toBe("data");
  });
});

describe("keeping workers alive", () => {
  test("a SIGKILLed worker is replaced with the same index", async () => {
    const m = startMaster(["-n", "2", "-m", "0", "-s", "0.1", "-b", "127.0.0.1:0", "--", ...PY]);
    const s = await workersUp(m.sockPath, 2);
    const victim = s.workers[0]!;
    process.kill(victim.pid, "SIGKILL");
    const after = await waitFor("replacement", async () => {
      const t = await stateJson(m.sockPath);
      return t.workers.length === 2 && !t.workers.some((w) => w.pid === victim.pid) ? t : null;
    });
    const replacement = after.workers.find((w) => w.index === victim.index);
    expect(replacement).toBeDefined();
    expect(replacement!.pid).not.toBe(victim.pid);
    expect(after.exits[String(victim.index)]!.last_signal).toBe("SIGKILL");
    expect(await stopMaster(m)).toBe(0);
  });

  test("a crash-looping worker is respawned with growing intervals, not in a spin", async () => {
    // Backoff with -s 0.2: gaps 0.3, 0.45, 0.675, 1.01, 1.52 ... (0.2 * 1.5^deaths).
    const m = startMaster(["-n", "1", "-m", "5", "-s", "0.2", "--", ...PY, "--exit", "3"]);
    await m.waitForOutput(/5 in a row/, 15_000);
    const launches = [...m.output().matchAll(/===> Launched (\d+)/g)].length;
    expect(launches).toBeGreaterThanOrEqual(5);
    const s = await stateJson(m.sockPath);
    expect(s.master.consecutive_deaths).toBeGreaterThanOrEqual(5);
    // Without backoff 5 deaths would take milliseconds; with it they take > 1.7 s of waiting.
    const stampsOk = launches <= s.master.consecutive_deaths + 1;
    expect(stampsOk).toBe(true);
    expect(await stopMaster(m)).toBe(0);
  });

  test("manual ACK: the raw JSON line from a Python worker marks it up; unknown pids are ignored", async () => {
    const m = startMaster(["-n", "2", "-m", "manual", "--", ...PY, "--ack", "manual"]);
    const s = await workersUp(m.sockPath, 2, true);
    expect(s.settings.ack_mode).toBe("manual");
    expect(s.workers.every((w) => w.acked)).toBe(true);
    expect(await stopMaster(m)).toBe(0);
  });

  test("manual mode without an ACK leaves workers unacked", async () => {
    const m = startMaster(["-n", "1", "-m", "manual", "--", ...PY]);
    await workersUp(m.sockPath, 1, false);
    await quietFor(300);
    const s = await stateJson(m.sockPath);
    expect(s.workers[0]!.acked).toBe(false);
    expect(await stopMaster(m)).toBe(0);
  });
});

describe("signals to the master", () => {
  test("INT sends USR2 to every worker and exits 0 once they are gone; files are removed", async () => {
    const sig = tempDir();
    const m = startMaster(["-n", "2", "-m", "0", "--", ...PY, "--signals", sig]);
    const s = await workersUp(m.sockPath, 2);
    await handlersReady(sig, s.workers.map((w) => w.pid));
    // No pidfile unless asked (-e), as Einhorn 1.1.1.
    expect(existsSync(join(m.dir, "einhorn.pid"))).toBe(false);
    expect(await stopMaster(m, "SIGINT")).toBe(0);
    for (const w of s.workers) expect(readFileSync(join(sig, `${w.pid}.signals`), "utf8")).toBe("USR2\n");
    expect(existsSync(join(m.dir, "einhorn.pid"))).toBe(false);
    expect(existsSync(join(m.dir, "einhorn.lock"))).toBe(false);
    expect(existsSync(m.sockPath)).toBe(false);
  });

  test("TERM sends TERM to every worker and exits 0", async () => {
    const sig = tempDir();
    const m = startMaster(["-n", "2", "-m", "0", "--", ...PY, "--signals", sig]);
    const s = await workersUp(m.sockPath, 2);
    await handlersReady(sig, s.workers.map((w) => w.pid));
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
    for (const w of s.workers) expect(readFileSync(join(sig, `${w.pid}.signals`), "utf8")).toBe("TERM\n");
  });

  test("USR2 to the master behaves like INT", async () => {
    const sig = tempDir();
    const m = startMaster(["-n", "1", "-m", "0", "--", ...PY, "--signals", sig]);
    const s = await workersUp(m.sockPath, 1);
    await handlersReady(sig, s.workers.map((w) => w.pid));
    expect(await stopMaster(m, "SIGUSR2")).toBe(0);
    expect(readFileSync(join(sig, `${s.workers[0]!.pid}.signals`), "utf8")).toBe("USR2\n");
  });

  test("QUIT passes QUIT to workers and exits at once with status 1, as Einhorn's exit(1)", async () => {
    const sig = tempDir();
    const m = startMaster(["-n", "2", "-m", "0", "--", ...PY, "--ignore-usr2", "--signals", sig]);
    const s = await workersUp(m.sockPath, 2);
    await handlersReady(sig, s.workers.map((w) => w.pid));
    expect(await stopMaster(m, "SIGQUIT")).toBe(1);
    for (const w of s.workers) await waitFor(`QUIT at ${w.pid}`, () => existsSync(join(sig, `${w.pid}.signals`)) && readFileSync(join(sig, `${w.pid}.signals`), "utf8") === "QUIT\n");
    await waitFor("workers gone", () => processesTagged(m.tag).length === 0);
  });

  test("ALRM (Einhorn's deprecated upgrade signal) upgrades smoothly: new workers, the same master pid, Einhorn's deprecation line", async () => {
    const m = startMaster(["-n", "2", "-m", "0.1", "--", ...PY]);
    const s0 = await workersUp(m.sockPath, 2);
    m.proc.kill("SIGALRM");
    const s1 = await waitFor("2 acked workers of version 1", async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.length === 2 && s.workers.every((w) => w.acked && !w.retiring && w.version === 1) ? s : null;
    }, 20_000);
    expect(s1.master.pid).toBe(s0.master.pid);
    expect(s1.master.reexecs).toBe(1);
    const before = new Set(s0.workers.map((w) => w.pid));
    expect(s1.workers.filter((w) => before.has(w.pid))).toEqual([]);
    expect(m.output()).toMatch(/ERROR: Upgrading using SIGALRM is deprecated\. Please switch to SIGHUP\n/);
    expect(await stopMaster(m)).toBe(0);
  });

  test("-t escalates to SIGKILL for a worker that ignores USR2", async () => {
    const sig = tempDir();
    const m = startMaster(["-n", "1", "-m", "0", "-t", "0.5", "--", ...PY, "--ignore-usr2", "--signals", sig]);
    const s = await workersUp(m.sockPath, 1);
    await handlersReady(sig, [s.workers[0]!.pid]);
    expect(await stopMaster(m, "SIGINT")).toBe(0);
    expect(m.output()).toMatch(/still alive 0\.5s after SIGUSR2; sending SIGKILL/);
    expect(m.output()).toMatch(/killed by SIGKILL/);
  });

  test("-k: workers get SIGUSR2 when the master is SIGKILLed", async () => {
    const sig = tempDir();
    const m = startMaster(["-k", "-n", "2", "-m", "0", "--", ...PY, "--signals", sig]);
    const s = await workersUp(m.sockPath, 2);
    await handlersReady(sig, s.workers.map((w) => w.pid));
    await handlersReady(sig, s.workers.map((w) => w.pid));
    m.proc.kill("SIGKILL");
    await m.exited;
    // Linux may deliver the parent-death signal more than once (once per
    // master thread the orphan is reparented across), so: USR2, and only USR2.
    for (const w of s.workers) {
      await waitFor(`USR2 at ${w.pid}`, () => existsSync(join(sig, `${w.pid}.signals`)) && /^(USR2\n)+$/.test(readFileSync(join(sig, `${w.pid}.signals`), "utf8")));
    }
    await waitFor("workers gone", () => processesTagged(m.tag).length === 0);
  });

  test("without -k, workers keep serving after the master is SIGKILLed", async () => {
    const m = startMaster(["-n", "1", "-m", "0", "-b", "127.0.0.1:0", "--", ...PY]);
    const s = await workersUp(m.sockPath, 1);
    m.proc.kill("SIGKILL");
    await m.exited;
    expect(await fetchLine(listenerPort(s))).toBe(`${s.workers[0]!.pid} 0\n`);
    process.kill(s.workers[0]!.pid, "SIGTERM");
    await waitFor("orphan gone", () => processesTagged(m.tag).length === 0);
  });
});

describe("files and logs", () => {
  test("a second master on the same command socket is refused with a clear message naming -d", async () => {
    const dir = tempDir();
    const m = startMaster(["-m", "0", "--", ...PY], { dir });
    await workersUp(m.sockPath, 1);
    const r = await runBinary(["-m", "0", "-f", join(dir, "other.lock"), "--", ...PY], { dir });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`einhorn: another einhorn master (pid ${m.pid}) is serving the command socket ${m.sockPath}; give this master its own with -d PATH (or -c NAME), or stop the other one first`);
    expect(await stopMaster(m)).toBe(0);
  });

  test("-c NAME names the default files (no pidfile unless asked, as Einhorn 1.1.1); -e/-f/-d set them", async () => {
    const dir = tempDir();
    const m = startMaster(["-c", "web", "-m", "0", "--", ...PY], { dir });
    await workersUp(join(dir, "einhorn-web.sock"), 1);
    // The lockfile exists only while the command socket is being created (as in Einhorn).
    expect(readdirSync(dir)).toEqual(["einhorn-web.sock"]);
    expect(await stopMaster(m)).toBe(0);

    const m2 = startMaster(["-e", join(dir, "p"), "-f", join(dir, "l"), "-d", join(dir, "s"), "-m", "0", "--", ...PY], { dir });
    await workersUp(join(dir, "s"), 1);
    expect(readFileSync(join(dir, "p"), "utf8").trim()).toBe(String(m2.pid));
    expect(await stopMaster(m2)).toBe(0);
    expect(existsSync(join(dir, "p"))).toBe(false);
  });

  test("-c NAME is the process name ps shows; --nice sets master and worker priorities", async () => {
    const dir = tempDir();
    const m = startMaster(["-c", "web", "--nice", "5:10", "-m", "0", "--", "sleep", "1000"], { dir });
    const s = await workersUp(join(dir, "einhorn-web.sock"), 1);
    expect(readFileSync(`/proc/${m.pid}/comm`, "utf8").trim()).toBe("einhorn: web");
    const nice = (pid: number) => Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[16]);
    expect(nice(m.pid)).toBe(5);
    expect(nice(s.workers[0]!.pid)).toBe(10);
    expect(await stopMaster(m)).toBe(0);
  });

  test("--log-format json writes one JSON object per line", async () => {
    const m = startMaster(["--log-format", "json", "-m", "0", "--", ...PY]);
    await workersUp(m.sockPath, 1);
    expect(await stopMaster(m)).toBe(0);
    const lines = m.output().trim().split("\n");
    for (const l of lines) {
      const o = JSON.parse(l);
      expect(Object.keys(o).sort()).toEqual(["level", "message", "pid", "role", "time"]);
      expect(o.pid).toBe(m.pid);
      expect(o.role).toBe("master");
    }
    expect(lines.some((l) => JSON.parse(l).message.startsWith("===> Launched"))).toBe(true);
  });

  test("text logs use Einhorn's format; -q hides info, -v shows debug", async () => {
    const m = startMaster(["-m", "0", "--", ...PY]);
    await workersUp(m.sockPath, 1);
    expect(await stopMaster(m)).toBe(0);
    expect(m.output()).toContain(`[MASTER ${m.pid}] INFO: ===> Launched`);
    expect(m.output()).not.toContain("DEBUG:");

    const q = startMaster(["-q", "-m", "0", "--", ...PY]);
    await workersUp(q.sockPath, 1);
    expect(await stopMaster(q)).toBe(0);
    expect(q.output()).not.toContain("INFO:");

    const v = startMaster(["-v", "-m", "0", "--", ...PY]);
    await workersUp(v.sockPath, 1);
    expect(await stopMaster(v)).toBe(0);
    expect(v.output()).toContain("DEBUG: Command socket listening");
  });
});

describe("bad input gets one clear line and a documented exit code", () => {
  const cases: Array<[string[], number, RegExp]> = [
    [["--bogus", "true"], 2, /^einhorn: unknown option '--bogus'/],
    [["-x", "true"], 2, /^einhorn: unknown option '-x'/],
    [["-n", "0", "true"], 2, /^einhorn: -n\/--number wants a whole number from 1 to 1000, got '0'$/],
    [["-s", "0", "true"], 2, /^einhorn: -s\/--seconds wants a number of seconds greater than 0, got '0'$/],
    [["-m", "banana", "true"], 2, /^einhorn: -m\/--ack-mode wants 'manual' or a number of seconds of 0 or more \(timer\), got 'banana'$/],
    [["-b", "localhost", "true"], 2, /^einhorn: -b\/--bind: bad bind address 'localhost': no port; expected/],
    [["-b", "1.2.3.4:99999", "true"], 2, /port '99999' is not a number from 0 to 65535/],
    [["-b", "::1:80", "true"], 2, /an IPv6 address goes in brackets/],
    [["-b", "127.0.0.1:0,zz", "true"], 2, /unknown flag 'zz'/],
    [["--", "definitely-not-a-program-xyz"], 127, /^einhorn: cannot run 'definitely-not-a-program-xyz': not found in PATH/],
    [["-n"], 2, /^einhorn: -n\/--number needs a value \(N\)$/],
  ];
  for (const [args, code, re] of cases) {
    test(`einhorn ${args.join(" ")}`, async () => {
      const r = await runBinary(args);
      expect(r.code).toBe(code);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr.trim()).toMatch(re);
    });
  }

  test("options but no program: Einhorn's usage on stdout and exit 1", async () => {
    const r = await runBinary(["-n", "2"]);
    expect(r.code).toBe(1);
    expect(r.stdout.split("\n")[0]).toBe("## Usage");
    expect(r.stdout).toContain("\n### Options\n");
    expect(r.stderr).toBe("");
  });

  test("a program that is not executable: exit 126, no crash loop", async () => {
    const dir = tempDir();
    const f = join(dir, "script.sh");
    writeFileSync(f, "#!/bin/sh\necho hi\n");
    chmodSync(f, 0o644);
    const r = await runBinary(["--", f], { dir });
    expect(r.code).toBe(126);
    expect(r.stderr.trim()).toBe(`einhorn: cannot run '${f}': ${f} is not an executable file`);
  });

  test("a port in use: exit 1 naming the address and EADDRINUSE", async () => {
    const hog = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const r = await runBinary(["-b", `127.0.0.1:${hog.port}`, "--", "true"]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toBe(`einhorn: cannot listen on 127.0.0.1:${hog.port}: bind 127.0.0.1:${hog.port}: EADDRINUSE (Address already in use)`);
    } finally {
      hog.stop(true);
    }
  });

  test("--version and -h", async () => {
    const v = await runBinary(["--version"]);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/^einhorn \d+\.\d+\.\d+\n$/);
    const h = await runBinary(["-h"]);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain("--max-unacked N");
  });

  test("an operator's own EINHORN_-prefixed variables pass through to workers; einhorn's own are replaced", async () => {
    const rep = tempDir();
    const m = startMaster(["-m", "0", "--", ...PY, "--report", rep], { env: { EINHORN_APP_MODE: "blue", EINHORN_CHILD_INDEX: "99", EINHORN_FD_7: "7" } });
    const s = await waitFor("a worker", async () => ((await stateJson(m.sockPath)).workers.length === 1 ? stateJson(m.sockPath) : null));
    const file = join(rep, `${s.workers[0]!.pid}.json`);
    const r = await waitFor("report", () => (existsSync(file) ? (JSON.parse(readFileSync(file, "utf8")) as WorkerReport) : null));
    expect(r.env.EINHORN_APP_MODE).toBe("blue");
    expect(r.env.EINHORN_CHILD_INDEX).toBe("0");
    expect(r.env.EINHORN_FD_7).toBeUndefined();
    expect(await stopMaster(m)).toBe(0);
  });
});

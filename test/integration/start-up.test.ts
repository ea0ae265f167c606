// Start-up against hostile files and bad luck (issue 11, items 1, 2 and 10;
// issue 9, item 1): the pidfile and lockfile rules of docs/security.md, a
// stop signal at any moment of start-up, failures that name the path and the
// errno and leave nothing behind, and masters side by side or nested.
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ackedWorkers, BIN, ensureOtherUser, FIXTURES, IS_ROOT, onCleanup, processesTagged, removeOtherUser, run, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor, worldWritableDir } from "../harness";

const PY = ["python3", join(FIXTURES, "worker.py")];
const rootReason = IS_ROOT ? "" : "needs root (useradd/setpriv for a second uid, mount for a tmpfs)";

afterAll(() => removeOtherUser());


/** A master started while another process holds its lockfile (as a master creating its command socket does, briefly), waiting for it. */
async function masterWaitingForLock() {
  const dir = tempDir();
  const lock = join(dir, "einhorn.lock");
  writeFileSync(lock, "");
  const holder = Bun.spawn(["flock", lock, "sleep", "60"], { stdio: ["ignore", "ignore", "ignore"] });
  onCleanup(() => { holder.kill("SIGKILL"); });
  await waitFor("the lock to be held", () => readFileSync("/proc/locks", "latin1").includes(` ${holder.pid} `));
  const m = startMaster(["-m", "0", "--", "sleep", "1000"], { dir });
  await m.waitForOutput(new RegExp(`Waiting for the lockfile ${lock}, held by pid ${holder.pid}`));
  return { dir, m };
}

describe("pidfile and lockfile planted by another local user", () => {
  test.skipIf(!IS_ROOT)(`symbolic links to root-owned files are refused, and the files they point at stay untouched${rootReason ? ` (SKIPPED: ${rootReason})` : ""}`, async () => {
    const other = ensureOtherUser()!;
    const dir = worldWritableDir();
    const secrets = tempDir();
    for (const [file, flag] of [["einhorn.pid", "-e"], ["einhorn.lock", "-f"]] as const) {
      const target = join(secrets, `${file}.target`);
      writeFileSync(target, "precious\n", { mode: 0o644 });
      // The other user plants the link, as it could in any shared temp dir.
      run([...other.as, "ln", "-s", target, join(dir, file)]);
      const r = await runBinary(["-e", join(dir, "einhorn.pid"), "-m", "0", "--", "sleep", "1000"], { dir });
      expect(r.code).toBe(1);
      const what = file.endsWith(".pid") ? "pidfile" : "lockfile";
      expect(r.stderr).toBe(`einhorn: refusing to use ${join(dir, file)} as the ${what}: it is a symbolic link (to ${target}); remove it or give another path with ${flag}\n`);
      expect(readFileSync(target, "utf8")).toBe("precious\n");
      run(["rm", join(dir, file)]);
    }
    // Nothing of the master's is left in the directory.
    expect(readdirSync(dir)).toEqual([]);
  });

  test.skipIf(!IS_ROOT)(`a regular file owned by another uid is refused, never truncated or chmodded${rootReason ? ` (SKIPPED: ${rootReason})` : ""}`, async () => {
    const other = ensureOtherUser()!;
    const dir = worldWritableDir();
    for (const [file, what] of [["einhorn.pid", "pidfile"], ["einhorn.lock", "lockfile"]] as const) {
      run([...other.as, "sh", "-c", `echo theirs > ${join(dir, file)} && chmod 600 ${join(dir, file)}`]);
      const r = await runBinary(["-e", join(dir, "einhorn.pid"), "-m", "0", "--", "sleep", "1000"], { dir });
      expect(r.code).toBe(1);
      expect(r.stderr).toBe(`einhorn: refusing to use ${join(dir, file)} as the ${what}: it is a file owned by uid ${other.uid}, not by this master's uid 0; remove it or give another path with ${what === "pidfile" ? "-e" : "-f"}\n`);
      const st = Bun.spawnSync(["stat", "-c", "%a %u %s", join(dir, file)], { stdout: "pipe" }).stdout.toString().trim();
      expect(st).toBe(`600 ${other.uid} 7`);
      run(["rm", join(dir, file)]);
    }
  });

  test.skipIf(!IS_ROOT)(`without -e no pidfile is written, so a file another user plants at \$TMPDIR/einhorn.pid stops nothing${rootReason ? ` (SKIPPED: ${rootReason})` : ""}`, async () => {
    const other = ensureOtherUser()!;
    const dir = worldWritableDir();
    run([...other.as, "sh", "-c", `echo theirs > ${join(dir, "einhorn.pid")}`]);
    const m = startMaster(["-m", "0", "--", "sleep", "1000"], { dir });
    await ackedWorkers(m.sockPath, 1);
    expect(readFileSync(join(dir, "einhorn.pid"), "utf8")).toBe("theirs\n");
    expect(await stopMaster(m)).toBe(0);
    expect(readdirSync(dir)).toEqual(["einhorn.pid"]);
  });

  test("a stale pidfile of the master's own uid is replaced (a new inode), and removed at exit", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "einhorn.pid"), "99999999\n");
    const m = startMaster(["-e", join(dir, "einhorn.pid"), "-m", "0", "--", "sleep", "1000"], { dir });
    await ackedWorkers(m.sockPath, 1);
    expect(readFileSync(join(dir, "einhorn.pid"), "utf8")).toBe(`${m.pid}\n`);
    expect(await stopMaster(m)).toBe(0);
    expect(existsSync(join(dir, "einhorn.pid"))).toBe(false);
  });
});

describe("nothing the master opens at start can block it", () => {
  test("a FIFO as the pidfile or the lockfile is refused at once", async () => {
    for (const [file, what, flag] of [["einhorn.pid", "pidfile", "-e"], ["einhorn.lock", "lockfile", "-f"]] as const) {
      const dir = tempDir();
      run(["mkfifo", "-m", "644", join(dir, file)]);
      const t0 = Date.now();
      const r = await runBinary(["-e", join(dir, "einhorn.pid"), "-m", "0", "--", "sleep", "1000"], { dir, timeoutMs: 20_000 });
      expect(r.stderr).toBe(`einhorn: refusing to use ${join(dir, file)} as the ${what}: it is a FIFO (named pipe); remove it or give another path with ${flag}\n`);
      expect(r.code).toBe(1);
      expect(Date.now() - t0).toBeLessThan(15_000); // not a speed assertion: old masters blocked for ever
    }
  });

  test("TERM while the master waits for a lockfile held by another process ends the start at once, leaving nothing", async () => {
    const { dir, m } = await masterWaitingForLock();
    m.proc.kill("SIGTERM");
    expect(await m.exited).toBe(0);
    expect(m.output()).toContain("Received SIGTERM during start-up; stopping before any worker started");
    expect(readdirSync(dir).sort()).toEqual(["einhorn.lock"]); // the holder's, untouched
    expect(processesTagged(m.tag)).toEqual([]);
  });

  test("ALRM during start-up is ignored like HUP (not its default action, death); QUIT then ends the start with status 1, as Einhorn's QUIT", async () => {
    const { dir, m } = await masterWaitingForLock();
    m.proc.kill("SIGALRM");
    await m.waitForOutput(/Ignoring SIGALRM received during start-up: there is nothing to upgrade yet/);
    expect(m.exitCode()).toBeNull();
    m.proc.kill("SIGQUIT");
    expect(await m.exited).toBe(1);
    expect(m.output()).toContain("Received SIGQUIT during start-up; stopping before any worker started");
    expect(readdirSync(dir).sort()).toEqual(["einhorn.lock"]);
    expect(processesTagged(m.tag)).toEqual([]);
  });
});

describe("start-up failures: one line naming the path and the errno, exit 1, nothing left behind", () => {
  test("-d and -b unix: paths longer than a UNIX socket address holds", async () => {
    const dir = tempDir();
    const long = join(dir, `${"s".repeat(120)}.sock`);
    const d = await runBinary(["-d", long, "-m", "0", "--", "sleep", "1000"], { dir });
    expect(d.code).toBe(1);
    expect(d.stderr).toMatch(new RegExp(`^einhorn: cannot open the command socket ${long}: bind ${long}: ENAMETOOLONG \\(the path is \\d+ bytes; a UNIX socket path holds at most 107\\)\\n$`));
    expect(readdirSync(dir)).toEqual([]);
    const b = await runBinary(["-b", `unix:${long}`, "-m", "0", "--", "sleep", "1000"], { dir });
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(new RegExp(`^einhorn: cannot listen on unix:${long}: bind ${long}: ENAMETOOLONG`));
    expect(b.stderr.trim().split("\n")).toHaveLength(1);
    expect(readdirSync(dir)).toEqual([]);
  });

  test.skipIf(!IS_ROOT)(`ENOSPC: a full file system for the lockfile (no inodes) and for the pidfile (no blocks)${rootReason ? ` (SKIPPED: ${rootReason})` : ""}`, async () => {
    const dir = tempDir();
    const fs = join(dir, "small");
    mkdirSync(fs);
    run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=16,mode=0755", "tmpfs", fs]);
    onCleanup(() => { Bun.spawnSync(["umount", "-l", fs]); });
    // No room for a single block: the pidfile is created, then its write fails.
    Bun.spawnSync(["sh", "-c", `cat /dev/zero > ${join(fs, "filler")}`], { stderr: "ignore" });
    const p = await runBinary(["-e", join(fs, "einhorn.pid"), "-m", "0", "--", "sleep", "1000"], { dir });
    expect(p.stderr).toBe(`einhorn: cannot write the pidfile: write ${join(fs, "einhorn.pid")}: ENOSPC (no space left on device)\n`);
    expect(p.code).toBe(1);
    expect(readdirSync(fs)).toEqual(["filler"]);
    expect(readdirSync(dir)).toEqual(["small"]);
    // No inode left: the lockfile cannot even be created.
    for (let i = 0; ; i++) {
      try { writeFileSync(join(fs, `i${i}`), ""); } catch { break; }
    }
    const before = readdirSync(fs).sort();
    const l = await runBinary(["-f", join(fs, "einhorn.lock"), "-m", "0", "--", "sleep", "1000"], { dir });
    expect(l.stderr).toBe(`einhorn: cannot create the lockfile: open ${join(fs, "einhorn.lock")}: ENOSPC (No space left on device)\n`);
    expect(l.code).toBe(1);
    expect(readdirSync(fs).sort()).toEqual(before);
    expect(readdirSync(dir)).toEqual(["small"]);
  });

  test("EMFILE at every step of start-up (RLIMIT_NOFILE from 5 up): one line with the errno, exit 1, no files left", async () => {
    const failures = new Set<string>();
    for (let n = 5; n <= 12; n++) {
      const dir = tempDir();
      const m = startMaster(["-m", "0", "-b", "127.0.0.1:0", "-b", "127.0.0.1:0", "--", "sleep", "1000"], { dir, wrap: ["prlimit", `--nofile=${n}`] });
      const started = await Promise.race([m.exited.then(() => false), m.waitForOutput(/Master \d+ starting/, 20_000).then(() => true)]);
      if (started) {
        expect(await stopMaster(m)).toBe(0);
        break;
      }
      const code = await m.exited;
      const lines = m.output().split("\n").filter((l) => l && !/ INFO: Bound /.test(l));
      expect({ n, code, lines }).toEqual({ n, code: 1, lines: [expect.stringMatching(/^einhorn: .*: EMFILE \(too many open files\)$/i)] });
      // Names what it was opening: a path (the test's files, /proc), or the -b address.
      expect(lines[0]!.includes(dir) || lines[0]!.includes(" /proc/") || lines[0]!.includes("cannot listen on 127.0.0.1:0")).toBe(true);
      failures.add(lines[0]!.replace(/\d+/g, "N"));
      expect(readdirSync(dir)).toEqual([]);
    }
    // Several distinct steps failed (lockfile, command socket, listeners, ...), each cleanly.
    expect(failures.size).toBeGreaterThanOrEqual(3);
  });
});

describe("several masters on one host (Einhorn takes its lock only while creating the command socket)", () => {
  test("two masters with different -d run side by side; a third on a -d in use is refused, and the first keeps its socket", async () => {
    const dir = tempDir();
    const a = startMaster(["-m", "0", "--", ...PY], { dir });
    await ackedWorkers(a.sockPath, 1);
    const b = startMaster(["-m", "0", "-d", join(dir, "b.sock"), "--", ...PY], { dir });
    await ackedWorkers(join(dir, "b.sock"), 1);
    const c = await runBinary(["-m", "0", "--", ...PY], { dir });
    expect(c.code).toBe(1);
    expect(c.stderr).toBe(`einhorn: another einhorn master (pid ${a.pid}) is serving the command socket ${a.sockPath}; give this master its own with -d PATH (or -c NAME), or stop the other one first\n`);
    expect((await stateJson(a.sockPath)).master.pid).toBe(a.pid);
    expect((await stateJson(join(dir, "b.sock"))).master.pid).toBe(b.pid);
    expect(await stopMaster(b)).toBe(0);
    expect(await stopMaster(a)).toBe(0);
    expect(readdirSync(dir).filter((f) => f.startsWith("einhorn") || f.endsWith(".sock"))).toEqual([]);
  });

  test("a nested master (a master whose worker is another master) runs, and stops with its parent", async () => {
    const dir = tempDir();
    const inner = join(dir, "inner.sock");
    const outer = startMaster(["-m", "1", "--", BIN, "-d", inner, "-m", "0", "-n", "2", "--", ...PY], { dir });
    const s = await ackedWorkers(inner, 2);
    const o = await ackedWorkers(outer.sockPath, 1);
    expect(s.master.pid).toBe(o.workers[0]!.pid);
    expect(await stopMaster(outer, "SIGINT", 20_000)).toBe(0);
    await waitFor("every process gone", () => processesTagged(outer.tag).length === 0);
    expect(existsSync(inner)).toBe(false);
    expect(existsSync(outer.sockPath)).toBe(false);
  });
});

describe("EINHORN_TIMEOUTS (docs/operations.md)", () => {
  test("a bad value stops the start with one usage line (exit 2) naming the entry and what is allowed; nothing is left", async () => {
    for (const [value, says] of [
      ["command-first-line=soon", "EINHORN_TIMEOUTS: 'command-first-line=soon': the value must be a number of seconds above 0 and at most 86400, like command-first-line=10"],
      ["first-line=1", "EINHORN_TIMEOUTS: 'first-line=1' names no timeout einhorn has; the settable ones are command-first-line, command-partial-line, metrics-head, metrics-answer, ack-wait-report, max-memory-young (NAME=SECONDS, comma-separated)"],
    ]) {
      const dir = tempDir();
      const r = await runBinary(["-b", "127.0.0.1:0", "--", "sleep", "1000"], { dir, env: { EINHORN_TIMEOUTS: value! } });
      expect({ code: r.code, stderr: r.stderr, stdout: r.stdout }).toEqual({ code: 2, stderr: `einhorn: ${says}\n`, stdout: "" });
      expect(readdirSync(dir)).toEqual([]);
    }
  });
});

// Who may write the --config file, and what cannot be read from it (issue
// 22, part 5): a file another user owns or may write, or that sits in a
// directory another user could swap it in, is refused, at start (a usage
// error, exit 2) and at upgrade (the upgrade fails, the master and its
// workers carry on). A FIFO, a device, a YAML alias bomb or deep nesting are
// refused at once, in one line, and never stall the master.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, chownSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ensureOtherUser, IS_ROOT, removeOtherUser, run, runBinary, startMaster, stateJson, stopMaster, tempDir, type StateReport, waitFor, within, worldWritableDir } from "../harness";

const rootReason = IS_ROOT ? "" : "needs root (useradd/setpriv for a second uid, chown)";
const skipped = rootReason ? ` (SKIPPED: ${rootReason})` : "";

afterAll(() => removeOtherUser());

const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter(Boolean);
const CONFIG = "number: 1\nack-mode: 0\nprogram: [sleep, '1000']\n";

/** A config file in a fresh temp dir (0700, or `dirMode`), root's and mode 0644 unless changed after. */
function configIn(text = CONFIG, dirMode = 0o700): { dir: string; file: string } {
  const dir = tempDir();
  chmodSync(dir, dirMode);
  const file = join(dir, "einhorn.yaml");
  writeFileSync(file, text, { mode: 0o644 });
  return { dir, file };
}

/** Start with `file`; refused at once, in one line, with exit status 2. */
async function refusedAtStart(file: string, dir: string): Promise<string> {
  const t0 = Date.now();
  const r = await runBinary(["--config", file], { dir, timeoutMs: 10_000 });
  expect(Date.now() - t0).toBeLessThan(8_000); // not a speed assertion: the old binary blocked or read for minutes
  expect(r.stdout).toBe("");
  expect(r.stderr.split("\n")).toHaveLength(2); // one line, then the final newline: no stack trace
  expect(r.code).toBe(2);
  return r.stderr;
}

/** A master running one `sleep 1000` worker from the config file `file`. */
async function masterFrom(file: string, dir: string) {
  const m = startMaster(["--config", file], { dir });
  const s = await waitFor("the worker up", async () => {
    const s = await stateJson(m.sockPath);
    return s.workers.length === 1 && s.workers[0]!.acked ? s : null;
  }, 20_000);
  return { m, s };
}

/** An upgrade the master refuses in one answer; then it still answers at once, with the same worker running the same program. */
async function upgradeRefused(m: { sockPath: string }, before: StateReport, reason: RegExp): Promise<void> {
  const t0 = Date.now();
  const r = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { timeoutMs: 10_000 });
  expect(r.stderr).toMatch(reason);
  expect(r.code).toBe(1);
  expect(Date.now() - t0).toBeLessThan(8_000);
  const t1 = Date.now();
  const st = await runBinary(["sh", "-d", m.sockPath, "-e", "state"], { timeoutMs: 10_000 });
  expect(st.code).toBe(0);
  expect(Date.now() - t1).toBeLessThan(5_000);
  const s = await stateJson(m.sockPath);
  expect(s.master.reexecs).toBe(before.master.reexecs);
  expect(s.workers.map((w) => w.pid)).toEqual(before.workers.map((w) => w.pid));
  expect(cmdline(s.workers[0]!.pid)).toEqual(["sleep", "1000"]);
}

describe("who may write the config file", () => {
  test.skipIf(!IS_ROOT)(`a file another uid owns is refused at start (exit 2, one line), and at upgrade after that user rewrote it: the old program keeps running${skipped}`, async () => {
    const other = ensureOtherUser()!;
    const { dir, file } = configIn(CONFIG, 0o755);
    chownSync(file, other.uid, other.gid);
    expect(await refusedAtStart(file, dir)).toBe(`einhorn: config ${file}: owned by uid ${other.uid}, not by root, which runs einhorn, so that user could change what einhorn runs; chown it to root\n`);

    chownSync(file, 0, 0);
    const { m, s } = await masterFrom(file, dir);
    // The file is given away; its new owner points program: at something else.
    chownSync(file, other.uid, other.gid);
    run([...other.as, "sh", "-c", `printf '%s\\n' 'number: 1' 'ack-mode: 0' "program: [sleep, '2000']" > ${file}`]);
    expect(readFileSync(file, "utf8")).toContain("2000");
    await upgradeRefused(m, s, new RegExp(`^einhorn sh: upgrade: Upgrade failed: config ${file}: owned by uid ${other.uid}, not by root, which runs einhorn, so that user could change what einhorn runs; chown it to root\\. Nothing was changed`));
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));

  test("a file group or others may write is refused, at start and at upgrade", async () => {
    const { dir, file } = configIn();
    chmodSync(file, 0o664);
    expect(await refusedAtStart(file, dir)).toBe(`einhorn: config ${file}: writable by group (mode 0664); chmod g-w,o-w it\n`);
    chmodSync(file, 0o646);
    expect(await refusedAtStart(file, dir)).toBe(`einhorn: config ${file}: writable by others (mode 0646); chmod g-w,o-w it\n`);

    chmodSync(file, 0o644);
    const { m, s } = await masterFrom(file, dir);
    chmodSync(file, 0o666);
    await upgradeRefused(m, s, /^einhorn sh: upgrade: Upgrade failed: config .*einhorn\.yaml: writable by group and others \(mode 0666\); chmod g-w,o-w it\. Nothing was changed/);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));

  test("a directory on the way that others may write (not sticky) is refused, however safe what is below it", async () => {
    const open = worldWritableDir();
    const file = join(open, "einhorn.yaml");
    writeFileSync(file, CONFIG, { mode: 0o644 });
    expect(await refusedAtStart(file, open)).toBe(`einhorn: config ${file}: directory ${open} on the way to it is writable by group and others (mode 0777) and not sticky, so another user could replace what is in it; chmod g-w,o-w ${open}\n`);
    // Deeper: a safe directory inside the open one does not help (the open one could swap it).
    const inner = join(open, "etc");
    mkdirSync(inner, { mode: 0o755 });
    writeFileSync(join(inner, "einhorn.yaml"), CONFIG, { mode: 0o644 });
    expect(await refusedAtStart(join(inner, "einhorn.yaml"), open)).toContain(`directory ${open} on the way to it is writable by group and others (mode 0777) and not sticky`);
  });

  test.skipIf(!IS_ROOT)(`a directory another uid owns is refused, even a safe-looking one${skipped}`, async () => {
    const other = ensureOtherUser()!;
    const { dir } = configIn();
    const theirs = join(dir, "theirs");
    mkdirSync(theirs, { mode: 0o755 });
    chownSync(theirs, other.uid, other.gid);
    const file = join(theirs, "einhorn.yaml");
    writeFileSync(file, CONFIG, { mode: 0o644 });
    expect(await refusedAtStart(file, dir)).toBe(`einhorn: config ${file}: directory ${theirs} on the way to it is owned by uid ${other.uid}, not by root, which runs einhorn, so that user could replace what is in it; chown it to root\n`);
  });

  test.skipIf(!IS_ROOT)(`in a sticky directory (as /tmp is) the master's own file is used; another user's file, or a link another user planted there, is not${skipped}`, async () => {
    const other = ensureOtherUser()!;
    // A directory made like /tmp (root's, mode 1777), inside this test's own temp dir.
    const tmp = tempDir();
    chmodSync(tmp, 0o1777);
    const mine = join(tmp, "einhorn-config-mine.yaml");
    const theirs = join(tmp, "einhorn-config-theirs.yaml");
    const link = join(tmp, "einhorn-config-link.yaml");
    const mode = Bun.spawnSync(["stat", "-c", "%a %u", tmp], { stdout: "pipe" }).stdout.toString().trim();
    expect(mode).toBe("1777 0");

    writeFileSync(mine, CONFIG, { mode: 0o644 });
    const dir = tempDir();
    const { m } = await masterFrom(mine, dir);
    expect(await stopMaster(m)).toBe(0);

    run([...other.as, "sh", "-c", `printf '%s\\n' 'program: [sleep, "1000"]' > ${theirs} && chmod 644 ${theirs}`]);
    expect(await refusedAtStart(theirs, dir)).toBe(`einhorn: config ${theirs}: owned by uid ${other.uid}, not by root, which runs einhorn, so that user could change what einhorn runs; chown it to root\n`);
    // A link to the master's own good file, but the link is theirs: they can point it anywhere.
    run([...other.as, "ln", "-s", mine, link]);
    expect(await refusedAtStart(link, dir)).toBe(`einhorn: config ${link}: the symbolic link ${link} in the shared directory ${tmp} (mode 1777) is owned by uid ${other.uid}, not by root, which runs einhorn; use a path only root can change\n`);
  }, within(60_000));
});

describe("nothing in the config file can block or exhaust the master", () => {
  test("a FIFO is refused at once at start; at upgrade it fails the upgrade and the master still answers at once", async () => {
    const { dir, file } = configIn();
    const fifo = join(dir, "fifo.yaml");
    run(["mkfifo", "-m", "644", fifo]);
    expect(await refusedAtStart(fifo, dir)).toBe(`einhorn: config ${fifo}: it is a FIFO (named pipe); a config file must be a regular file\n`);

    const { m, s } = await masterFrom(file, dir);
    rmSync(file);
    run(["mkfifo", "-m", "644", file]);
    await upgradeRefused(m, s, /^einhorn sh: upgrade: Upgrade failed: config .*einhorn\.yaml: it is a FIFO \(named pipe\); a config file must be a regular file\. Nothing was changed/);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));

  test("a symbolic link to /dev/zero is refused without reading it", async () => {
    const dir = tempDir();
    const link = join(dir, "einhorn.yaml");
    symlinkSync("/dev/zero", link);
    expect(await refusedAtStart(link, dir)).toBe(`einhorn: config ${link}: it leads to /dev/zero, which is a character device; a config file must be a regular file\n`);
  });

  test("a YAML alias bomb and deep nesting are one-line usage errors, found at once", async () => {
    const levels = ["a: &a [x, x, x, x, x, x, x, x, x]"];
    for (let i = 1; i < 9; i++) levels.push(`${"abcdefghi"[i]}: &${"abcdefghi"[i]} [${Array(9).fill(`*${"abcdefghi"[i - 1]}`).join(", ")}]`);
    const bomb = configIn(`${levels.join("\n")}\nprogram: [sleep, '1000']\n`);
    expect(await refusedAtStart(bomb.file, bomb.dir)).toBe(`einhorn: config ${bomb.file}: its aliases (*name) expand to more than 100 nodes; write the values out instead\n`);

    const flow = configIn(`number: ${"[".repeat(500_000)}${"]".repeat(500_000)}\n`);
    expect(await refusedAtStart(flow.file, flow.dir)).toBe(`einhorn: config ${flow.file}: line 1: nested more than 16 levels deep; a config is a mapping of options, some holding a list\n`);
    const block = configIn(`bind:\n${Array.from({ length: 40 }, (_, i) => `${" ".repeat(2 * i)}- `).join("\n")}x\n`);
    expect(await refusedAtStart(block.file, block.dir)).toMatch(new RegExp(`^einhorn: config ${block.file}: line \\d+: nested more than 16 levels deep`));
  });
});

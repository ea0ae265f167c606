// `einhorn sh` and what listens on the path it uses (issue 11, item 3): a
// socket served by another non-root uid is refused unless --trust-uid names
// it, and answer text shown on a terminal has its control and escape
// sequences neutralised (piped output stays byte for byte).
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, ensureOtherUser, FIXTURES, IS_ROOT, onCleanup, pythonFor, removeOtherUser, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor } from "../harness";

const rootReason = IS_ROOT ? "" : "needs root (useradd/setpriv for a second uid)";
const HOSTILE = "\\x1b]0;pwned\\x07\\x1b[2J\\x1b[31mred\\x9b31m\\u202eevil\\x00end";

afterAll(() => removeOtherUser());

/** A fake master run by the other user, in a directory anyone may write to (as a temp dir is). */
async function fakeMasterOfOtherUser(): Promise<{ sock: string; log: string; uid: number }> {
  const other = ensureOtherUser()!;
  const dir = tempDir();
  chmodSync(dir, 0o777);
  const sock = join(dir, "einhorn.sock");
  const log = join(dir, "received.log");
  const python = pythonFor(other);
  if (!python) throw new Error(`no python3 that uid ${other.uid} may run (a pyenv shim under /root is not enough)`);
  const p = Bun.spawn([...other.as, python, join(FIXTURES, "fake-master.py"), sock, log, HOSTILE], { cwd: "/", stdio: ["ignore", "pipe", "inherit"] });
  onCleanup(() => { p.kill("SIGKILL"); });
  await waitFor("the fake master listening", () => existsSync(sock));
  return { sock, log, uid: other.uid };
}

/** Run `einhorn sh` under a pseudo-terminal (script(1)), so its output goes to a terminal. */
async function shOnTerminal(args: string[]): Promise<string> {
  const cmd = [BIN, "sh", ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(" ");
  const p = Bun.spawn(["script", "-qec", cmd, "/dev/null"], { stdio: ["ignore", "pipe", "pipe"] });
  const [out] = await Promise.all([new Response(p.stdout).text(), p.exited]);
  return out;
}

describe("einhorn sh checks who serves the socket", () => {
  test.skipIf(!IS_ROOT)(`a socket served by another non-root uid is refused, and nothing is sent to it; --trust-uid is named${rootReason ? ` (SKIPPED: ${rootReason})` : ""}`, async () => {
    const fake = await fakeMasterOfOtherUser();
    const r = await runBinary(["sh", "-d", fake.sock, "-e", "state"]);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(new RegExp(`^einhorn sh: cannot connect to the einhorn master at ${fake.sock}: the socket is served by uid ${fake.uid} \\(pid \\d+\\), not by you \\(uid 0\\) or root; refusing to talk to it\\. If you trust uid ${fake.uid}, pass --trust-uid ${fake.uid}\\n$`));
    expect(r.stdout).toBe("");
    await Bun.sleep(200);
    expect(existsSync(fake.log)).toBe(false); // not even the greeting was sent
  });

  test.skipIf(!IS_ROOT)(`with --trust-uid: answers are shown, escape sequences neutralised on a terminal, kept byte for byte in a pipe${rootReason ? ` (SKIPPED: ${rootReason})` : ""}`, async () => {
    const fake = await fakeMasterOfOtherUser();
    const onTty = await shOnTerminal(["-d", fake.sock, "--trust-uid", String(fake.uid), "-e", "state"]);
    expect(onTty).not.toContain("\x1b");
    expect(onTty).not.toContain("\x07");
    expect(onTty).not.toContain("\u202e");
    expect(onTty).toContain("^[]0;pwned^G^[[2J^[[31mred\\x9b31m\\u202eevil^@end");
    const piped = await runBinary(["sh", "-d", fake.sock, "--trust-uid", String(fake.uid), "-e", "state"]);
    expect(piped.code).toBe(0);
    expect(piped.stdout).toBe(`${HOSTILE.replace(/\\x([0-9a-f]{2})|\\u([0-9a-f]{4})/g, (_m, x, u) => String.fromCharCode(parseInt(x ?? u, 16)))}\n`);
    expect(readFileSync(fake.log, "utf8")).toContain("ehlo");
  });

  test("the master's own socket, and root's, are trusted as before; a bad --trust-uid is a usage error", async () => {
    const m = startMaster(["-m", "0", "--", "sleep", "1000"]);
    await waitFor("the master up", () => stateJson(m.sockPath));
    const r = await runBinary(["sh", "-d", m.sockPath, "-e", "ehlo"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("Welcome");
    const bad = await runBinary(["sh", "-d", m.sockPath, "--trust-uid", "nobody", "-e", "ehlo"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--trust-uid wants a numeric uid, got 'nobody'");
    expect(await stopMaster(m)).toBe(0);
  });
});

// Logs people can read later: timestamps on the master's lines, and
// --worker-output capturing workers' lines whole, across re-execs, with a
// reader of the master's stdout far slower than the worker writes.
import { describe, expect, test } from "bun:test";
import { closeSync, constants as fsc, existsSync, openSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ask, FIXTURES, quietFor, sleep, startMaster, stateJson, stopMaster, tempDir, waitFor, within } from "../harness";

const CHATTY = join(FIXTURES, "chatty-worker.py");
const ISO = "\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z";

describe("log timestamps", () => {
  test("text lines start with a UTC ISO 8601 time; plain is Einhorn's layout; json is unchanged", async () => {
    const a = startMaster(["-m", "0", "--", "sleep", "1000"]);
    await a.waitForOutput(/is up/);
    const lines = a.output().trim().split("\n");
    for (const l of lines) expect(l).toMatch(new RegExp(`^${ISO} \\[MASTER ${a.pid}\\] (INFO|WARN|ERROR|DEBUG): `));
    const stamp = Date.parse(lines[0]!.slice(0, 24));
    expect(Math.abs(stamp - Date.now())).toBeLessThan(60_000);

    const b = startMaster(["--log-format", "plain", "-m", "0", "--", "sleep", "1000"]);
    await b.waitForOutput(/is up/);
    for (const l of b.output().trim().split("\n")) expect(l).toMatch(new RegExp(`^\\[MASTER ${b.pid}\\] (INFO|WARN|ERROR|DEBUG): `));

    const c = startMaster(["--log-format", "json", "-m", "0", "--", "sleep", "1000"]);
    await c.waitForOutput(/is up/);
    for (const l of c.output().trim().split("\n")) {
      const o = JSON.parse(l);
      expect(Object.keys(o)).toEqual(["time", "level", "pid", "role", "message"]);
      expect(o.time).toMatch(new RegExp(`^${ISO}$`));
    }
    for (const m of [a, b, c]) expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(60_000));
});

describe("--worker-output", () => {
  test("prefix: every line whole and tagged, none duplicated, drops counted, across two re-execs with a slow stdout reader", async () => {
    const dir = tempDir();
    const fifo = join(dir, "master-stdout");
    Bun.spawnSync(["mkfifo", fifo]);
    const rd = openSync(fifo, fsc.O_RDONLY | fsc.O_NONBLOCK);
    const wr = openSync(fifo, fsc.O_WRONLY);
    // 6 bursts of 5000 lines (~2 MB in all), 0.7 s apart: far more than the slow reader below takes.
    const BURSTS = 6, LINES = 5000;
    const m = startMaster(["--worker-output", "prefix", "-n", "1", "-m", "0.1", "--", "python3", CHATTY, "--done", dir, "--bursts", String(BURSTS), "--lines", String(LINES), "--pause", "700", "--final-after", join(dir, "go"), "--final", "100"], { dir, stdoutFd: wr });
    closeSync(wr);
    let received = "";
    let slow = true;
    let reading = true;
    const buf = Buffer.alloc(64 * 1024);
    // About 40 KB/s while slow: a worker held back by this reader would need ~50 s.
    const reader = (async () => {
      while (reading) {
        try {
          const n = readSync(rd, buf, 0, slow ? 4096 : buf.length, null);
          if (n === 0 && !slow) break; // EOF: the master exited
          received += buf.subarray(0, n).toString("latin1");
        } catch (e) {
          if ((e as { code?: string }).code !== "EAGAIN") throw e;
        }
        await sleep(slow ? 100 : 5);
      }
    })();
    const started = Date.now();
    const w = await waitFor("the worker", async () => (await stateJson(m.sockPath)).workers[0]);
    // Two re-execs of the master while the worker writes.
    await m.waitForOutput(/\[WORKER \d+ #0\] err \d+ 0/, 20_000);
    expect(await ask(m.sockPath, "reload")).toMatch(/^Reload done/);
    await m.waitForOutput(/\[WORKER \d+ #0\] err \d+ 2/, 20_000);
    expect(await ask(m.sockPath, "reload")).toMatch(/^Reload done/);
    const done = await waitFor("the worker to finish its bursts", () => existsSync(join(dir, `${w.pid}.bursts`)) && JSON.parse(readFileSync(join(dir, `${w.pid}.bursts`), "utf8")), 60_000);
    const took = (Date.now() - started) / 1000;
    expect(done.lines).toBe(BURSTS * LINES);
    // Never blocked by the slow reader: the bursts and pauses alone take ~4.2 s.
    expect(took).toBeLessThan(25);
    expect(done.longest_write).toBeLessThan(3);
    // Now read fast until the master has written everything it kept.
    slow = false;
    await waitFor("a drop report after the reader caught up", () => /Dropped \d+ lines? of worker output: the master's stdout/.test(m.output()), 30_000);
    // With the reader keeping up, 100 more lines (after both re-execs) all come through.
    writeFileSync(join(dir, "go"), "");
    await waitFor("the final lines", () => existsSync(join(dir, `${w.pid}.done`)), 30_000);
    const TOTAL = BURSTS * LINES + 100;
    await waitFor("the final lines through the master", () => received.includes(` seq ${w.pid} ${TOTAL - 1} `), 30_000);
    await quietFor(300);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
    await Promise.race([reader, sleep(5000)]);
    reading = false;
    closeSync(rd);

    const lines = received.split("\n");
    expect(lines.pop()).toBe(""); // ends in a newline: no half line
    const re = new RegExp(`^${ISO} \\[WORKER ${w.pid} #0\\] seq ${w.pid} (\\d+) (x+)$`);
    let last = -1;
    for (const l of lines) {
      const mm = re.exec(l);
      if (!mm) throw new Error(`not one whole captured line: ${JSON.stringify(l.slice(0, 200))}`);
      const k = Number(mm[1]);
      expect(mm[2]!.length).toBe(20 + (k % 50)); // nothing cut off, nothing glued on
      if (k <= last) throw new Error(`line ${k} after ${last}: duplicated or reordered`);
      last = k;
    }
    // Every one of the final lines (written after both re-execs, with a reader keeping up) arrived.
    const tail = lines.slice(-100).map((l) => Number(re.exec(l)![1]));
    expect(tail).toEqual(Array.from({ length: 100 }, (_, i) => BURSTS * LINES + i));
    const dropped = [...m.output().matchAll(/Dropped (\d+) lines? of worker output: the master's stdout/g)].reduce((n, x) => n + Number(x[1]), 0);
    expect(dropped).toBeGreaterThan(0);
    // Every line the worker wrote was either written by the master or counted as dropped.
    expect(lines.length + dropped).toBe(BURSTS * LINES + 100);
    // stderr lines went to the master's stderr, tagged, each whole.
    for (let b = 0; b < BURSTS; b++) expect(m.output()).toMatch(new RegExp(`^${ISO} \\[WORKER ${w.pid} #0\\] err ${w.pid} ${b}$`, "m"));
    expect(m.output().match(/Reload done/g)?.length ?? 0).toBeGreaterThanOrEqual(0);
    expect(m.output().match(/re-executed as einhorn/g)).toHaveLength(2);
  }, within(120_000));

  test("json: one object per line with pid, index and stream; unfinished last line and over-long lines", async () => {
    const script = 'printf "%s\\n" "plain \\"quoted\\" ü"; head -c 70000 /dev/zero | tr "\\0" y; echo; echo oops >&2; printf tail; exec sleep 1000';
    const m = startMaster(["--worker-output", "json", "--log-format", "json", "-m", "0", "--", "sh", "-c", script]);
    const w = await waitFor("the worker", async () => (await stateJson(m.sockPath)).workers[0]);
    await m.waitForOutput(/"message":"oops"/);
    const objs = () => m.output().trim().split("\n").map((l) => JSON.parse(l)).filter((o) => o.role === "worker");
    const base = { role: "worker", pid: w.pid, index: 0 };
    await waitFor("first lines", () => objs().filter((o) => o.stream === "stdout").length >= 3);
    // Order holds within a stream; stdout and stderr are separate streams.
    const got = objs().filter((o) => o.stream === "stdout");
    expect(got[0]).toMatchObject({ ...base, stream: "stdout", message: 'plain "quoted" ü' });
    expect(got[1]).toMatchObject({ ...base, stream: "stdout", partial: true });
    expect(got[1].message).toBe("y".repeat(64 * 1024));
    expect(got[2]).toMatchObject({ ...base, stream: "stdout", message: "y".repeat(70000 - 64 * 1024) });
    expect(got[2].partial).toBeUndefined();
    expect(objs().find((o) => o.stream === "stderr")).toMatchObject({ ...base, message: "oops" });
    // The unfinished "tail" is written when the stream ends.
    process.kill(w.pid, "SIGKILL");
    await waitFor("the unfinished last line", () => objs().some((o) => o.message === "tail" && o.pid === w.pid));
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(60_000));

  test("prefix: a worker cannot forge the master's lines: CR, ESC and OSC sequences, BEL, C1 and bidi controls are shown escaped", async () => {
    // CR back to the line's start then a forged master line; an OSC title ended by BEL; CSI erase-line;
    // an 8-bit CSI (C1); a right-to-left override; a lone byte that is not UTF-8; tabs and ü pass.
    const script = String.raw`printf 'ok\t\303\274\r[MASTER 1] ERROR: forged\n'; printf '\033]0;title\007\033[2Kgone\n'; printf '\302\233c \342\200\256evil \233x\n'; exec sleep 1000`;
    const m = startMaster(["--worker-output", "prefix", "-m", "0", "--", "sh", "-c", script]);
    const w = await waitFor("the worker", async () => (await stateJson(m.sockPath)).workers[0]);
    // (The master's own start line quotes the script: wait for the worker's line.)
    await m.waitForOutput(/\[WORKER \d+ #0\] .*evil/);
    const out = m.output();
    const tag = `[WORKER ${w.pid} #0] `;
    expect(out).toContain(`${tag}ok\tü^M[MASTER 1] ERROR: forged\n`);
    expect(out).toContain(`${tag}^[]0;title^G^[[2Kgone\n`);
    expect(out).toContain(`${tag}\\x9bc \\u202eevil \ufffdx\n`);
    // Nothing the worker wrote reached the output raw.
    expect(out).not.toMatch(/[\r\x07\x1b\x9b\u202e]/);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(60_000));
});

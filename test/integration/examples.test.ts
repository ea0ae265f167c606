// The programs in examples/ under the compiled master, and on their own.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freeTcpPort } from "../free-port";
import { BUN, fetchLine, httpGet, listenerPort, onCleanup, ROOT, startMaster, stateJson, stopMaster, type Master, type StateReport, waitFor, within } from "../harness";

const TIME_SERVER = join(ROOT, "examples", "time-server.ts");
const HTTP_WORKER = join(ROOT, "examples", "http-worker.ts");

async function allAcked(m: Master, n: number): Promise<StateReport> {
  return waitFor(`${n} acked workers`, async () => {
    const s = await stateJson(m.sockPath);
    return s.workers.length === n && s.workers.every((w) => w.acked) ? s : null;
  });
}

async function exitRecorded(m: Master, index: number): Promise<StateReport["exits"][string]> {
  return waitFor(`exit of index ${index}`, async () => {
    const s = await stateJson(m.sockPath);
    const e = s.exits[String(index)];
    return e && e.total >= 1 ? e : null;
  });
}

/** Run an example outside einhorn with PORT=0; resolves with the port it printed. */
async function runAlone(path: string, re: RegExp) {
  const proc = Bun.spawn([BUN, path], { env: { ...process.env, PORT: "0" }, stdout: "pipe", stderr: "pipe" });
  onCleanup(async () => { proc.kill("SIGKILL"); await proc.exited; });
  let out = "";
  void (async () => { for await (const c of proc.stdout) out += new TextDecoder().decode(c); })();
  const port = Number((await waitFor(`${path} to print its port`, () => re.exec(out)))[1]);
  return { proc, port };
}

const TIME_LINE = /^The time is \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \(worker (\d+), index (\S+)\)\n$/;

describe("examples/time-server.ts", () => {
  test("under einhorn: each connection gets the time, from an ACKed worker; USR2 makes it exit 0", async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-m", "manual", "-n", "2", "--", BUN, TIME_SERVER]);
    const s = await allAcked(m, 2);
    const port = listenerPort(s);
    const pids = new Set(s.workers.map((w) => w.pid));
    for (let i = 0; i < 3; i++) {
      const line = await fetchLine(port);
      const match = TIME_LINE.exec(line);
      expect(match).not.toBeNull();
      expect(pids.has(Number(match![1]))).toBe(true);
      expect(["0", "1"]).toContain(match![2]!);
    }
    const w = s.workers[0]!;
    process.kill(w.pid, "SIGUSR2");
    expect((await exitRecorded(m, w.index)).last_code).toBe(0);
    // The other worker still answers on the shared socket.
    expect(await fetchLine(port)).toMatch(TIME_LINE);
    expect(await stopMaster(m)).toBe(0);
  });

  test("on its own it listens on PORT", async () => {
    const { proc, port } = await runAlone(TIME_SERVER, /listening on 127\.0\.0\.1:(\d+)/);
    expect(await fetchLine(port)).toMatch(new RegExp(`\\(worker ${proc.pid}, index -\\)\\n$`));
    proc.kill("SIGUSR2");
    expect(await proc.exited).toBe(0);
  });
});

describe("examples/http-worker.ts", () => {
  test("under einhorn: serves, and a slow request survives the worker's graceful shutdown", async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-m", "manual", "-n", "2", "--", BUN, HTTP_WORKER]);
    const s = await allAcked(m, 2);
    const port = listenerPort(s);
    const hello = await (await fetch(`http://127.0.0.1:${port}/`)).text();
    expect(hello).toMatch(/^Hello from worker \d+ \(index [01]\)\n$/);
    const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { ok: boolean; pid: number };
    expect(health.ok).toBe(true);
    expect(s.workers.map((w) => w.pid)).toContain(health.pid);

    // A slow request on a keep-alive connection, then USR2 to both workers (either may have taken it): the worker closes it.
    const slow = httpGet(port, { path: "/slow?ms=600", keepAlive: true });
    await Bun.sleep(150);
    for (const w of s.workers) process.kill(w.pid, "SIGUSR2");
    const data = (await slow).raw;
    expect(data).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(data).toMatch(/\r\nConnection: close\r\n/i);
    expect(data).toMatch(/slept 600 ms in worker \d+\n$/);
    await m.waitForOutput(/draining \d+ connection\(s\), then exiting/);
    for (const w of s.workers) expect((await exitRecorded(m, w.index)).last_code).toBe(0);
    expect(await stopMaster(m)).toBe(0);
  });

  test("on its own it listens on PORT", async () => {
    const { proc, port } = await runAlone(HTTP_WORKER, /listening on http:\/\/localhost:(\d+)\//);
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe(`Hello from worker ${proc.pid} (index -)\n`);
    proc.kill("SIGUSR2");
    expect(await proc.exited).toBe(0);
  });
});

describe("the README's quick start", () => {
  test("the block that starts three Python workers runs as written (on a free port): curl answers, status, upgrade, graceful stop", async () => {
    const readme = readFileSync(join(ROOT, "README.md"), "utf8");
    const section = readme.slice(readme.indexOf("Three workers sharing one port"));
    const block = /```sh\n([\s\S]*?)```/.exec(section)![1]!;
    expect(block).toContain("./dist/einhorn -n 3");
    const port = freeTcpPort();
    const tmp = mkdtempSync(join(tmpdir(), "einhorn-quickstart-"));
    onCleanup(() => rmSync(tmp, { recursive: true, force: true }));
    // As pasted into a shell, then `wait`: the master's own exit status ends
    // the script. A step that fails stops it, and the master is not left behind.
    const script = `set -e\ntrap 'kill -TERM %1 2>/dev/null || true' EXIT\n${block.replaceAll("8080", String(port))}wait %1\n`;
    const p = Bun.spawn(["bash", "-c", script], { cwd: ROOT, env: { ...process.env, TMPDIR: tmp }, stdout: "pipe", stderr: "pipe" });
    const timer = setTimeout(() => p.kill("SIGKILL"), 60_000);
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    clearTimeout(timer);
    expect(out).toMatch(/^Hello from python worker \d+ \(index [0-2]\)$/m);
    expect(out).toMatch(/workers [1-3]\/3 up/);
    expect(out).toContain("Upgrade done");
    expect({ code, err: err.split("\n").filter((l) => / (ERROR|WARN): /.test(l)) }).toEqual({ code: 0, err: [] });
  }, within(90_000));
});

// The worker helper (einhorn/worker) under the compiled master: TypeScript
// workers run by Bun, ACKing over the command socket or -g descriptor,
// serving HTTP on the inherited socket, and draining on SIGUSR2.
import { beforeAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { BIN, BUN, FIXTURES, listenerPort, type Master, onCleanup, startMaster, stateJson, type StateReport, stopMaster, waitFor } from "../harness";

const HTTP_WORKER = join(FIXTURES, "http-worker.ts");
const ACK_WORKER = join(FIXTURES, "ack-worker.ts");

beforeAll(() => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build it first (bun scripts/build.ts, or bun run test)`);
});

async function allAcked(m: Master, n: number): Promise<StateReport> {
  return waitFor(`${n} acked workers`, async () => {
    const s = await stateJson(m.sockPath);
    return s.workers.length === n && s.workers.every((w) => w.acked) ? s : null;
  });
}

/** The line test/fixtures/ack-worker.ts prints once it has ACKed. */
interface AckReport {
  pid: number;
  isWorker: boolean;
  index: number | null;
  fds: number[];
  sockFd: number | null;
  sockFdClosedAfterAck: boolean | null;
  acked: boolean;
}

function reports(m: Master): AckReport[] {
  return [...m.output().matchAll(/^report (.*)$/gm)].map((x) => JSON.parse(x[1]!) as AckReport);
}

/**
 * A raw HTTP/1.1 connection keeping everything it receives. Not the harness's
 * httpGet: the drain test reads an idle keep-alive connection while it is
 * still open, then watches the worker close it.
 */
function connect(port: number) {
  const sock = net.connect(port, "127.0.0.1");
  const c = { sock, data: "", ended: null as unknown as Promise<void> };
  sock.on("data", (d) => { c.data += d.toString(); });
  c.ended = new Promise((r) => { sock.on("close", () => r()); sock.on("error", () => {}); });
  return c;
}

describe("serve() under einhorn", () => {
  test("both workers serve real HTTP on the shared socket, and ACK when listening", async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-m", "manual", "-n", "2", "--", BUN, HTTP_WORKER]);
    const s = await allAcked(m, 2);
    const port = listenerPort(s);
    const byIndex = new Map<number, number>(s.workers.map((w) => [w.index, w.pid]));

    // While one worker's event loop is held by /busy, only the other can accept.
    const first = fetch(`http://127.0.0.1:${port}/busy?ms=400`, { headers: { connection: "close" } }).then((r) => r.text());
    await Bun.sleep(150);
    const second = await (await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: "close" } })).text();
    const busyPid = Number((await first).replace("pid=", ""));
    const m2 = /^pid=(\d+) index=(\d+)$/.exec(second);
    expect(m2).not.toBeNull();
    const [otherPid, otherIndex] = [Number(m2![1]), Number(m2![2])];
    expect(new Set([busyPid, otherPid])).toEqual(new Set(byIndex.values()));
    expect(byIndex.get(otherIndex)).toBe(otherPid);

    const echo = await fetch(`http://127.0.0.1:${port}/echo`, { method: "POST", body: "through einhorn" });
    expect(echo.status).toBe(201);
    expect(await echo.text()).toBe("THROUGH EINHORN");

    expect(await stopMaster(m)).toBe(0);
  });

  test("SIGUSR2 during a slow request: it completes with Connection: close, idle keep-alive is closed, the worker exits 0", async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-m", "manual", "-n", "1", "--", BUN, HTTP_WORKER]);
    const s = await allAcked(m, 1);
    const port = listenerPort(s);
    const pid = s.workers[0]!.pid;

    const idle = connect(port);
    idle.sock.write("GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    await waitFor("first response", () => idle.data.includes(`pid=${pid}`));
    // HTTP/1.1 keeps the connection open unless a side says otherwise (Bun.serve does not write keep-alive).
    expect(idle.data).not.toMatch(/Connection: close/i);

    const slow = connect(port);
    slow.sock.write("GET /slow?ms=700 HTTP/1.1\r\nHost: t\r\n\r\n");
    await m.waitForOutput(new RegExp(`slow-start pid=${pid}`));
    process.kill(pid, "SIGUSR2");

    // The slow request (700 ms) finishes first; the idle keep-alive connection
    // is closed once serve()'s idleCloseMs (2 s) passes without a request.
    await slow.ended;
    await idle.ended;
    expect(slow.data).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(slow.data).toMatch(/\r\nConnection: close\r\n/i);
    expect(slow.data).toEndWith("\r\n\r\nslow done");

    const after = await waitFor("the worker's exit recorded", async () => {
      const st = await stateJson(m.sockPath);
      return (st.exits["0"]?.total ?? 0) >= 1 ? st : null;
    });
    expect(after.exits["0"]!.last_code).toBe(0);
    expect(after.exits["0"]!.last_signal).toBe(null);
    // The master replaces it; the replacement serves on the same socket.
    const again = await allAcked(m, 1);
    expect(again.workers[0]!.pid).not.toBe(pid);
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe(`pid=${again.workers[0]!.pid} index=0`);
    expect(await stopMaster(m)).toBe(0);
  });

  test("outside einhorn the same program binds PORT and drains on SIGUSR2", async () => {
    const proc = Bun.spawn([BUN, HTTP_WORKER], { env: { ...process.env, PORT: "0" }, stdout: "pipe", stderr: "inherit" });
    onCleanup(async () => { proc.kill("SIGKILL"); await proc.exited; });
    let out = "";
    const reader = (async () => { for await (const c of proc.stdout) out += new TextDecoder().decode(c); })();
    const port = Number((await waitFor("listening line", () => /listening port=(\d+)/.exec(out)))[1]);
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe(`pid=${proc.pid} index=null`);
    proc.kill("SIGUSR2");
    expect(await proc.exited).toBe(0);
    await reader;
  });
});

describe("ack() and ping() under einhorn", () => {
  test("manual ACK over EINHORN_SOCK_PATH marks the workers acked; ping is recorded", async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-m", "manual", "-n", "2", "--", BUN, ACK_WORKER], { env: { PING_ID: "ping-42" } });
    const s = await allAcked(m, 2);
    await waitFor("two reports", () => reports(m).length === 2);
    for (const r of reports(m)) {
      expect(r).toMatchObject({ isWorker: true, acked: true, sockFd: null, fds: [s.listeners[0]!.fd] });
    }
    expect(reports(m).map((r) => r.index).sort()).toEqual([0, 1]);
    const pinged = await waitFor("pings recorded", async () => {
      const st = await stateJson(m.sockPath);
      return st.workers.every((w) => w.last_ping) ? st : null;
    });
    for (const w of pinged.workers) expect(w.last_ping!.request_id).toBe("ping-42");
    expect(m.output()).not.toMatch(/ignoring/);
    expect(await stopMaster(m)).toBe(0);
    // Both workers' last line, read from the pipe they share with the master, however late it is read.
    await waitFor("both workers' goodbye", () => m.output().match(/^bye pid=/gm)?.length === 2);
  });

  test("with -g the ACK goes over EINHORN_SOCK_FD, which is closed afterwards", async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-b", "127.0.0.1:0", "-g", "-m", "manual", "-n", "2", "--", BUN, ACK_WORKER], { env: { PING_ID: "via-path" } });
    const s = await allAcked(m, 2);
    await waitFor("two reports", () => reports(m).length === 2);
    for (const r of reports(m)) {
      expect(typeof r.sockFd).toBe("number");
      expect(r).toMatchObject({ acked: true, sockFdClosedAfterAck: true, fds: s.listeners.map((l) => l.fd) });
    }
    // The descriptor is single-use: the ping after the ACK went over the path.
    const pinged = await waitFor("pings recorded", async () => {
      const st = await stateJson(m.sockPath);
      return st.workers.every((w) => w.last_ping?.request_id === "via-path") ? st : null;
    });
    expect(pinged.workers.length).toBe(2);
    expect(await stopMaster(m)).toBe(0);
  });

  test("asking for a socket einhorn did not pass is a clear error in the worker", async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-m", "manual", "-n", "1", "--", BUN, ACK_WORKER], { env: { ASK_INDEX: "2" } });
    await m.waitForOutput(/socket-error .*/);
    expect(m.output()).toContain("socket-error socketFd(2): no such socket; einhorn passed 1 socket (EINHORN_FD_COUNT=1), so the index must be 0..0");
    await stopMaster(m);
  });
});

// serve({ fetch }) on Bun under the compiled master: Bun.serve adopted onto
// the shared socket keeps the socket's promise. Every request is answered
// across upgrades under load; connections that arrive while an old worker
// drains go to the new generation (none is refused or reset); and when the
// socket cannot be adopted (a UNIX socket), serve() falls back to node:http
// and says so.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { BUN, FIXTURES, httpGet, listenerPort, startMaster, stateJson, stopMaster, tempDir, waitFor, within } from "../harness";
import { expectNoFailures, settled, needsOnPath, upgradesUnderLoad } from "../upgrade-under-load";

const WORKER = join(FIXTURES, "fetch-engine-worker.ts");

describe("serve({ fetch }) on Bun under einhorn", () => {
  test("uses Bun.serve on the inherited socket", async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-m", "manual", "-n", "2", "--", BUN, WORKER]);
    const s = await settled(m, 2, 0);
    const reply = (await httpGet(listenerPort(s))).raw;
    expect(reply).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*\r\n\r\nbun pid=\d+$/);
    expect(m.output()).not.toMatch(/instead of Bun\.serve/);
    expect(await stopMaster(m)).toBe(0);
  });

  test("an IPv6 socket is adopted too", async () => {
    const m = startMaster(["-b", "[::1]:0", "-m", "manual", "-n", "1", "--", BUN, WORKER]);
    const s = await settled(m, 1, 0);
    expect((await httpGet(listenerPort(s), { host: "::1" })).raw).toMatch(/\r\n\r\nbun pid=\d+$/);
    expect(m.output()).not.toMatch(/instead of Bun\.serve/);
    expect(await stopMaster(m)).toBe(0);
  });

  const wrkSkip = needsOnPath("wrk");
  test.skipIf(wrkSkip !== "")(`three upgrades under wrk load: no failed request${wrkSkip}`, async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-m", "manual", "-n", "2", "--", BUN, WORKER]);
    const s = await settled(m, 2, 0);
    const r = await upgradesUnderLoad(m, `http://127.0.0.1:${listenerPort(s)}/`, 2);
    expectNoFailures(r);
    expect(await stopMaster(m)).toBe(0);
  }, within(120_000));

  test("while an old worker drains, new connections go to the new one, none reset; its in-flight request ends with Connection: close", async () => {
    const m = startMaster(["-b", "127.0.0.1:0", "-m", "manual", "-n", "1", "--", BUN, WORKER]);
    const s0 = await settled(m, 1, 0);
    const port = listenerPort(s0);
    const old = s0.workers[0]!.pid;
    // Long enough to still be running once the upgrade (preflight, exec, a new Bun worker, its ACK) retired it on a loaded machine.
    const slow = httpGet(port, { path: "/slow?ms=8000", keepAlive: true, timeoutMs: 30_000 }).then((r) => r.raw);
    await m.waitForOutput(new RegExp(`slow-start pid=${old}`));
    // Upgrade without waiting: the new worker ACKs, the old one gets USR2 and drains its slow request.
    const sock = m.sockPath;
    const { runBinary } = await import("../harness");
    const up = runBinary(["sh", "-d", sock, "-e", "upgrade", "--timeout", "60"]);
    await waitFor("the old worker to be retiring", async () => (await stateJson(sock)).workers.find((w) => w.pid === old)?.retiring, 20_000);
    const s1 = await stateJson(sock);
    const fresh = s1.workers.find((w) => w.pid !== old)!.pid;
    // 200 connections, 20 at a time, during the drain.
    const replies: string[] = [];
    for (let i = 0; i < 10; i++) replies.push(...(await Promise.all(Array.from({ length: 20 }, () => httpGet(port).then((r) => r.raw)))));
    expect(replies.every((r) => r.endsWith(`bun pid=${fresh}`))).toBe(true);
    const still = await stateJson(sock);
    expect(still.workers.map((w) => w.pid)).toContain(old); // the drain was still going on
    const slowReply = await slow;
    expect(slowReply).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(slowReply).toMatch(/\r\nconnection: close\r\n/i);
    expect(slowReply).toEndWith(`bun pid=${old}`);
    expect((await up).code).toBe(0);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));

  test("on a UNIX socket it falls back to node:http, says why, and serves", async () => {
    const dir = tempDir();
    const path = join(dir, "app.sock");
    const m = startMaster(["-b", `unix:${path}`, "-m", "manual", "-n", "1", "--", BUN, WORKER], { dir });
    await settled(m, 1, 0);
    await m.waitForOutput(/serving through node:http instead of Bun\.serve: Bun\.serve adopts TCP sockets only/);
    const res = await fetch("http://localhost/", { unix: path } as RequestInit);
    expect(await res.text()).toMatch(/^node pid=\d+$/);
    expect(await stopMaster(m)).toBe(0);
  });
});

// The pieces of Bun.serve's adoption of an inherited socket (bun-adopt.ts),
// in this process, with real descriptors.
import { afterEach, describe, expect, test } from "bun:test";
import { packEpollEvent } from "../../ffi/epoll";
import { bind, close, getsockname, listen, socket } from "../../ffi/socket";
import { findRegistration, findTemplateListener, parseEpollFdinfo } from "../../src/worker/bun-adopt";
import { resetGracefulShutdownForTests } from "../../src/worker/graceful-shutdown";
import { serve, type WorkerServer } from "../../src/worker/serve";

const servers: WorkerServer[] = [];
const fds: number[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await Promise.race([s.shutdown(), Bun.sleep(3000)]);
  for (const fd of fds.splice(0)) { try { close(fd); } catch { /* closed */ } }
  resetGracefulShutdownForTests();
});

function listeningTcp(): { fd: number; port: number } {
  const fd = socket("inet");
  fds.push(fd);
  bind(fd, { family: "inet", host: "127.0.0.1", port: 0 });
  listen(fd, 64);
  const a = getsockname(fd);
  return { fd, port: a.family === "inet" ? a.port : 0 };
}

describe("parseEpollFdinfo", () => {
  test("reads every tfd line of a kernel 6.x fdinfo", () => {
    const text = [
      "pos:\t0", "flags:\t02000002", "mnt_id:\t16", "ino:\t1057",
      "tfd:       12 events:       19 data:     7f1c2c0016f0  pos:0 ino:2a3f1 sdev:8",
      "tfd:        7 events: 80000019 data:                7  pos:0 ino:2a3ee sdev:8",
      "",
    ].join("\n");
    expect(parseEpollFdinfo(text)).toEqual([
      { tfd: 12, events: 0x19, data: 0x7f1c2c0016f0n },
      { tfd: 7, events: 0x80000019, data: 7n },
    ]);
    expect(parseEpollFdinfo("pos:\t0\nflags:\t02\n")).toEqual([]);
  });
});

describe("packEpollEvent", () => {
  test("packed on x86-64, aligned on arm64", () => {
    expect([...packEpollEvent(0x19, 0x0102030405060708n, "x64")]).toEqual([0x19, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
    expect([...packEpollEvent(0x19, 0x0102030405060708n, "arm64")]).toEqual([0x19, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
  });
});

describe("finding Bun.serve's listener", () => {
  test("a port nobody in this process listens on is a reason, not a guess", () => {
    expect(findTemplateListener(1)).toBe("expected one listening socket on 127.0.0.1:1 for Bun.serve, found 0");
  });
  test("a socket no epoll instance watches is a reason", () => {
    const { fd } = listeningTcp();
    expect(findRegistration(fd)).toBe(`expected fd ${fd} in one epoll instance, found it in 0`);
  });
  test("Bun.serve's own listener is found, with its registration", () => {
    const s = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("x") });
    try {
      const fd = findTemplateListener(s.port!);
      expect(typeof fd).toBe("number");
      const reg = findRegistration(fd as number);
      expect(typeof reg).toBe("object");
      expect((reg as { events: number }).events & 1).toBe(1);
    } finally {
      void s.stop(true);
    }
  });
});

describe("serve({ fd, fetch }) adopts the descriptor into Bun.serve", () => {
  test("engine bun; answers on the given socket's port; shutdown stops accepting there", async () => {
    const { fd, port } = listeningTcp();
    const s = await serve({ fd, fetch: () => new Response("adopted"), exitOnShutdown: false, idleCloseMs: 50 });
    servers.push(s);
    expect(s.engine).toBe("bun");
    expect(s.port).toBe(port);
    expect(await (await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: "close" } })).text()).toBe("adopted");
    await s.shutdown();
    // The socket is still open here (this test holds it), so a connection is
    // queued by the kernel, but nobody accepts it any more.
    const r = await Promise.race([fetch(`http://127.0.0.1:${port}/`).then(() => "answered", () => "failed"), Bun.sleep(500).then(() => "unanswered")]);
    expect(r).toBe("unanswered");
  });

  test("engine node when asked for", async () => {
    const { fd, port } = listeningTcp();
    const s = await serve({ fd, fetch: () => new Response("bridged"), engine: "node", exitOnShutdown: false });
    servers.push(s);
    expect(s.engine).toBe("node");
    expect(await (await fetch(`http://127.0.0.1:${port}/`, { headers: { connection: "close" } })).text()).toBe("bridged");
  });
});

// listen(server) in this process, outside einhorn (port 0) or on a given
// descriptor: any node:http / node:https server, the drain, and the errors.
import { afterEach, describe, expect, test } from "bun:test";
import http from "node:http";
import https from "node:https";
import { bind, close, getsockname, listen as listenFd, socket } from "../../ffi/socket";
import { resetGracefulShutdownForTests } from "../../src/worker/graceful-shutdown";
import { listen, type ListeningServer } from "../../src/worker/listen";
import { httpGet } from "../harness";

const open: ListeningServer[] = [];
afterEach(async () => {
  for (const l of open.splice(0)) await Promise.race([l.shutdown(), Bun.sleep(1000)]);
  resetGracefulShutdownForTests();
});

async function start(server: http.Server, opts: Parameters<typeof listen>[1] = {}): Promise<ListeningServer> {
  const l = await listen(server, { port: 0, hostname: "127.0.0.1", exitOnShutdown: false, ...opts });
  open.push(l);
  return l;
}

describe("listen(server)", () => {
  test("serves a node:http server it did not create; the server itself never listens", async () => {
    const server = http.createServer((req, res) => res.end(`got ${req.url}`));
    const l = await start(server);
    expect(server.listening).toBe(false);
    expect(await (await fetch(`http://127.0.0.1:${l.port}/x`)).text()).toBe("got /x");
  });

  test("a server that already listens is refused, with what to do instead", async () => {
    const server = http.createServer(() => {});
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    try {
      await expect(listen(server)).rejects.toThrow(/already listening; give listen\(\) a server that has not been started/);
    } finally {
      server.close();
    }
  });

  test("something that is not a server is a TypeError", async () => {
    await expect(listen({} as http.Server)).rejects.toThrow(TypeError);
  });

  test("a given listening descriptor is served", async () => {
    const fd = socket("inet");
    try {
      bind(fd, { family: "inet", host: "127.0.0.1", port: 0 });
      listenFd(fd, 16);
      const a = getsockname(fd);
      const l = await start(http.createServer((_req, res) => res.end("on the fd")), { fd });
      expect(l.fd).toBe(fd);
      expect(await (await fetch(`http://127.0.0.1:${a.family === "inet" ? a.port : 0}/`, { headers: { connection: "close" } })).text()).toBe("on the fd");
      await l.shutdown();
    } finally {
      try { close(fd); } catch { /* node:net closed it with the server */ }
    }
  });

  test("drain: an in-flight response says Connection: close, then the connection closes; nothing new is accepted", async () => {
    const server = http.createServer((req, res) => {
      if (req.url === "/slow") setTimeout(() => res.end("slow done"), 200);
      else res.end("quick");
    });
    const l = await start(server, { idleCloseMs: 50 });
    // Keep-alive: the server decides to close, as it drains.
    const slow = httpGet(l.port!, { path: "/slow", keepAlive: true });
    await Bun.sleep(50);
    const done = l.shutdown();
    const data = (await slow).raw;
    expect(data).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(data).toMatch(/\r\nConnection: close\r\n/i);
    expect(data).toEndWith("slow done");
    await done;
    expect(l.connectionCount()).toBe(0);
    await expect(fetch(`http://127.0.0.1:${l.port}/`)).rejects.toThrow();
  });
});

describe("listen(https server) on Bun", () => {
  test("is refused with the reason and the alternatives (it works on Node: test/integration/package.test.ts)", async () => {
    const server = https.createServer({}, () => {});
    await expect(listen(server as unknown as http.Server, { port: 0 })).rejects.toThrow(/on Bun a node:https server cannot take connections from an inherited socket .* run this program on Node/);
  });
});

// serve() in this process, outside einhorn (it binds a port of its own or is
// given a descriptor): the fetch bridge, the node handler, and the graceful
// drain, observed with raw HTTP/1.1 connections.
import { afterEach, describe, expect, test } from "bun:test";
import net from "node:net";
import { bind, close, listen, socket } from "../../ffi/socket";
import { resetGracefulShutdownForTests } from "../../src/worker/graceful-shutdown";
import { EinhornWorkerError } from "../../src/worker/errors";
import { serve, type ServeOptions, type WorkerServer } from "../../src/worker/serve";

const servers: WorkerServer[] = [];
afterEach(async () => {
  // Every test leaves its server idle or drained; a bounded wait keeps a failure from hanging the rest.
  for (const s of servers.splice(0)) await Promise.race([s.shutdown(), Bun.sleep(1000)]);
  resetGracefulShutdownForTests();
});

async function start(opts: ServeOptions): Promise<WorkerServer> {
  const s = await serve({ port: 0, hostname: "127.0.0.1", exitOnShutdown: false, onError: () => {}, engine: "node", ...opts });
  servers.push(s);
  return s;
}

/**
 * A raw HTTP/1.1 client connection that keeps everything it receives. Not the
 * harness's httpGet (one request per connection): these tests send several
 * requests on one keep-alive connection, pipelined or one after another.
 */
class Conn {
  sock: net.Socket;
  data = "";
  ended: Promise<void>;
  constructor(port: number) {
    this.sock = net.connect(port, "127.0.0.1");
    this.sock.on("data", (d) => { this.data += d.toString(); });
    this.ended = new Promise((r) => { this.sock.on("close", () => r()); this.sock.on("error", () => {}); });
  }
  get(path: string, extra = ""): void {
    this.sock.write(`GET ${path} HTTP/1.1\r\nHost: test\r\n${extra}\r\n`);
  }
  /** Resolves once `n` complete responses (Content-Length framed or chunked) have arrived. */
  async responses(n: number, timeoutMs = 3000): Promise<string[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = splitResponses(this.data);
      if (got.length >= n) return got;
      if (Date.now() > deadline) throw new Error(`only ${got.length} responses: ${JSON.stringify(this.data)}`);
      await Bun.sleep(5);
    }
  }
}

function splitResponses(data: string): string[] {
  const out: string[] = [];
  let rest = data;
  for (;;) {
    const head = rest.indexOf("\r\n\r\n");
    if (head < 0) return out;
    const headers = rest.slice(0, head);
    const len = /content-length: (\d+)/i.exec(headers);
    if (len) {
      const end = head + 4 + Number(len[1]);
      if (rest.length < end) return out;
      out.push(rest.slice(0, end));
      rest = rest.slice(end);
    } else if (/transfer-encoding: chunked/i.test(headers)) {
      const end = rest.indexOf("\r\n0\r\n\r\n", head);
      if (end < 0) return out;
      out.push(rest.slice(0, end + 7));
      rest = rest.slice(end + 7);
    } else {
      out.push(rest);
      return out;
    }
  }
}

const slowFetch = async (req: Request) => {
  const url = new URL(req.url);
  if (url.pathname === "/slow") await Bun.sleep(Number(url.searchParams.get("ms") ?? 200));
  return new Response(`done ${url.pathname}`);
};

describe("request and response framing", () => {
  test("a request target starting with // stays a path; the Host header names the host", async () => {
    let seen = "";
    const s = await start({ fetch: (req) => { seen = req.url; return new Response("ok"); } });
    const c = new Conn(s.port!);
    c.sock.write("GET //evil.example/x?y=1 HTTP/1.1\r\nHost: good.example\r\n\r\n");
    await c.responses(1);
    const u = new URL(seen);
    expect(u.host).toBe("good.example");
    expect(u.pathname).toBe("//evil.example/x");
    expect(u.search).toBe("?y=1");
  });

  test("a Response's own Content-Length is not copied: the framing matches the bytes sent", async () => {
    // e.g. a fetch() whose body Bun decompressed keeps the compressed length.
    const s = await start({ fetch: () => new Response("hello world", { headers: { "content-length": "3", "x-kept": "yes" } }) });
    const c = new Conn(s.port!);
    c.get("/a");
    c.get("/b");
    const rs = await c.responses(2);
    for (const r of rs) {
      expect(r).toMatch(/\r\nContent-Length: 11\r\n/i);
      expect(r).toMatch(/\r\nx-kept: yes\r\n/i);
      expect(r).toEndWith("hello world");
    }
  });
});

describe("serve() with a fetch handler", () => {
  test("GET, POST body, status and headers travel both ways", async () => {
    const s = await start({
      async fetch(req) {
        const url = new URL(req.url);
        if (req.method === "POST") return new Response(`got ${await req.text()} at ${url.pathname}`, { status: 201, statusText: "Made", headers: { "x-a": "1" } });
        return new Response(`hello ${url.searchParams.get("n")} ${req.headers.get("x-test")}`);
      },
    });
    expect(s.underEinhorn).toBe(false);
    expect(s.acked).toBe(false);
    expect(s.fd).toBe(null);
    const r1 = await fetch(`http://127.0.0.1:${s.port}/hi?n=5`, { headers: { "x-test": "yes" } });
    expect(r1.status).toBe(200);
    expect(await r1.text()).toBe("hello 5 yes");
    expect(r1.headers.get("content-length")).toBe("11");
    const r2 = await fetch(`http://127.0.0.1:${s.port}/p`, { method: "POST", body: "abc" });
    expect(r2.status).toBe(201);
    expect(r2.statusText).toBe("Made");
    expect(r2.headers.get("x-a")).toBe("1");
    expect(await r2.text()).toBe("got abc at /p");
  });

  test("several Set-Cookie headers stay separate", async () => {
    const s = await start({
      fetch() {
        const h = new Headers();
        h.append("set-cookie", "a=1");
        h.append("set-cookie", "b=2");
        return new Response("ok", { headers: h });
      },
    });
    const r = await fetch(`http://127.0.0.1:${s.port}/`);
    expect(r.headers.getSetCookie()).toEqual(["a=1", "b=2"]);
  });

  test("a streamed body goes out chunked, as produced", async () => {
    const s = await start({
      fetch() {
        let i = 0;
        return new Response(new ReadableStream({
          async pull(c) {
            await Bun.sleep(10);
            if (i++ < 3) c.enqueue(new TextEncoder().encode(`part${i} `));
            else c.close();
          },
        }));
      },
    });
    const r = await fetch(`http://127.0.0.1:${s.port}/`);
    expect(r.headers.get("transfer-encoding")).toBe("chunked");
    expect(await r.text()).toBe("part1 part2 part3 ");
  });

  test("a large in-memory body arrives whole", async () => {
    const big = "x".repeat(3 * 1024 * 1024);
    const s = await start({ fetch: () => new Response(big) });
    const r = await fetch(`http://127.0.0.1:${s.port}/`);
    expect(r.headers.get("content-length")).toBe(String(big.length));
    expect((await r.text()).length).toBe(big.length);
  });

  test("HEAD gets the headers and no body", async () => {
    const s = await start({ fetch: () => new Response("body text", { headers: { "x-h": "1" } }) });
    const c = new Conn(s.port!);
    c.sock.write("HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    await c.ended;
    expect(c.data).toMatch(/^HTTP\/1\.1 200/);
    expect(c.data).toMatch(/x-h: 1/i);
    expect(c.data).toEndWith("\r\n\r\n");
  });

  test("a handler that throws, or returns no Response, is a 500 and reported", async () => {
    const errors: unknown[] = [];
    const s = await start({
      onError: (e) => errors.push(e),
      fetch(req) {
        if (req.url.endsWith("/throw")) throw new Error("boom");
        return "not a response" as unknown as Response;
      },
    });
    const r1 = await fetch(`http://127.0.0.1:${s.port}/throw`);
    expect(r1.status).toBe(500);
    const r2 = await fetch(`http://127.0.0.1:${s.port}/other`);
    expect(r2.status).toBe(500);
    expect(errors.map((e) => (e as Error).message)).toEqual(["boom", "the fetch handler returned [object String], not a Response"]);
  });
});

describe("serve() with a node:http handler", () => {
  test("serves requests", async () => {
    const s = await start({ handler: (req, res) => { res.setHeader("x-url", req.url ?? ""); res.end("node says hi"); } });
    const r = await fetch(`http://127.0.0.1:${s.port}/abc`);
    expect(r.headers.get("x-url")).toBe("/abc");
    expect(await r.text()).toBe("node says hi");
  });
  test("an async handler's rejection is a 500", async () => {
    const errors: unknown[] = [];
    const s = await start({ onError: (e) => errors.push(e), handler: async () => { throw new Error("async boom"); } });
    expect((await fetch(`http://127.0.0.1:${s.port}/`)).status).toBe(500);
    expect((errors[0] as Error).message).toBe("async boom");
  });
});

describe("serve() options", () => {
  test("exactly one of fetch or handler", async () => {
    await expect(serve({} as ServeOptions)).rejects.toThrow(/exactly one of `fetch`/);
    await expect(serve({ fetch: () => new Response(), handler: () => {} })).rejects.toThrow(/exactly one of `fetch`/);
  });
  test("an einhorn socket index outside einhorn is an error", async () => {
    await expect(serve({ index: 1, fetch: () => new Response() })).rejects.toThrow(/not running under einhorn/);
  });
  test("a port in use is a clear error naming the errno, with the runtime's error as its cause", async () => {
    const s = await start({ fetch: () => new Response() });
    const e = await serve({ port: s.port!, hostname: "127.0.0.1", fetch: () => new Response() }).then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(EinhornWorkerError);
    expect((e as Error).message).toMatch(new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${s.port}: .*EADDRINUSE`));
    expect(((e as Error).cause as { code?: string }).code).toBe("EADDRINUSE");
  });
  test("a given listening descriptor is served", async () => {
    const fd = socket("inet");
    bind(fd, { family: "inet", host: "127.0.0.1", port: 0 });
    listen(fd, 8);
    const s = await start({ fd, fetch: () => new Response("on the fd") });
    expect(s.fd).toBe(fd);
    expect(await (await fetch(`http://127.0.0.1:${s.port}/`)).text()).toBe("on the fd");
  });
  test("a given descriptor that does not listen is refused", async () => {
    const fd = socket("inet");
    try {
      await expect(serve({ fd, fetch: () => new Response() })).rejects.toThrow(new RegExp(`serve\\(\\{ fd \\}\\): fd ${fd} is a socket that is not listening`));
    } finally { close(fd); }
  });
});

describe("graceful drain", () => {
  test("in-flight request finishes with Connection: close; idle keep-alive closed after idleCloseMs; no new connections", async () => {
    const s = await start({ fetch: slowFetch, idleCloseMs: 100 });
    const idle = new Conn(s.port!);
    idle.get("/first");
    const [first] = await idle.responses(1);
    expect(first).toMatch(/Connection: keep-alive/i);
    const busy = new Conn(s.port!);
    busy.get("/slow?ms=300");
    await Bun.sleep(50);
    expect(s.connectionCount()).toBe(2);

    const done = s.shutdown();
    await idle.ended;
    // idleCloseMs (100) is shorter than the slow request (300): the idle one went first.
    expect(busy.sock.destroyed).toBe(false);

    const [slow] = await busy.responses(1);
    expect(slow).toMatch(/^HTTP\/1\.1 200/);
    expect(slow).toMatch(/\r\nConnection: close\r\n/i);
    expect(slow).toEndWith("done /slow");
    await busy.ended;
    await done;
    expect(s.connectionCount()).toBe(0);
    await expect(fetch(`http://127.0.0.1:${s.port}/`)).rejects.toThrow();
  });

  test("a request arriving on an idle keep-alive connection during the drain is answered with Connection: close, not reset", async () => {
    const s = await start({ fetch: slowFetch, idleCloseMs: 5_000 });
    const c = new Conn(s.port!);
    c.get("/first");
    await c.responses(1);
    const done = s.shutdown();
    await Bun.sleep(50);
    c.get("/second");
    const [, second] = await c.responses(2);
    expect(second).toMatch(/^HTTP\/1\.1 200/);
    expect(second).toMatch(/\r\nConnection: close\r\n/i);
    await c.ended;
    await done;
    expect(s.connectionCount()).toBe(0);
  });

  test("a response already streaming when the drain starts completes, then the connection closes", async () => {
    const s = await start({
      fetch: () => {
        let i = 0;
        return new Response(new ReadableStream({ async pull(c) { await Bun.sleep(40); if (i++ < 4) c.enqueue(new TextEncoder().encode(`${i}`)); else c.close(); } }));
      },
    });
    const c = new Conn(s.port!);
    c.get("/");
    await Bun.sleep(60);
    expect(c.data).toMatch(/keep-alive/i);
    const done = s.shutdown();
    const [r] = await c.responses(1);
    expect(r).toMatch(/\r\n1\r\n1\r\n1\r\n2\r\n1\r\n3\r\n1\r\n4\r\n0\r\n\r\n$/);
    await c.ended;
    await done;
  });

  test("requests pipelined behind a slow one when the drain starts are all answered; only the last says Connection: close", async () => {
    const s = await start({ fetch: slowFetch });
    const c = new Conn(s.port!);
    c.get("/slow?ms=150");
    await Bun.sleep(30);
    // Pipelined behind the slow one: it arrives on the connection, not through accept.
    c.get("/second");
    const done = s.shutdown();
    const rs = await c.responses(2);
    expect(rs[0]).toMatch(/^HTTP\/1\.1 200/);
    expect(rs[0]).not.toMatch(/Connection: close/i);
    expect(rs[0]).toEndWith("done /slow");
    expect(rs[1]).toMatch(/^HTTP\/1\.1 200/);
    expect(rs[1]).toMatch(/\r\nConnection: close\r\n/i);
    await c.ended;
    await done;
  });

  test("after the drain timeout, connections still busy are closed", async () => {
    const s = await start({ drainTimeoutMs: 150, fetch: () => new Promise<Response>(() => {}) });
    const c = new Conn(s.port!);
    c.get("/never");
    await Bun.sleep(30);
    const t0 = Date.now();
    await s.shutdown();
    await c.ended;
    const took = Date.now() - t0;
    expect(took).toBeGreaterThanOrEqual(140);
    expect(took).toBeLessThan(1000);
    expect(c.data).toBe("");
  });

  test("SIGUSR2 starts the drain (exitOnShutdown: false keeps the process)", async () => {
    const s = await start({ fetch: slowFetch });
    process.kill(process.pid, "SIGUSR2");
    await s.closed;
    await expect(fetch(`http://127.0.0.1:${s.port}/`)).rejects.toThrow();
  });
});

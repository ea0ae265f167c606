// The npm package: `npm pack` of this repository (its prepack builds pkg/),
// installed from the tarball into a fresh Node project (npm install) and a
// fresh Bun project (bun add), with no build step there and no runtime
// dependencies. A worker from each serves under the compiled master, through
// an upgrade.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ackedWorkers, BUN, httpGet, listenerPort, ROOT, runBinary, startMaster, stateJson, stopMaster, waitFor, within } from "../harness";
import { NODE, NPM, npmProject, type NpmProject } from "../npm-project";

let packDir = "";
let tarball = "";
let nodeProject: NpmProject;
let bunProject: NpmProject;

beforeAll(async () => {
  packDir = mkdtempSync(join(tmpdir(), "einhorn-pack-"));
  const p = Bun.spawn([NPM!, "pack", "--pack-destination", packDir, "--loglevel=error"], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`npm pack failed (${code}): ${out}${err}`);
  tarball = join(packDir, readdirSync(packDir).find((f) => f.endsWith(".tgz"))!);
  // @types/node and typescript only to typecheck a user's program against our .d.ts files.
  [nodeProject, bunProject] = await Promise.all([npmProject([tarball, "@types/node@20", "typescript@5"]), npmProject([tarball], "einhorn-bun-", "bun")]);
}, within(180_000));
afterAll(() => {
  nodeProject?.remove();
  bunProject?.remove();
  if (packDir) rmSync(packDir, { recursive: true, force: true });
});

const USER_IMPORT = 'import { ack, listen, serve, socketFd, onGracefulShutdown } from "einhorn/worker";';


/** Start the master on a worker program, check it answers, upgrade once, check the new generation answers, stop. */
async function underEinhorn(program: string[], cwd: string, expectBody: RegExp) {
  const m = startMaster(["-b", "127.0.0.1:0", "-n", "2", "-m", "manual", "--", ...program], { cwd });
  const s0 = await ackedWorkers(m.sockPath, 2, 0, 30_000);
  const port = listenerPort(s0);
  const pids0 = new Set(s0.workers.map((w) => String(w.pid)));
  const body = (await httpGet(port)).body;
  expect(body).toMatch(expectBody);
  expect(pids0.has(expectBody.exec(body)![1]!)).toBe(true);
  const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade", "--timeout", "60"]);
  expect(up.code).toBe(0);
  const s1 = await ackedWorkers(m.sockPath, 2, 1, 30_000);
  await waitFor("old workers gone", async () => (await stateJson(m.sockPath)).workers.every((w) => w.version === 1));
  const after = (await httpGet(port)).body;
  expect(s1.workers.map((w) => String(w.pid))).toContain(expectBody.exec(after)![1]!);
  expect(await stopMaster(m)).toBe(0);
  expect(m.output()).toMatch(/exited with status 0/);
  expect(m.output()).not.toMatch(/ERROR|exited with status [1-9]|killed by/);
}

/** Write `lines` (after USER_IMPORT) to `file` in the project `dir`, and run it with `runtime` through underEinhorn(). */
async function workerUnderEinhorn(dir: string, runtime: string, file: string, lines: string[], expectBody: RegExp) {
  writeFileSync(join(dir, file), [USER_IMPORT, ...lines].join("\n"));
  await underEinhorn([runtime, file], dir, expectBody);
}

describe("the tarball", () => {
  test("holds the built module and types; installs with no runtime dependencies", () => {
    const list = Bun.spawnSync(["tar", "-tzf", tarball]).stdout.toString().split("\n");
    expect(list).toContain("package/pkg/worker.js");
    expect(list).toContain("package/pkg/types/src/worker/index.d.ts");
    expect(list.filter((f) => f.startsWith("package/src/") || f.startsWith("package/test/"))).toEqual([]);
    const pkg = JSON.parse(readFileSync(join(bunProject.dir, "node_modules/einhorn/package.json"), "utf8"));
    expect(pkg.dependencies ?? {}).toEqual({});
    expect(pkg.private).toBeUndefined();
    // Nothing but einhorn itself was installed into the Bun project.
    expect(readdirSync(join(bunProject.dir, "node_modules")).filter((f) => !f.startsWith("."))).toEqual(["einhorn"]);
  });

  test("the module Node loads has no static bun:ffi import (Bun-only code is a chunk Node never loads)", () => {
    const src = readFileSync(join(nodeProject.dir, "node_modules/einhorn/pkg/worker.js"), "utf8");
    expect(src).not.toMatch(/^import[^;]*["']bun:ffi["']/m);
    expect(src).not.toMatch(/require\(["']bun:ffi["']\)/);
  });
});

describe("Node", () => {
  test(`a TypeScript program typechecks against the package's types: ${USER_IMPORT}`, () => {
    writeFileSync(join(nodeProject.dir, "typed.ts"), [
      USER_IMPORT,
      'import http from "node:http";',
      "const server = http.createServer((_req, res) => res.end('ok'));",
      "const l = await listen(server, { drainTimeoutMs: 5000 });",
      "const port: number | null = l.port;",
      "const s = await serve({ fetch: (req: Request) => new Response(req.url) });",
      "const fd: number = socketFd(0);",
      "const off: () => void = onGracefulShutdown(async () => {});",
      "const acked: Promise<boolean> = ack();",
      "// @ts-expect-error: serve needs fetch or handler of the right type",
      "serve({ fetch: 42 });",
      "export { port, s, fd, off, acked };",
    ].join("\n"));
    writeFileSync(join(nodeProject.dir, "tsconfig.json"), JSON.stringify({
      compilerOptions: { target: "ES2022", module: "NodeNext", moduleResolution: "NodeNext", strict: true, noEmit: true, types: ["node"] },
      files: ["typed.ts"],
    }));
    const r = Bun.spawnSync([NODE!, join(nodeProject.dir, "node_modules/typescript/bin/tsc"), "-p", nodeProject.dir], { cwd: nodeProject.dir });
    expect(r.stdout.toString() + r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
  }, within(240_000)); // tsc alone took over 60 s beside two CPU hogs and other suites

  test("listen(http.createServer(...)) under einhorn: serves, ACKs, survives an upgrade, drains on USR2", async () => {
    await workerUnderEinhorn(nodeProject.dir, NODE!, "worker.mjs", [
      'import http from "node:http";',
      "socketFd(0); // throws unless einhorn passed a listening socket",
      "const server = http.createServer((req, res) => res.end(`node worker ${process.pid} ${process.version}`));",
      "await listen(server);",
    ], /^node worker (\d+) v\d+/);
  });

  test("serve({fetch}) on Node goes through node:http", async () => {
    await workerUnderEinhorn(nodeProject.dir, NODE!, "fetch-worker.mjs", [
      "const s = await serve({ fetch: () => new Response(`fetch worker ${process.pid} ${s?.engine ?? ''}`) });",
      "if (s.engine !== 'node') throw new Error('engine ' + s.engine);",
    ], /^fetch worker (\d+) node$/);
  });
});

describe("TypeScript 5, 6 and 7 with the defaults of `tsc --init`", () => {
  // Fresh projects, one per major version, each with @types/node: the package's
  // types must compile as a newcomer's project has them, ESM (import) and
  // CommonJS (import = require), and with skipLibCheck off, since the
  // defaults list no types ("types": []) and our .d.ts use node:http.
  test("ESM and CommonJS programs typecheck against the package's types", async () => {
    const projects = await Promise.all(["5", "6", "7"].map((v) => npmProject([tarball, `typescript@${v}`, "@types/node@22"], `einhorn-ts${v}-`)));
    try {
      for (const p of projects) {
        const tsc = join(p.dir, "node_modules/.bin/tsc");
        const version = Bun.spawnSync([tsc, "-v"]).stdout.toString().trim();
        expect(Bun.spawnSync([tsc, "--init"], { cwd: p.dir }).exitCode).toBe(0);
        writeFileSync(join(p.dir, "server.ts"), [
          'import { isShuttingDown, listen, serve, socketFd } from "einhorn/worker";',
          "const shuttingDown: boolean = isShuttingDown();",
          "const fd: number = socketFd(0);",
          "export { shuttingDown, fd, listen, serve };",
        ].join("\n"));
        const cjs = join(p.dir, "cjs");
        mkdirSync(cjs);
        writeFileSync(join(cjs, "package.json"), JSON.stringify({ name: "cjs-app", version: "1.0.0", private: true }));
        writeFileSync(join(cjs, "tsconfig.json"), readFileSync(join(p.dir, "tsconfig.json")));
        symlinkSync(join(p.dir, "node_modules"), join(cjs, "node_modules"));
        writeFileSync(join(cjs, "server.ts"), [
          'import worker = require("einhorn/worker");',
          "const shuttingDown: boolean = worker.isShuttingDown();",
          "export = { shuttingDown };",
        ].join("\n"));
        for (const [dir, what] of [[p.dir, "ESM"], [cjs, "CommonJS"]] as const) {
          for (const extra of [[], ["--skipLibCheck", "false"]]) {
            const r = Bun.spawnSync([tsc, "-p", dir, "--noEmit", ...extra], { cwd: dir });
            expect(`${version} ${what} ${extra.join(" ")}: ${r.stdout}${r.stderr}`).toBe(`${version} ${what} ${extra.join(" ")}: `);
          }
        }
      }
    } finally {
      for (const p of projects) p.remove();
    }
  }, within(400_000));
});

describe("Node, https", () => {
  test.skipIf(!Bun.which("openssl"))("listen(https.createServer(...)): TLS served from the listener, drained", () => {
    const d = nodeProject.dir;
    const r = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", join(d, "key.pem"), "-out", join(d, "cert.pem")], { stdout: "ignore", stderr: "ignore" });
    expect(r.exitCode).toBe(0);
    writeFileSync(join(d, "tls.mjs"), [
      'import https from "node:https";',
      'import { readFileSync } from "node:fs";',
      'import { listen } from "einhorn/worker";',
      'const server = https.createServer({ key: readFileSync("key.pem"), cert: readFileSync("cert.pem") }, (_req, res) => res.end("over tls"));',
      'const l = await listen(server, { port: 0, hostname: "127.0.0.1", exitOnShutdown: false, idleCloseMs: 50 });',
      'const agent = new https.Agent({ keepAlive: true });',
      'const body = await new Promise((resolve, reject) => https.get({ host: "127.0.0.1", port: l.port, rejectUnauthorized: false, agent }, (res) => { let b = ""; res.on("data", (c) => { b += c; }); res.on("end", () => resolve(b)); }).on("error", reject));',
      'const before = l.connectionCount();',
      'await l.shutdown();',
      'console.log(JSON.stringify({ body, before, after: l.connectionCount() }));',
    ].join("\n"));
    const run = Bun.spawnSync([NODE!, "tls.mjs"], { cwd: d, timeout: 20_000 });
    expect(run.stderr.toString()).toBe("");
    expect(JSON.parse(run.stdout.toString())).toEqual({ body: "over tls", before: 1, after: 0 });
  });
});

describe("Bun", () => {
  test("serve({fetch}) under einhorn from the installed package", async () => {
    await workerUnderEinhorn(bunProject.dir, BUN, "worker.ts", [
      "let engine = '';",
      "const s = await serve({ fetch: () => new Response(`bun worker ${process.pid} ${engine}`) });",
      "engine = s.engine;",
    ], /^bun worker (\d+) (bun|node)$/);
  });

  test("listen(node:http server) under einhorn from the installed package", async () => {
    await workerUnderEinhorn(bunProject.dir, BUN, "listen-worker.ts", [
      'import http from "node:http";',
      "await listen(http.createServer((_req, res) => res.end(`bun listen ${process.pid}`)));",
    ], /^bun listen (\d+)$/);
  });
});

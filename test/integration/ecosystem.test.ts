// Where einhorn meets other systems: preload modules run by the embedded Bun,
// systemd's socket protocol in both directions, reaping as a subreaper, and
// the parent-death route (-k) keeping the worker's sockets.
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as sock from "../../ffi/socket";
import { ackedWorkers, fetchLine, FIXTURES, listenerPort, processesTagged, ROOT, runBinary, sleep, startMaster, stateJson, stopMaster, tempDir, waitFor } from "../harness";

const PY = ["python3", join(FIXTURES, "worker.py")];
/** PATH without node_modules/.bin: proves the workers need no Bun of their own. */
const PLAIN_PATH = "/usr/local/bin:/usr/bin:/bin";


const PRELOAD_OK = `
export function einhorn_main() {
  const fd = Number(process.env.EINHORN_FD_0);
  const tag = require("node:fs").readFileSync(process.cwd() + "/tag", "utf8").trim();
  (Bun.listen as any)({ fd, socket: { open(s: any) { s.write(\`\${tag} \${process.argv.slice(2).join(",")}\\n\`); s.end(); }, data() {} } });
}
`;

describe("preload (-p)", () => {
  test("workers run einhorn_main from a TypeScript module with the embedded runtime; ARGS are its argv", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "app.ts"), PRELOAD_OK);
    writeFileSync(join(dir, "tag"), "one");
    const m = startMaster(["-n", "2", "-m", "0.2", "-b", "127.0.0.1:0", "-p", "app.ts", "--", "x", "y"], { dir, env: { PATH: PLAIN_PATH } });
    const s = await ackedWorkers(m.sockPath, 2);
    expect(await fetchLine(listenerPort(s))).toBe("one x,y\n");
    expect(m.output()).toContain(`starting 2 worker(s) of: preload ${join(dir, "app.ts")} x y`);
    expect(await stopMaster(m)).toBe(0);
  });

  test("a module with a syntax error is refused before any worker starts", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "app.ts"), "export function einhorn_main( { oops\n");
    const r = await runBinary(["-b", "127.0.0.1:0", "-p", "app.ts"], { dir });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^einhorn: preload .*app\.ts: Expected "\}" but found end of file \(line 1\)$/);
    expect(r.stderr).not.toContain("Launched");
    expect(existsSync(join(dir, "einhorn.sock"))).toBe(false);
  });

  test("a module without einhorn_main is refused, naming what it does export", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "app.ts"), "export const main = () => 1;\n");
    const r = await runBinary(["-p", "app.ts"], { dir });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/does not export a function named einhorn_main \(it exports: main\)$/);
    const missing = await runBinary(["-p", "nope.ts"], { dir });
    expect(missing.code).toBe(2);
    expect(missing.stderr.trim()).toBe("einhorn: -p/--preload: no such file: nope.ts");
  });

  test("an upgrade re-checks the module: a broken one fails the upgrade and the old workers keep serving", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "app.ts"), PRELOAD_OK);
    writeFileSync(join(dir, "tag"), "one");
    const m = startMaster(["-n", "1", "-m", "0.1", "-b", "127.0.0.1:0", "-p", "app.ts"], { dir });
    const s0 = await ackedWorkers(m.sockPath, 1);
    // -m 0.1 ACKs on a timer: on a loaded machine that can come before the
    // worker has imported app.ts, and breaking the file then breaks the worker
    // itself. An answer means einhorn_main ran, so the module is loaded.
    expect(await fetchLine(listenerPort(s0))).toBe("one \n");
    writeFileSync(join(dir, "app.ts"), "export function einhorn_main( {\n");
    const bad = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/Upgrade failed: preflight .* --upgrade-check' exited with status 1: einhorn: preload .*app\.ts: Expected/);
    const s1 = await stateJson(m.sockPath);
    expect(s1.workers.map((w) => w.pid)).toEqual(s0.workers.map((w) => w.pid));

    writeFileSync(join(dir, "app.ts"), PRELOAD_OK);
    writeFileSync(join(dir, "tag"), "two");
    const good = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"]);
    expect(good.code).toBe(0);
    await ackedWorkers(m.sockPath, 1, 1);
    expect(await fetchLine(listenerPort(s0))).toBe("two \n");
    expect(await stopMaster(m)).toBe(0);
  });
});

describe("systemd's socket protocol", () => {
  test("--listen-fds: a worker that checks LISTEN_PID gets its sockets at 3, 4 with their names, -g fd after them", async () => {
    const m = startMaster(["--listen-fds", "-g", "-n", "2", "-b", "127.0.0.1:0,name=time", "-b", "127.0.0.1:0", "-m", "0.3", "--", "python3", join(ROOT, "examples", "listen-fds-worker.py")]);
    const s = await ackedWorkers(m.sockPath, 2);
    const line = await fetchLine(listenerPort(s));
    expect(line).toMatch(/^time \d{4}-\d\d-\d\dT[\d:]+ from pid \d+\n$/);
    expect(s.workers.map((w) => String(w.pid))).toContain(line.trim().split(" ").at(-1)!);
    expect(await fetchLine(listenerPort(s, 1))).toMatch(/^einhorn /);
    const pid = s.workers[0]!.pid;
    const environ = Object.fromEntries(readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").filter(Boolean).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));
    expect(environ).toMatchObject({ LISTEN_FDS: "2", LISTEN_PID: String(pid), LISTEN_FDNAMES: "time:einhorn", EINHORN_FD_0: "3", EINHORN_FD_1: "4", EINHORN_SOCK_FD: "5" });
    expect(await stopMaster(m)).toBe(0);
  });

  test("socket activation: einhorn takes systemd's sockets by name and by index and serves on them", async () => {
    const a = sock.socket("inet");
    const b = sock.socket("inet");
    for (const fd of [a, b]) {
      sock.bind(fd, { family: "inet", host: "127.0.0.1", port: 0 });
      sock.listen(fd, 16);
    }
    const portA = (sock.getsockname(a) as { port: number }).port;
    const portB = (sock.getsockname(b) as { port: number }).port;
    try {
      // As systemd does: sockets at 3 and 4, LISTEN_PID set to the service's own pid just before exec.
      const m = startMaster(["-b", "systemd:api", "-b", "systemd:0", "-m", "0", "--", ...PY], {
        wrap: ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=web:api exec "$@"', "sh"],
        extraFds: [a, b],
      });
      const s = await ackedWorkers(m.sockPath, 1);
      expect(s.listeners.map((l) => l.port)).toEqual([portB, portA]);
      expect(s.listeners.map((l) => l.spec)).toEqual(["systemd:api", "systemd:0"]);
      expect(await fetchLine(portA)).toMatch(/^\d+ 0\n$/);
      expect(await fetchLine(portB)).toMatch(/^\d+ 0\n$/);
      // The LISTEN_* variables were meant for the master, not for its workers.
      const env = readFileSync(`/proc/${s.workers[0]!.pid}/environ`, "latin1");
      expect(env).not.toContain("LISTEN_FDS=");
      expect(await stopMaster(m)).toBe(0);
    } finally {
      sock.close(a);
      sock.close(b);
    }
  });

  test("-b systemd:NAME without LISTEN_FDS, or with an unknown name, is a clear error", async () => {
    const r = await runBinary(["-b", "systemd:web", "--", "true"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe("einhorn: cannot use -b systemd:web: no sockets were passed by systemd (LISTEN_FDS is not set for this process)");
    const bad = await runBinary(["-b", "systemd:web,r", "--", "true"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("'r' cannot apply to a socket systemd already bound");
  });
});

describe("running under others", () => {
  test("--subreaper: an orphaned grandchild is reparented to the master and reaped", async () => {
    const m = startMaster(["--subreaper", "-v", "-m", "0", "--", "sh", "-c", "(sleep 3 &) ; exec sleep 1000"]);
    await waitFor("a worker", async () => (await stateJson(m.sockPath)).workers.length === 1);
    const orphan = await waitFor("the orphaned sleep", () => {
      for (const pid of processesTagged(m.tag)) {
        const cmd = readFileSync(`/proc/${pid}/cmdline`, "latin1");
        if (cmd.startsWith("sleep\u00003\u0000")) return pid;
      }
      return null;
    });
    const ppid = Number(readFileSync(`/proc/${orphan}/stat`, "latin1").split(") ")[1]!.split(" ")[1]);
    expect(ppid).toBe(m.pid);
    await m.waitForOutput(new RegExp(`Reaped ${orphan}, which is not a worker`), 15_000);
    expect(existsSync(`/proc/${orphan}`)).toBe(false); // reaped, not a zombie
    expect(await stopMaster(m)).toBe(0);
  });

  test("-k keeps the worker's sockets (the exec helper passes them on)", async () => {
    const m = startMaster(["-k", "-n", "1", "-m", "0", "-b", "127.0.0.1:0", "--", ...PY]);
    const s = await ackedWorkers(m.sockPath, 1);
    expect(await fetchLine(listenerPort(s))).toBe(`${s.workers[0]!.pid} 0\n`);
    expect(await stopMaster(m)).toBe(0);
  });
});

describe("examples", () => {
  test("examples/preload-app.ts serves HTTP through serve() with manual ACKs", async () => {
    const m = startMaster(["-n", "2", "-m", "manual", "-b", "127.0.0.1:0", "-p", join(ROOT, "examples", "preload-app.ts"), "--", "--greeting", "hi"], { cwd: ROOT });
    const s = await ackedWorkers(m.sockPath, 2);
    const res = await fetch(`http://127.0.0.1:${listenerPort(s)}/`);
    expect(await res.text()).toMatch(/^hi from preloaded worker \d+\n$/);
    expect(await stopMaster(m)).toBe(0);
  });

  test("examples/python-worker.py ACKs with the raw JSON line and drains on upgrade", async () => {
    const m = startMaster(["-n", "2", "-m", "manual", "-b", "127.0.0.1:0,n", "--", "python3", join(ROOT, "examples", "python-worker.py")], { cwd: ROOT });
    const s = await ackedWorkers(m.sockPath, 2);
    const url = `http://127.0.0.1:${listenerPort(s)}/`;
    expect(await (await fetch(url)).text()).toMatch(/^Hello from python worker \d+ \(index [01]\)\n$/);
    const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"]);
    expect(up.code).toBe(0);
    await ackedWorkers(m.sockPath, 2, 1);
    expect((await fetch(url)).status).toBe(200);
    expect(await stopMaster(m)).toBe(0);
  });
});

void sleep;

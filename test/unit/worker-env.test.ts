// The worker helper's reading of its environment, and its checks on the
// descriptors named there, against real sockets, pipes and files.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bind, close, connect, getsockname, listen, socket, socketpair } from "../../ffi/socket";
import { childIndexFrom, isWorkerEnv, readWorkerEnv, type Env } from "../../src/worker/env";
import { EinhornWorkerError } from "../../src/worker/errors";
import { checkListeningFd, launcherHint, socketFdFrom, socketFdsFrom, whatIsWrong } from "../../src/worker/sockets";
import { onCleanup } from "../harness";

const dir = mkdtempSync(join(tmpdir(), "einhorn-worker-env-"));
let made = 0;
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** A descriptor the test made: closed when the test ends (the harness's leak check counts sockets left open). */
const keep = (fd: number) => {
  made++;
  onCleanup(() => { try { close(fd); } catch { /* already closed */ } });
  return fd;
};

function listeningTcp(): number {
  const fd = keep(socket("inet"));
  bind(fd, { family: "inet", host: "127.0.0.1", port: 0 });
  listen(fd, 8);
  return fd;
}
function listeningUnix(): number {
  const fd = keep(socket("unix"));
  bind(fd, { family: "unix", path: join(dir, `l${made}.sock`) });
  listen(fd, 8);
  return fd;
}
function fifo(): number {
  const path = join(dir, `fifo${made}`);
  const r = Bun.spawnSync(["mkfifo", path]);
  if (r.exitCode !== 0) throw new Error("mkfifo failed");
  return keep(openSync(path, "r+"));
}
function regularFile(): number {
  const path = join(dir, `file${made}`);
  writeFileSync(path, "x");
  return keep(openSync(path, "w"));
}

const base = (over: Env = {}): Env => ({ EINHORN_MASTER_PID: "4242", EINHORN_FD_COUNT: "0", EINHORN_SOCK_PATH: "/tmp/x.sock", ...over });

describe("isWorkerEnv", () => {
  test("needs both EINHORN_MASTER_PID and EINHORN_FD_COUNT", () => {
    expect(isWorkerEnv(base())).toBe(true);
    expect(isWorkerEnv({ EINHORN_MASTER_PID: "1" })).toBe(false);
    expect(isWorkerEnv({ EINHORN_FD_COUNT: "0" })).toBe(false);
    expect(isWorkerEnv({})).toBe(false);
  });
});

describe("readWorkerEnv", () => {
  test("parses every variable", () => {
    const we = readWorkerEnv(base({ EINHORN_FD_COUNT: "2", EINHORN_FD_0: "7", EINHORN_FD_1: "9", EINHORN_SOCK_FD: "11", EINHORN_CHILD_INDEX: "3" }));
    expect(we).toEqual({ masterPid: 4242, sockPath: "/tmp/x.sock", sockFd: 11, childIndex: 3, fds: [7, 9] });
  });
  test("optional variables absent", () => {
    const we = readWorkerEnv({ EINHORN_MASTER_PID: "5", EINHORN_FD_COUNT: "0" });
    expect(we).toEqual({ masterPid: 5, sockPath: null, sockFd: null, childIndex: null, fds: [] });
  });
  const bad: [string, Env, RegExp][] = [
    ["non-numeric count", base({ EINHORN_FD_COUNT: "two" }), /EINHORN_FD_COUNT is "two", expected a whole number/],
    ["negative count", base({ EINHORN_FD_COUNT: "-1" }), /EINHORN_FD_COUNT is "-1"/],
    ["missing EINHORN_FD_n", base({ EINHORN_FD_COUNT: "2", EINHORN_FD_0: "7" }), /EINHORN_FD_COUNT is 2, but EINHORN_FD_1 is not set/],
    ["non-numeric fd", base({ EINHORN_FD_COUNT: "1", EINHORN_FD_0: "x7" }), /EINHORN_FD_0 is "x7"/],
    ["master pid 0", base({ EINHORN_MASTER_PID: "0" }), /EINHORN_MASTER_PID is "0", expected a whole number >= 1/],
    ["bad child index", base({ EINHORN_CHILD_INDEX: "first" }), /EINHORN_CHILD_INDEX is "first"/],
    ["bad sock fd", base({ EINHORN_SOCK_FD: "3.5" }), /EINHORN_SOCK_FD is "3.5"/],
  ];
  for (const [name, env, re] of bad) {
    test(`rejects ${name}`, () => {
      expect(() => readWorkerEnv(env)).toThrow(EinhornWorkerError);
      expect(() => readWorkerEnv(env)).toThrow(re);
    });
  }
  test("outside einhorn: a clear error", () => {
    expect(() => readWorkerEnv({})).toThrow(/not running under einhorn/);
  });
});

describe("childIndexFrom", () => {
  test("the index, or null", () => {
    expect(childIndexFrom(base({ EINHORN_CHILD_INDEX: "0" }))).toBe(0);
    expect(childIndexFrom(base({ EINHORN_CHILD_INDEX: "12" }))).toBe(12);
    expect(childIndexFrom(base())).toBe(null);
    expect(childIndexFrom({ EINHORN_CHILD_INDEX: "1" })).toBe(null);
  });
});

describe("checkListeningFd with real descriptors", () => {
  test("a listening TCP socket passes", () => {
    const fd = listeningTcp();
    expect(whatIsWrong(fd)).toBe(null);
    expect(checkListeningFd(fd)).toEqual({ fd, family: "inet" });
  });
  test("a listening UNIX socket passes", () => {
    const fd = listeningUnix();
    expect(checkListeningFd(fd)).toEqual({ fd, family: "unix" });
  });
  test("a socket that never listened is rejected, naming the fd", () => {
    const fd = keep(socket("inet"));
    bind(fd, { family: "inet", host: "127.0.0.1", port: 0 });
    // A bound TCP socket is in none of the kernel's /proc/net tables: its family is not known.
    expect(() => checkListeningFd(fd, `EINHORN_FD_0=${fd}`)).toThrow(
      new RegExp(`^EINHORN_FD_0=${fd}: fd ${fd} is a socket that is not listening \\(a TCP socket never listen\\(\\)ed`),
    );
  });
  test("a connected TCP socket is named as one", async () => {
    const l = listeningTcp();
    const { port } = getsockname(l) as { port: number };
    const c = keep(socket("inet"));
    connect(c, { family: "inet", host: "127.0.0.1", port });
    expect(() => checkListeningFd(c)).toThrow(new RegExp(`fd ${c} is a TCP/IPv4 stream socket that is not listening`));
  });
  test("an IPv6 listener passes and says so", () => {
    const fd = keep(socket("inet6"));
    bind(fd, { family: "inet6", host: "::1", port: 0 });
    listen(fd, 4);
    expect(checkListeningFd(fd)).toEqual({ fd, family: "inet6" });
  });
  test("a connected socket (one end of a socketpair) is rejected", () => {
    const [a, b] = socketpair();
    keep(a); keep(b);
    expect(() => checkListeningFd(a)).toThrow(new RegExp(`fd ${a} is a UNIX stream socket that is not listening`));
  });
  test("a pipe is rejected as a pipe", () => {
    const fd = fifo();
    expect(() => checkListeningFd(fd, `EINHORN_FD_1=${fd}`)).toThrow(new RegExp(`EINHORN_FD_1=${fd}: fd ${fd} is a pipe \\(FIFO\\), not a socket`));
  });
  test("a regular file is rejected as a file", () => {
    const fd = regularFile();
    expect(() => checkListeningFd(fd)).toThrow(new RegExp(`fd ${fd} is a regular file, not a socket`));
  });
  test("a closed descriptor is rejected as not open", () => {
    const fd = socket("inet");
    close(fd);
    expect(() => checkListeningFd(fd)).toThrow(new RegExp(`fd ${fd} is not an open descriptor`));
  });
  test("a number that is no descriptor is rejected", () => {
    expect(() => checkListeningFd(-1)).toThrow(/-1 is not a file descriptor number/);
  });
});

describe("socketFdsFrom / socketFdFrom", () => {
  test("every inherited socket, checked, in order", () => {
    const a = listeningTcp();
    const b = listeningUnix();
    const env = base({ EINHORN_FD_COUNT: "2", EINHORN_FD_0: String(a), EINHORN_FD_1: String(b) });
    expect(socketFdsFrom(env)).toEqual([a, b]);
    expect(socketFdFrom(0, env)).toBe(a);
    expect(socketFdFrom(1, env)).toBe(b);
  });
  test("one bad descriptor fails the lot, naming its variable", () => {
    const a = listeningTcp();
    const p = fifo();
    const env = base({ EINHORN_FD_COUNT: "2", EINHORN_FD_0: String(a), EINHORN_FD_1: String(p) });
    expect(() => socketFdsFrom(env)).toThrow(new RegExp(`EINHORN_FD_1=${p}: fd ${p} is a pipe`));
    expect(socketFdFrom(0, env)).toBe(a);
  });
  test("an index out of range says how many there are", () => {
    const a = listeningTcp();
    const env = base({ EINHORN_FD_COUNT: "1", EINHORN_FD_0: String(a) });
    expect(() => socketFdFrom(1, env)).toThrow(/socketFd\(1\): no such socket; einhorn passed 1 socket \(EINHORN_FD_COUNT=1\), so the index must be 0..0/);
    expect(() => socketFdFrom(-1, env)).toThrow(/socketFd\(-1\): no such socket/);
    expect(() => socketFdFrom(0.5, env)).toThrow(/socketFd\(0.5\): no such socket/);
  });
  test("no sockets at all", () => {
    expect(socketFdsFrom(base())).toEqual([]);
    expect(() => socketFdFrom(0, base())).toThrow(/einhorn passed no sockets \(EINHORN_FD_COUNT=0: give the master a -b ADDR\)/);
  });
  test("outside einhorn: a clear error", () => {
    expect(() => socketFdsFrom({})).toThrow(/socketFds\(\): not running under einhorn/);
    expect(() => socketFdFrom(0, {})).toThrow(/socketFd\(0\): not running under einhorn/);
  });
});

describe("a launcher between einhorn and the worker", () => {
  test("a missing socket with a parent that is not the master says, in one line, that a launcher dropped the sockets and how to start node directly", () => {
    const fd = socket("inet");
    close(fd);
    // This test's parent is not pid 999999 (the "master" of this environment).
    const env: Env = { EINHORN_MASTER_PID: "999999", EINHORN_FD_COUNT: "1", EINHORN_FD_0: String(fd) };
    let message = "";
    try { socketFdFrom(0, env); } catch (e) { message = (e as Error).message; }
    expect(message).not.toContain("\n");
    expect(message).toStartWith(`EINHORN_FD_0=${fd}: fd ${fd} is not an open descriptor; expected a listening stream socket. This process's parent (pid ${process.ppid}, `);
    expect(message).toContain("is not the einhorn master (pid 999999): a process between einhorn and this one (npm, npx, yarn, a shell that closes descriptors) dropped the sockets; have einhorn start node directly (einhorn ... -- node server.js; for TypeScript: node --import tsx server.ts)");
  });
  test("no hint when the parent is the master", () => {
    expect(launcherHint(process.ppid)).toBeNull();
    const fd = socket("inet");
    close(fd);
    let message = "";
    try { socketFdFrom(0, { EINHORN_MASTER_PID: String(process.ppid), EINHORN_FD_COUNT: "1", EINHORN_FD_0: String(fd) }); } catch (e) { message = (e as Error).message; }
    expect(message).toBe(`EINHORN_FD_0=${fd}: fd ${fd} is not an open descriptor; expected a listening stream socket`);
  });
});

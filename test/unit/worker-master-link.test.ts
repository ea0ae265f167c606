// ack() and ping() against a stand-in master: a UNIX listener for
// EINHORN_SOCK_PATH, and a socketpair end for EINHORN_SOCK_FD (einhorn -g).
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import { fstatSync, mkdtempSync, readSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { UnixSocketListener } from "bun";
import { bind, close, listen, socket, socketpair } from "../../ffi/socket";
import { decodeLine, encodeMessage } from "../../src/protocol";
import { ack, encodeWorkerMessage, ping, resetMasterLinkForTests, sendToMaster } from "../../src/worker/master-link";

const dir = mkdtempSync(join(tmpdir(), "einhorn-worker-link-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => resetMasterLinkForTests());

interface FakeMaster { path: string; lines: string[]; listener: UnixSocketListener<undefined>; stop(): void }
let seq = 0;

/** Reads lines; closes each connection after its first line, answering `answer` first when given. */
function fakeMaster(answer?: string): FakeMaster {
  const path = join(dir, `m${++seq}.sock`);
  const lines: string[] = [];
  const listener = Bun.listen<undefined>({
    unix: path,
    socket: {
      data(s, d) {
        for (const line of d.toString().split("\n").filter(Boolean)) lines.push(line);
        if (answer) s.write(encodeMessage({ message: answer }));
        s.end();
      },
    },
  });
  return { path, lines, listener, stop: () => listener.stop(true) };
}

const env = (over: Record<string, string>) => ({ EINHORN_MASTER_PID: String(process.ppid), EINHORN_FD_COUNT: "0", ...over });
const decoded = (line: string) => decodeLine(line) as Record<string, unknown>;

describe("encodeWorkerMessage", () => {
  test("the reference wire format: JSON, one line", () => {
    expect(encodeWorkerMessage({ command: "worker:ack", pid: 123 })).toBe('{"command":"worker:ack","pid":123}\n');
  });
  test("% and newlines are escaped and decode back", () => {
    const line = encodeWorkerMessage({ command: "worker:ping", pid: 1, request_id: "50%\nmore" });
    expect(line.slice(0, -1)).not.toContain("\n");
    expect(decoded(line.slice(0, -1)).request_id).toBe("50%\nmore");
  });
});

describe("outside einhorn", () => {
  test("ack and ping resolve false and send nothing", async () => {
    expect(await ack({ env: {} })).toBe(false);
    expect(await ping("x", { env: {} })).toBe(false);
  });
});

describe("over EINHORN_SOCK_PATH", () => {
  test("ack sends one line with our pid and resolves true once the master closed", async () => {
    const m = fakeMaster();
    try {
      expect(await ack({ env: env({ EINHORN_SOCK_PATH: m.path }) })).toBe(true);
      expect(m.lines.map(decoded)).toEqual([{ command: "worker:ack", pid: process.pid }]);
    } finally { m.stop(); }
  });
  test("a second ack is the first one's promise: the master sees one line", async () => {
    const m = fakeMaster();
    try {
      const e = env({ EINHORN_SOCK_PATH: m.path });
      const p1 = ack({ env: e });
      const p2 = ack({ env: e });
      expect(p2).toBe(p1);
      await p1;
      expect(await ack({ env: e })).toBe(true);
      expect(m.lines.length).toBe(1);
    } finally { m.stop(); }
  });
  test("ping carries the request id", async () => {
    const m = fakeMaster();
    try {
      expect(await ping({ job: 7 }, { env: env({ EINHORN_SOCK_PATH: m.path }) })).toBe(true);
      expect(decoded(m.lines[0]!)).toEqual({ command: "worker:ping", pid: process.pid, request_id: { job: 7 } });
    } finally { m.stop(); }
  });
  test("an answer from the master is a refusal, and its text is the error", async () => {
    const m = fakeMaster("Permission denied: uid 1234 may not use this command socket");
    try {
      await expect(ack({ env: env({ EINHORN_SOCK_PATH: m.path }) })).rejects.toThrow(/the master refused the message: Permission denied: uid 1234/);
    } finally { m.stop(); }
  });
  test("after a failed ack, the next one tries again", async () => {
    const path = join(dir, "later.sock");
    const e = env({ EINHORN_SOCK_PATH: path });
    // The errno is named even where the runtime's message ("Failed to connect", Bun) leaves it out.
    await expect(ack({ env: e })).rejects.toThrow(/cannot connect to the command socket EINHORN_SOCK_PATH=.*later\.sock: .*ENOENT/);
    const listener = Bun.listen({ unix: path, socket: { data(s) { s.end(); } } });
    try {
      expect(await ack({ env: e })).toBe(true);
    } finally { listener.stop(true); }
  });
  test("a master that never closes: timeout error", async () => {
    const path = join(dir, "silent.sock");
    const listener = Bun.listen({ unix: path, socket: { data() {} } });
    try {
      await expect(ack({ env: env({ EINHORN_SOCK_PATH: path }), timeoutMs: 100 })).rejects.toThrow(/did not close the command connection .* within 100 ms/);
    } finally { listener.stop(true); }
  });
  test("not a child of EINHORN_MASTER_PID: refused with an explanation", async () => {
    const m = fakeMaster();
    try {
      await expect(ack({ env: { ...env({ EINHORN_SOCK_PATH: m.path }), EINHORN_MASTER_PID: "1" } })).rejects.toThrow(
        /EINHORN_MASTER_PID is 1, but this process's parent is \d+: either this is a child of a worker/,
      );
      expect(m.lines).toEqual([]);
    } finally { m.stop(); }
  });
  test("no way to reach the master", async () => {
    await expect(ack({ env: env({}) })).rejects.toThrow(/neither EINHORN_SOCK_PATH nor an unused EINHORN_SOCK_FD is set/);
  });
});

describe("over EINHORN_SOCK_FD (einhorn -g)", () => {
  // The "master" end of the pair is made by this process, so the peer check expects our own pid.
  const fdEnv = (fd: number, over: Record<string, string> = {}) => ({ EINHORN_MASTER_PID: String(process.pid), EINHORN_FD_COUNT: "0", EINHORN_SOCK_FD: String(fd), ...over });

  test("written to the descriptor, which is then closed; later messages use the path", async () => {
    const [masterEnd, workerEnd] = socketpair();
    const m = fakeMaster();
    try {
      const e = fdEnv(workerEnd, { EINHORN_SOCK_PATH: m.path });
      expect(await sendToMaster({ command: "worker:ack", pid: process.pid }, { env: e, checkParent: false })).toBe("fd");
      const buf = Buffer.alloc(256);
      const n = readSync(masterEnd, buf);
      expect(buf.subarray(0, n).toString()).toBe(`{"command":"worker:ack","pid":${process.pid}}\n`);
      expect(() => fstatSync(workerEnd)).toThrow(/EBADF/);
      expect(await sendToMaster({ command: "worker:ping", pid: process.pid, request_id: 1 }, { env: e, checkParent: false })).toBe("path");
      expect(decoded(m.lines[0]!).command).toBe("worker:ping");
    } finally {
      close(masterEnd);
      m.stop();
    }
  });
  test("a descriptor that is no longer the master's connection is left alone; the path is used", async () => {
    // Simulate the number being reused for a listening socket.
    const l = socket("unix");
    bind(l, { family: "unix", path: join(dir, "reused.sock") });
    listen(l, 1);
    const m = fakeMaster();
    try {
      const e = fdEnv(l, { EINHORN_SOCK_PATH: m.path });
      expect(await sendToMaster({ command: "worker:ack", pid: process.pid }, { env: e, checkParent: false })).toBe("path");
      expect(fstatSync(l).isSocket()).toBe(true);
    } finally {
      close(l);
      m.stop();
    }
  });
  test("without a path, that is an error naming the descriptor", async () => {
    const l = socket("inet");
    try {
      await expect(sendToMaster({ command: "worker:ack", pid: process.pid }, { env: fdEnv(l), checkParent: false })).rejects.toThrow(
        new RegExp(`EINHORN_SOCK_FD=${l} is no longer a connection to the master`),
      );
    } finally { close(l); }
  });
});

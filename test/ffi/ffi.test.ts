// The ffi/ layer against the real kernel: no master, no mocks.
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, writeSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SysError, errnoName, Errno } from "../../ffi/errno";
import * as proc from "../../ffi/process";
import { formatSockAddr, packSockAddr, unpackSockAddr, type SockAddr } from "../../ffi/sockaddr";
import * as sock from "../../ffi/socket";

function waitExit(pid: number, timeoutMs = 5000): proc.ExitStatus {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = proc.waitpidNohang(pid);
    if (r) return r.status;
    if (Date.now() > deadline) throw new Error(`pid ${pid} did not exit`);
    Bun.sleepSync(5);
  }
}

describe("sockaddr", () => {
  const cases: Array<[SockAddr, string]> = [
    [{ family: "inet", host: "127.0.0.1", port: 8080 }, "127.0.0.1:8080"],
    [{ family: "inet6", host: "::1", port: 443, scopeId: 0 }, "[::1]:443"],
    [{ family: "inet6", host: "2001:db8::1:0:0:1", port: 1, scopeId: 0 }, "[2001:db8::1:0:0:1]:1"],
    [{ family: "inet6", host: "::", port: 0, scopeId: 0 }, "[::]:0"],
    [{ family: "unix", path: "/run/app.sock" }, "unix:/run/app.sock"],
  ];
  for (const [addr, text] of cases) {
    test(`pack/unpack round trip: ${text}`, () => {
      const b = packSockAddr(addr);
      expect(unpackSockAddr(b, b.length)).toEqual(addr);
      expect(formatSockAddr(addr)).toBe(text);
    });
  }
  test("an embedded IPv4 tail and a long UNIX path", () => {
    const b = packSockAddr({ family: "inet6", host: "::ffff:10.1.2.3", port: 5 });
    expect([...b.subarray(8, 24)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
    expect(() => packSockAddr({ family: "unix", path: `/${"x".repeat(120)}` })).toThrow("bind /" + "x".repeat(120) + ": ENAMETOOLONG (the path is 121 bytes; a UNIX socket path holds at most 107)");
  });
});

describe("sockets", () => {
  test("bind, listen, getsockname with a kernel-chosen port; options and flags read back", () => {
    const fd = sock.socket("inet");
    try {
      sock.setsockoptInt(fd, sock.SOL_SOCKET, sock.SO_REUSEADDR, 1);
      expect(sock.getsockoptInt(fd, sock.SOL_SOCKET, sock.SO_REUSEADDR)).toBe(1);
      sock.bind(fd, { family: "inet", host: "127.0.0.1", port: 0 });
      sock.listen(fd, 10);
      const a = sock.getsockname(fd) as { port: number };
      expect(a.port).toBeGreaterThan(0);
      expect(sock.describeSocket(fd)).toEqual({ family: "inet", listening: true, stream: true });
      expect(sock.isNonblocking(fd)).toBe(false);
      sock.setNonblocking(fd, true);
      expect(sock.isNonblocking(fd)).toBe(true);
      expect(sock.fcntl(fd, sock.F_GETFD) & sock.FD_CLOEXEC).toBe(sock.FD_CLOEXEC); // created close-on-exec
      sock.setCloexec(fd, false);
      expect(sock.fcntl(fd, sock.F_GETFD) & sock.FD_CLOEXEC).toBe(0);
    } finally {
      sock.close(fd);
    }
  });

  test("errors carry syscall, errno, code and a readable message naming the address", () => {
    const a = sock.socket("inet");
    const b = sock.socket("inet");
    const c = sock.socket("inet");
    try {
      sock.bind(a, { family: "inet", host: "127.0.0.1", port: 0 });
      sock.listen(a, 1);
      const port = (sock.getsockname(a) as { port: number }).port;
      let err: unknown;
      try { sock.bind(b, { family: "inet", host: "127.0.0.1", port }); } catch (e) { err = e; }
      expect(err).toBeInstanceOf(SysError);
      const e = err as SysError;
      expect([e.syscall, e.errno, e.code]).toEqual(["bind", Errno.EADDRINUSE!, "EADDRINUSE"]);
      expect(e.message).toBe(`bind 127.0.0.1:${port}: EADDRINUSE (Address already in use)`);
      expect(() => sock.bind(c, { family: "inet", host: "192.0.2.1", port: 80 })).toThrow(/^bind 192\.0\.2\.1:80: EADDRNOTAVAIL/);
      expect(() => sock.close(987654)).toThrow(/^close 987654: EBADF \(Bad file descriptor\)$/);
      expect(errnoName(99999)).toBe("E99999");
    } finally {
      sock.close(a);
      sock.close(b);
      sock.close(c);
    }
  });

  test("socketpair peers report this process's credentials", () => {
    const [x, y] = sock.socketpair();
    try {
      expect(sock.getPeerCred(x)).toEqual({ pid: process.pid, uid: proc.geteuid(), gid: expect.any(Number) });
      expect(sock.describeSocket(y)).toEqual({ family: "unix", listening: false, stream: true });
    } finally {
      sock.close(x);
      sock.close(y);
    }
  });
});

describe("processes", () => {
  test("posix_spawn: exit codes and signals decode; only the named descriptors reach the child", () => {
    const dir = mkdtempSync(join(tmpdir(), "einhorn-ffi-"));
    const fd = sock.socket("inet");
    try {
      const pid = proc.spawn("/bin/sh", ["sh", "-c", `ls /proc/self/fd > ${dir}/fds; exit 7`], [], { inheritFds: [fd] });
      expect(waitExit(pid)).toEqual({ code: 7, signal: null });
      const fds = readFileSync(join(dir, "fds"), "utf8").trim().split("\n").map(Number);
      expect(fds).toContain(fd);
      expect(fds.filter((f) => f > 2 && f !== fd).length).toBeLessThanOrEqual(1); // ls's own directory fd
      const killed = proc.spawn("/bin/sleep", ["sleep", "10"], []);
      expect(proc.kill(killed, "SIGTERM")).toBe(true);
      expect(waitExit(killed)).toEqual({ code: null, signal: "SIGTERM", signo: 15 });
      expect(proc.kill(killed, "SIGTERM")).toBe(false); // reaped: ESRCH is "already gone", not an error
    } finally {
      sock.close(fd);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("posix_spawn: dup2 moves through temporaries; exec failures are synchronous errors", () => {
    const dir = mkdtempSync(join(tmpdir(), "einhorn-ffi-"));
    const a = sock.socket("inet");
    try {
      const pid = proc.spawn("/bin/sh", ["sh", "-c", `readlink /proc/self/fd/3 > ${dir}/three`], [], { dup2: [[a, 50], [50, 3]], close: [50] });
      expect(waitExit(pid).code).toBe(0);
      expect(readFileSync(join(dir, "three"), "utf8")).toMatch(/^socket:\[\d+\]\n$/);
      expect(() => proc.spawn("/nonexistent/prog", ["x"], [])).toThrow(/^posix_spawn \/nonexistent\/prog: ENOENT/);
      const f = join(dir, "noexec.sh");
      writeFileSync(f, "#!/bin/sh\n");
      chmodSync(f, 0o644);
      expect(() => proc.spawn(f, [f], [])).toThrow(/: EACCES \(Permission denied\)$/);
    } finally {
      sock.close(a);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("signal masks: block, query, restore", () => {
    const usr1 = proc.signalNumberOf("USR1");
    expect(usr1).toBe(10);
    expect(proc.signalNumberOf("SIGUSR1")).toBe(usr1);
    expect(proc.signalNumberOf(usr1)).toBe(usr1);
    expect(() => proc.signalNumberOf("USR3")).toThrow("unknown signal USR3");
    expect(proc.signalsBlocked([usr1])).toBe(false);
    const old = proc.blockSignals([usr1]);
    try {
      expect(proc.signalsBlocked([usr1])).toBe(true);
    } finally {
      proc.setSignalMask(old);
    }
    expect(proc.signalsBlocked([usr1])).toBe(false);
  });

  test("flock: a second open of a locked file cannot take the lock; memfd holds what is written", () => {
    const dir = mkdtempSync(join(tmpdir(), "einhorn-ffi-"));
    try {
      const path = join(dir, "lock");
      const a = proc.open(path, proc.O_RDWR | proc.O_CREAT | proc.O_CLOEXEC);
      const b = proc.open(path, proc.O_RDWR | proc.O_CREAT | proc.O_CLOEXEC);
      expect(proc.tryLockExclusive(a)).toBe(true);
      expect(proc.tryLockExclusive(b)).toBe(false);
      sock.close(a);
      expect(proc.tryLockExclusive(b)).toBe(true);
      sock.close(b);
      const m = proc.memfdCreate("ffi-test", true);
      const { writeSync, readSync } = require("node:fs") as typeof import("node:fs");
      writeSync(m, Buffer.from("hello"), 0, 5, 0);
      const buf = Buffer.alloc(5);
      expect(readSync(m, buf, 0, 5, 0)).toBe(5);
      expect(buf.toString()).toBe("hello");
      sock.close(m);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("waitpid with nothing to wait for is ECHILD", () => {
    expect(() => proc.waitpidNohang(999_999)).toThrow(/^waitpid: ECHILD/);
  });
});

describe("pidfds", () => {
  const { pidfdOpen, pidfdSendSignal, waitidPidfd } = require("../../ffi/pidfd") as typeof import("../../ffi/pidfd");

  test("signal a child through its pidfd; waitid(P_PIDFD) reports running, then reaps it with its signal", () => {
    const pid = proc.spawn("/bin/sleep", ["sleep", "30"], [], {});
    const fd = pidfdOpen(pid);
    try {
      expect(sock.fcntl(fd, 1 /* F_GETFD */) & 1).toBe(1); // close-on-exec, as pidfd_open makes it
      expect(waitidPidfd(fd)).toEqual({ kind: "running" });
      expect(pidfdSendSignal(fd, "SIGTERM")).toBe(true);
      let r = waitidPidfd(fd);
      const deadline = Date.now() + 5000;
      while (r.kind === "running" && Date.now() < deadline) { Bun.sleepSync(5); r = waitidPidfd(fd); }
      expect(r).toEqual({ kind: "exited", status: { code: null, signal: "SIGTERM", signo: 15 } });
      // Reaped by waitid: the pidfd still names the dead process, and signals to it fail instead of reaching a stranger.
      expect(pidfdSendSignal(fd, "SIGTERM")).toBe(false);
      expect(waitidPidfd(fd)).toEqual({ kind: "not-child" });
    } finally {
      sock.close(fd);
    }
  });

  test("an exit code comes back as a code; a process that is not our child is reported as such", () => {
    const pid = proc.spawn("/bin/sh", ["sh", "-c", "exit 7"], [], {});
    const fd = pidfdOpen(pid);
    let r = waitidPidfd(fd);
    const deadline = Date.now() + 5000;
    while (r.kind === "running" && Date.now() < deadline) { Bun.sleepSync(5); r = waitidPidfd(fd); }
    expect(r).toEqual({ kind: "exited", status: { code: 7, signal: null } });
    sock.close(fd);
    const parent = pidfdOpen(proc.getppid());
    expect(waitidPidfd(parent)).toEqual({ kind: "not-child" });
    sock.close(parent);
  });

  test("pidfd_open of a pid that does not exist is a SysError naming the call", () => {
    let err: unknown;
    try { pidfdOpen(0x3ffffff0); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(SysError);
    expect((err as SysError).syscall).toBe("pidfd_open");
    expect((err as SysError).code).toBe("ESRCH");
  });
});

describe("C library", () => {
  test("found from this process's own ELF interpreter, and the one actually loaded", () => {
    const { cLibrary } = require("../../ffi/libc") as typeof import("../../ffi/libc");
    // The loader this runtime was started through, as the kernel mapped it.
    const maps = readFileSync("/proc/self/maps", "utf8");
    const loader = maps.match(/\s(\S*\/ld-(?:linux|musl)[-\w.]*\.so\.\d+)$/m)?.[1];
    expect(loader).toBeDefined();
    expect(cLibrary.foundBy).toStartWith("ELF interpreter /");
    if (/ld-musl/.test(loader!)) expect(cLibrary.kind).toBe("musl");
    else {
      expect(cLibrary.kind).toBe("glibc");
      expect(cLibrary.path).toBe("libc.so.6");
      expect(maps).toMatch(/\/libc\.so\.6$/m);
    }
    // A call through it works (getpid agrees with the runtime's own idea).
    expect(proc.getpid()).toBe(process.pid);
  });
});

describe("signalfd", () => {
  const { parseSignalRecords, raiseSignal, readSignalfd, signalfd, SIGINFO_BYTES } = require("../../ffi/signalfd") as typeof import("../../ffi/signalfd");

  test("a blocked signal raised at this thread is read from a signalfd with its sender, once; real-time ones queue", () => {
    const WINCH = proc.signalNumberOf("SIGWINCH");
    const RT = 60;
    const old = proc.blockSignals([WINCH, RT]);
    const fd = signalfd([WINCH, RT]);
    try {
      expect(readSignalfd(fd)).toEqual([]);
      raiseSignal(WINCH);
      raiseSignal(WINCH); // standard signals merge while pending
      raiseSignal(RT);
      raiseSignal(RT); // real-time ones queue
      const got = readSignalfd(fd);
      expect(got.map((r) => r.signo)).toEqual([WINCH, RT, RT]);
      expect(got.every((r) => r.code === -6 /* SI_TKILL */ && r.pid === proc.getpid())).toBe(true);
      expect(readSignalfd(fd)).toEqual([]);
      expect(sock.fcntl(fd, 1 /* F_GETFD */) & 1).toBe(1);
    } finally {
      sock.close(fd);
      proc.setSignalMask(old);
    }
  });

  test("records decode from whole 128-byte structures only", () => {
    const buf = new Uint8Array(SIGINFO_BYTES * 2 + 10);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, 15, true); dv.setInt32(8, 0, true); dv.setUint32(12, 4242, true);
    dv.setUint32(128, 17, true); dv.setInt32(136, 1, true); dv.setUint32(140, 77, true);
    expect(parseSignalRecords(buf)).toEqual([{ signo: 15, code: 0, pid: 4242 }, { signo: 17, code: 1, pid: 77 }]);
  });
});

describe("input waiting (poll, FIONREAD)", () => {
  test("readableNow and unreadBytes see bytes sent and not yet read; end of stream is readable but holds no bytes", () => {
    const [a, b] = sock.socketpair();
    try {
      expect(sock.readableNow([a!])).toEqual([]);
      expect(sock.unreadBytes(a!)).toBe(0);
      writeSync(b!, "hello");
      expect(sock.readableNow([a!, b!])).toEqual([a!]);
      expect(sock.unreadBytes(a!)).toBe(5);
    } finally {
      sock.close(b!);
    }
    try {
      expect(sock.readableNow([a!])).toEqual([a!]); // hang-up
    } finally {
      sock.close(a!);
    }
  });

  test("a listening socket is readable while a connection waits to be accepted", () => {
    const dir = mkdtempSync(join(tmpdir(), "einhorn-ffi-"));
    const path = join(dir, "l.sock");
    const l = sock.socket("unix");
    const c = sock.socket("unix");
    try {
      sock.bind(l, { family: "unix", path });
      sock.listen(l, 8);
      expect(sock.readableNow([l])).toEqual([]);
      sock.connect(c, { family: "unix", path });
      expect(sock.readableNow([l])).toEqual([l]);
    } finally {
      sock.close(c);
      sock.close(l);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

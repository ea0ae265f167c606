// The datagram half of ffi/socket.ts and ffi/clock.ts against the real
// kernel: what sd_notify(3) needs (a UNIX datagram to a path or to an
// abstract name, and CLOCK_MONOTONIC).
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, readSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monotonicMicros } from "../../ffi/clock";
import { packUnixAddr } from "../../ffi/sockaddr";
import * as sock from "../../ffi/socket";

const open: number[] = [];
afterEach(() => { for (const fd of open.splice(0)) sock.close(fd); });

function receiver(address: string): number {
  const fd = sock.unixDatagramSocket();
  open.push(fd);
  sock.bindUnix(fd, address);
  return fd;
}

function receive(fd: number): string {
  const buf = Buffer.alloc(4096);
  // read(2) on a datagram socket returns one whole datagram.
  return buf.subarray(0, readSync(fd, buf)).toString();
}

test("a datagram to a path arrives whole", () => {
  const dir = mkdtempSync(join(tmpdir(), "einhorn-dgram-"));
  try {
    const path = join(dir, "notify");
    const r = receiver(path);
    const s = sock.unixDatagramSocket(sock.SOCK_CLOEXEC | sock.SOCK_NONBLOCK);
    open.push(s);
    const msg = Buffer.from("READY=1\nSTATUS=2/2 workers up");
    expect(sock.sendto(s, msg, sock.MSG_NOSIGNAL, path)).toBe(msg.length);
    expect(receive(r)).toBe("READY=1\nSTATUS=2/2 workers up");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("an abstract name: '@' is a leading NUL and the length is exact (no trailing NUL in the name)", () => {
  const name = `@einhorn-ffi-test-${process.pid}-${Date.now()}`;
  const packed = packUnixAddr(name);
  expect(packed.length).toBe(2 + name.length);
  expect(packed[2]).toBe(0);
  expect(packed.subarray(3).toString()).toBe(name.slice(1));
  const r = receiver(name);
  const s = sock.unixDatagramSocket();
  open.push(s);
  sock.sendto(s, Buffer.from("WATCHDOG=1"), 0, name);
  expect(receive(r)).toBe("WATCHDOG=1");
  // A name with one more byte is another address: nobody listens there.
  expect(() => sock.sendto(s, Buffer.from("x"), 0, `${name}\0`)).toThrow(/sendto .*: ECONNREFUSED/);
});

test("no listener: a one-line SysError naming the address", () => {
  const s = sock.unixDatagramSocket();
  open.push(s);
  expect(() => sock.sendto(s, Buffer.from("READY=1"), 0, "/nonexistent/einhorn/notify")).toThrow("sendto /nonexistent/einhorn/notify: ENOENT (No such file or directory)");
  expect(() => packUnixAddr(`@${"x".repeat(108)}`)).toThrow(/ENAMETOOLONG/);
});

test("CLOCK_MONOTONIC agrees with another program's reading of it", () => {
  const before = monotonicMicros();
  const p = Bun.spawnSync(["python3", "-c", "import time; print(int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6))"]);
  const after = monotonicMicros();
  const theirs = BigInt(p.stdout.toString().trim());
  expect(theirs >= before && theirs <= after).toBe(true);
});

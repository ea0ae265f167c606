// A failed system call stays inspectable when it is wrapped: the error an
// operator is shown chains the SysError as its `cause`, and its text still
// names the syscall and the errno ("bind 127.0.0.1:8080: EADDRINUSE (...)").
// Real sockets and files: the kernel produces each failure.
import { afterAll, describe, expect, test } from "bun:test";
import { fstatSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SysError } from "../../ffi/errno";
import * as sock from "../../ffi/socket";
import { parseBindSpec } from "../../src/config/bind-spec";
import { StartError } from "../../src/master/errors";
import { writePidfile } from "../../src/master/files";
import { openListener } from "../../src/master/listeners";
import { takeSystemdSockets } from "../../src/master/systemd";
import { ConnectError, ShellClient } from "../../src/cli/shell-client";

const dir = mkdtempSync(join(tmpdir(), "einhorn-error-causes-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The first SysError along `e`'s cause chain. */
function sysErrorIn(e: unknown): SysError | null {
  for (let c: unknown = e; c instanceof Error; c = c.cause) if (c instanceof SysError) return c;
  return null;
}

async function failure(p: Promise<unknown>): Promise<unknown> {
  try { await p; } catch (e) { return e; }
  throw new Error("expected a failure, got none");
}

describe("start-up errors chain the SysError and keep its syscall and errno in the text", () => {
  test("-b on a port in use: StartError caused by bind's EADDRINUSE", async () => {
    const hog = sock.socket("inet");
    try {
      sock.bind(hog, { family: "inet", host: "127.0.0.1", port: 0 });
      sock.listen(hog, 1);
      const a = sock.getsockname(hog);
      const port = a.family === "inet" ? a.port : -1;
      const e = await failure(openListener(parseBindSpec(`127.0.0.1:${port}`), 16));
      expect(e).toBeInstanceOf(StartError);
      const sys = sysErrorIn(e);
      expect(sys).not.toBeNull();
      expect((e as StartError).cause).toBe(sys!);
      expect([sys!.syscall, sys!.code, sys!.detail]).toEqual(["bind", "EADDRINUSE", `127.0.0.1:${port}`]);
      // What main.ts prints after "einhorn: ".
      expect((e as Error).message).toBe(`cannot listen on 127.0.0.1:${port}: bind 127.0.0.1:${port}: EADDRINUSE (Address already in use)`);
    } finally {
      sock.close(hog);
    }
  });

  test("-b unix: in a directory that does not exist: StartError caused by bind's ENOENT", async () => {
    const path = join(dir, "no-such-dir", "x.sock");
    const e = await failure(openListener(parseBindSpec(`unix:${path}`), 16));
    expect(e).toBeInstanceOf(StartError);
    const sys = sysErrorIn(e)!;
    expect([sys.syscall, sys.code]).toEqual(["bind", "ENOENT"]);
    expect((e as Error).message).toBe(`cannot listen on unix:${path}: ${sys.message}`);
    expect((e as Error).message).toContain(": ENOENT (No such file or directory)");
  });

  test("-e in a directory that does not exist: StartError caused by open's ENOENT", () => {
    const path = join(dir, "no-such-dir", "einhorn.pid");
    let e: unknown = null;
    try { writePidfile(path); } catch (err) { e = err; }
    expect(e).toBeInstanceOf(StartError);
    const sys = sysErrorIn(e)!;
    expect([sys.syscall, sys.code, sys.detail]).toEqual(["open", "ENOENT", path]);
    expect((e as Error).message).toBe(`cannot create the pidfile: open ${path}: ENOENT (No such file or directory)`);
  });

  test("LISTEN_FDS naming a descriptor that is not open: StartError caused by fcntl's EBADF", () => {
    // The first closed descriptor from 3 on; LISTEN_FDS reaches exactly up to it.
    // The open ones below it get made close-on-exec on the way: put their flags back.
    let closed = 3;
    for (;; closed++) { try { fstatSync(closed); } catch { break; } }
    const flags = Array.from({ length: closed - 3 }, (_, i) => sock.fcntl(3 + i, sock.F_GETFD));
    const env: Record<string, string | undefined> = { LISTEN_FDS: String(closed - 2), LISTEN_PID: String(process.pid) };
    let e: unknown = null;
    try { takeSystemdSockets(env, process.pid); } catch (err) { e = err; } finally {
      flags.forEach((f, i) => sock.fcntl(3 + i, sock.F_SETFD, f));
    }
    expect(e).toBeInstanceOf(StartError);
    const sys = sysErrorIn(e)!;
    expect((e as StartError).cause).toBe(sys);
    expect([sys.syscall, sys.code]).toEqual(["fcntl", "EBADF"]);
    expect((e as Error).message).toBe(`LISTEN_FDS says ${closed - 2} socket(s) start at fd 3, but fd ${closed} is not open: ${sys.message}`);
    expect(sys.message).toContain(": EBADF (Bad file descriptor)");
  });
});

describe("einhorn sh: a connection that fails keeps what the kernel said", () => {
  test("no socket at the path: ConnectError with code ENOENT, chaining the runtime's error", async () => {
    const path = join(dir, "absent.sock");
    const e = await failure(ShellClient.connect(path));
    expect(e).toBeInstanceOf(ConnectError);
    expect((e as ConnectError).code).toBe("ENOENT");
    expect((e as Error).message).toBe(`cannot connect to the einhorn master at ${path}: no such socket (ENOENT); is the master running, and with this -d/-c?`);
    expect(((e as Error).cause as { code?: string }).code).toBe("ENOENT");
  });
});

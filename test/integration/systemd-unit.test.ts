// `einhorn systemd-unit`: the units it prints pass `systemd-analyze verify`
// (Debian's systemd), score well in `systemd-analyze security`, and the
// ExecStart/ExecReload lines it writes really start a master and upgrade it.
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor } from "../harness";
import { systemdWord } from "../../src/cli/systemd-unit";

/** Split an ExecStart= value back into words (the subset of systemd's quoting systemdWord writes). */
function systemdWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of line.matchAll(re)) {
    const w = m[1] !== undefined ? m[1].replace(/\\n/g, "\n").replace(/\\(.)/g, "$1") : m[2]!;
    words.push(w.replace(/%%/g, "%").replace(/\$\$/g, "$"));
  }
  return words;
}

function verify(dir: string, files: string[]): { code: number; stderr: string } {
  const r = Bun.spawnSync(["systemd-analyze", "verify", "--man=no", ...files.map((f) => join(dir, f))], { cwd: dir, stderr: "pipe", stdout: "pipe" });
  return { code: r.exitCode ?? -1, stderr: r.stderr.toString() + r.stdout.toString() };
}

describe("einhorn systemd-unit", () => {
  test("a service unit that systemd-analyze verify accepts, hardened, whose ExecStart and ExecReload work", async () => {
    const dir = tempDir();
    const r = await runBinary(["systemd-unit", "--user", "www-data", "--name", "web", "--drain", "20", "--", "-n", "1", "-m", "0", "-b", "127.0.0.1:0", "--", "sleep", "1000"], { dir });
    expect(r.code).toBe(0);
    const unit = r.stdout;
    writeFileSync(join(dir, "web.service"), unit);
    const v = verify(dir, ["web.service"]);
    expect(v.stderr).toBe("");
    expect(v.code).toBe(0);
    const line = (key: string) => unit.split("\n").find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);
    expect(line("User")).toBe("www-data");
    expect(line("KillSignal")).toBe("SIGUSR2");
    expect(line("KillMode")).toBe("mixed");
    expect(line("TimeoutStopSec")).toBe("35");
    expect(line("RuntimeDirectory")).toBe("einhorn-web");
    expect(line("Environment")).toBe("TMPDIR=/run/einhorn-web");
    for (const k of ["NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome", "RestrictNamespaces", "SystemCallFilter", "CapabilityBoundingSet"]) expect(line(k)).toBeDefined();
    const start = systemdWords(line("ExecStart")!);
    expect(start[0]).toBe(BIN);
    expect(start).toContain("--signal-timeout");
    expect(start[start.indexOf("--signal-timeout") + 1]).toBe("20");
    expect(start[start.length - 1]).toBe("1000");
    expect(start[start.length - 2]).toMatch(/\/sleep$/);
    const reload = systemdWords(line("ExecReload")!);
    expect(reload).toEqual([BIN, "sh", "--command-name", "web", "--timeout", "300", "--execute", "upgrade"]);

    // The lines really run: ExecStart starts a master; ExecReload (with the unit's TMPDIR) upgrades it.
    const m = startMaster(start.slice(1), { dir });
    await waitFor("the worker up", async () => (await stateJson(join(dir, "einhorn-web.sock"))).workers[0]?.acked, 20_000);
    const up = await runBinary(reload.slice(1), { dir });
    expect(up.code).toBe(0);
    expect(up.stdout).toContain("Upgrade done");
    expect(await stopMaster(m, "SIGUSR2")).toBe(0);

    // systemd-analyze security scores the sandbox (offline mode: systemd 250 and later).
    const sec = Bun.spawnSync(["systemd-analyze", "security", "--offline=true", join(dir, "web.service")], { stdout: "pipe", stderr: "pipe" });
    const score = /Overall exposure level for web\.service: ([\d.]+)/.exec(sec.stdout.toString() + sec.stderr.toString());
    expect(score).not.toBeNull();
    expect(Number(score![1])).toBeLessThanOrEqual(3.0);
  }, 60_000);

  test("--socket: a socket unit with the -b addresses, taken by the service with -b systemd:N", async () => {
    const dir = tempDir();
    const r = await runBinary(["systemd-unit", "--socket", "--user", "www-data", "--", "-c", "api", "-n", "2", "-b", "127.0.0.1:8080", "-b", "[::1]:9090,n", "-b", "unix:/run/api.sock", "--", "sleep", "1000"], { dir });
    expect(r.code).toBe(0);
    const [service, socket] = r.stdout.split("# ---- api.socket ----\n");
    writeFileSync(join(dir, "api.service"), service!);
    writeFileSync(join(dir, "api.socket"), socket!);
    const v = verify(dir, ["api.service", "api.socket"]);
    expect(v.stderr).toBe("");
    expect(v.code).toBe(0);
    expect(socket).toContain("ListenStream=127.0.0.1:8080\nListenStream=[::1]:9090\nListenStream=/run/api.sock\n");
    expect(socket).toContain("Service=api.service");
    expect(service).toContain("Requires=api.socket");
    expect(service).toMatch(/ExecStart=\S+ --signal-timeout 30 --log-format plain --command-name api --number 2 --bind systemd:0 --bind systemd:1,n --bind systemd:2 -- \S+\/sleep 1000\n/);
  });

  test("bad input is a usage error that says what was wrong", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["systemd-unit", "--", "-n", "2"], /no PROGRAM given/],
      [["systemd-unit", "--drain", "soon", "--", "sleep", "1"], /--drain wants a number of seconds greater than 0, got 'soon'/],
      [["systemd-unit", "--socket", "--", "sleep", "1"], /--socket needs at least one -b address/],
      [["systemd-unit", "--", "-n", "zero", "--", "sleep", "1"], /-n\/--number wants a whole number/],
      [["systemd-unit", "--name", "a b", "--", "sleep", "1"], /--name wants letters/],
    ];
    for (const [args, re] of cases) {
      const r = await runBinary(args);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(re);
    }
  });

  test("systemd quoting", () => {
    expect(systemdWord("/usr/bin/x")).toBe("/usr/bin/x");
    expect(systemdWord("a b")).toBe('"a b"');
    expect(systemdWord('say "hi" 50% $HOME\\')).toBe('"say \\"hi\\" 50%% $$HOME\\\\"');
    expect(systemdWord("")).toBe('""');
  });
});

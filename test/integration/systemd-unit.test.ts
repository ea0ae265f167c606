// `einhorn systemd-unit`: the units it prints pass `systemd-analyze verify`
// (Debian's systemd), score well in `systemd-analyze security`, and the
// ExecStart/ExecReload lines it writes really start a master and upgrade it.
import { describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BIN, onCleanup, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor, within } from "../harness";
import { execWord, listItem, pathValue, settingValue, userOrGroupValue } from "../../src/cli/systemd-unit";

/** Split an ExecStart= value back into words (the subset of systemd's quoting execWord writes). */
function systemdWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (const m of line.matchAll(re)) {
    const w = m[1] !== undefined ? m[1].replace(/\\n/g, "\n").replace(/\\(.)/g, "$1") : m[2]!;
    words.push(w.replace(/%%/g, "%").replace(/\$\$/g, "$"));
  }
  return words;
}

/** Split a "Command Line:" of systemd's dump into the words it stores ('$$' still doubled: systemd halves it at exec time). */
function dumpWords(line: string): string[] {
  const words: string[] = [];
  for (const m of line.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g)) words.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2] ?? m[3]!);
  return words;
}

/**
 * The unit as systemd itself parses it: `systemd --test --system` loads the
 * units from SYSTEMD_UNIT_PATH and dumps every setting with its value after
 * unquoting and specifier expansion. It refuses to run as root, so it runs as
 * the user nobody, from a directory of its own that nobody may read.
 */
function systemdDump(dir: string, files: Record<string, string>, unit: string): { value: (key: string) => string[]; exec: (key: string) => string[] } {
  const unitDir = join(dir, `units-${unit}`);
  mkdirSync(unitDir, { recursive: true });
  chmodSync(dir, 0o755);
  chmodSync(unitDir, 0o755);
  for (const [f, text] of Object.entries(files)) writeFileSync(join(unitDir, f), text, { mode: 0o644 });
  const asNobody = process.getuid?.() === 0 ? ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"] : [];
  const r = Bun.spawnSync([...asNobody, "/lib/systemd/systemd", "--test", "--system", `--unit=${unit}`, "--no-pager"], {
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: "/", SYSTEMD_UNIT_PATH: `${unitDir}:` }, stdout: "pipe", stderr: "pipe",
  });
  const out = r.stdout.toString();
  const start = out.indexOf(`-> Unit ${unit}:\n`);
  if (start < 0) throw new Error(`systemd --test did not dump ${unit} (exit ${r.exitCode}): ${r.stderr.toString().slice(-2000)}`);
  const next = out.indexOf("\t-> Unit ", start + 1);
  const lines = out.slice(start, next < 0 ? undefined : next).split("\n");
  return {
    value: (key) => lines.filter((l) => l.startsWith(`\t\t${key}: `)).map((l) => l.slice(key.length + 4)),
    exec: (key) => {
      const at = lines.indexOf(`\t\t-> ${key}:`);
      if (at < 0) return [];
      return dumpWords(lines[at + 1]!.replace(/^\t+Command Line: /, ""));
    },
  };
}

/** An Exec line's words with the command socket (the word after --socket-path) moved to `sock`. */
function inTestDir(words: string[], sock: string): string[] {
  const at = words.indexOf("--socket-path");
  expect(at).toBeGreaterThan(0);
  return words.map((w, i) => (i === at + 1 ? sock : w));
}

function verify(dir: string, files: string[]): { code: number; stderr: string } {
  const r = Bun.spawnSync(["systemd-analyze", "verify", "--man=no", ...files.map((f) => join(dir, f))], { cwd: dir, stderr: "pipe", stdout: "pipe" });
  return { code: r.exitCode ?? -1, stderr: r.stderr.toString() + r.stdout.toString() };
}

/** Write the units into `dir` and have `systemd-analyze verify` accept them, silently. */
function expectVerified(dir: string, units: Record<string, string>): void {
  for (const [name, text] of Object.entries(units)) writeFileSync(join(dir, name), text);
  const v = verify(dir, Object.keys(units));
  expect(v.stderr).toBe("");
  expect(v.code).toBe(0);
}

describe("einhorn systemd-unit", () => {
  test("a service unit that systemd-analyze verify accepts, hardened, whose ExecStart and ExecReload work", async () => {
    const dir = tempDir();
    const r = await runBinary(["systemd-unit", "--user", "www-data", "--name", "web", "--drain", "20", "--", "-n", "1", "-m", "0", "-b", "127.0.0.1:0", "--", "sleep", "1000"], { dir });
    expect(r.code).toBe(0);
    const unit = r.stdout;
    expectVerified(dir, { "web.service": unit });
    const line = (key: string) => unit.split("\n").find((l) => l.startsWith(`${key}=`))?.slice(key.length + 1);
    expect(line("User")).toBe("www-data");
    expect(line("KillSignal")).toBe("SIGUSR2");
    // sd_notify from the master alone; no watchdog unless asked.
    expect(line("Type")).toBe("notify");
    expect(line("NotifyAccess")).toBe("main");
    expect(line("WatchdogSec")).toBeUndefined();
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
    // Both name the command socket in the unit's RuntimeDirectory.
    expect(reload).toEqual([BIN, "sh", "--socket-path", "/run/einhorn-web/einhorn-web.sock", "--timeout", "300", "--execute", "upgrade"]);
    expect(start[start.indexOf("--socket-path") + 1]).toBe("/run/einhorn-web/einhorn-web.sock");

    // The lines really run: ExecStart starts a master; ExecReload upgrades it. /run/einhorn-web is
    // systemd's to create, so both lines get the same path in the test's directory instead.
    const sock = join(dir, "web.sock");
    const m = startMaster(inTestDir(start, sock).slice(1), { dir });
    await waitFor("the worker up", async () => (await stateJson(sock)).workers[0]?.acked, 20_000);
    const up = await runBinary(inTestDir(reload, sock).slice(1), { dir });
    expect(up.code).toBe(0);
    expect(up.stdout).toContain("Upgrade done");
    expect(await stopMaster(m, "SIGUSR2")).toBe(0);

    // systemd-analyze security scores the sandbox (offline mode: systemd 250 and later).
    const sec = Bun.spawnSync(["systemd-analyze", "security", "--offline=true", join(dir, "web.service")], { stdout: "pipe", stderr: "pipe" });
    const score = /Overall exposure level for web\.service: ([\d.]+)/.exec(sec.stdout.toString() + sec.stderr.toString());
    expect(score).not.toBeNull();
    expect(Number(score![1])).toBeLessThanOrEqual(3.0);
  }, within(60_000));

  test("--socket: a socket unit with the -b addresses, taken by the service with -b systemd:N", async () => {
    const dir = tempDir();
    const r = await runBinary(["systemd-unit", "--socket", "--user", "www-data", "--", "-c", "api", "-n", "2", "-b", "127.0.0.1:8080", "-b", "[::1]:9090,n", "-b", "unix:/run/api.sock", "--", "sleep", "1000"], { dir });
    expect(r.code).toBe(0);
    const [service, socket] = r.stdout.split("# ---- api.socket ----\n");
    expectVerified(dir, { "api.service": service!, "api.socket": socket! });
    expect(socket).toContain("ListenStream=127.0.0.1:8080\nListenStream=[::1]:9090\nListenStream=/run/api.sock\n");
    expect(socket).toContain("Service=api.service");
    expect(service).toContain("Requires=api.socket");
    expect(service).toMatch(/ExecStart=\S+ --signal-timeout 30 --log-format plain --socket-path \/run\/einhorn-api\/einhorn-api.sock --command-name api --number 2 --bind systemd:0 --bind systemd:1,n --bind systemd:2 -- \S+\/sleep 1000\n/);
  });

  test("--watchdog writes WatchdogSec=; --pass-notify-socket makes NotifyAccess=all and stays a flag in ExecStart", async () => {
    const dir = tempDir();
    const r = await runBinary(["systemd-unit", "--user", "www-data", "--name", "dog", "--watchdog", "20", "--", "-n", "2", "--pass-notify-socket", "--", "sleep", "1000"], { dir });
    expect(r.code).toBe(0);
    expectVerified(dir, { "dog.service": r.stdout });
    expect(r.stdout).toContain("\nType=notify\nNotifyAccess=all\nWatchdogSec=20\n");
    expect(r.stdout).toMatch(/^ExecStart=.* --number 2 --pass-notify-socket -- \S+\/sleep 1000$/m);
  });

  test("bad input is a usage error that says what was wrong", async () => {
    const cases: Array<[string[], RegExp]> = [
      [["systemd-unit", "--", "-n", "2"], /no PROGRAM given/],
      [["systemd-unit", "--drain", "soon", "--", "sleep", "1"], /--drain wants a number of seconds greater than 0, got 'soon'/],
      [["systemd-unit", "--watchdog", "0", "--", "sleep", "1"], /--watchdog wants a number of seconds greater than 0, got '0'/],
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

  test("a newline or control character in any value is refused, naming where it came from", async () => {
    const evil = "x\nExecStartPre=/bin/touch /pwned";
    const cases: Array<[string[], string]> = [
      [["--user", evil, "--", "sleep", "1"], "--user"],
      [["--group", evil, "--", "sleep", "1"], "--group"],
      [["--name", evil, "--", "sleep", "1"], "--name"],
      [["--", "-c", evil, "--", "sleep", "1"], "-c/--command-name"],
      [["--name", "web", "--", "-c", evil, "--", "sleep", "1"], "-c/--command-name"],
      [["--", "--drop-env-var", "A\tB", "--", "sleep", "1"], "--drop-env-var"],
      [["--", "sleep", evil], "PROGRAM argument 1"],
      [["--", "sleep", "1", "\u0007"], "PROGRAM argument 2"],
    ];
    for (const [args, what] of cases) {
      const r = await runBinary(["systemd-unit", ...args]);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe("");
      // One line: the option, the value with its control characters escaped, and what is allowed.
      const lines = r.stderr.split("\n").filter((l) => l && !l.includes("warning:"));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`${what} ${JSON.stringify(args.includes("A\tB") ? "A\tB" : args.includes("\u0007") ? "\u0007" : evil)}`);
      expect(lines[0]).toContain("a unit file cannot hold a newline or other control character");
    }
    // The same from a config file: its command-name names the unit.
    const dir = tempDir();
    writeFileSync(join(dir, "web.yaml"), `command-name: ${JSON.stringify(evil)}\nprogram: /bin/sleep\n`);
    const r = await runBinary(["systemd-unit", "--", "--config", "web.yaml"], { dir });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`command-name in ${join(dir, "web.yaml")} ${JSON.stringify(evil)}: a unit file cannot hold`);
  });

  test("'%' and '$' reach systemd literally in every setting (systemd's own parse of the unit)", async () => {
    const dir = tempDir();
    // A working directory with a space, '%' and '$' in its name.
    const cwd = join(dir, "app 50%n $HOME");
    mkdirSync(cwd);
    const args = ["100%", "$HOME", "${USER}", "%n", ";", "it's \"quoted\"", "back\\slash", ""];
    const r = await runBinary(["systemd-unit", "--user", "www-data", "--group", "www%i$x", "--name", "web", "--", "-c", "web%h$1", "-n", "1", "--", "/bin/echo", ...args], { dir, cwd });
    expect(r.code).toBe(0);
    const unit = r.stdout;
    expect(unit).toContain("Group=www%%i$x\n");
    expect(unit).toContain(`WorkingDirectory=${cwd.replace(/%/g, "%%")}\n`);
    writeFileSync(join(dir, "web.service"), unit);
    const v = verify(dir, ["web.service"]);
    // systemd accepts the group name, and says it is not a portable one.
    expect(v.stderr.split("\n").filter((l) => l && !l.includes("does not match strict user/group name rules"))).toEqual([]);
    expect(v.code).toBe(0);

    const d = systemdDump(dir, { "web.service": unit }, "web.service");
    expect(d.value("User")).toEqual(["www-data"]);
    expect(d.value("Group")).toEqual(["www%i$x"]);
    expect(d.value("WorkingDirectory")).toEqual([cwd]);
    expect(d.value("Environment")).toEqual(["TMPDIR=/run/einhorn-web"]);
    expect(d.value("RuntimeDirectory")).toEqual(["einhorn-web"]);
    // systemd keeps '$$' until it runs the command, then passes one '$'.
    const start = d.exec("ExecStart").map((w) => w.replace(/\$\$/g, "$"));
    expect(start[0]).toBe(BIN);
    expect(start[start.indexOf("--command-name") + 1]).toBe("web%h$1");
    expect(start.slice(start.indexOf("--") + 1)).toEqual(["/bin/echo", ...args]);
    expect(d.exec("ExecReload")).toEqual([BIN, "sh", "--socket-path", "/run/einhorn-web/einhorn-web.sock", "--timeout", "300", "--execute", "upgrade"]);
  });

  test("--config: the unit runs einhorn --config FILE without the program, and ExecReload finds the socket ExecStart makes", async () => {
    const dir = tempDir();
    const file = join(dir, "web.yaml");
    // The file names the master 'express'; the unit is 'web'.
    writeFileSync(file, "command-name: express\nnumber: 1\nack-mode: 0\nprogram: /bin/sleep\nargs: ['1000']\n");
    const r = await runBinary(["systemd-unit", "--user", "www-data", "--name", "web", "--", "--config", "web.yaml"], { dir });
    expect(r.code).toBe(0);
    const unit = r.stdout;
    expectVerified(dir, { "web.service": unit });
    const d = systemdDump(dir, { "web.service": unit }, "web.service");
    const start = d.exec("ExecStart");
    const reload = d.exec("ExecReload");
    // Nothing of the file is copied into the command line: no program, no -n, no command name.
    expect(start).toEqual([BIN, "--config", file, "--signal-timeout", "30", "--log-format", "plain", "--socket-path", "/run/einhorn-web/einhorn-web.sock"]);
    expect(reload).toEqual([BIN, "sh", "--socket-path", "/run/einhorn-web/einhorn-web.sock", "--timeout", "300", "--execute", "upgrade"]);
    expect(unit).toContain("as the file does not set them: --signal-timeout 30, --log-format plain.");

    // They really agree, and an edit of the file reaches the workers at the next reload.
    const sock = join(dir, "web.sock");
    const m = startMaster(inTestDir(start, sock).slice(1), { dir });
    const first = await waitFor("the worker up", async () => (await stateJson(sock)).workers.find((w) => w.acked), 20_000);
    writeFileSync(file, readFileSync(file, "utf8").replace("'1000'", "'1001'"));
    const up = await runBinary(inTestDir(reload, sock).slice(1), { dir });
    expect(up.stdout).toContain("Upgrade done");
    expect(up.code).toBe(0);
    const after = (await stateJson(sock)).workers.filter((w) => w.pid !== first.pid);
    expect(after).toHaveLength(1);
    expect(readFileSync(`/proc/${after[0]!.pid}/cmdline`, "utf8").split("\0")).toContain("1001");
    expect(await stopMaster(m, "SIGUSR2")).toBe(0);

    // A program on the unit's command line would override the file for good: refused.
    const p = await runBinary(["systemd-unit", "--", "--config", "web.yaml", "--", "/bin/sleep", "5"], { dir });
    expect(p.code).toBe(2);
    expect(p.stderr).toContain("with --config, the program goes in the file");
  }, within(60_000));

  test("--config with --socket: the file's -b addresses go to the socket unit, the command line takes them from systemd", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "api.yaml"), "bind: ['127.0.0.1:8080', 'unix:./api.sock']\nsignal-timeout: 10\nprogram: [/bin/sleep, '1000']\n");
    const r = await runBinary(["systemd-unit", "--socket", "--user", "www-data", "--name", "api", "--", "--config", "api.yaml"], { dir });
    expect(r.code).toBe(0);
    const [service, socket] = r.stdout.split("# ---- api.socket ----\n");
    expect(socket).toContain(`ListenStream=127.0.0.1:8080\nListenStream=${join(dir, "api.sock")}\n`);
    expect(service).toMatch(new RegExp(`ExecStart=\\S+ --config ${join(dir, "api.yaml")} --command-name api --log-format plain --socket-path /run/einhorn-api/einhorn-api.sock --bind systemd:0 --bind systemd:1\n`));
    // The file's -t is the master's, so the unit does not override it.
    expect(service).toContain("# stop drains: USR2 to every worker, SIGKILL after 10s (-t).\n");
    expectVerified(dir, { "api.service": service!, "api.socket": socket! });
  });

  test("a path the unit's sandbox hides gets a warning naming the setting; the unit is still printed", async () => {
    // Under /tmp whatever TMPDIR says: that is the path PrivateTmp= hides.
    const dir = mkdtempSync("/tmp/einhorn-unit-test-");
    onCleanup(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "web.yaml"), "program: /root/einhorn-test-app\n");
    const r = await runBinary(["systemd-unit", "--user", "www-data", "--", "--config", "web.yaml"], { dir });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("[Service]");
    // The einhorn binary itself is warned about too when this checkout sits
    // under a hidden path (a CI clone in /tmp, say): that line is checked
    // apart, since where the checkout is is not this test's to choose.
    const aboutBinary = (l: string) => l.includes("warning: the einhorn binary ");
    const lines = r.stderr.trim().split("\n");
    if (realpathSync(BIN).startsWith("/tmp/")) {
      expect(lines.filter(aboutBinary)).toEqual([`einhorn systemd-unit: warning: the einhorn binary ${realpathSync(BIN)} is under /tmp, which the unit's PrivateTmp=yes hides (the service gets an empty /tmp of its own); move it, or change PrivateTmp= in the unit`]);
    }
    const warnings = lines.filter((l) => !aboutBinary(l));
    expect(warnings).toEqual([
      `einhorn systemd-unit: warning: the working directory ${dir} is under /tmp, which the unit's PrivateTmp=yes hides (the service gets an empty /tmp of its own); move it, or change PrivateTmp= in the unit`,
      `einhorn systemd-unit: warning: the config file ${join(dir, "web.yaml")} is under /tmp, which the unit's PrivateTmp=yes hides (the service gets an empty /tmp of its own); move it, or change PrivateTmp= in the unit`,
      "einhorn systemd-unit: warning: the program /root/einhorn-test-app is under /root, which the unit's ProtectHome=yes hides (empty and inaccessible to the service); move it, or change ProtectHome= in the unit",
    ]);
    const h = await runBinary(["systemd-unit", "--user", "www-data", "--", "/home/someone/app"], { dir, cwd: "/" });
    expect(h.code).toBe(0);
    const others = (text: string) => text.split("\n").filter((l) => l !== "" && !aboutBinary(l));
    expect(others(h.stderr)).toEqual(["einhorn systemd-unit: warning: the program /home/someone/app is under /home, which the unit's ProtectHome=yes hides (empty and inaccessible to the service); move it, or change ProtectHome= in the unit"]);
    // Nothing hidden, nothing said (but of the binary, as above).
    const ok = await runBinary(["systemd-unit", "--user", "www-data", "--", "/bin/sleep", "1"], { dir, cwd: "/" });
    expect(others(ok.stderr)).toEqual([]);
  });

  test("systemd quoting", () => {
    expect(execWord("w", "/usr/bin/x")).toBe("/usr/bin/x");
    expect(execWord("w", "a b")).toBe('"a b"');
    expect(execWord("w", 'say "hi" 50% $HOME\\')).toBe('"say \\"hi\\" 50%% $$HOME\\\\"');
    expect(execWord("w", "")).toBe('""');
    // A quoted ';' is an argument; a bare one would start a second command.
    expect(execWord("w", ";")).toBe('";"');
    expect(() => execWord("PROGRAM argument 1", "a\rb")).toThrow('PROGRAM argument 1 "a\\rb": a unit file cannot hold a newline or other control character');
    // Settings that do not unquote: only '%' changes; what they cannot hold is refused.
    expect(settingValue("--user", "a%b$c")).toBe("a%%b$c");
    expect(() => settingValue("--user", "web\\")).toThrow("end with '\\'");
    expect(() => settingValue("--user", " web")).toThrow("start or end with whitespace");
    expect(() => userOrGroupValue("--group", "a:b")).toThrow("cannot contain ':' or '/'");
    expect(pathValue("the working directory", "/srv/a b%c\\d")).toBe("/srv/a b%%c\\d");
    expect(() => pathValue("the working directory", "srv")).toThrow("absolute path");
    // Settings that unquote their items.
    expect(listItem("the unit name", "TMPDIR=/run/einhorn-web")).toBe("TMPDIR=/run/einhorn-web");
    expect(listItem("x", 'A=b c"%')).toBe('"A=b c\\"%%"');
  });
});

// Einhorn 1.1.1's users, as they are: its usage text, its "proceeds with
// postload", its own Ruby client reading `state`, Ruby and Python workers
// ACKing the way Einhorn's worker library does, and arguments/environment
// that are bytes, not text. Everything drives the compiled binary.
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, readSync, writeFileSync, writeSync } from "node:fs";
import * as sock from "../../ffi/socket";
import { osBytes, osString } from "../../ffi/os-string";
import { decodeLine } from "../../src/protocol";
import { join } from "node:path";
import { BIN, fetchLine, FIXTURES, listenerPort, runBinary, startMaster, stateJson, stopMaster, tempDir, type StateReport, waitFor, within } from "../harness";

const PY = ["python3", join(FIXTURES, "worker.py")];

async function acked(sockPath: string, n: number) {
  return waitFor(`${n} acked workers`, async () => {
    const s = await stateJson(sockPath);
    return s.workers.length === n && s.workers.every((w) => w.acked) ? s : null;
  }, 20_000);
}

describe("usage", () => {
  test("no arguments: Einhorn's usage text on stdout, first line '## Usage', exit 1, nothing on stderr", async () => {
    const r = await runBinary([]);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe("");
    const lines = r.stdout.split("\n");
    expect(lines[0]).toBe("## Usage");
    // Einhorn's layout: the banner, then "### Options" and OptionParser's summary lines.
    const opts = lines.indexOf("### Options");
    expect(opts).toBeGreaterThan(0);
    expect(lines[opts + 1]).toBe("");
    // Four spaces, the flags padded to 32 columns, a space, the description.
    const row = (flags: string) => lines.find((l) => l.startsWith(`    ${flags.padEnd(32)} `) && l.length > 37 && l[37] !== " ");
    for (const flags of ["-b, --bind ADDR", "    --drop-env-var VAR", "-t, --signal-timeout T", "-m, --ack-mode MODE", "    --reexec-as CMDLINE"]) {
      expect(row(flags), flags).toBeDefined();
    }
  });

  test("-h: the long usage on stdout, same layout", async () => {
    const r = await runBinary(["-h"]);
    expect(r.code).toBe(0);
    expect(r.stdout.split("\n")[0]).toBe("## Usage");
    expect(r.stdout).toContain("\n## Overview\n");
    expect(r.stdout).toContain("\n### Options\n");
  });
});

describe("-p with a file that is not a Bun/TypeScript module", () => {
  test("warns, then runs PROGRAM as given (Einhorn's 'proceeds with postload'), and upgrades as usual", async () => {
    const dir = tempDir();
    const app = join(dir, "app.py");
    writeFileSync(app, "print('never imported by einhorn')\n");
    const m = startMaster(["-m", "manual", "-b", "127.0.0.1:0", "-p", app, "--", ...PY, "--ack", "manual"], { dir });
    await m.waitForOutput(/WARN.*-p .*app\.py is not a Bun\/TypeScript module.*proceeding without preload: workers run 'python3 .*worker\.py --ack manual' as given/);
    const s = await acked(m.sockPath, 1);
    const port = listenerPort(s);
    expect(await fetchLine(port)).toBe(`${s.workers[0]!.pid} 0\n`);
    const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade", "--timeout", "60"]);
    expect(up.code).toBe(0);
    const after = await acked(m.sockPath, 1);
    expect(after.master.version).toBe(1);
    expect(after.workers[0]!.pid).not.toBe(s.workers[0]!.pid);
    expect(await stopMaster(m)).toBe(0);
  });

  test("without a PROGRAM it says so and prints the usage (exit 1)", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "app.rb"), "puts 1\n");
    const r = await runBinary(["-p", join(dir, "app.rb")], { dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/app\.rb is not a Bun\/TypeScript module/);
    expect(r.stdout.split("\n")[0]).toBe("## Usage");
  });
});

// --- bytes, not text (item 5) ----------------------------------------------------

const BYTES_WORKER = join(FIXTURES, "bytes-worker.py");
/** Non-UTF-8 bytes: a lone 0xff, then a valid "é" (c3 a9), then 0xff 0xfe. */
const ARG_BAD = Buffer.from([0x61, 0xff, 0x62]);
const ARG_UTF8 = Buffer.from([0xc3, 0xa9]);
const ENV_BAD = Buffer.from([0x78, 0xff, 0xfe, 0x79]);
/** printf's octal form of some bytes, for a shell script. */
const oct = (b: Buffer) => [...b].map((x) => `\\${x.toString(8).padStart(3, "0")}`).join("");

/** What a worker received: its argv and environment as the kernel's bytes. */
function received(dir: string, pid: number): { argv: Buffer[]; env: Map<string, Buffer> } {
  const split = (b: Buffer) => {
    const out: Buffer[] = [];
    let start = 0;
    for (let i = 0; i < b.length; i++) if (b[i] === 0) { out.push(b.subarray(start, i)); start = i + 1; }
    return out;
  };
  const argv = split(readFileSync(join(dir, `${pid}.cmdline`)));
  const env = new Map<string, Buffer>();
  for (const e of split(readFileSync(join(dir, `${pid}.environ`)))) {
    const eq = e.indexOf(0x3d);
    env.set(e.subarray(0, eq).toString("latin1"), e.subarray(eq + 1));
  }
  return { argv, env };
}

function expectBytesIntact(dir: string, pid: number) {
  const r = received(dir, pid);
  // The worker's own argv ends with the two arguments, byte for byte.
  expect(r.argv.slice(-2).map((b) => b.toString("hex"))).toEqual([ARG_BAD.toString("hex"), ARG_UTF8.toString("hex")]);
  expect(r.env.get("BAD_BYTES")?.toString("hex")).toBe(ENV_BAD.toString("hex"));
}

/**
 * A command over a socket whose path is raw bytes (the harness's client takes
 * paths as text): the answers, until one without `wait`.
 */
function rawCommand(rawPath: Buffer, command: string, args: string[] = []): Array<Record<string, unknown>> {
  const fd = sock.socket("unix");
  try {
    sock.connect(fd, { family: "unix", path: osString(rawPath) });
    writeSync(fd, `${JSON.stringify({ command, args })}\n`);
    const answers: Array<Record<string, unknown>> = [];
    const chunk = Buffer.alloc(1 << 16);
    let buf = "";
    for (;;) {
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const a = decodeLine(buf.slice(0, nl)) as Record<string, unknown>;
        buf = buf.slice(nl + 1);
        answers.push(a);
        if (!a.wait) return answers;
      }
      const n = readSync(fd, chunk);
      if (n <= 0) throw new Error(`connection closed; answers so far ${JSON.stringify(answers)}`);
      buf += chunk.subarray(0, n).toString();
    }
  } finally {
    sock.close(fd);
  }
}

describe("bytes, not text", () => {
  const variants: Array<[string, string[], boolean]> = [
    ["plain", [], false],
    ["-k (through the parent-death helper) and a --reexec-as script whose path is not UTF-8", ["-k"], true],
  ];
  for (const [name, flags, reexec] of variants) {
    test(`non-UTF-8 argv, environment, program path, pidfile and command socket paths reach the workers intact at start and after upgrades: ${name}`, async () => {
      const dir = tempDir();
      const out = join(dir, "out");
      mkdirSync(out);
      // A pidfile whose name is not UTF-8: written at start, removed at exit.
      const pidfile = Buffer.concat([Buffer.from(`${dir}/pid-`), Buffer.from([0xe9, 0xff]), Buffer.from(".pid")]);
      const sockPath = Buffer.concat([Buffer.from(`${dir}/sock-`), Buffer.from([0xfe]), Buffer.from(".sock")]);
      // The program itself lives at a path that is not UTF-8 (found by posix_spawnp, or by the -k helper's execve).
      const program = Buffer.concat([Buffer.from(`${dir}/worker-`), Buffer.from([0xe9]), Buffer.from(".py")]);
      writeFileSync(program, readFileSync(BYTES_WORKER));
      chmodSync(program, 0o755);
      const extra: string[] = [];
      if (reexec) {
        const script = Buffer.concat([Buffer.from(`${dir}/re-`), Buffer.from([0xff]), Buffer.from("exec.sh")]);
        writeFileSync(script, `#!/bin/sh\nexec ${BIN} "$@"\n`);
        chmodSync(script, 0o755);
        extra.push(`--reexec-as "$(printf '${oct(script)}')"`);
      }
      // The shell puts the raw bytes on the command line and in the environment
      // (Bun.spawn would only take them as text).
      const launcher = join(dir, "launch.sh");
      writeFileSync(launcher, [
        "#!/bin/sh",
        `BAD_BYTES="$(printf '${oct(ENV_BAD)}')"; export BAD_BYTES`,
        `exec "$@" -e "$(printf '${oct(pidfile)}')" -d "$(printf '${oct(sockPath)}')" ${extra.join(" ")} -- "$(printf '${oct(program)}')" ${out} --ack "$(printf '${oct(ARG_BAD)}')" "$(printf '${oct(ARG_UTF8)}')"`,
        "",
      ].join("\n"));
      const m = startMaster(["-m", "manual", "-n", "2", ...flags], { dir, wrap: ["/bin/sh", launcher] });
      // The command socket's path is not UTF-8 either: the workers ACK through it.
      const served = (version: number) => waitFor(`2 acked workers of version ${version}`, () => {
        const t = JSON.parse(String(rawCommand(sockPath, "state", ["json"]).at(-1)!.message)) as StateReport;
        return t.workers.length === 2 && t.workers.every((w) => w.acked && w.version === version) ? t : null;
      }, 30_000);
      await waitFor("the command socket", () => existsSync(sockPath));
      const first = await served(0);
      expect(osBytes(first.master.socket_path).equals(sockPath)).toBe(true);
      expect(existsSync(pidfile)).toBe(true);
      expect(readFileSync(pidfile, "utf8").trim()).toBe(String(m.pid));
      for (const w of first.workers) {
        await waitFor("worker report", () => existsSync(join(out, `${w.pid}.environ`)));
        expectBytesIntact(out, w.pid);
        expect(received(out, w.pid).env.get("EINHORN_SOCK_PATH")?.equals(sockPath)).toBe(true);
        // The kernel ran the script at that path: it is the interpreter's first argument.
        expect(received(out, w.pid).argv.some((a) => a.equals(program))).toBe(true);
      }
      for (let round = 1; round <= 2; round++) {
        if (round === 1) {
          const up = rawCommand(sockPath, "upgrade");
          expect(up.at(-1)!.error).toBeUndefined();
        } else {
          // einhorn sh reaches a socket whose path is not UTF-8, too.
          const shell = Bun.spawn(["/bin/sh", "-c", `exec ${BIN} sh -d "$(printf '${oct(sockPath)}')" -e upgrade --timeout 60`], { stdout: "pipe", stderr: "pipe" });
          const [text, err, code] = await Promise.all([new Response(shell.stdout).text(), new Response(shell.stderr).text(), shell.exited]);
          expect(err).toBe("");
          expect(code).toBe(0);
          expect(text).toContain("Upgrade done");
        }
        const s = await served(round);
        for (const w of s.workers) {
          await waitFor("worker report", () => existsSync(join(out, `${w.pid}.environ`)));
          expectBytesIntact(out, w.pid);
        }
      }
      if (reexec) expect(m.output()).toMatch(/Re-executing: .*re-.*exec\.sh --with-state-fd/);
      expect(await stopMaster(m)).toBe(0);
      expect(existsSync(pidfile)).toBe(false);
      expect(existsSync(sockPath)).toBe(false);
    }, within(90_000));
  }
});

// --- `state` in Einhorn's layout, read by Ruby (item 2) ----------------------------

const ruby = Bun.which("ruby");
const NO_RUBY = ruby ? "" : " (SKIPPED: ruby is not installed; apt-get install ruby)";

/** One child in Einhorn's state, as einhorn_state.rb prints it (Ruby symbols as ":name" keys, a Set as { set: [...] }). */
interface RubyChild {
  ":signaled": { set: string[] };
  ":last_signaled_at": RubyTime | null;
  ":spinup_time": RubyTime;
  ":version": number;
  [key: string]: unknown;
}
/** A Ruby Time, as einhorn_state.rb prints it. */
interface RubyTime { time: string }
/** What these tests read of Einhorn's state by name; the other keys are there too, compared as plain values. */
interface RubyStateDump {
  ":state": { ":children": Record<string, RubyChild>; ":version": number; ":cmd": string[]; ":last_spinup": RubyTime; [key: string]: unknown };
  ":persistent_descriptors": unknown[];
}

/** `state` as Einhorn's users load it, with the Ruby classes made visible (see einhorn_state.rb). */
function rubyState(sockPath: string): RubyStateDump {
  const r = Bun.spawnSync([ruby!, join(FIXTURES, "einhorn_state.rb"), sockPath], { timeout: 15_000 });
  if (r.exitCode !== 0) throw new Error(`einhorn_state.rb exited ${r.exitCode}: ${r.stderr.toString()}`);
  return JSON.parse(r.stdout.toString()) as RubyStateDump;
}

const ms = (t: { time: string }) => Date.parse(t.time);

function sh(sockPath: string, script: string) {
  return runBinary(["sh", "-d", sockPath, "-e", script, "--timeout", "60"]);
}

describe("state in Einhorn's layout", () => {
  test.skipIf(!ruby)(`Einhorn's client and SafeYAML load it: symbol keys, children by integer pid, Time and Set, our real values${NO_RUBY}`, async () => {
    const dir = tempDir();
    const sig = join(dir, "sig");
    mkdirSync(sig);
    const m = startMaster(["-n", "2", "-m", "manual", "-b", "127.0.0.1:0,r", "-t", "3", "--", ...PY, "--ack", "manual", "--signals", sig, "--ignore-usr2"], { dir });
    const j = await acked(m.sockPath, 2);
    const e = rubyState(m.sockPath);
    expect(Object.keys(e)).toEqual([":state", ":persistent_descriptors"]);
    const st = e[":state"];
    expect(Object.keys(st[":children"]).sort()).toEqual(j.workers.map((w) => `#${w.pid}`).sort());
    for (const w of j.workers) {
      const c = st[":children"][`#${w.pid}`]!;
      expect(c).toMatchObject({ ":type": ":worker", ":version": 0, ":acked": true, ":index": w.index, ":signaled": { set: [] }, ":last_signaled_at": null });
      expect(ms(c[":spinup_time"])).toBe(Date.parse(w.spawned_at!));
      expect(c[":pinged_at"]).toBeUndefined();
    }
    expect(st[":config"]).toEqual({ ":number": 2, ":backlog": 100, ":seconds": 1, ":max_unacked": j.settings.max_unacked });
    expect(st).toMatchObject({
      ":version": 0, ":upgrading": false, ":respawn": true, ":socket_path": m.sockPath, ":ack_mode": { ":type": ":manual" },
      ":signal_timeout": 3, ":bind": [["127.0.0.1", 0, ["r"]]], ":bound_ports": [listenerPort(j)], ":bind_fds": [j.listeners[0]!.fd],
      ":orig_cmd": [...PY, "--ack", "manual", "--signals", sig, "--ignore-usr2"], ":kill_children_on_exit": false, ":command_socket_as_fd": false,
      ":consecutive_deaths_before_ack": 0, ":generation": 0, ":preloaded": false, ":path": null, ":drop_environment_variables": [],
    });
    expect(st[":cmd"][0]).toMatch(/^\/.*python3/);
    // When the last worker was asked for: the newest spawn, a moment before it started.
    expect(Math.abs(ms(st[":last_spinup"]) - Math.max(...j.workers.map((w) => Date.parse(w.spawned_at!))))).toBeLessThan(5000);
    expect(e[":persistent_descriptors"][0]).toEqual({ ":class": "Einhorn::Event::CommandServer", ":server": expect.any(Number) });

    // --signal-timeout, changed at run time, read back where Einhorn keeps it.
    expect((await sh(m.sockPath, "config signal_timeout=5")).code).toBe(0);
    expect(rubyState(m.sockPath)[":state"][":signal_timeout"]).toBe(5);

    // As in Einhorn, the `signal` command (a HUP to reopen logs) is not recorded...
    expect((await sh(m.sockPath, "signal HUP")).code).toBe(0);
    for (const w of j.workers) await waitFor("HUP received by the worker", () => existsSync(join(sig, `${w.pid}.signals`)));
    for (const w of j.workers) expect(rubyState(m.sockPath)[":state"][":children"][`#${w.pid}`]).toMatchObject({ ":signaled": { set: [] }, ":last_signaled_at": null });
    // ...a signal that asks a worker to leave is: `dec` retires one with USR2.
    const before = Date.now();
    expect((await sh(m.sockPath, "dec")).code).toBe(0);
    const retired = await waitFor("one worker signaled", () => {
      const kids = Object.values(rubyState(m.sockPath)[":state"][":children"]);
      return kids.find((c) => c[":signaled"].set.length > 0) ?? null;
    });
    expect(retired[":signaled"]).toEqual({ set: ["USR2"] });
    expect(ms(retired[":last_signaled_at"]!)).toBeGreaterThanOrEqual(before - 1000);
    // These workers ignore USR2; TERM ends them.
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(60_000));

  test.skipIf(!ruby)(`Einhorn's own --signal-timeout test: after an upgrade one child is signaled; past the timeout it is gone${NO_RUBY}`, async () => {
    // Einhorn's test waits 2 s; 4 s leaves room to read the state on a busy machine.
    const sig = tempDir();
    const m = startMaster(["-m", "0.2", "-t", "4", "-b", "127.0.0.1:0", "--", ...PY, "--ignore-usr2", "--signals", sig]);
    await acked(m.sockPath, 1);
    // A timer ACK does not wait for the program: on a busy machine python may
    // not have set its USR2 handler 0.2 s in, and the upgrade's USR2 would
    // then kill the old worker at once. Upgrade once it is ready.
    const first = (await stateJson(m.sockPath)).workers[0]!;
    await waitFor("the worker's signal handlers in place", () => existsSync(join(sig, `${first.pid}.ready`)));
    const e0 = rubyState(m.sockPath)[":state"];
    expect(e0[":ack_mode"]).toEqual({ ":type": ":timer", ":timeout": 0.2 });
    expect(e0[":signal_timeout"]).toBe(4);
    expect((await sh(m.sockPath, "upgrade")).code).toBe(0);
    const during = rubyState(m.sockPath)[":state"];
    const kids = Object.values(during[":children"]);
    expect(kids).toHaveLength(2);
    const signaled = kids.filter((c) => c[":signaled"].set.length > 0);
    expect(signaled).toHaveLength(1);
    expect(signaled[0]![":signaled"].set).toContain("USR2");
    expect(signaled[0]![":version"]).toBe(0);
    expect(during[":version"]).toBe(1);
    const later = await waitFor("the old child killed after the timeout", () => {
      const s = rubyState(m.sockPath)[":state"];
      return Object.keys(s[":children"]).length === 1 ? s : null;
    }, 20_000);
    expect(Object.values(later[":children"]).filter((c) => c[":signaled"].set.length > 0)).toHaveLength(0);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));
});

// --- workers that ACK like Einhorn's library (item 7) -------------------------------

describe("workers ACKing the way Einhorn's worker library does", () => {
  const RUBY_WORKER = join(FIXTURES, "einhorn_worker.rb");
  const cases: Array<[string, string[], string[]]> = [
    ["a Ruby worker, Einhorn::Worker.ack! style through EINHORN_SOCK_PATH", [], [ruby ?? "ruby", RUBY_WORKER, "env", "ruby-env-7"]],
    ["a Ruby worker, Einhorn::Worker.ack!(:fd) style with -g", ["-g"], [ruby ?? "ruby", RUBY_WORKER, "fd", "ruby-fd-8"]],
    ["a Python worker writing the JSON lines by hand", [], [...PY, "--ack", "manual", "--ping", "py-9"]],
    ["a Python worker writing the JSON lines by hand to EINHORN_SOCK_FD with -g", ["-g"], [...PY, "--ack", "manual", "--ping", "py-fd-10"]],
  ];
  for (const [name, flags, program] of cases) {
    test.skipIf(!ruby)(`${name}: counted as ACKed; worker:ping with request_id shows in state${NO_RUBY}`, async () => {
      const m = startMaster(["-n", "2", "-m", "manual", "-b", "127.0.0.1:0", ...flags, "--", ...program]);
      const j = await acked(m.sockPath, 2);
      const id = program[program.length - 1]!;
      // Our schema and Einhorn's layout agree on the ping.
      const pinged = await waitFor("pings recorded", async () => {
        const s = await stateJson(m.sockPath);
        return s.workers.every((w) => w.last_ping?.request_id === id) ? s : null;
      });
      const e = rubyState(m.sockPath)[":state"][":children"];
      for (const w of pinged.workers) {
        const child = e[`#${w.pid}`]!;
        expect(child[":acked"]).toBe(true);
        expect(child[":pinged_request_id"]).toBe(id);
        expect(ms(child[":pinged_at"] as RubyTime)).toBe(Date.parse(w.last_ping!.at!));
      }
      // And they serve.
      const line = await fetchLine(listenerPort(j));
      expect(j.workers.map((w) => `${w.pid} ${w.index}`)).toContain(line.split(" ").slice(0, 2).join(" ").trim());
      expect(await stopMaster(m)).toBe(0);
    }, within(60_000));
  }
});

// --- --drop-env-var, as Einhorn's own upgrade tests check it -------------------------

describe("--drop-env-var", () => {
  async function reportedEnv(rep: string, sockPath: string, version: number): Promise<Record<string, string>> {
    const s = await waitFor(`a worker of version ${version}`, async () => {
      const t = await stateJson(sockPath);
      return t.workers.length === 1 && t.workers[0]!.version === version && t.workers[0]!.acked ? t : null;
    }, 30_000);
    const f = join(rep, `${s.workers[0]!.pid}.json`);
    return (await waitFor("report", () => existsSync(f) && JSON.parse(readFileSync(f, "utf8")))).env;
  }

  test("removes the variable from the workers' environment after an upgrade", async () => {
    const rep = tempDir();
    const m = startMaster(["-m", "0", "--drop-env-var=TEST_VAR", "--", ...PY, "--report", rep], { env: { TEST_VAR: "a" } });
    expect((await reportedEnv(rep, m.sockPath, 0)).TEST_VAR).toBe("a");
    expect((await sh(m.sockPath, "upgrade")).code).toBe(0);
    expect((await reportedEnv(rep, m.sockPath, 1)).TEST_VAR).toBeUndefined();
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));

  test("with --reexec-as, the re-exec command line sets the new environment and dropped names stay dropped", async () => {
    const rep = tempDir();
    const m = startMaster(["-m", "0", "--drop-env-var=TEST_VAR1", "--drop-env-var=TEST_VAR2", `--reexec-as=env TEST_VAR2=b ${BIN}`, "--", ...PY, "--report", rep],
      { env: { TEST_VAR1: "a", TEST_VAR2: "a" } });
    const first = await reportedEnv(rep, m.sockPath, 0);
    expect([first.TEST_VAR1, first.TEST_VAR2]).toEqual(["a", "a"]);
    expect((await sh(m.sockPath, "upgrade")).code).toBe(0);
    const next = await reportedEnv(rep, m.sockPath, 1);
    expect(next.TEST_VAR1).toBeUndefined();
    expect(next.TEST_VAR2).toBe("b");
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));
});

// --- -k, as Einhorn's own pdeathsig test checks it ---------------------------------------

describe("-k", () => {
  test.skipIf(!ruby)(`workers have USR2 as their parent-death signal, also those started after an upgrade; none without -k${NO_RUBY}`, async () => {
    const RUBY_WORKER = join(FIXTURES, "einhorn_worker.rb");
    const m = startMaster(["-k", "-m", "manual", "-b", "127.0.0.1:0", "--", ruby!, RUBY_WORKER, "env"]);
    const j = await acked(m.sockPath, 1);
    expect(await fetchLine(listenerPort(j))).toBe(`${j.workers[0]!.pid} 0 USR2\n`);
    expect((await sh(m.sockPath, "upgrade")).code).toBe(0);
    const s = await waitFor("the new worker alone", async () => {
      const t = await stateJson(m.sockPath);
      return t.workers.length === 1 && t.workers[0]!.version === 1 && t.workers[0]!.acked ? t : null;
    }, 30_000);
    expect(await fetchLine(listenerPort(j))).toBe(`${s.workers[0]!.pid} ${s.workers[0]!.index} USR2\n`);
    // The master dies without a word: the worker gets USR2 and leaves.
    m.proc.kill("SIGKILL");
    await m.exited;
    await waitFor("the worker gone after its parent's death", () => !existsSync(`/proc/${s.workers[0]!.pid}`) || /\) Z /.test(readFileSync(`/proc/${s.workers[0]!.pid}/stat`, "latin1")), 15_000);

    const plain = startMaster(["-m", "manual", "-b", "127.0.0.1:0", "--", ruby!, RUBY_WORKER, "env"]);
    const p = await acked(plain.sockPath, 1);
    expect(await fetchLine(listenerPort(p))).toBe(`${p.workers[0]!.pid} 0 none\n`);
    expect(await stopMaster(plain)).toBe(0);
  }, within(60_000));
});

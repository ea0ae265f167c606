// The command socket of the compiled master, with real workers: what every
// command does to them, who may connect, Einhorn's Ruby client, and clients
// that misbehave on purpose.
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import net from "node:net";
import type { Socket } from "bun";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { MAX_CONNECTIONS, MAX_PENDING_OUTPUT } from "../../src/master/command-server";
import { COMMANDS, type CommandName } from "../../src/command-registry";
import { decodeLine, escapeLine, MAX_LINE_BYTES } from "../../src/protocol";
import { command, fetchLine, FIXTURES, listenerPort, type Master, quietFor, runBinary, sleep, startMaster, type StartOptions, stateJson, type StateReport, tempDir, waitFor } from "../harness";

const PY = ["python3", join(FIXTURES, "worker.py")];

// This file also tracks its own masters, clients and directories and closes
// them after each test (before the harness's global cleanup and leak check,
// test/setup.ts), so a hostile-client test never leaves sockets half-open.
const ours = { masters: [] as Master[], clients: [] as Array<{ destroy(): void }>, dirs: [] as string[] };

function start(args: string[], opts?: StartOptions): Master {
  const m = startMaster(args, opts);
  ours.masters.push(m);
  ours.dirs.push(m.dir);
  return m;
}

function scratchDir(): string {
  const d = tempDir();
  ours.dirs.push(d);
  return d;
}

afterEach(async () => {
  for (const c of ours.clients.splice(0)) c.destroy();
  for (const m of ours.masters.splice(0)) {
    if (m.exitCode() !== null) continue;
    m.proc.kill("SIGTERM");
    const t = setTimeout(() => m.proc.kill("SIGKILL"), 3000);
    await m.exited;
    clearTimeout(t);
  }
  for (const d of ours.dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const SLEEPER = ["sleep", "1000"];
type Answer = Record<string, unknown>;

// --- a raw client ----------------------------------------------------------------

/**
 * One connection to the command socket, byte for byte: nothing is sent unless
 * asked. These tests check the wire itself (framing, partial and oversized
 * lines, hostile clients), so they do not use the harness's CommandConnection,
 * which frames requests and parses answers for them. Bun.connect rather than node:net, whose sockets drop what the master
 * sent when a write fails (EPIPE after "Line too long") or report ECONNRESET
 * from connect when the master answers and hangs up at once ("Too many
 * connections").
 */
class Client {
  readonly answers: Answer[] = [];
  raw = "";
  closed = false;
  error: string | null = null;
  private buf = "";
  private out: Buffer[] = [];
  private wake: Array<() => void> = [];
  private socket: Socket<undefined> | null = null;

  static open(path: string): Promise<Client> {
    const c = new Client();
    ours.clients.push(c);
    return new Promise((resolve, reject) => {
      Bun.connect({
        unix: path,
        socket: {
          open: (s) => { c.socket = s; resolve(c); },
          data: (_s, d) => c.received(d),
          drain: () => c.pump(),
          end: () => c.gone(),
          close: () => c.gone(),
          error: (_s, e) => { c.error = (e as NodeJS.ErrnoException).code ?? e.message; c.gone(); },
          connectError: (_s, e) => reject(e),
        },
      }).catch(reject);
    });
  }

  private received(d: Buffer): void {
    const text = d.toString("utf8");
    this.raw += text;
    this.buf += text;
    for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
      this.answers.push(decodeLine(this.buf.slice(0, nl)) as Answer);
      this.buf = this.buf.slice(nl + 1);
    }
    this.notify();
  }

  private gone(): void {
    this.closed = true;
    this.notify();
  }

  private notify(): void {
    for (const w of this.wake.splice(0)) w();
  }

  private pump(): void {
    while (this.out.length && this.socket && !this.closed) {
      const head = this.out[0]!;
      const n = this.socket.write(head);
      if (n <= 0) return;
      if (n < head.length) { this.out[0] = head.subarray(n); return; }
      this.out.shift();
    }
  }

  /** Resolves once `cond` holds, or with false after `timeoutMs`. */
  private until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const check = () => {
        if (cond()) { clearTimeout(timer); resolve(true); } else this.wake.push(check);
      };
      const timer = setTimeout(() => resolve(cond()), timeoutMs);
      check();
    });
  }

  send(data: string | Buffer): void {
    if (this.closed) return;
    this.out.push(Buffer.isBuffer(data) ? data : Buffer.from(data));
    this.pump();
  }

  /** Everything given to send() has reached the kernel. */
  get flushed(): boolean {
    return this.out.length === 0;
  }

  request(cmd: string, args: string[] = [], id: unknown = 1): void {
    this.send(`${JSON.stringify({ command: cmd, args, id })}\n`);
  }

  /** Wait for the n-th answer (1-based) and return it. */
  async answer(n = this.answers.length + 1, timeoutMs = 5000): Promise<Answer> {
    if (!(await this.until(() => this.answers.length >= n, timeoutMs))) {
      throw new Error(`no answer #${n} within ${timeoutMs} ms (closed: ${this.closed}, got ${JSON.stringify(this.answers)})`);
    }
    return this.answers[n - 1]!;
  }

  /** Whether the master closed the connection within `timeoutMs`. */
  closedWithin(timeoutMs: number): Promise<boolean> {
    return this.until(() => this.closed, timeoutMs);
  }

  /** Half-close: no more requests; the master answers what it has and hangs up. */
  end(): void {
    this.socket?.end();
  }

  destroy(): void {
    this.socket?.terminate();
    this.closed = true;
    this.notify();
  }
}

/** One request, the final answer (after any `wait: true` ones). */
async function final(sockPath: string, cmd: string, args: string[] = []): Promise<Answer> {
  const answers = await command(sockPath, cmd, args);
  return answers[answers.length - 1]!;
}

// --- observing the master and its workers ------------------------------------------

/**
 * Live worker processes of this master: its children that are not zombies
 * (by parentage, not EINHORN_TEST_TAG, which workers did not always inherit),
 * leaving out an upgrade's short-lived preflight.
 */
function workerProcs(m: Master): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const [, rest] = readFileSync(`/proc/${entry}/stat`, "latin1").split(/\) (?=[A-Z] )/);
      const [state, ppid] = rest!.split(" ");
      if (Number(ppid) !== m.pid || state === "Z") continue;
      if (readFileSync(`/proc/${entry}/cmdline`, "latin1").includes("--upgrade-check")) continue;
      found.push(Number(entry));
    } catch { /* gone */ }
  }
  return found.sort((a, b) => a - b);
}

/** Wait until state shows `n` acked, non-retiring workers and exactly `n` worker processes exist. */
async function workersUp(m: Master, n: number, acked = true): Promise<StateReport> {
  return waitFor(`${n} ${acked ? "acked " : ""}workers`, async () => {
    const s = await stateJson(m.sockPath);
    const live = s.workers.filter((w) => !w.retiring && (!acked || w.acked));
    if (live.length !== n || s.workers.length !== n) return null;
    const procs = workerProcs(m);
    const pids = s.workers.map((w) => w.pid).sort((a, b) => a - b);
    return procs.length === n && procs.every((p, i) => p === pids[i]) ? s : null;
  });
}

function signalsSeen(dir: string, pid: number): string[] {
  const f = join(dir, `${pid}.signals`);
  return existsSync(f) ? readFileSync(f, "utf8").trim().split("\n").filter(Boolean) : [];
}

async function handlersReady(dir: string, pids: number[]): Promise<void> {
  await waitFor("signal handlers installed", () => pids.every((p) => existsSync(join(dir, `${p}.ready`))));
}

const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const rssKb = (pid: number) => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))![1]);
/** CPU time (user + system, all threads) a process has used, in ms: /proc/PID/stat fields 14 and 15, in USER_HZ (100 on Linux). */
const cpuMs = (pid: number) => {
  const stat = readFileSync(`/proc/${pid}/stat`, "latin1");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
};

/** The master's fd count once its idle connections are gone (fds of accepted clients are released asynchronously). */
async function fdsBackTo(m: Master, baseline: number): Promise<void> {
  await waitFor(`master fds back to ${baseline} (now ${fdCount(m.pid)})`, () => fdCount(m.pid) <= baseline, 10_000);
}

let cachedVersion: string | null = null;
async function einhornVersion(): Promise<string> {
  cachedVersion ??= (await runBinary(["--version"])).stdout.trim().replace(/^einhorn /, "");
  return cachedVersion;
}

// --- every command on real workers ----------------------------------------------------

describe("commands", () => {
  test("ehlo names the master's pid and version; help lists every command; unknown and missing commands are errors", async () => {
    const m = start(["-m", "0", "--", ...SLEEPER]);
    await workersUp(m, 1);
    const version = await einhornVersion();

    const ehlo = await final(m.sockPath, "ehlo");
    expect(ehlo.request_id).toBe(1);
    expect(ehlo.error).toBeUndefined();
    expect(ehlo.message).toBe(`Welcome, friend! You are speaking to Einhorn Master Process ${m.pid}.\nThis is Einhorn ${version}.`);

    const c = await Client.open(m.sockPath);
    c.send(`${JSON.stringify({ command: "ehlo", user: "alice", id: "x" })}\n`);
    expect((await c.answer()).message).toStartWith("Welcome, alice! ");
    expect(c.answers[0]!.request_id).toBe("x");

    const help = String((await final(m.sockPath, "help")).message);
    // Einhorn's layout: its opening line, then "name: description" sorted by name.
    expect(help.split("\n").slice(0, 2)).toEqual(["You are speaking to the Einhorn command socket. You can run the following commands:", ""]);
    expect(help.split("\n").slice(2)).toEqual(Object.keys(COMMANDS).sort().map((name) => `${name}: ${COMMANDS[name as CommandName].description}`));

    const unknown = await final(m.sockPath, "frobnicate");
    expect(unknown.error).toBe(true);
    expect(unknown.message).toStartWith('Unrecognized command: "frobnicate". Commands: worker:ack, worker:ping, ehlo, help, state');

    c.send('{"args": ["json"], "id": 2}\n');
    const missing = await c.answer(2);
    expect(missing.error).toBe(true);
    expect(missing.message).toStartWith('No "command" given. Commands: ');
  });

  test("state: the YAML dump parses to the same data as `state json`, which has every documented field", async () => {
    const m = start(["-n", "2", "-m", "0", "-s", "0.05", "-b", "127.0.0.1:0", "--", ...PY]);
    let s = await workersUp(m, 2);

    expect(s.schema).toBe("einhorn.state/1");
    expect(s.einhorn_version).toBe(await einhornVersion());
    expect(s.master.pid).toBe(m.pid);
    expect(s.master.socket_path).toBe(m.sockPath);
    expect(s.master.program).toEqual(PY);
    expect(s.master.version).toBe(0);
    expect(s.master.stopping).toBeNull();
    expect(s.master.upgrade).toBeNull();
    expect(s.settings).toMatchObject({ number: 2, seconds: 0.05, ack_mode: "timer", ack_seconds: 0 });
    expect(s.listeners).toHaveLength(1);
    const l = s.listeners[0]!;
    expect(l).toMatchObject({ spec: "127.0.0.1:0", family: "inet", path: null, nonblocking: false });
    expect(l.fd).toBeGreaterThanOrEqual(3);
    expect(l.address).toBe(`127.0.0.1:${l.port}`);
    const pids = s.workers.map((w) => w.pid);
    expect(pids).toContain(Number((await fetchLine(listenerPort(s))).split(" ")[0])); // the port is the one the workers serve
    expect(s.workers.map((w) => w.index)).toEqual([0, 1]);
    for (const w of s.workers) {
      expect(w).toMatchObject({ version: 0, acked: true, retiring: false, signals: [], last_ping: null, index_exits: { total: 0, before_ack: 0 } });
      expect(new Date(w.spawned_at!).toISOString()).toBe(w.spawned_at!);
      expect(new Date(w.acked_at!).toISOString()).toBe(w.acked_at!);
    }
    expect(s.exits).toEqual({});

    // A death shows in exits and in the replacement's index_exits.
    process.kill(pids[1]!, "SIGKILL");
    s = await waitFor("replacement", async () => {
      const t = await workersUp(m, 2);
      return t.workers.some((w) => w.pid === pids[1]) ? null : t;
    });
    expect(s.exits["1"]).toMatchObject({ total: 1, before_ack: 0, last_code: null, last_signal: "SIGKILL" });
    expect(new Date(s.exits["1"]!.last_at!).toISOString()).toBe(s.exits["1"]!.last_at!);
    expect(s.workers[1]!.index_exits).toEqual({ total: 1, before_ack: 0, unasked: 1 });

    const yamlAnswer = await final(m.sockPath, "state", ["yaml"]);
    expect(yamlAnswer.error).toBeUndefined();
    expect(parseYaml(String(yamlAnswer.message))).toEqual(await stateJson(m.sockPath));

    const bad = await final(m.sockPath, "state", ["xml"]);
    expect(bad.error).toBe(true);
    expect(bad.message).toBe("state takes nothing (Einhorn's layout, for Einhorn's clients), 'json' or 'yaml' (einhorn's own schema), got 'xml'");
  });

  test("inc, dec and set_workers change the real number of workers; dec stops at 1; bad counts are refused", async () => {
    const m = start(["-n", "2", "-m", "0", "-s", "0.05", "--", ...SLEEPER]);
    const initial = await workersUp(m, 2);

    const inc = await final(m.sockPath, "inc");
    expect(inc).toEqual({ message: "Incrementing number of workers from 2 -> 3", request_id: 1 });
    const three = await workersUp(m, 3);
    for (const w of initial.workers) expect(three.workers.map((x) => x.pid)).toContain(w.pid);

    expect((await final(m.sockPath, "dec")).message).toBe("Decrementing number of workers from 3 -> 2");
    await workersUp(m, 2);

    expect((await final(m.sockPath, "set_workers", ["4"])).message).toBe("Altering worker count, 2 -> 4. Will spin up additional workers.");
    await workersUp(m, 4);
    expect((await final(m.sockPath, "set_workers", ["1"])).message).toBe("Altering worker count, 4 -> 1. Will gracefully terminate workers.");
    const one = await workersUp(m, 1);

    const dec = await final(m.sockPath, "dec");
    expect(dec.error).toBe(true);
    expect(dec.message).toBe(`Can't decrease number of workers (already at 1). Run 'die' or kill ${m.pid} if you really want to stop einhorn.`);

    for (const args of [["0"], ["1001"], ["-1"], ["two"], ["1.5"], [""], [], ["2", "3"]]) {
      const a = await final(m.sockPath, "set_workers", args);
      expect(a.error).toBe(true);
      expect(a.message).toStartWith("set_workers takes one whole number from 1 to 1000, got ");
    }
    await quietFor(200);
    const after = await workersUp(m, 1);
    expect(after.settings.number).toBe(1);
    expect(after.workers[0]!.pid).toBe(one.workers[0]!.pid);
  });

  test("quieter and louder change what the master logs", async () => {
    const m = start(["-v", "-m", "0", "-s", "0.05", "--", ...SLEEPER]);
    await workersUp(m, 1);
    expect(m.output()).toContain("DEBUG: Command socket listening");
    expect((await stateJson(m.sockPath)).master.verbosity).toBe(0);

    // At 0 every command is logged at debug level.
    await final(m.sockPath, "ehlo");
    await m.waitForOutput(/DEBUG: Received command "ehlo" from pid \d+ uid \d+/);

    expect((await final(m.sockPath, "quieter")).message).toBe("Verbosity set to 1 (0 debug, 1 info, 2 errors only)");
    // The "quieter" request itself was logged at debug level (still 0 then);
    // that line may reach the pipe after the answer, so wait for it first.
    await m.waitForOutput(/DEBUG: Received command "quieter"/);
    let mark = m.output().length;
    await final(m.sockPath, "help");
    await quietFor(200);
    expect(m.output().slice(mark)).not.toContain("DEBUG:");
    expect((await final(m.sockPath, "quieter")).message).toBe("Verbosity set to 2 (0 debug, 1 info, 2 errors only)");
    expect((await final(m.sockPath, "quieter")).message).toBe("Verbosity set to 2 (0 debug, 1 info, 2 errors only)"); // stays at 2
    expect((await stateJson(m.sockPath)).master.verbosity).toBe(2);

    // Errors only: a launch (info) and an ACK for a stranger (warn) leave no line.
    mark = m.output().length;
    await final(m.sockPath, "inc");
    await workersUp(m, 2);
    await (await Client.open(m.sockPath)).send('{"command":"worker:ack","pid":1}\n');
    await quietFor(300);
    expect(m.output().slice(mark)).toBe("");

    expect((await final(m.sockPath, "louder")).message).toBe("Verbosity set to 1 (0 debug, 1 info, 2 errors only)");
    mark = m.output().length;
    await final(m.sockPath, "inc");
    await workersUp(m, 3);
    await m.waitForOutput(/INFO: ===> Launched \d+ \(index 2/);
    expect(m.output().slice(mark)).not.toContain("DEBUG:");

    expect((await final(m.sockPath, "louder")).message).toBe("Verbosity set to 0 (0 debug, 1 info, 2 errors only)");
    expect((await final(m.sockPath, "louder")).message).toBe("Verbosity set to 0 (0 debug, 1 info, 2 errors only)"); // stays at 0
    expect((await stateJson(m.sockPath)).master.verbosity).toBe(0);
    await m.waitForOutput(/DEBUG: Received command "louder" from pid/); // debug lines are back
  });

  test("signal reaches every worker, by any spelling; a bad name sends nothing", async () => {
    const sig = scratchDir();
    const m = start(["-n", "2", "-m", "0", "--", ...PY, "--signals", sig]);
    const s = await workersUp(m, 2);
    const pids: number[] = s.workers.map((w) => w.pid);
    await handlersReady(sig, pids);

    const a = await final(m.sockPath, "signal", ["HUP"]);
    expect(a.error).toBeUndefined();
    expect(a.message).toBe(`Successfully sent HUPs to 2 processes: [${pids.join(", ")}]`);
    for (const p of pids) await waitFor(`HUP at ${p}`, () => signalsSeen(sig, p).length === 1);
    expect(signalsSeen(sig, pids[0]!)).toEqual(["HUP"]);

    // One at a time: a second HUP sent while the first is still pending merges with it.
    for (const [i, spelling] of ["hup", "SIGHUP", "1"].entries()) {
      expect((await final(m.sockPath, "signal", [spelling])).error).toBeUndefined();
      for (const p of pids) await waitFor(`${i + 2} HUPs at ${p}`, () => signalsSeen(sig, p).length === i + 2);
    }

    for (const args of [["BOGUS"], [], ["HUP", "NOPE"], ["999"]]) {
      const bad = await final(m.sockPath, "signal", args);
      expect(bad.error).toBe(true);
      expect(String(bad.message).length).toBeGreaterThan(10);
    }
    await quietFor(200);
    for (const p of pids) expect(signalsSeen(sig, p)).toEqual(["HUP", "HUP", "HUP", "HUP"]);
    expect((await workersUp(m, 2)).workers.map((w) => w.pid)).toEqual(pids);
  });

  test("die: USR2 to every worker, then the master exits 0", async () => {
    const sig = scratchDir();
    const m = start(["-n", "2", "-m", "0", "--", ...PY, "--signals", sig]);
    const s = await workersUp(m, 2);
    const pids: number[] = s.workers.map((w) => w.pid);
    await handlersReady(sig, pids);

    for (const args of [["BOGUS"], ["TERM", "KILL"]]) {
      const bad = await final(m.sockPath, "die", args);
      expect(bad.error).toBe(true);
    }
    await quietFor(100);
    expect(m.exitCode()).toBeNull();

    const a = await final(m.sockPath, "die");
    expect(a.error).toBeUndefined();
    expect(a.message).toBe(`Einhorn is going down! Successfully sent USR2s to 2 processes: [${pids.join(", ")}]`);
    expect(await m.exited).toBe(0);
    for (const p of pids) expect(signalsSeen(sig, p)).toEqual(["USR2"]);
    expect(existsSync(m.sockPath)).toBe(false);
  });

  test("die TERM: TERM to every worker, then the master exits 0", async () => {
    const sig = scratchDir();
    const m = start(["-n", "2", "-m", "0", "--", ...PY, "--signals", sig]);
    const s = await workersUp(m, 2);
    const pids: number[] = s.workers.map((w) => w.pid);
    await handlersReady(sig, pids);
    expect((await final(m.sockPath, "die", ["TERM"])).message).toStartWith("Einhorn is going down! Successfully sent TERMs to 2 processes");
    expect(await m.exited).toBe(0);
    for (const p of pids) expect(signalsSeen(sig, p)).toEqual(["TERM"]);
  });

  test("config changes settings; unknown keys and bad values change nothing", async () => {
    const m = start(["-n", "2", "-m", "0", "-s", "0.05", "--", ...SLEEPER]);
    await workersUp(m, 2);

    const a = await final(m.sockPath, "config", ["number=3"]);
    expect(a).toEqual({ message: "Config updated: number=3", request_id: 1 });
    await workersUp(m, 3);

    expect((await final(m.sockPath, "config", ['{"seconds": 2}'])).message).toBe("Config updated: seconds=2");
    expect((await final(m.sockPath, "config", ["{max_unacked: 4, signal_timeout: 1.5}"])).message).toBe("Config updated: max_unacked=4, signal_timeout=1.5");
    const before = await stateJson(m.sockPath);
    expect(before.settings).toMatchObject({ number: 3, seconds: 2, max_unacked: 4, signal_timeout: 1.5 });

    const bad: Array<[string[], RegExp]> = [
      [["bogus=1"], /^config: unknown setting 'bogus'\. Known settings: number, seconds, /],
      [['{"colour": "blue"}'], /^config: unknown setting 'colour'/],
      [["number=0"], /^config: number must be a whole number 1\.\.1000; "0" is not a whole number from 1 to 1000$/],
      [["number=abc"], /^config: number must be a whole number 1\.\.1000/],
      [["number=1001"], /^config: number must be a whole number/],
      [["seconds=-1"], /^config: seconds must be a number of seconds > 0; "-1" is not/],
      [["seconds=0"], /^config: seconds must be a number of seconds > 0/],
      [['{"seconds": "soon"}'], /^config: seconds must be a number of seconds > 0/],
      [["number=5", "bogus=1"], /^config: unknown setting 'bogus'/], // all or nothing
      [["number=5", "seconds=-3"], /^config: seconds must be/],
      [["number"], /^config: expected a mapping like \{number: 4\}/],
      [["[1, 2]"], /^config: expected a mapping/],
      [["{number: !!binary AA==}"], /^config: YAML tags are not accepted/],
      [[], /^config needs settings/],
    ];
    for (const [args, re] of bad) {
      const r = await final(m.sockPath, "config", args);
      expect(r.error).toBe(true);
      expect(String(r.message)).toMatch(re);
    }
    await quietFor(200);
    const after = await workersUp(m, 3);
    expect(after.settings).toEqual(before.settings);
    expect(after.workers.map((w) => w.pid)).toEqual(before.workers.map((w) => w.pid));
  });

  test("upgrade, upgrade_fleet and reload answer the requester to the end, and leave a serving master", async () => {
    // Their full behaviour is tested with the upgrade work; here: the
    // command-socket contract (request_id on every answer, wait: true on all
    // but the last) and that the master keeps its pid and its workers' count.
    const m = start(["-n", "2", "-m", "0", "-s", "0.05", "--", ...SLEEPER]);
    let s = await workersUp(m, 2);
    for (const cmd of ["reload", "upgrade", "upgrade_fleet"]) {
      const pidsBefore = s.workers.map((w) => w.pid);
      const answers = await command(m.sockPath, cmd, [], 20_000);
      const last = answers[answers.length - 1]!;
      for (const a of answers) {
        expect(a.request_id).toBe(1);
        expect(typeof a.message).toBe("string");
        expect(String(a.message).length).toBeGreaterThan(0);
      }
      for (const a of answers.slice(0, -1)) expect(a.wait).toBe(true);
      expect(last.wait).toBeUndefined();
      s = await workersUp(m, 2);
      expect(s.master.pid).toBe(m.pid);
      if (last.error === true || cmd === "reload") {
        expect(s.workers.map((w) => w.pid)).toEqual(pidsBefore);
      } else {
        expect(s.workers.every((w) => w.version === s.master.version)).toBe(true);
        for (const w of s.workers) expect(pidsBefore).not.toContain(w.pid);
      }
    }
    expect(m.exitCode()).toBeNull();
  });
});

describe("reply_format", () => {
  test("a client that sends reply_format: json gets JSON answers, also after the master re-executes; others keep YAML", async () => {
    const m = start(["-n", "1", "-m", "0", "--", ...SLEEPER]);
    await workersUp(m, 1);
    const yamlClient = await Client.open(m.sockPath);
    const jsonClient = await Client.open(m.sockPath);
    yamlClient.request("ehlo");
    jsonClient.send(`${JSON.stringify({ command: "ehlo", args: [], id: 1, reply_format: "json" })}\n`);
    expect(String((await yamlClient.answer(1)).message)).toContain("Welcome");
    expect(String((await jsonClient.answer(1)).message)).toContain("Welcome");
    expect(yamlClient.raw.startsWith("---%0A")).toBe(true);
    expect(JSON.parse(jsonClient.raw.split("\n")[0]!).request_id).toBe(1);
    // The format is the connection's: a later request without the key, across the re-exec, still gets JSON.
    jsonClient.request("upgrade", [], 2);
    await waitFor("the upgrade's final answer", () => jsonClient.answers.some((a) => a.request_id === 2 && a.wait !== true), 30_000);
    const lines = jsonClient.raw.trim().split("\n");
    expect(lines.some((l) => l.includes("re-executed"))).toBe(true);
    for (const l of lines) expect(() => JSON.parse(l)).not.toThrow();
    // The new image says what the re-exec cost (the upgrade-cost benchmark reads it).
    await m.waitForOutput(/re-executed as einhorn .*; the re-exec took \d+\.\d ms of CPU/);
    yamlClient.request("state", ["json"], 3);
    await yamlClient.answer(2);
    expect(yamlClient.raw.split("\n")[1]!.startsWith("---%0A")).toBe(true);
  });
});

// --- workers talking to the master ---------------------------------------------------

describe("worker messages", () => {
  test("worker:ack for a pid that is not a live worker is ignored and the connection closed without an answer", async () => {
    const m = start(["-n", "1", "-m", "manual", "--", ...SLEEPER]);
    const before = await workersUp(m, 1, false);
    const pid = before.workers[0]!.pid;
    expect(before.workers[0]!.acked).toBe(false);

    for (const line of [
      '{"command":"worker:ack","pid":1}',
      `{"command":"worker:ack","pid":${m.pid}}`,
      '{"command":"worker:ack","pid":999999999}',
      '{"command":"worker:ack","pid":"abc"}',
      '{"command":"worker:ack"}',
      '{"command":"worker:ack","pid":-5}',
    ]) {
      const c = await Client.open(m.sockPath);
      c.send(`${line}\n`);
      expect(await c.closedWithin(3000)).toBe(true);
      expect(c.raw).toBe("");
    }
    await quietFor(100);
    expect(await stateJson(m.sockPath)).toEqual(before);

    // The real pid, as a string the way some libraries send it, is ACKed.
    const c = await Client.open(m.sockPath);
    c.send(`{"command":"worker:ack","pid":"${pid}"}\n`);
    expect(await c.closedWithin(3000)).toBe(true);
    expect(c.raw).toBe("");
    const acked = await workersUp(m, 1, true);
    expect(acked.workers[0]!.pid).toBe(pid);
  });

  test("worker:ping with a request_id shows in state's last_ping; no answer", async () => {
    const m = start(["-n", "2", "-m", "0", "--", ...SLEEPER]);
    const s = await workersUp(m, 2);
    const w0 = s.workers[0]!;
    const w1 = s.workers[1]!;
    const t0 = Date.now();
    for (const [pid, rid] of [[w0.pid, "ping-7"], [w1.pid, 42], [999999999, "stranger"]] as const) {
      const c = await Client.open(m.sockPath);
      c.send(`${JSON.stringify({ command: "worker:ping", pid, request_id: rid })}\n`);
      expect(await c.closedWithin(3000)).toBe(true);
      expect(c.raw).toBe("");
    }
    const after = await stateJson(m.sockPath);
    const byPid = new Map(after.workers.map((w) => [w.pid, w]));
    const p0 = byPid.get(w0.pid)!.last_ping!;
    expect(p0.request_id).toBe("ping-7");
    expect(Date.parse(p0.at!)).toBeGreaterThanOrEqual(t0 - 5);
    expect(Date.parse(p0.at!)).toBeLessThanOrEqual(Date.now());
    expect(byPid.get(w1.pid)!.last_ping!.request_id).toBe(42);
    expect(after.workers).toHaveLength(2);
  });

  test("-g: each worker gets EINHORN_SOCK_FD, and one os.write of the ACK line on it marks the worker up", async () => {
    const rep = scratchDir();
    const m = start(["-g", "-n", "2", "-m", "manual", "--", ...PY, "--ack", "manual", "--report", rep]);
    const s = await workersUp(m, 2, true);
    const reports = await waitFor("2 reports", () => {
      const r = readdirSync(rep).filter((f) => f.endsWith(".json"));
      return r.length === 2 ? r.map((f) => JSON.parse(readFileSync(join(rep, f), "utf8"))) : null;
    });
    for (const r of reports) {
      const fd = Number(r.env.EINHORN_SOCK_FD);
      expect(fd).toBeGreaterThanOrEqual(3);
      expect(r.fds).toContain(fd);
      expect(r.env.EINHORN_SOCK_PATH).toBe(m.sockPath);
    }
    expect(s.workers.every((w) => w.acked && w.acked_at)).toBe(true);
  });

  test("without -g the same worker ACKs over EINHORN_SOCK_PATH", async () => {
    const rep = scratchDir();
    const m = start(["-n", "2", "-m", "manual", "--", ...PY, "--ack", "manual", "--report", rep]);
    await workersUp(m, 2, true);
    const reports = await waitFor("2 reports", () => {
      const r = readdirSync(rep).filter((f) => f.endsWith(".json"));
      return r.length === 2 ? r.map((f) => JSON.parse(readFileSync(join(rep, f), "utf8"))) : null;
    });
    for (const r of reports) {
      expect(r.env.EINHORN_SOCK_FD).toBeUndefined();
      expect(r.env.EINHORN_SOCK_PATH).toBe(m.sockPath);
    }
  });
});

// --- who may connect ----------------------------------------------------------------

/** A python3 that uid 65534 can run (pyenv shims under /root are not). */
function pythonForNobody(): string | null {
  if (process.getuid?.() !== 0 || !Bun.which("setpriv")) return null;
  for (const p of ["/usr/bin/python3", "/usr/local/bin/python3", Bun.which("python3")]) {
    if (!p || !existsSync(p)) continue;
    const r = Bun.spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", p, "-c", "pass"], { cwd: "/" });
    if (r.exitCode === 0) return p;
  }
  return null;
}
const nobodyPython = pythonForNobody();

describe("security", () => {
  test("the command socket is 0600 even when the master runs with umask 000", async () => {
    const old = process.umask(0o000);
    let m: Master;
    try {
      m = start(["-m", "0", "--", ...SLEEPER]);
    } finally {
      process.umask(old);
    }
    await workersUp(m, 1);
    expect(readFileSync(`/proc/${m.pid}/status`, "utf8")).toMatch(/^Umask:\s+0000$/m);
    expect(statSync(m.sockPath).mode & 0o777).toBe(0o600);
  });

  test.skipIf(!nobodyPython)(
    `a connection from another user is refused with an error, and others are still served${nobodyPython ? "" : " (SKIPPED: needs root, setpriv and a python3 outside /root)"}`,
    async () => {
      const m = start(["-m", "0", "--", ...SLEEPER]);
      await workersUp(m, 1);
      const client = [
        "import socket, sys",
        "c = socket.socket(socket.AF_UNIX)",
        "try:",
        "    c.connect(sys.argv[1])",
        "except OSError as e:",
        "    print('connect failed:', e.strerror); sys.exit(3)",
        "try:",
        "    c.sendall(b'{\"command\":\"state\",\"args\":[],\"id\":1}\\n')",
        "except (BrokenPipeError, ConnectionResetError):",
        "    pass  # the master may have answered and hung up already",
        "data = b''",
        "while True:",
        "    try:",
        "        d = c.recv(65536)",
        "    except ConnectionResetError:",
        "        break",
        "    if not d:",
        "        break",
        "    data += d",
        "sys.stdout.write(data.decode())",
      ].join("\n");
      const asNobody = () => Bun.spawnSync(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", nobodyPython!, "-c", client, m.sockPath],
        { cwd: "/", timeout: 10_000 },
      );

      // The directory is the test's 0700 temp dir; open it so only the socket's own mode matters.
      chmodSync(m.dir, 0o711);
      // 0600: the kernel refuses the connect itself.
      const denied = asNobody();
      expect(denied.exitCode).toBe(3);
      expect(denied.stdout.toString()).toContain("Permission denied");

      // World-writable: the connect succeeds and the master checks SO_PEERCRED.
      chmodSync(m.sockPath, 0o666);
      const r = asNobody();
      expect(r.stderr.toString()).toBe("");
      expect(r.exitCode).toBe(0);
      const lines = r.stdout.toString().split("\n").filter(Boolean);
      expect(lines).toHaveLength(1);
      const answer = decodeLine(lines[0]!) as Answer;
      expect(answer.error).toBe(true);
      expect(String(answer.message)).toStartWith("Permission denied: uid 65534 may not use this command socket");
      expect(String(answer.message)).not.toContain("schema");
      await m.waitForOutput(/Refused a command connection from pid \d+ uid 65534/);

      expect((await stateJson(m.sockPath)).master.pid).toBe(m.pid);
      expect(m.exitCode()).toBeNull();
    },
  );
});

// --- Einhorn's own Ruby client --------------------------------------------------------

const ruby = Bun.which("ruby");
const RUBY_CLIENT = join(FIXTURES, "einhorn_client.rb");

describe("Ruby interop", () => {
  test.skipIf(!ruby)(
    `a Ruby client speaking Einhorn's wire format runs ehlo, state, inc and a worker ACK${ruby ? "" : " (SKIPPED: ruby is not installed; apt-get install ruby)"}`,
    async () => {
      const m = start(["-n", "1", "-m", "manual", "-s", "0.05", "--", ...SLEEPER]);
      const s0 = await workersUp(m, 1, false);
      const rb = (...args: string[]) => {
        const r = Bun.spawnSync([ruby!, RUBY_CLIENT, m.sockPath, ...args], { timeout: 15_000 });
        if (r.exitCode !== 0) throw new Error(`ruby client ${args.join(" ")} exited ${r.exitCode}: ${r.stderr.toString()}`);
        return JSON.parse(r.stdout.toString());
      };

      const ehlo = rb("ehlo");
      expect(ehlo.answers).toHaveLength(1);
      expect(Object.keys(ehlo.answers[0]).sort()).toEqual(["message", "request_id"]);
      expect(ehlo.answers[0].request_id).toBe(4242);
      expect(ehlo.answers[0].message).toStartWith(`Welcome, rubyist! You are speaking to Einhorn Master Process ${m.pid}.`);

      const state = rb("state");
      expect(state.state_keys).toEqual([":state", ":persistent_descriptors"]);
      expect(state.worker_pids).toEqual([s0.workers[0]!.pid]);

      // A Ruby worker ACKs in YAML, not JSON.
      expect(rb("--ack", String(s0.workers[0]!.pid))).toEqual({ answers: [] });
      await workersUp(m, 1, true);

      const inc = rb("inc");
      expect(inc.answers).toEqual([{ message: "Incrementing number of workers from 1 -> 2", request_id: 4242 }]);
      await workersUp(m, 2, false);

      const bad = rb("set_workers", "lots");
      expect(bad.answers[0].error).toBe(true);
    },
  );
});

// --- clients that misbehave ---------------------------------------------------------------

/** Small seeded PRNG (mulberry32), so a failing fuzz run can be replayed with EINHORN_FUZZ_SEED. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)]!;
  return { next, int, pick };
}
type Rng = ReturnType<typeof prng>;

// Fragments for random documents. No command that changes anything is among
// them (state, ehlo and help only), so the workers must stay exactly as they were.
const TOKENS = [
  "{", "}", "[", "]", ":", ", ", "- ", "? ", "\n", "  ", "#", "'", '"', "\\", "%", "%0A", "%25", "%%", "&a ", "*a ", "&b ", "*b",
  "!ruby/object:Foo ", "!!js/function ", "!!binary ", "!!set ", "!!omap ", "!!python/object/apply:os.system ", "!<tag:x> ", "! ",
  "--- ", "...", "%YAML 1.1", "%TAG ! tag:x:", "|", ">-", "command", "args", "id", "pid", "request_id", "user", "state", "ehlo",
  "help", "worker:ack", "worker:ping", "null", "~", "true", "1", "-1", "1e999", "0x10", '"\\u0000"', "é", "🦄", "\u2028", "\t", "\r",
  "<<", "__proto__", "constructor", '"command"', '"state"', "[]", "{}",
];

function fuzzPayload(r: Rng): { lines: Buffer[]; huge: boolean } {
  const line = (s: string | Buffer) => Buffer.concat([Buffer.isBuffer(s) ? s : Buffer.from(s), Buffer.from("\n")]);
  switch (r.int(0, 9)) {
    case 0: { // random bytes, newlines included
      const b = Buffer.alloc(r.int(0, 4096));
      for (let i = 0; i < b.length; i++) b[i] = r.int(0, 255);
      return { lines: [b], huge: false };
    }
    case 1:
    case 2: { // random YAML/JSON-ish fragments
      const parts: string[] = [];
      for (let i = r.int(1, 40); i > 0; i--) parts.push(r.pick(TOKENS));
      const text = parts.join("");
      return { lines: [line(r.next() < 0.5 ? escapeLine(text) : text)], huge: false };
    }
    case 3: { // a line past the limit: one byte past it, or far past
      const fill = r.pick([0x78, 0x5b, 0x7b, 0x20]);
      return { lines: [r.next() < 0.7 ? Buffer.alloc(MAX_LINE_BYTES + 1, fill) : line(Buffer.alloc(MAX_LINE_BYTES + r.int(2, 3 * 1024 * 1024), fill))], huge: true };
    }
    case 4: { // deep nesting, JSON or YAML, flow or block
      const n = r.pick([65, 200, 1000, 5000, 20_000, 200_000, MAX_LINE_BYTES - 10]);
      const doc = r.pick([
        () => `{"command":"state","id":${"[".repeat(n)}1${"]".repeat(n)}}`,
        () => "{a: ".repeat(Math.min(n, 3000)) + "1" + "}".repeat(Math.min(n, 3000)),
        () => "- ".repeat(Math.min(n, 8000)) + "x",
        () => escapeLine(Array.from({ length: Math.min(n, 150) }, (_, i) => `${" ".repeat(i)}k${i}:`).join("\n")),
        () => "[".repeat(n),
      ])();
      return { lines: [line(doc)], huge: false };
    }
    case 5: { // tags
      return {
        lines: [line(r.pick([
          escapeLine("--- !ruby/object:Gem::Installer\ni: x\n"),
          escapeLine("--- !ruby/hash:Sinatra::IndifferentHash\ncommand: state\n"),
          "{command: !!python/object/apply:os.system [touch /tmp/pwned]}",
          "!!js/function 'function(){ return 1 }'",
          escapeLine("%TAG !e! tag:evil,2000:\n--- !e!cmd {command: state}"),
          "{command: state, args: !!set {a, b}}",
          "!!binary aGVsbG8=",
        ]))],
        huge: false,
      };
    }
    case 6: { // alias bombs
      const width = r.int(5, 12);
      const depth = r.int(4, 10);
      const rows = [`l0: &l0 [${Array(width).fill('"lol"').join(", ")}]`];
      for (let i = 1; i < depth; i++) rows.push(`l${i}: &l${i} [${Array(width).fill(`*l${i - 1}`).join(", ")}]`);
      rows.push("command: state");
      return { lines: [line(escapeLine(rows.join("\n")))], huge: false };
    }
    case 7: { // harmless valid requests among garbage
      const good = r.pick(["state", "ehlo", "help"]);
      return { lines: [line("}{"), line(JSON.stringify({ command: good, args: [], id: r.int(0, 1e6) })), line(":::")], huge: false };
    }
    case 8: { // ACKs and pings for pids that are not workers
      const cmd = r.pick(["worker:ack", "worker:ping"]);
      return { lines: [line(JSON.stringify({ command: cmd, pid: r.pick([0, 1, -1, 4_000_000, "x", null]), request_id: r.int(0, 9) }))], huge: false };
    }
    default: { // a request never finished
      return { lines: [Buffer.from(`{"command":"state","args":[${'"x",'.repeat(r.int(0, 1000))}`)], huge: false };
    }
  }
}

/**
 * How long the master may take to refuse a too-long line, counted in its own
 * CPU time rather than the wall clock. The master reads and answers its
 * connections in turn, so a refusal waits behind the lines the other lanes
 * queued before it; a deep YAML line alone costs it up to ~130 ms. A whole
 * 3-second storm costs it about 2-2.5 s of CPU, and at most 0.86 s of it was
 * spent while one too-long line waited (measured). In wall time the same
 * wait took up to 15 s beside 16 busy processes: the master was runnable in
 * 80% of samples and got 14% of a core, so a wall-clock bound (5 s, once)
 * measured the scheduler, not the master.
 */
const REFUSAL_CPU_BUDGET_MS = 4_000;
/**
 * Only for a master that stops spending CPU without closing (one that reads
 * on past the limit and then waits for a newline): the wall-clock end of the
 * wait. Far above the 15 s seen on a heavily loaded machine.
 */
const REFUSAL_WALL_BACKSTOP_MS = 45_000;

/** Whether the master closes `c` before spending REFUSAL_CPU_BUDGET_MS of CPU from now (or the backstop passes). */
async function closedWithinMasterCpu(c: Client, masterPid: number): Promise<boolean> {
  const cpu0 = cpuMs(masterPid);
  const until = Date.now() + REFUSAL_WALL_BACKSTOP_MS;
  while (!(await c.closedWithin(100))) {
    if (cpuMs(masterPid) - cpu0 > REFUSAL_CPU_BUDGET_MS || Date.now() > until) return false;
  }
  return true;
}

async function fuzzConnection(path: string, masterPid: number, r: Rng, problems: string[]): Promise<void> {
  let c: Client;
  try {
    c = await Client.open(path);
  } catch (e) {
    problems.push(`connect failed: ${(e as Error).message}`);
    return;
  }
  try {
    let payloads = Array.from({ length: r.int(1, 4) }, () => fuzzPayload(r));
    // A line past the limit goes alone on its connection: the master reads one
    // byte past the limit, answers and hangs up, so what the client still had
    // to write fails with EPIPE, and a client may then lose the answer.
    const hugeOne = payloads.find((p) => p.huge);
    if (hugeOne) payloads = [hugeOne];
    let huge = false;
    for (const p of payloads) {
      for (const l of p.lines) {
        if (c.closed) break;
        // Sometimes in pieces, with pauses in between.
        if (r.next() < 0.3 && l.length > 2) {
          const cut = r.int(1, l.length - 1);
          c.send(l.subarray(0, cut));
          await sleep(r.int(0, 20));
          c.send(l.subarray(cut));
        } else {
          c.send(l);
        }
      }
      if (p.huge) { huge = true; break; } // the master hangs up after a line that is too long
    }
    const ending = r.next();
    if (huge) {
      if (!(await closedWithinMasterCpu(c, masterPid))) problems.push(`a too-long line did not get its connection closed (the master spent ${REFUSAL_CPU_BUDGET_MS / 1000} s of CPU, or ${REFUSAL_WALL_BACKSTOP_MS / 1000} s passed, meanwhile)`);
      // Exactly one byte past the limit: everything was written before the master read it, so the answer must arrive.
      const exact = hugeOne!.lines[0]!.length === MAX_LINE_BYTES + 1;
      const last = c.answers[c.answers.length - 1];
      // (With many huge lines arriving at once, the limit on unfinished lines of all clients together may answer first.)
      const refusal = (m: string) => m.startsWith(`Line too long: the limit is ${MAX_LINE_BYTES} bytes`) || m.startsWith("The master holds too many unfinished lines");
      if ((exact || last) && (!last || last.error !== true || !refusal(String(last.message)))) {
        problems.push(`a too-long line was answered ${JSON.stringify(last)} (error ${c.error}, flushed ${c.flushed}, raw ${c.raw.length})`);
      }
    } else if (ending < 0.3) {
      c.destroy(); // gone mid-stream, perhaps before the answers
      return;
    } else if (ending < 0.6) {
      c.end(); // half-close: the master finishes and hangs up
      await c.closedWithin(3000);
    } else {
      await sleep(r.int(0, 100));
    }
    for (const a of c.answers) {
      if (typeof a.message !== "string") problems.push(`an answer without a message: ${JSON.stringify(a)}`);
      else if (a.error !== true && !/^(Welcome|You are speaking to the Einhorn command socket|schema: einhorn\.state\/1|---\n:state:\n)/.test(a.message)) problems.push(`an unexpected success: ${a.message.slice(0, 200)}`);
    }
  } catch (e) {
    problems.push(`client failed: ${(e as Error).message}`);
  } finally {
    c.destroy();
  }
}

/** Opens N connections at once, then reads each until the master hangs up (or 5 s pass); prints JSON. */
const BURST_CLIENT = `
import json, socket, sys
conns = []
for _ in range(int(sys.argv[2])):
    c = socket.socket(socket.AF_UNIX)
    c.connect(sys.argv[1])
    c.settimeout(5)
    conns.append(c)
out = []
for c in conns:
    raw, eof = b"", False
    while True:
        try:
            d = c.recv(65536)
        except ConnectionResetError:
            eof = True
            break
        except socket.timeout:
            break
        if not d:
            eof = True
            break
        raw += d
    c.close()
    out.append({"raw": raw.decode(), "eof": eof})
print(json.dumps(out))
`;

/** No storm of clients may take the master's RSS past this, even for a moment. */
const RSS_PEAK_CAP_KB = 512 * 1024;

describe("hostile clients", () => {
  test("fuzz: random bytes, fragments, huge lines, deep nesting, tags and alias bombs over many connections", async () => {
    const seed = Number(process.env.EINHORN_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
    const m = start(["-n", "2", "-m", "0", "--", ...SLEEPER]);
    const before = await workersUp(m, 2);
    await final(m.sockPath, "state"); // warm up
    const fdBaseline = fdCount(m.pid);
    const rssStart = rssKb(m.pid);
    const problems: string[] = [];
    let connections = 0;
    let rssPeak = rssStart;
    const sampler = setInterval(() => { try { rssPeak = Math.max(rssPeak, rssKb(m.pid)); } catch { /* exited */ } }, 50);
    try {
      const deadline = Date.now() + 3000;
      // Meanwhile a well-behaved client keeps asking: the master must stay responsive.
      let slowest = 0;
      const probe = (async () => {
        while (Date.now() < deadline && m.exitCode() === null) {
          const t = Date.now();
          await final(m.sockPath, "ehlo");
          slowest = Math.max(slowest, Date.now() - t);
          await sleep(50);
        }
      })();
      await Promise.all(Array.from({ length: 12 }, async (_, lane) => {
        const r = prng(seed + lane);
        while (Date.now() < deadline && m.exitCode() === null) {
          connections++;
          await fuzzConnection(m.sockPath, m.pid, r, problems);
        }
      }));
      await probe;
      clearInterval(sampler);
      console.log(`fuzz: slowest answer to a well-behaved client during the storm: ${slowest} ms`);
      // Responsive, not fast: a master stuck on a hostile client would not answer
      // at all; on a loaded 2-core machine an answer can take a couple of seconds.
      expect(slowest).toBeLessThan(10_000);
      expect(m.exitCode()).toBeNull();
      expect(problems).toEqual([]);
      expect(connections).toBeGreaterThan(50);

      const after = await workersUp(m, 2);
      expect(after.workers.map((w) => w.pid)).toEqual(before.workers.map((w) => w.pid));
      expect(after.settings).toEqual(before.settings);
      expect(after.exits).toEqual({});
      // Memory: the storm's garbage may lift RSS for a while (the GC returns
      // it to the system lazily), but never far, and it must come back down.
      // Unbounded parsing once took a master to 2.5 GB.
      expect(rssPeak).toBeLessThan(RSS_PEAK_CAP_KB);
      const settled = await waitFor(`master RSS back under 2 x ${rssStart} kB + 50 MB (now ${rssKb(m.pid)} kB)`, () => {
        const now = rssKb(m.pid);
        return now < 2 * rssStart + 50 * 1024 ? now : null;
      }, 15_000, 200);
      console.log(`fuzz: seed ${seed}, ${connections} connections; master RSS ${rssStart} kB at start, ${rssPeak} kB at peak, ${settled} kB after`);
      await fdsBackTo(m, fdBaseline);
    } catch (e) {
      clearInterval(sampler);
      throw new Error(`fuzz failed with EINHORN_FUZZ_SEED=${seed} after ${connections} connections: ${(e as Error).message}`);
    }
  });

  test("a client that sends half a line and goes silent does not hold up others; its line can still be finished", async () => {
    const m = start(["-m", "0", "--", ...SLEEPER]);
    await workersUp(m, 1);
    const silent = await Client.open(m.sockPath);
    silent.send('{"command":"st');
    await quietFor(100); // the partial line reaches the master first
    const t = Date.now();
    expect((await final(m.sockPath, "ehlo")).message).toStartWith("Welcome");
    expect(Date.now() - t).toBeLessThan(1000);
    silent.send('ate","args":["json"],"id":"late"}\n');
    const a = await silent.answer();
    expect(a.request_id).toBe("late");
    expect(JSON.parse(String(a.message)).schema).toBe("einhorn.state/1");
  });

  test("a client that never reads its answers is stopped (back-pressure) or disconnected, its queue bounded; others are served", async () => {
    const m = start(["-m", "0", "--", ...SLEEPER]);
    await workersUp(m, 1);
    await final(m.sockPath, "state");
    const fdBaseline = fdCount(m.pid);
    const rssStart = rssKb(m.pid);
    // node:net, whose sockets can stop reading: the kernel buffers fill, then the master's queue.
    const hog = net.createConnection({ path: m.sockPath });
    ours.clients.push(hog);
    let hogClosed = false;
    hog.on("close", () => { hogClosed = true; });
    hog.on("error", () => { hogClosed = true; });
    await new Promise((r) => hog.once("connect", r));
    hog.pause();
    const batch = `${JSON.stringify({ command: "state", args: [] })}\n`.repeat(200);
    const deadline = Date.now() + 15_000;
    let stalled = 0;
    while (!hogClosed && Date.now() < deadline && stalled < 200) {
      // Keep a little in flight, no more. Once the master stops reading
      // (more than OUTPUT_PAUSE_BYTES queued), what we write stays with us.
      if (hog.writableLength < 64 * 1024) { hog.write(batch); stalled = 0; } else stalled++;
      await sleep(2);
    }
    // Either the master stopped reading (our writes pile up here), or it
    // disconnected a client that kept writing regardless.
    expect(hogClosed || hog.writableLength >= 64 * 1024).toBe(true);
    const cut = /is not reading its answers \((\d+) bytes queued\)|sends requests without reading the answers \((\d+) bytes queued\)/.exec(m.output());
    if (cut) expect(Number(cut[1] ?? cut[2])).toBeLessThan(MAX_PENDING_OUTPUT + 1024 * 1024);
    hog.destroy();
    expect((await final(m.sockPath, "ehlo")).message).toStartWith("Welcome");
    expect(rssKb(m.pid)).toBeLessThan(2 * rssStart + 50 * 1024);
    await fdsBackTo(m, fdBaseline);
  });

  test("clients that vanish mid-request or before their answers leave nothing behind", async () => {
    const m = start(["-n", "2", "-m", "0", "--", ...SLEEPER]);
    const before = await workersUp(m, 2);
    await final(m.sockPath, "state");
    const fdBaseline = fdCount(m.pid);
    for (let i = 0; i < 40; i++) {
      const c = await Client.open(m.sockPath);
      const req = `${JSON.stringify({ command: "state", args: [], id: i })}\n`;
      if (i % 4 === 0) c.send(req.slice(0, 10)); // half a request
      else if (i % 4 === 1) c.send(req.repeat(50)); // many, never read
      else if (i % 4 === 2) c.send(req + req.slice(0, 5)); // one and a half
      else c.send(Buffer.alloc(MAX_LINE_BYTES / 2, 0x78)); // half a megabyte, no newline
      if (i % 2) await sleep(1);
      c.destroy();
    }
    const after = await workersUp(m, 2);
    expect(after.workers.map((w) => w.pid)).toEqual(before.workers.map((w) => w.pid));
    await fdsBackTo(m, fdBaseline);
  });

  test("300 concurrent connections each asking for state are all answered", async () => {
    const m = start(["-n", "2", "-m", "0", "--", ...SLEEPER]);
    const s = await workersUp(m, 2);
    const clients = await Promise.all(Array.from({ length: 300 }, () => Client.open(m.sockPath)));
    clients.forEach((c, i) => c.request("state", ["json"], i));
    const answers = await Promise.all(clients.map((c) => c.answer(1, 15_000)));
    answers.forEach((a, i) => {
      expect(a.request_id).toBe(i);
      expect(a.error).toBeUndefined();
      expect((JSON.parse(String(a.message)) as StateReport).workers.map((w) => w.pid)).toEqual(s.workers.map((w) => w.pid));
    });
    for (const c of clients) c.destroy();
  });

  test(`a burst beyond MAX_CONNECTIONS (${MAX_CONNECTIONS}): the extra ones are told so, then service resumes`, async () => {
    const m = start(["-m", "0", "--", ...SLEEPER]);
    await workersUp(m, 1);
    await final(m.sockPath, "state");
    const fdBaseline = fdCount(m.pid);

    // Fill every slot, and make sure the master has accepted each one.
    const held = await Promise.all(Array.from({ length: MAX_CONNECTIONS }, () => Client.open(m.sockPath)));
    held.forEach((c, i) => c.request("ehlo", [], i));
    await Promise.all(held.map((c) => c.answer(1, 15_000)));

    // Twenty more at once, from plain blocking sockets: the master answers and
    // hangs up at once, which Bun's own clients may report as a failed connect.
    const extra = Bun.spawn(["python3", "-c", BURST_CLIENT, m.sockPath, "20"], { stdout: "pipe", stderr: "pipe", timeout: 15_000 });
    const [out, err, code] = await Promise.all([new Response(extra.stdout).text(), new Response(extra.stderr).text(), extra.exited]);
    expect(err).toBe("");
    expect(code).toBe(0);
    const replies: Array<{ raw: string; eof: boolean }> = JSON.parse(out);
    expect(replies).toHaveLength(20);
    for (const r of replies) {
      expect(r.eof).toBe(true);
      expect(r.raw.split("\n").filter(Boolean).map((l) => decodeLine(l))).toEqual([{ message: `Too many connections (${MAX_CONNECTIONS}); try again later`, error: true }]);
    }
    await m.waitForOutput(new RegExp(`Refused a command connection from pid \\d+ uid \\d+: ${MAX_CONNECTIONS} connections already open`));
    // The held ones are still served.
    held[7]!.request("ehlo", [], "still");
    expect((await held[7]!.answer(2)).request_id).toBe("still");

    for (const c of held) c.destroy();
    await fdsBackTo(m, fdBaseline);
    const again = await Promise.all(Array.from({ length: 10 }, () => final(m.sockPath, "state", ["json"])));
    for (const a of again) expect(JSON.parse(String(a.message)).master.pid).toBe(m.pid);
  });
});

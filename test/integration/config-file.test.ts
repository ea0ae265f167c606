// --config FILE: a master started from a YAML file, found by `einhorn sh
// --config`, and the file changed between upgrades (good, broken, invalid).
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FIXTURES, runBinary, startMaster, stateJson, stopMaster, tempDir, waitFor, within } from "../harness";

const WORKER = join(FIXTURES, "worker.py");

const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter(Boolean);

function config(label: string, number: number, extra = ""): string {
  return `# einhorn config for the test
number: ${number}
ack-mode: manual
seconds: 0.2
bind: [127.0.0.1:0]
program: python3
args: [${WORKER}, --ack, manual, --label, ${label}]
${extra}`;
}

describe("--config", () => {
  test("start from the file; the shell finds the socket from it; upgrades roll out file changes and refuse bad files", async () => {
    const dir = tempDir();
    const file = join(dir, "einhorn.yaml");
    writeFileSync(file, config("v1", 2, "command-name: from-file\n"));
    const m = startMaster(["--config", "einhorn.yaml", "-c", "cli"], { dir });
    const sock = join(dir, "einhorn-cli.sock"); // the command line's -c overrides the file's
    await waitFor("2 workers up", async () => (await stateJson(sock)).workers.filter((w) => w.acked).length === 2, 20_000);
    const s0 = await stateJson(sock);
    expect(s0.settings.number).toBe(2);
    expect(s0.settings.ack_mode).toBe("manual");
    for (const w of s0.workers) expect(cmdline(w.pid).slice(-2)).toEqual(["--label", "v1"]);

    const sh = (cmds: string, ...extra: string[]) => runBinary(["sh", "--config", file, ...extra, "-e", cmds], { dir, timeoutMs: 60_000 });
    // Without -c the shell takes the file's command name; with -c, as the master did, the command line's.
    const wrong = await sh("status");
    expect(wrong.code).toBe(3);
    expect(wrong.stderr).toContain(join(dir, "einhorn-from-file.sock"));
    const st = await sh("status", "-c", "cli");
    expect(st.code).toBe(0);
    expect(st.stdout).toContain("workers 2/2 up");

    // A good change: more workers, new arguments; both roll out with the upgrade.
    writeFileSync(file, config("v2", 3, "command-name: from-file\n"));
    const up = await sh("upgrade", "-c", "cli");
    expect(up.stderr).toBe("");
    expect(up.code).toBe(0);
    expect(up.stdout).toContain(`Config ${file} re-read; changes: number 2 -> 3, program`);
    expect(up.stdout).toContain("Upgrade done");
    const s1 = await waitFor("3 new workers", async () => {
      const s = await stateJson(sock);
      const cur = s.workers.filter((w) => w.version === s.master.version && w.acked && !w.retiring);
      return cur.length === 3 && s.workers.length === 3 ? s : null;
    }, 20_000);
    expect(s1.settings.number).toBe(3);
    for (const w of s1.workers) expect(cmdline(w.pid).slice(-2)).toEqual(["--label", "v2"]);
    const pids = s1.workers.map((w) => w.pid).sort();

    // Broken files fail the upgrade with the reason; nothing changes.
    const bad: Array<[string, RegExp]> = [
      ["number: [3\n", /Upgrade failed: config .*einhorn\.yaml: line \d+: not valid YAML: .*\. Nothing was changed; the current workers keep serving\./],
      [config("v3", 0, "command-name: from-file\n"), /Upgrade failed: config .*einhorn\.yaml: -n\/--number wants a whole number from 1 to 1000, got '0'\. Nothing was changed/],
      [config("v3", 3, "command-name: from-file\nworkerz: 1\n"), /Upgrade failed: config .*: line 9: unknown key 'workerz'/],
      [config("v3", 3, "command-name: from-file\n").replace("127.0.0.1:0", "127.0.0.1:1"), /Upgrade failed: config .*: bind changed from \["127\.0\.0\.1:0"\] to \["127\.0\.0\.1:1"\], which only a restart of einhorn can apply/],
    ];
    for (const [text, re] of bad) {
      writeFileSync(file, text);
      // -d: a shell given --config would itself refuse a file it cannot read (below).
      const r = await runBinary(["sh", "-d", sock, "-e", "upgrade"], { dir, timeoutMs: 60_000 });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(re);
    }
    writeFileSync(file, "number: [3\n");
    const shBroken = await sh("upgrade", "-c", "cli");
    expect(shBroken.code).toBe(2);
    expect(shBroken.stderr).toMatch(/einhorn sh: config .*einhorn\.yaml: line \d+: not valid YAML/);
    const s2 = await stateJson(sock);
    expect(s2.master.version).toBe(s1.master.version);
    expect(s2.master.reexecs).toBe(s1.master.reexecs);
    expect(s2.workers.map((w) => w.pid).sort()).toEqual(pids);
    expect(m.output()).toMatch(/ERROR: Upgrade failed: config .*not valid YAML/);
    expect(await stopMaster(m, "SIGTERM")).toBe(0);
  }, within(120_000));

  test("pidfile: in the file writes one; without it (and without -e) no pidfile is written, as Einhorn 1.1.1", async () => {
    const dir = tempDir();
    const file = join(dir, "einhorn.yaml");
    writeFileSync(file, "ack-mode: 0\nprogram: [sleep, '1000']\n");
    const plain = startMaster(["--config", file], { dir });
    await waitFor("the worker up", async () => (await stateJson(plain.sockPath)).workers.length === 1, 20_000);
    expect(readdirSync(dir).sort()).toEqual(["einhorn.sock", "einhorn.yaml"]);
    expect(await stopMaster(plain)).toBe(0);

    writeFileSync(file, `pidfile: ${join(dir, "master.pid")}\nack-mode: 0\nprogram: [sleep, '1000']\n`);
    const m = startMaster(["--config", file], { dir });
    await waitFor("the worker up", async () => (await stateJson(m.sockPath)).workers.length === 1, 20_000);
    expect(readFileSync(join(dir, "master.pid"), "utf8")).toBe(`${m.pid}\n`);
    expect(await stopMaster(m)).toBe(0);
    expect(readdirSync(dir).sort()).toEqual(["einhorn.yaml"]);
  }, within(60_000));

  test("a bad file at start is a usage error naming the file and line", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "c.yaml"), "number: 2\nack-mode: sometimes\nprogram: /bin/true\n");
    const r = await runBinary(["--config", "c.yaml"], { dir });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`einhorn: config ${join(dir, "c.yaml")}: -m/--ack-mode wants 'manual' or a number of seconds`);
    const missing = await runBinary(["--config", "nope.yaml"], { dir });
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("cannot read it (ENOENT)");
  });
});

// Generations that remember what they run, upgrades as transactions, and
// rollback after a bad bake (issue 22), with a --config file changed between
// upgrades as an operator would, real workers and real clients.
import { describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, readFileSync, realpathSync, renameSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseWrk } from "../../bench/load";
import { BUN, fetchLine, FIXTURES, httpGet, listenerPort, quietFor, runBinary, sleep, startMaster, stateJson, type StateReport, stopMaster, tempDir, waitFor, within } from "../harness";
import { needsOnPath } from "../upgrade-under-load";

const WORKER = join(FIXTURES, "worker.py");
const cmdline = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "latin1").split("\0").filter(Boolean);
const upWorkers = (s: StateReport, version: number) => s.workers.filter((w) => w.version === version && w.acked && !w.retiring);

function pythonConfig(args: string[], extra = ""): string {
  return `number: 2
ack-mode: manual
seconds: 0.2
upgrade-max-deaths: 2
bind: [127.0.0.1:0]
program: python3
args: ${JSON.stringify([WORKER, ...args])}
${extra}`;
}

describe("generations remember what they run", () => {
  test("after a failed upgrade, a killed old worker is replaced by the old program, and the pool is whole again", async () => {
    const dir = tempDir();
    const file = join(dir, "einhorn.yaml");
    writeFileSync(file, pythonConfig(["--ack", "manual", "--label", "v1"]));
    const m = startMaster(["--config", file], { dir });
    const s0 = await waitFor("2 workers up", async () => { const s = await stateJson(m.sockPath); return upWorkers(s, 0).length === 2 ? s : null; }, 20_000);
    expect(s0.generations.map((g) => [g.version, g.live])).toEqual([[0, true]]);
    expect(s0.generations[0]!.spec.program).toEqual(["python3", WORKER, "--ack", "manual", "--label", "v1"]);
    expect("env" in s0.generations[0]!.spec).toBe(false); // values may be secrets: only their number
    expect(s0.generations[0]!.spec.env_count).toBeGreaterThan(0);

    // A release that exits at once: the upgrade fails safe and says which spec stays.
    writeFileSync(file, pythonConfig(["--exit", "1"]));
    const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { dir, timeoutMs: 60_000 });
    expect(up.code).toBe(1);
    expect(up.stdout).toContain("Version 0 replaces any worker it loses from its own spec");
    expect(up.stderr).toMatch(/Upgrade failed: 2 new workers in a row exited before they ACKed\. Version 1 is being stopped; version 0 keeps serving\./);

    // Kill one old worker: its replacement runs version 0's program, not the failed one.
    const [victim, survivor] = s0.workers.map((w) => w.pid) as [number, number];
    process.kill(victim, "SIGKILL");
    const s1 = await waitFor("2 workers of version 0 up again", async () => {
      const s = await stateJson(m.sockPath);
      return upWorkers(s, 0).length === 2 && !s.workers.some((w) => w.pid === victim) ? s : null;
    }, 20_000);
    const replacement = s1.workers.find((w) => w.pid !== survivor)!;
    expect(replacement.version).toBe(0);
    expect(cmdline(replacement.pid).slice(-2)).toEqual(["--label", "v1"]);
    expect(s1.workers).toHaveLength(2);
    expect(s1.generations.map((g) => g.version)).toEqual([0]);
    const status = await runBinary(["sh", "-d", m.sockPath, "-e", "status"], { dir });
    expect(status.stdout).toContain("workers 2/2 up, version 0");
    expect(status.stdout).toMatch(/^generation 0 \(live\): spec [0-9a-f]{12}, 2 workers, USR2 to retire: python3 /m);
    expect(await stopMaster(m)).toBe(0);
  }, within(90_000));

  test("--retire-signal changed in the file: the upgrade reports it and the new generation's workers are retired with it", async () => {
    const dir = tempDir();
    const sigs = join(dir, "signals");
    mkdirSync(sigs);
    const file = join(dir, "einhorn.yaml");
    const args = ["--ack", "manual", "--signals", sigs];
    writeFileSync(file, pythonConfig(args, "retire-signal: USR2\n"));
    const m = startMaster(["--config", file], { dir });
    const s0 = await waitFor("2 workers up", async () => { const s = await stateJson(m.sockPath); return upWorkers(s, 0).length === 2 ? s : null; }, 20_000);
    const old = s0.workers.map((w) => w.pid);
    await waitFor("handlers of the old workers", () => old.every((p: number) => existsSync(join(sigs, `${p}.ready`))));

    writeFileSync(file, pythonConfig(args, "retire-signal: TERM\n"));
    const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { dir, timeoutMs: 60_000 });
    expect(up.code).toBe(0);
    expect(up.stdout).toContain(`retire-signal "SIGUSR2" -> "SIGTERM"`);
    const s1 = await waitFor("2 new workers alone", async () => {
      const s = await stateJson(m.sockPath);
      return upWorkers(s, 1).length === 2 && s.workers.length === 2 ? s : null;
    }, 20_000);
    // The old workers were asked to leave with the signal they were started expecting.
    for (const p of old) expect(readFileSync(join(sigs, `${p}.signals`), "utf8").trim()).toBe("USR2");
    expect(s1.generations.map((g) => [g.version, g.spec.retireSignal])).toEqual([[1, "SIGTERM"]]);

    // `dec` retires a new worker with the new signal.
    const fresh = s1.workers.map((w) => w.pid);
    await waitFor("handlers of the new workers", () => fresh.every((p: number) => existsSync(join(sigs, `${p}.ready`))));
    const dec = await runBinary(["sh", "-d", m.sockPath, "-e", "dec"], { dir });
    expect(dec.code).toBe(0);
    const gone = await waitFor("one new worker retired", async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.length === 1 ? fresh.find((p: number) => !s.workers.some((w) => w.pid === p)) : null;
    }, 20_000);
    expect(readFileSync(join(sigs, `${gone}.signals`), "utf8").trim()).toBe("TERM");
    // And a graceful stop sends the live generation's TERM to the last one.
    const last = fresh.find((p: number) => p !== gone);
    expect(await stopMaster(m)).toBe(0);
    expect(readFileSync(join(sigs, `${last}.signals`), "utf8").trim()).toBe("TERM");
  }, within(90_000));
});

/** A preload module answering `TAG` on every connection (the module's own name for TAG). */
const preloadModule = (tag: string) => `
export function einhorn_main() {
  const fd = Number(process.env.EINHORN_FD_0);
  (Bun.listen as any)({ fd, socket: { open(s: any) { s.write("${tag}\\n"); s.end(); }, data() {} } });
}
`;

describe("-p in the config file is part of the spec", () => {
  test("an upgrade rolls out a new module; a broken one fails in the preflight and respawns keep the old module", async () => {
    const dir = tempDir();
    writeFileSync(join(dir, "a.ts"), preloadModule("module-a"));
    writeFileSync(join(dir, "b.ts"), preloadModule("module-b"));
    writeFileSync(join(dir, "broken.ts"), "export function einhorn_main( {\n");
    const file = join(dir, "einhorn.yaml");
    const conf = (module: string) => `number: 2\nack-mode: 0.1\nseconds: 0.2\nbind: [127.0.0.1:0]\npreload: ${module}\nprogram: [x]\n`;
    writeFileSync(file, conf("a.ts"));
    const m = startMaster(["--config", file], { dir });
    const s0 = await waitFor("2 workers up", async () => { const s = await stateJson(m.sockPath); return upWorkers(s, 0).length === 2 ? s : null; }, 20_000);
    const port = listenerPort(s0);
    await waitFor("module a answers", async () => (await fetchLine(port)) === "module-a\n", 20_000);

    writeFileSync(file, conf("b.ts"));
    const up = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { dir, timeoutMs: 60_000 });
    expect(up.code).toBe(0);
    expect(up.stdout).toContain("changes: preload");
    await waitFor("only module b answers", async () => {
      const s = await stateJson(m.sockPath);
      return s.workers.length === 2 && upWorkers(s, 1).length === 2 && (await fetchLine(port)) === "module-b\n";
    }, 20_000);

    writeFileSync(file, conf("broken.ts"));
    const bad = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { dir, timeoutMs: 60_000 });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/Upgrade failed: preflight .*broken\.ts: Expected/);
    // A worker lost now comes back running module b, not the broken one.
    const s1 = await stateJson(m.sockPath);
    process.kill(s1.workers[0]!.pid, "SIGKILL");
    const s2 = await waitFor("2 workers of version 1 up again", async () => {
      const s = await stateJson(m.sockPath);
      return upWorkers(s, 1).length === 2 && !s.workers.some((w) => w.pid === s1.workers[0]!.pid) ? s : null;
    }, 20_000);
    expect(s2.generations.map((g) => [g.version, g.spec.preload])).toEqual([[1, join(dir, "b.ts")]]);
    for (let i = 0; i < 4; i++) expect(await fetchLine(port)).toBe("module-b\n");
    expect(await stopMaster(m)).toBe(0);
  }, 90_000);
});

/**
 * releases/N/server: a #! script that runs the release-worker fixture, which
 * answers with the release directory it really runs from.
 */
function makeRelease(root: string, n: number, extra = ""): string {
  const dir = join(root, "releases", String(n));
  mkdirSync(dir, { recursive: true });
  const server = join(dir, "server");
  writeFileSync(server, `#!/bin/sh\nexec "${BUN}" "${join(FIXTURES, "release-worker.ts")}" "$0" ${extra} "$@"\n`);
  chmodSync(server, 0o755);
  return dir;
}

/** Point root/current at releases/N the way deploy tools do: a new link renamed over the old one. */
function deploy(root: string, n: number): void {
  const tmp = join(root, `current.${n}.tmp`);
  symlinkSync(join("releases", String(n)), tmp);
  renameSync(tmp, join(root, "current"));
}

describe("rollback after a bad bake (--upgrade-bake)", () => {
  test(`a release that dies after coming up is rolled back to the previous real path under load; the waiting shell fails${needsOnPath("wrk")}`, async () => {
    if (needsOnPath("wrk")) return;
    const root = tempDir();
    makeRelease(root, 1);
    makeRelease(root, 2, "--exit-after 3");
    makeRelease(root, 3);
    deploy(root, 1);
    const file = join(root, "einhorn.yaml");
    writeFileSync(file, `number: 2
ack-mode: manual
seconds: 0.2
upgrade-bake: 60
upgrade-max-deaths: 2
bind: [127.0.0.1:0]
metrics: 127.0.0.1:0
program: ${join(root, "current", "server")}
`);
    const m = startMaster(["--config", file], { dir: root });
    const s0 = await waitFor("2 workers up", async () => { const s = await stateJson(m.sockPath); return upWorkers(s, 0).length === 2 ? s : null; }, 30_000);
    const port = listenerPort(s0);
    const metricsPort = Number((await m.waitForOutput(/Serving metrics on http:\/\/127\.0\.0\.1:(\d+)\//))[1]);
    expect(s0.generations[0]!.spec.programPath).toBe(realpathSync(join(root, "releases", "1", "server")));
    expect((await httpGet(port)).body).toStartWith("release=1 ");

    // Load for the whole story, and a sampler that records who answered.
    const wrk = Bun.spawn(["wrk", "-t2", "-c8", "-d600s", "--timeout", "10s", `http://127.0.0.1:${port}/`], { stdout: "pipe", stderr: "pipe" });
    const wrkOut = new Response(wrk.stdout).text();
    const seen = new Set<string>();
    let sampling = true;
    let sampleErrors = 0;
    const sampler = (async () => {
      while (sampling) {
        try { seen.add((await httpGet(port)).body.split(" ")[0]!); } catch { sampleErrors++; }
        await sleep(20);
      }
    })();
    try {
      await quietFor(500);
      deploy(root, 2);
      const shell = runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { dir: root, timeoutMs: 120_000 });
      // During the bake, `current` moves on again: neither the bad generation's
      // respawns nor the rollback may pick that up.
      const baking = await waitFor("the bake", async () => { const s = await stateJson(m.sockPath); return s.master.bake ? s : null; }, 60_000);
      expect(baking.master.bake).toMatchObject({ version: 1, previous_version: 0 });
      const health = await (await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).text();
      expect(health).toContain("baking");
      deploy(root, 3);
      const r = await shell;
      expect(r.code).toBe(1);
      const lastLine = r.stderr.trim().split("\n").at(-1)!;
      expect(lastLine).toContain("rolled back");
      const s1 = await waitFor("2 rolled-back workers alone", async () => {
        const s = await stateJson(m.sockPath);
        return upWorkers(s, s.master.version).length === 2 && s.workers.length === 2 && !s.master.upgrade ? s : null;
      }, 60_000);
      expect(s1.master.version).toBe(2);
      const g = s1.generations.find((x) => x.version === 2)!;
      expect(g.rollback_of).toBe(0);
      expect(g.spec.programPath).toBe(realpathSync(join(root, "releases", "1", "server")));
      for (let i = 0; i < 5; i++) expect((await httpGet(port)).body).toStartWith("release=1 ");
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(metrics).toMatch(/^einhorn_rollbacks_total 1$/m);
      expect(metrics).toMatch(/^einhorn_upgrades_total\{result="rolled_back"\} 1$/m);
    } finally {
      sampling = false;
      await sampler;
      wrk.kill("SIGINT");
      await wrk.exited;
    }
    const report = parseWrk(await wrkOut);
    expect(report.successes).toBeGreaterThan(0);
    expect({ errors: report.errors, total: report.error_total, sampler: sampleErrors }).toEqual({ errors: {}, total: 0, sampler: 0 });
    // Release 3 was never run: `current` moved, but every spawn used a recorded real path.
    expect([...seen].sort()).toEqual(["release=1", "release=2"]);
    expect(await stopMaster(m)).toBe(0);
  }, within(180_000));

  test("a quiet bake ends the upgrade after its window: the shell waits through it and exits 0", async () => {
    const dir = tempDir();
    const file = join(dir, "einhorn.yaml");
    writeFileSync(file, pythonConfig(["--ack", "manual", "--label", "v1"], "upgrade-bake: 2\n"));
    const m = startMaster(["--config", file], { dir });
    await waitFor("2 workers up", async () => upWorkers(await stateJson(m.sockPath), 0).length === 2, 20_000);
    writeFileSync(file, pythonConfig(["--ack", "manual", "--label", "v2"], "upgrade-bake: 2\n"));
    const r = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade"], { dir, timeoutMs: 60_000 });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("baking for 2s");
    expect(r.stdout.trim().split("\n").at(-1)).toContain("Upgrade done: version 1 baked for 2s with 0 unasked exits");
    const s = await stateJson(m.sockPath);
    expect(s.master.bake).toBeNull();
    expect(s.generations.map((g) => g.version)).toEqual([1]);
    const line = await fetchLine(listenerPort(s));
    expect(line).toMatch(/^\d+ \d+\n$/);
    expect(await stopMaster(m)).toBe(0);
  }, within(60_000));
});

// What a local client (of the master's own uid or root) can and cannot do to
// a running master (issue 11, items 4, 6, 8 and 9; docs/security.md).
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { command, FIXTURES, runBinary, startMaster, stateJson, stopMaster, waitFor } from "../harness";

const PY = ["python3", join(FIXTURES, "worker.py")];

async function workersUp(sockPath: string, n: number) {
  return waitFor(`${n} acked worker(s)`, async () => {
    const s = await stateJson(sockPath);
    return s.workers.length === n && s.workers.every((w: any) => w.acked) ? s : null;
  }, 20_000);
}

describe("die with a signal workers ignore by default", () => {
  test("die WINCH, CHLD, URG and CONT are refused; the master keeps running and still upgrades", async () => {
    const m = startMaster(["-m", "0", "--", ...PY]);
    await workersUp(m.sockPath, 1);
    for (const sig of ["WINCH", "CHLD", "URG", "CONT", "SIGCONT", "28"]) {
      const r = await runBinary(["sh", "-d", m.sockPath, "-e", `die ${sig}`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/die (WINCH|CHLD|URG|CONT) refused: workers ignore \w+ unless they handle it, so the master would wait for them for ever; die takes a signal that ends a worker/);
    }
    const s = await stateJson(m.sockPath);
    expect(s.master.stopping ?? null).toBeNull();
    const up = await runBinary(["sh", "-d", m.sockPath, "--timeout", "40", "-e", "upgrade"], { timeoutMs: 45_000 });
    expect(up.code).toBe(0);
    expect(await stopMaster(m)).toBe(0);
  });

  test("-t escalates to SIGKILL after any die signal, even one the workers ignore (USR1)", async () => {
    // The worker ignores USR1 (an ignored disposition survives exec).
    const m = startMaster(["-m", "0", "-t", "1", "--", "sh", "-c", "trap '' USR1; exec sleep 1000"]);
    await workersUp(m.sockPath, 1);
    const r = await runBinary(["sh", "-d", m.sockPath, "-e", "die USR1"]);
    expect(r.code).toBe(0);
    const code = await Promise.race([m.exited, Bun.sleep(20_000).then(() => "still running 20 s after die USR1 with -t 1")]);
    expect(code).toBe(0);
    expect(m.output()).toMatch(/is still alive 1s after SIGUSR1; sending SIGKILL \(-t 1\)/);
  });
});

describe("config takes known keys only", () => {
  test("constructor, toString, __proto__ and friends are unknown settings, answered with the list; no internal error", async () => {
    const m = startMaster(["-m", "0", "--", ...PY]);
    await workersUp(m.sockPath, 1);
    const known = "Known settings: number, seconds, max_unacked, max_upgrade_additional, signal_timeout, ack_timeout, upgrade_max_deaths";
    for (const [arg, key] of [
      ["constructor=1", "constructor"], ["toString=2", "toString"], ["__proto__=3", "__proto__"], ["hasOwnProperty=1", "hasOwnProperty"],
      ['{"__proto__": {"number": 5}}', "__proto__"], ["{constructor: 1}", "constructor"], ["{toString: x, number: 2}", "toString"],
    ] as const) {
      const answers = await command(m.sockPath, "config", [arg]);
      const last = answers[answers.length - 1]!;
      expect({ arg, message: last.message, error: last.error }).toEqual({ arg, message: `config: unknown setting '${key}'. ${known}`, error: true });
    }
    const empty = await command(m.sockPath, "config", ["{}"]);
    expect(empty[0]!.message).toBe(`config: no settings given. ${known}`);
    // Nothing was changed, and the master is fine.
    const s = await stateJson(m.sockPath);
    expect(s.master.pid).toBe(m.pid);
    expect(m.output()).not.toContain("Command failed unexpectedly");
    expect((await command(m.sockPath, "config", ["number=2"]))[0]!.message).toBe("Config updated: number=2");
    await workersUp(m.sockPath, 2);
    expect(await stopMaster(m)).toBe(0);
  });
});

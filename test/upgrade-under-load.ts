// Upgrades under `wrk` load, for tests that hold a server to the shared
// socket's promise: every request answered, across every upgrade. wrk runs
// until the upgrades are done and the old workers gone (then SIGINT, on
// which wrk prints its report), so the load covers all of them whatever the
// machine's speed.
import { expect } from "bun:test";
import { parseWrk } from "../bench/load";
import { runBinary, stateJson, waitFor, type Master, type StateReport } from "./harness";

const WRK = Bun.which("wrk");

/**
 * For a test's title: "" when every command is on PATH, else why the test is
 * skipped (so a run without them says what it did not check). `npm test`
 * installs them from Debian first (scripts/system-tools.ts).
 */
export function needsOnPath(...commands: Array<string | null>): string {
  const missing = commands.filter((c): c is string => c !== null && Bun.which(c) === null);
  return missing.length ? ` (SKIPPED: needs ${missing.join(" and ")} on PATH; npm test installs them (scripts/system-tools.ts))` : "";
}

export interface LoadReport {
  requests: number;
  errors: Record<string, number>;
  errorTotal: number;
  /** Every worker pid seen in `state` during the run, per version. */
  versions: number[];
  raw: string;
}

/** Wait until `n` workers of `version` have ACKed (and, with `alone`, no other version is alive). */
export async function settled(m: Master, n: number, version: number, alone = true, timeoutMs = 60_000): Promise<StateReport> {
  return waitFor(`${n} acked workers of version ${version}${alone ? " and no other" : ""}`, async () => {
    const s = await stateJson(m.sockPath);
    const ours = s.workers.filter((w) => w.version === version && w.acked);
    return ours.length === n && (!alone || s.workers.length === n) ? s : null;
  }, timeoutMs);
}

/**
 * Run `upgrades` smooth upgrades of master `m` (serving `n` workers) while
 * wrk loads `url`; returns wrk's counts. The caller asserts on them (see
 * expectNoFailures).
 */
export async function upgradesUnderLoad(m: Master, url: string, n: number, upgrades = 3, opts: { connections?: number; warmupMs?: number } = {}): Promise<LoadReport> {
  if (!WRK) throw new Error("wrk is not installed (Debian package wrk; npm test installs it (scripts/system-tools.ts))");
  const s0 = await settled(m, n, Math.max(...(await stateJson(m.sockPath)).workers.map((w) => w.version)));
  const wrk = Bun.spawn([WRK, "-t2", `-c${opts.connections ?? 16}`, "-d600s", "--timeout", "10s", url], { stdout: "pipe", stderr: "pipe" });
  const out = new Response(wrk.stdout).text();
  const versions: number[] = [s0.workers[0]!.version];
  try {
    await Bun.sleep(opts.warmupMs ?? 500);
    for (let i = 0; i < upgrades; i++) {
      const r = await runBinary(["sh", "-d", m.sockPath, "-e", "upgrade", "--timeout", "60"], { timeoutMs: 90_000 });
      expect(`${r.code} ${r.stdout}${r.stderr}`).toMatch(/^0 [\s\S]*Upgrade done/);
      // The next upgrade may start while this one's old workers still drain.
      await settled(m, n, versions.at(-1)! + 1, false);
      versions.push(versions.at(-1)! + 1);
    }
    // Every old worker gone, then a last stretch on the final generation alone.
    await settled(m, n, versions.at(-1)!, true);
    await Bun.sleep(300);
  } finally {
    wrk.kill("SIGINT");
  }
  await wrk.exited;
  const raw = await out;
  const parsed = parseWrk(raw);
  return { requests: parsed.successes, errors: parsed.errors, errorTotal: parsed.error_total, versions, raw };
}

export function expectNoFailures(r: LoadReport, upgrades = 3): void {
  expect(r.versions.length).toBe(upgrades + 1);
  expect(r.requests).toBeGreaterThan(0);
  expect({ errors: r.errors, total: r.errorTotal }).toEqual({ errors: {}, total: 0 });
}

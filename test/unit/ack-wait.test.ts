import { describe, expect, test } from "bun:test";
import { DEFAULT_SETTINGS, initialState } from "../../src/core/state";
import { AckWaitReporter } from "../../src/master/ack-wait";
import { defaultTimeouts } from "../../src/config/timeouts";

/** The production period (src/config/timeouts.ts), which the messages below assume. */
const EVERY = defaultTimeouts()["ack-wait-report"];

const T0 = 1_000_000;

function upgrading(ackTimeout: number | null = null) {
  const s = initialState({ ...DEFAULT_SETTINGS, number: 2, ackMode: { kind: "manual" }, ackTimeout }, T0);
  s.version = 1;
  s.lastVersion = 1;
  s.upgrade = { mode: "smooth", startedAt: T0, fromVersion: 0, deathsBeforeAck: 0 };
  s.workers = [
    { pid: 10, index: 0, version: 0, spawnedAt: T0 - 60_000, ackedAt: T0 - 59_000, signals: [], lastPing: null },
    { pid: 11, index: 1, version: 0, spawnedAt: T0 - 60_000, ackedAt: T0 - 59_000, signals: [], lastPing: null },
    { pid: 20, index: 2, version: 1, spawnedAt: T0 + 100, ackedAt: null, signals: [], lastPing: null },
  ];
  return s;
}

describe("ACK-wait reports", () => {
  test("every 10 s while new workers have not ACKed, naming them, their wait and the --ack-timeout hint", () => {
    const r = new AckWaitReporter(EVERY);
    const s = upgrading();
    expect(r.check(s, T0 + 9_999)).toBeNull();
    const msg = r.check(s, T0 + 10_000)!;
    expect(msg).toBe("Upgrade to version 1 waiting 10s for ACKs: worker 20 (index 2, 9s) not ACKed yet; 0 of 2 new workers up. "
      + "Without --ack-timeout the upgrade waits for ever; set it (or 'config ack_timeout=SECONDS') to fail an upgrade whose workers never ACK.");
    expect(r.check(s, T0 + 15_000)).toBeNull();
    expect(r.check(s, T0 + 20_000)).toContain("waiting 20s");
  });

  test("with --ack-timeout the hint says what will happen", () => {
    const r = new AckWaitReporter(EVERY);
    expect(r.check(upgrading(300), T0 + 10_000)).toContain("With --ack-timeout 300s, a worker not ACKed 300s after it started fails the upgrade.");
  });

  test("silent once everything ACKed, outside an upgrade, and restarted by a new upgrade", () => {
    const r = new AckWaitReporter(EVERY);
    const s = upgrading();
    s.workers[2]!.ackedAt = T0 + 500;
    expect(r.check(s, T0 + 10_000)).toBeNull();
    s.upgrade = null;
    expect(r.check(s, T0 + 30_000)).toBeNull();
    const again = upgrading();
    again.upgrade!.startedAt = T0 + 40_000;
    expect(r.check(again, T0 + 45_000)).toBeNull();
    expect(r.check(again, T0 + 50_000)).toContain("waiting 10s");
  });

  test("a spawn in flight counts as waiting", () => {
    const r = new AckWaitReporter(EVERY);
    const s = upgrading();
    s.workers.pop();
    s.pending = [{ spawnId: 1, index: 2, version: 1 }];
    expect(r.check(s, T0 + 10_000)).toContain("new workers still starting");
  });
});

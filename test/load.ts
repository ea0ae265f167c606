// How loaded the machine is, for the time bounds of the tests: read by the
// harness (test/harness.ts, loadFactor) and by scripts/test.ts (the default
// per-test limit), so both scale by the same measure. No bun:test here:
// scripts import it outside the test runner.
import { readFileSync } from "node:fs";

/** The largest factor any bound is scaled by: past it, a wait is a hang, however busy the machine. */
export const MAX_LOAD_FACTOR = 10;

/** The 1-minute load average per core, clamped to 1..MAX_LOAD_FACTOR (1 when /proc cannot tell). */
export function loadAveragePerCore(): number {
  let perCore = 1;
  try {
    perCore = Number(readFileSync("/proc/loadavg", "latin1").split(" ")[0]) / (navigator.hardwareConcurrency || 1);
  } catch { /* no /proc */ }
  return Math.min(MAX_LOAD_FACTOR, Math.max(1, perCore || 1));
}

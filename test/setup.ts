// Loaded before every test file (bunfig.toml [test] preload): the per-test
// cleanup and leak check of test/harness.ts, registered once for all files,
// and the file's own temp directory.
import { afterAll, afterEach, beforeEach, expect } from "bun:test";
import { chmodSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cleanupAndCheckLeaks, setFileTempDir, snapshotResources, sweepTempDirs } from "./harness";

// Every file (each runs in a process of its own) gets a temp directory of
// its own, and TMPDIR points there for the tests, the masters and the
// workers they start: what a test leaves in "the temp directory" is found
// by the leak check, whichever other file runs beside it.
// Mode 0755 like any directory on the way to a file: tests that act as a
// second uid reach the world-writable directories made inside it.
const fileTmp = mkdtempSync(join(tmpdir(), "einhorn-test-file-"));
chmodSync(fileTmp, 0o755);
process.env.TMPDIR = fileTmp;
setFileTempDir(fileTmp);
// Node (npm included) keeps a module compile cache in the temp directory;
// it is Node's, not anything of einhorn's, so the tests run Node without it
// rather than count it as a leftover.
process.env.NODE_DISABLE_COMPILE_CACHE = "1";

// Bun.spawn and Bun.spawnSync called without `env` pass the environment the
// process started with, not process.env as changed since (Bun 1.4.4;
// node:child_process passes process.env): a test's npm or python would still
// see the run's TMPDIR, not this file's. Every process a test starts gets
// process.env unless the test gives an environment itself.
for (const name of ["spawn", "spawnSync"] as const) {
  const original = Bun[name] as unknown as (...args: unknown[]) => unknown;
  const withEnv = (o: unknown) => (o && typeof o === "object" && "env" in o ? o : { ...(o as object | undefined), env: process.env });
  (Bun as unknown as Record<string, unknown>)[name] = (...args: unknown[]) =>
    Array.isArray(args[0]) ? original(args[0], withEnv(args[1])) : original(withEnv(args[0]));
}

beforeEach(snapshotResources);
afterEach(cleanupAndCheckLeaks);
// A temp dir made outside any test (a describe body, beforeAll) has no
// afterEach to clean it: swept here, and the file fails for it; so does
// anything else left in the file's temp directory.
afterAll(() => {
  const swept = sweepTempDirs();
  const left = readdirSync(fileTmp);
  rmSync(fileTmp, { recursive: true, force: true });
  expect(swept, "temp dirs made outside a test and left behind").toEqual([]);
  expect(left, "files left in the test file's temp directory").toEqual([]);
});

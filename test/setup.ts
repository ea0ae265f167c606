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

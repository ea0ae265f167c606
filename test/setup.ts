// Loaded before every test file (bunfig.toml [test] preload): the per-test
// cleanup and leak check of test/harness.ts, registered once for all files.
import { afterAll, afterEach, expect } from "bun:test";
import { cleanupAndCheckLeaks, sweepTempDirs } from "./harness";

afterEach(cleanupAndCheckLeaks);
// A temp dir made outside any test (a describe body, beforeAll) has no
// afterEach to clean it: swept here, and the file fails for it.
afterAll(() => {
  expect(sweepTempDirs(), "temp dirs made outside a test and left behind").toEqual([]);
});

// Loaded before every test file (bunfig.toml [test] preload): the per-test
// cleanup and leak check of test/harness.ts, registered once for all files.
import { afterEach } from "bun:test";
import { cleanupAndCheckLeaks } from "./harness";

afterEach(cleanupAndCheckLeaks);

// The example in docs/config.md is a config file this einhorn accepts.
import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseMasterArgs } from "../../src/config/master-args";

test("docs/config.md's example parses and means what its comments say", () => {
  const md = readFileSync(join(import.meta.dir, "../../docs/config.md"), "utf8");
  const yaml = /```yaml\n([\s\S]*?)```/.exec(md)![1]!;
  const dir = mkdtempSync(join(tmpdir(), "einhorn-docs-"));
  try {
    writeFileSync(join(dir, "web.yaml"), yaml);
    const c = parseMasterArgs(["--config", join(dir, "web.yaml")], { tmpdir: "/tmp/t", cpus: 2 });
    expect(c.commandName).toBe("web");
    expect(c.number).toBe(4);
    expect(c.ackMode).toEqual({ kind: "manual" });
    expect(c.binds).toHaveLength(2);
    expect(c.maxMemory).toBe(512 * 1024 * 1024);
    expect(c.metrics).toBe("127.0.0.1:9100");
    expect(c.workerOutput).toBe("prefix");
    expect(c.program[0]).toBe("/srv/web/current/bin/server");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

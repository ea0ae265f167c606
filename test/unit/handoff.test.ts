// The handoff document across the master's execve: older writers' documents
// are accepted with defaults, newer ones refused.
import { describe, expect, test } from "bun:test";
import { HANDOFF_SCHEMA, readHandoff, validateHandoff, writeHandoff } from "../../src/master/handoff";
import { DEFAULT_SETTINGS, initialState } from "../../src/core/state";
import { close } from "../../ffi/socket";

const minimal = {
  state: initialState(DEFAULT_SETTINGS, 0),
  config: { program: ["true"] },
  listeners: [],
  commandFd: 5,
  lock: { fd: 6, path: "/tmp/einhorn.lock" },
};

describe("validateHandoff", () => {
  test("a document from an older writer (no schema, no connections, signals) gets defaults", () => {
    const h = validateHandoff(minimal);
    expect(h.schema).toBe(HANDOFF_SCHEMA);
    expect(h.connections).toEqual([]);
    expect(h.signals).toEqual([]);
    expect(h.pending).toBeNull();
    expect(h.reexecs).toBe(0);
    expect(h.writerVersion).toBe("unknown");
    expect(h.commandFd).toBe(5);
    expect(h.cpuAtExecUs).toBeUndefined();
  });

  test("the writer's CPU figure is kept when it is a number and dropped otherwise", () => {
    expect(validateHandoff({ ...minimal, cpuAtExecUs: 12_345 }).cpuAtExecUs).toBe(12_345);
    expect(validateHandoff({ ...minimal, cpuAtExecUs: "12" }).cpuAtExecUs).toBeUndefined();
  });

  test("a document without the lock (written since the lock is held only at start-up) is read, with no lock", () => {
    const { lock: _, ...noLock } = minimal;
    const h = validateHandoff(noLock);
    expect(h.lock).toBeNull();
    expect(h.commandPath).toBeNull();
    expect(h.pidfile).toBeNull();
  });

  test("a newer schema, or a document missing what cannot be defaulted, is refused", () => {
    expect(() => validateHandoff({ ...minimal, schema: HANDOFF_SCHEMA + 1 })).toThrow(`the handed-over state has schema ${HANDOFF_SCHEMA + 1}; this einhorn reads up to ${HANDOFF_SCHEMA}`);
    const { commandFd: _, ...noCommandFd } = minimal;
    expect(() => validateHandoff(noCommandFd)).toThrow("the handed-over state lacks 'commandFd'");
    expect(() => validateHandoff("text")).toThrow("the handed-over state is not a JSON object");
  });

  test("written to a memfd and read back whole", () => {
    const doc = validateHandoff({ ...minimal, signals: ["SIGTERM"], history: [{ version: "0.1.0", at: 1 }] });
    const fd = writeHandoff(doc);
    try {
      expect(validateHandoff(readHandoff(fd))).toEqual(doc);
    } finally {
      close(fd);
    }
  });
});

describe("the handed-over MasterConfig", () => {
  const { CONFIG_SCHEMA, upgradeConfig } = require("../../src/master/config") as typeof import("../../src/master/config");
  const { parseMasterArgs } = require("../../src/config/master-args") as typeof import("../../src/config/master-args");
  const defaults = parseMasterArgs(["--", "true"], { tmpdir: "/nowhere" });

  test("options an older writer did not know take this einhorn's defaults; what it said is kept", () => {
    const old = { ...parseMasterArgs(["-n", "3", "-m", "manual", "--", "app"], { tmpdir: "/run" }) } as Record<string, unknown>;
    for (const k of ["retireSignal", "workerOutput", "metrics", "maxMemory", "configFile", "commandLine"]) delete old[k];
    const c = upgradeConfig(old, 1, defaults);
    expect(c.retireSignal).toBe("SIGUSR2");
    expect(c.workerOutput).toBe("inherit");
    expect(c.metrics).toBeNull();
    expect(c.maxMemory).toBeNull();
    expect(c.configFile).toBeNull();
    expect(c.number).toBe(3);
    expect(c.ackMode).toEqual({ kind: "manual" });
    expect(c.program).toEqual(["app"]);
    expect(c.socketPath).toBe("/run/einhorn.sock");
  });

  test("a writer with a config file but no recorded command line re-reads that file alone", () => {
    const c = upgradeConfig({ program: ["app"], configFile: "/etc/app.yml" }, 1, defaults);
    expect(c.commandLine).toEqual(["--config", "/etc/app.yml"]);
  });

  test("the one-shot flags are off in the running image", () => {
    const c = upgradeConfig({ ...defaults, withStateFd: 9, upgradeCheck: true, version: true, help: true }, 1, defaults);
    expect([c.withStateFd, c.upgradeCheck, c.version, c.help]).toEqual([null, false, false, false]);
  });

  test("a newer layout is refused, naming both schemas; a non-mapping is refused", () => {
    expect(() => upgradeConfig(defaults, CONFIG_SCHEMA + 1, defaults)).toThrow(`the handed-over configuration has schema ${CONFIG_SCHEMA + 1}; this einhorn reads up to ${CONFIG_SCHEMA}`);
    expect(() => upgradeConfig([], 1, defaults)).toThrow("the handed-over configuration is not a mapping");
  });

  test("the handoff records the writer's config schema (1 when absent)", () => {
    expect(validateHandoff(minimal).configSchema).toBe(1);
    expect(validateHandoff({ ...minimal, configSchema: 7 }).configSchema).toBe(7);
  });
});

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
  test("a document from an older writer (no schema, no connections, signals, history) gets defaults", () => {
    const h = validateHandoff(minimal);
    expect(h.schema).toBe(HANDOFF_SCHEMA);
    expect(h.connections).toEqual([]);
    expect(h.signals).toEqual([]);
    expect(h.history).toEqual([]);
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

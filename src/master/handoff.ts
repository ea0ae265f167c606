// The document a master hands to its own next image across execve: its whole
// state plus which inherited descriptors are what. Versioned like State: a
// reader accepts older documents (missing fields get defaults) and refuses
// newer ones, and `--upgrade-check` reports the version a binary reads so an
// upgrade to a binary that could not read it is refused before the exec.
import { writeSync } from "node:fs";
import type { MasterConfig } from "./config";
import type { SockAddr } from "../../ffi/sockaddr";
import { memfdCreate, readAll } from "../../ffi/process";
import { type State, upgradeState } from "../core/state";
import { parseSignal, type SignalName } from "../signal-names";
import type { UpgradeMode } from "../core/step";
import type { HandedCapture } from "./worker-output";
import type { MetricsDoc } from "./metrics";
import type { SdNotifyDoc } from "./sd-notify";

// Strings in the document (program, arguments, environment, paths) may carry
// raw non-UTF-8 bytes as lone surrogates U+DC80..U+DCFF (ffi/os-string.ts).
// JSON writes those as \udcXX escapes and reads them back unchanged, so the
// format is the same and schema 1 stands: a document from an older writer has
// plain strings only, and an older reader keeps such a string as the text it
// always made of it.
export const HANDOFF_SCHEMA = 1;

export interface HandedConnection {
  fd: number;
  /** Request id of an upgrade/reload this client is waiting on, when it waits on one. */
  waiting: { requestId: unknown } | null;
  /** Bytes received but not yet a whole line, and answers not yet written (base64). */
  partialIn: string;
  pendingOut: string;
  /** Whether the client had sent a whole line (else the first-line timeout still applies to it). */
  spoke?: boolean;
  /** The client asked for JSON answers (absent in documents from older writers: YAML). */
  format?: "yaml" | "json";
}

export interface Handoff {
  schema: number;
  writerVersion: string;
  writtenAt: number;
  state: State;
  config: MasterConfig;
  /** CONFIG_SCHEMA of the writer (absent from older writers: 1). */
  configSchema: number;
  /** The environment the first master started with; every re-exec restores it (minus --drop-env-var). */
  startEnv: Record<string, string>;
  listeners: Array<{ fd: number; specText: string; bound: SockAddr; unixPath: string | null }>;
  commandFd: number;
  /** Written by images that held the lockfile for life (now null: the lock is held only while creating the command socket). */
  lock: { fd: number; path: string } | null;
  /** The inodes of the command socket and pidfile this master created (removed at exit only while the paths lead to them). */
  commandPath: { dev: number; ino: number } | null;
  pidfile: { dev: number; ino: number } | null;
  connections: HandedConnection[];
  /** What the next image does first. */
  pending: { kind: "upgrade"; mode: UpgradeMode; requestedAt: number } | { kind: "reload"; requestedAt: number } | null;
  reexecs: number;
  /** The signal mask to restore once the new image's handlers are in place (hex of sigset_t). */
  signalMask: string;
  /**
   * Signals an einhorn older than the signalfd caught while preparing the exec;
   * the new image acts on them. This writer sends [] (pending signals now cross
   * the execve in the kernel).
   */
  signals: SignalName[];
  /** The workers' process descriptors (absent from older writers: their workers are checked by pid). */
  pidfds: Array<{ pid: number; fd: number }>;
  /** --worker-output streams and queued lines; absent from older writers and without capture. */
  capture?: HandedCapture | null;
  /** The writer's CPU time (process.cpuUsage, user + system, µs) when it wrote this; the reader logs what the re-exec cost. */
  cpuAtExecUs?: number;
  /** --metrics: the listening descriptor (kept open across the exec) and the counters; absent from older writers. */
  metrics?: { fd: number | null; counters: MetricsDoc } | null;
  /** What the writer told systemd over sd_notify (absent from older writers: nothing). */
  sdNotify?: SdNotifyDoc | null;
}

/** Write the document into a fresh inheritable memfd (or `into`, one made with memfdCreate); returns its descriptor. */
/**
 * Every descriptor the document names, which must stay open across an
 * execve (close-on-exec cleared): the one list both the writer (before its
 * exec) and a reader that must exec itself once more (a --reexec-as wrapper
 * cleared the signal mask; src/cli/main.ts) keep. A descriptor missing here
 * is closed by that exec and the next image cannot adopt it.
 */
export function handedFds(doc: Handoff): number[] {
  return [
    doc.commandFd,
    ...(doc.lock ? [doc.lock.fd] : []),
    ...doc.listeners.map((l) => l.fd),
    ...doc.connections.map((c) => c.fd),
    ...doc.pidfds.map((p) => p.fd),
    ...(doc.metrics?.fd != null ? [doc.metrics.fd] : []),
    ...(doc.capture ? doc.capture.streams.map((s) => s.fd) : []),
  ];
}

export function writeHandoff(doc: Handoff, into?: number): number {
  const fd = into ?? memfdCreate("einhorn-handoff");
  const data = Buffer.from(JSON.stringify(doc));
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off, data.length - off, off);
  return fd;
}

export function readHandoff(fd: number): unknown {
  return JSON.parse(readAll(fd).toString("utf8"));
}

export function validateHandoff(doc: unknown): Handoff {
  if (typeof doc !== "object" || doc === null) throw new Error("the handed-over state is not a JSON object");
  const d = doc as Partial<Handoff>;
  const schema = typeof d.schema === "number" ? d.schema : 0;
  if (schema > HANDOFF_SCHEMA) throw new Error(`the handed-over state has schema ${schema}; this einhorn reads up to ${HANDOFF_SCHEMA}`);
  for (const k of ["state", "config", "listeners", "commandFd"] as const) {
    if (d[k] === undefined) throw new Error(`the handed-over state lacks '${k}'`);
  }
  // Refused now, before the new image adopts anything, with a clear line:
  // a state the core cannot read (a newer schema, a retire or stop signal
  // that is not a signal name; core/state.ts says why those are refused and
  // records are not). The resume reads it again, logging what it drops.
  upgradeState(d.state, 0);
  const signals = (d.signals ?? []).map((v: unknown) => {
    // Signals to act on now: one that is not a signal name cannot be acted
    // on, and every writer wrote them from its own list of handled signals.
    const name = typeof v === "string" ? parseSignal(v) : null;
    if (name === null) throw new Error(`the handed-over state's signals list has ${JSON.stringify(v)}, which is not a signal name (like SIGHUP or SIGTERM)`);
    return name;
  });
  return {
    schema: HANDOFF_SCHEMA,
    writerVersion: d.writerVersion ?? "unknown",
    writtenAt: d.writtenAt ?? Date.now(),
    state: d.state!,
    config: d.config!,
    configSchema: d.configSchema ?? 1,
    startEnv: d.startEnv ?? {},
    listeners: d.listeners!,
    commandFd: d.commandFd!,
    lock: d.lock ?? null,
    commandPath: d.commandPath ?? null,
    pidfile: d.pidfile ?? null,
    connections: d.connections ?? [],
    pending: d.pending ?? null,
    reexecs: d.reexecs ?? 0,
    signalMask: d.signalMask ?? "",
    signals,
    pidfds: d.pidfds ?? [],
    capture: d.capture ?? null,
    ...(typeof d.cpuAtExecUs === "number" ? { cpuAtExecUs: d.cpuAtExecUs } : {}),
    metrics: d.metrics ?? null,
    sdNotify: d.sdNotify ?? null,
  };
}

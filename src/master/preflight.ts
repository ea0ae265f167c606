// The preflight of an upgrade or reload: run the next master image's command
// with --upgrade-check (in the environment it will get) and judge what it
// says, before the running master commits to an execve.
import { HANDOFF_SCHEMA } from "./handoff";
import { type ExitStatus, memfdCreate, readAll } from "../../ffi/process";
import { close } from "../../ffi/socket";
import type { Os } from "./os";
import { writeSync } from "node:fs";
import { ENV } from "../protocol-env";
import { resolveProgram } from "./spawner";

/** How long `--upgrade-check` may take before the upgrade is declared failed. */
const PREFLIGHT_TIMEOUT_MS = 30_000;

export type PreflightResult = { ok: true; detail: string } | { ok: false; reason: string };

export interface PreflightOptions {
  /** The command that starts the next image (--reexec-as, or this binary). */
  cmd: string[];
  env: Record<string, string>;
  /** A -p module the next image must be able to load. */
  preload: string | null;
  /** The handoff document (JSON) for the next binary to check, on a descriptor named by ENV.UPGRADE_CHECK_STATE_FD. */
  handoff?: string;
  timeoutMs?: number;
  /** Processes and timers: the master's Os. */
  os: Pick<Os, "spawn" | "kill" | "after">;
  /** Have the master's reaper call `onExit` when `pid` exits (it is not a worker). */
  watchChild(pid: number, onExit: (status: ExitStatus) => void): void;
  unwatchChild(pid: number): void;
}

/**
 * What the preflight's exit status and output mean. It must exit 0 and end
 * its output with the JSON line --upgrade-check prints, naming a handoff
 * schema at least as new as the one this master writes.
 */
export function judgePreflight(cmd: string[], status: ExitStatus, output: string): PreflightResult {
  const what = `preflight '${cmd.join(" ")} --upgrade-check'`;
  const tail = output.trim().split("\n").slice(-3).join(" | ");
  if (status.code !== 0) {
    const how = status.code === null ? `was killed by ${status.signal ?? `signal ${status.signo}`}` : `exited with status ${status.code}`;
    return { ok: false, reason: `${what} ${how}${tail ? `: ${tail}` : ""}` };
  }
  let info: { einhorn?: string; handoffSchema?: number } = {};
  try { info = JSON.parse(output.trim().split("\n").pop() ?? ""); } catch { /* judged below */ }
  if (typeof info.handoffSchema !== "number") {
    return { ok: false, reason: `${what} did not report the state format it reads (is it einhorn?)${tail ? `: ${tail}` : ""}` };
  }
  if (info.handoffSchema < HANDOFF_SCHEMA) {
    return { ok: false, reason: `the new einhorn (${info.einhorn}) reads handed-over state up to schema ${info.handoffSchema}, but this master writes schema ${HANDOFF_SCHEMA}` };
  }
  return { ok: true, detail: `new einhorn ${info.einhorn}` };
}

/**
 * Start the preflight; `done` is called once, on a later event-loop turn,
 * with the verdict. Returns `cancel`: kill the preflight (SIGKILL) and never
 * call `done`; its exit is still collected, and its descriptors closed.
 */
export function runPreflight(opts: PreflightOptions, done: (r: PreflightResult) => void): () => void {
  const { cmd, env, os } = opts;
  const timeoutMs = opts.timeoutMs ?? PREFLIGHT_TIMEOUT_MS;
  let out = -1;
  let doc = -1;
  let pid: number;
  /** Set by the returned cancel: `done` is never called after it. */
  let cancelled = false;
  try {
    if (cmd.length === 0) throw new Error("no command to run");
    const file = resolveProgram(cmd[0]!, env.PATH);
    // Output goes to an in-memory file, read after the exit: a pipe could fill and stall the check.
    out = memfdCreate("einhorn-preflight", true);
    const check = [...cmd, "--upgrade-check", ...(opts.preload ? ["--preload", opts.preload] : [])];
    const childEnv = { ...env };
    const inheritFds: number[] = [];
    if (opts.handoff !== undefined) {
      // An environment variable, not a flag: an einhorn that does not know it goes on as before.
      doc = memfdCreate("einhorn-preflight-state", true);
      const data = Buffer.from(opts.handoff);
      let off = 0;
      while (off < data.length) off += writeSync(doc, data, off, data.length - off, off);
      childEnv[ENV.UPGRADE_CHECK_STATE_FD] = String(doc);
      inheritFds.push(doc);
    }
    pid = os.spawn(file, check, Object.entries(childEnv).map(([k, v]) => `${k}=${v}`), { dup2: [[out, 1], [out, 2]], inheritFds });
  } catch (e) {
    if (out >= 0) { try { close(out); } catch { /* already closed */ } }
    if (doc >= 0) { try { close(doc); } catch { /* already closed */ } }
    os.after(0, () => { if (!cancelled) done({ ok: false, reason: `preflight could not start ${cmd.join(" ")}: ${(e as Error).message}` }); });
    return () => { cancelled = true; };
  }
  const outFd = out;
  const docFd = doc;
  const finish = (r: PreflightResult) => {
    cancelTimer();
    opts.unwatchChild(pid);
    try { close(outFd); } catch { /* already closed */ }
    if (docFd >= 0) { try { close(docFd); } catch { /* already closed */ } }
    // Leave the reaper's loop before acting: the re-exec must not run inside it.
    os.after(0, () => { if (!cancelled) done(r); });
  };
  const cancelTimer = os.after(timeoutMs, () => {
    os.kill(pid, "SIGKILL");
    finish({ ok: false, reason: `preflight '${cmd.join(" ")} --upgrade-check' did not finish within ${timeoutMs / 1000}s` });
  });
  opts.watchChild(pid, (status) => {
    let text: string;
    // Read through the descriptor already open: opening /proc/self/fd/N
    // would need one more, which is exactly what is missing under EMFILE.
    try { text = readAll(outFd).toString("utf8"); } catch (e) { text = `(could not read the preflight's output: ${(e as Error).message})`; }
    finish(judgePreflight(cmd, status, text));
  });
  return () => {
    if (cancelled) return;
    cancelled = true;
    cancelTimer();
    os.kill(pid, "SIGKILL");
  };
}

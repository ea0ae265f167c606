// Worker generations: what each generation of workers runs, fixed when the
// generation is made. Policy (issue 22):
// - a worker is always spawned from its own generation's spec, so a respawn
//   of an old worker after a failed upgrade runs the old program, with the old
//   environment and signals, never the candidate that failed;
// - the retire signal is part of the spec: a worker is asked to leave with the
//   signal its own program was started expecting (retiring, stopping, `dec`,
//   -k's parent-death signal all read it from here);
// - a spec is plain JSON data, because it crosses the master's re-exec inside
//   the state, and it is compared by digest, which `state json` and `status`
//   show instead of the environment (which may hold secrets).
import type { SignalName } from "../signal-names";

/** Everything that shapes a worker process. */
export interface WorkerSpec {
  /** PROGRAM ARGS as the operator gave them (argv[0] is what ps shows). */
  program: string[];
  /**
   * The file program[0] named when the generation was made: looked up in PATH
   * and with symlinks resolved, so a release deployed behind a moving
   * `current` symlink keeps running the release it was started from. Null
   * when it could not be resolved then (the spawn looks it up again).
   */
  programPath: string | null;
  /** -p MODULE (absolute), or null: workers then run this einhorn binary's `_preload`. */
  preload: string | null;
  /** The working directory (its real path) workers start in. */
  cwd: string;
  /** The environment workers inherit, before einhorn's own variables. */
  env: Record<string, string>;
  /** What asks a worker of this generation to leave (USR2 unless --retire-signal). */
  retireSignal: SignalName;
  /** -k: the retire signal also reaches workers when the master dies. */
  killChildrenOnExit: boolean;
  /** -g: each worker gets a descriptor connected to the command socket. */
  commandSocketAsFd: boolean;
  /** --listen-fds: also present the sockets the systemd way. */
  listenFds: boolean;
  /** --nice's worker level, or null. */
  nice: number | null;
}

export interface Generation {
  version: number;
  spec: WorkerSpec;
  /** When the generation was made (its first spawn may come later). */
  createdAt: number;
  /**
   * Set on a generation made by a rollback: the generation whose spec it
   * runs again, for the log and `status`.
   */
  rollbackOf?: number;
  /**
   * A worker of this generation was over --max-memory within
   * YOUNG_OVER_LIMIT_SECONDS of its start: the program's normal size is above
   * the limit, so replacing its workers would never end. Reported once; none
   * of its workers is replaced for memory.
   */
  overLimitAtStart?: { pid: number; at: number; reason: string };
}

export const DEFAULT_SPEC: WorkerSpec = {
  program: [],
  programPath: null,
  preload: null,
  cwd: "/",
  env: {},
  retireSignal: "SIGUSR2",
  killChildrenOnExit: false,
  commandSocketAsFd: false,
  listenFds: false,
  nice: null,
};

/** The spec as canonical JSON: keys sorted at every level, so equal specs give equal text. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v !== null && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(",")}}`;
  }
  return JSON.stringify(v) ?? "null";
}

/**
 * A short fingerprint of a spec (12 hex digits: two FNV-1a 32-bit hashes
 * over the canonical JSON, the second seeded differently). It names a spec
 * for people and compares two; it is not a security boundary (the state it
 * travels in is the master's own).
 */
export function specDigest(spec: WorkerSpec): string {
  const text = canonical(spec);
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x01000193) >>> 0;
  }
  return (a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0")).slice(0, 12);
}

/** What differs between two specs, for people: "program", "retireSignal SIGUSR2 -> SIGTERM", "env (2 variables)". */
export function specChanges(from: WorkerSpec, to: WorkerSpec): string[] {
  const out: string[] = [];
  for (const key of Object.keys(DEFAULT_SPEC) as Array<keyof WorkerSpec>) {
    const a = from[key];
    const b = to[key];
    if (canonical(a) === canonical(b)) continue;
    if (key === "env") {
      const ea = a as Record<string, string>;
      const eb = b as Record<string, string>;
      const names = new Set([...Object.keys(ea), ...Object.keys(eb)].filter((k) => ea[k] !== eb[k]));
      // Names only: values may be secrets.
      out.push(`env (${[...names].sort().slice(0, 5).join(", ")}${names.size > 5 ? `, and ${names.size - 5} more` : ""})`);
    } else {
      out.push(`${key} ${JSON.stringify(a)} -> ${JSON.stringify(b)}`);
    }
  }
  return out;
}

/** A spec with what may not be shown replaced: the environment by its size (state json, status). */
export function publicSpec(spec: WorkerSpec): Omit<WorkerSpec, "env"> & { env_count: number; digest: string } {
  const { env, ...rest } = spec;
  return { ...rest, env_count: Object.keys(env).length, digest: specDigest(spec) };
}

// CPU time and resident memory of a process, read from /proc. Used by
// `status`, the metrics and --max-memory; reading two small files per process
// costs about 20 us, cheap enough to do per request and once a second.
import { readdirSync, readFileSync } from "node:fs";
import { getrlimit, RLIMIT_NOFILE } from "../../ffi/process";

/**
 * Clock ticks per second of /proc's time fields. USER_HZ is part of the
 * kernel's user-space ABI and is 100 on every Linux architecture einhorn
 * builds for (x86-64, arm64), whatever the kernel's internal HZ.
 */
const CLOCK_TICKS = 100;

export interface ProcSample {
  /** user + system CPU time, seconds. */
  cpuSeconds: number;
  /** Resident set size, bytes. */
  rssBytes: number;
  /** When the process started, as seconds since boot. */
  startedSinceBoot: number;
  /** Virtual memory size, bytes (stat's vsize). */
  vmBytes?: number;
}

/** Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses). */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/** One reading for `pid` ("self" for this process); null when it is gone or unreadable. */
export function readProc(pid: number | "self"): ProcSample | null {
  try {
    const f = statFields(readFileSync(`/proc/${pid}/stat`, "latin1"));
    // After the name: [0] state, ..., [11] utime, [12] stime, [19] starttime (proc(5), fields 14, 15, 22).
    const cpuSeconds = (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
    const startedSinceBoot = Number(f[19]) / CLOCK_TICKS;
    // VmRSS in kB, rather than stat's page count, so the page size never matters.
    const status = readFileSync(`/proc/${pid}/status`, "latin1");
    const kb = /^VmRSS:\s+(\d+) kB/m.exec(status);
    return { cpuSeconds, rssBytes: kb ? Number(kb[1]) * 1024 : 0, startedSinceBoot, vmBytes: Number(f[20]) };
  } catch {
    return null;
  }
}

/** This process's open descriptors and RLIMIT_NOFILE's soft limit (process_open_fds, process_max_fds); null if unreadable. */
export function masterFds(): { open: number; max: number } | null {
  try {
    // The listing holds a descriptor of its own while it runs: not counted.
    const open = readdirSync("/proc/self/fd").length - 1;
    const { soft } = getrlimit(RLIMIT_NOFILE);
    return { open, max: soft === Infinity ? Number.MAX_SAFE_INTEGER : soft };
  } catch {
    return null;
  }
}

export function uptimeSeconds(): number {
  try {
    return Number(readFileSync("/proc/uptime", "latin1").split(" ")[0]);
  } catch {
    return 0;
  }
}

/**
 * CPU use as a percentage of one core, between two readings of the same
 * process: since the previous call for that pid, or over the process's whole
 * life at the first call. Remembers one reading per pid; `forget` the pids
 * that are gone.
 */
export class CpuMeter {
  private last = new Map<number, { cpu: number; at: number }>();

  /** `now`: seconds since boot (uptimeSeconds()). */
  percent(pid: number, sample: ProcSample, now: number): number {
    const prev = this.last.get(pid);
    this.last.set(pid, { cpu: sample.cpuSeconds, at: now });
    const from = prev ?? { cpu: 0, at: sample.startedSinceBoot };
    const wall = now - from.at;
    // Shorter than a tick apart the ratio is noise: fall back to the lifetime average.
    if (wall < 0.05) {
      const life = now - sample.startedSinceBoot;
      return life > 0 ? (100 * sample.cpuSeconds) / life : 0;
    }
    return Math.max(0, (100 * (sample.cpuSeconds - from.cpu)) / wall);
  }

  forget(alive: Set<number>): void {
    for (const pid of this.last.keys()) if (!alive.has(pid)) this.last.delete(pid);
  }
}

/** Bytes for people: 812K, 31.4M, 1.2G. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n}B`;
  const units = ["K", "M", "G", "T"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)}${units[i]}`;
}

/** Seconds for people: 42s, 5m03s, 2h05m, 3d04h. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, "0")}h`;
}

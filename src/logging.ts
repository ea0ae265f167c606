// Log lines on stderr, through consola, in one of three formats:
//   text   `2026-12-01T09:30:00.123Z [MASTER 1234] INFO: message` (the default):
//          Einhorn's layout behind an ISO 8601 timestamp, always UTC (the
//          trailing Z), with milliseconds, so lines from hosts in different
//          zones sort and compare as they are;
//   plain  Einhorn 1.1.1's layout exactly, without a timestamp (for scripts
//          that parse it, or journald, which stamps lines itself);
//   json   one object per line for log shippers (`time` is the same UTC stamp).
// consola/core, not "consola": the full entry loads reporters, prompts and
// colour support the master never uses, about 15 MB of resident memory.
import { createConsola, type LogObject } from "consola/core";

export type LogFormat = "text" | "plain" | "json";
export type Role = "master" | "shell" | "exec";

const LABEL: Record<string, string> = { fatal: "FATAL", error: "ERROR", warn: "WARN", info: "INFO", log: "INFO", success: "INFO", debug: "DEBUG", trace: "DEBUG" };
const JSON_LEVEL: Record<string, string> = { fatal: "fatal", error: "error", warn: "warn", info: "info", log: "info", success: "info", debug: "debug", trace: "debug" };

/** Einhorn's verbosity scale (0 debug, 1 info, 2 errors only) as a consola level. */
function consolaLevel(verbosity: number): number {
  return verbosity <= 0 ? 4 : verbosity === 1 ? 3 : 0;
}

function messageOf(o: LogObject): string {
  return o.args.map((a) => (a instanceof Error ? a.message : typeof a === "string" ? a : JSON.stringify(a))).join(" ");
}

export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
  setVerbosity(v: number): void;
}

let stderrGuarded = false;

/**
 * Write a log line to stderr. Logging must never stop the master: when the
 * reader of a piped stderr goes away (EPIPE), lines are dropped instead.
 */
function writeStderr(line: string): void {
  if (!stderrGuarded) {
    stderrGuarded = true;
    process.stderr.on("error", () => { /* reader gone: drop log output */ });
  }
  try {
    process.stderr.write(line);
  } catch {
    /* reader gone: drop log output */
  }
}

export function createLogger(role: Role, format: LogFormat, verbosity: number, write: (line: string) => void = writeStderr): Logger {
  const tag = role.toUpperCase();
  const c = createConsola({
    level: consolaLevel(verbosity),
    reporters: [{
      log(o: LogObject) {
        const message = messageOf(o);
        if (format === "json") {
          write(`${JSON.stringify({ time: o.date.toISOString(), level: JSON_LEVEL[o.type] ?? o.type, pid: process.pid, role, message })}\n`);
        } else {
          const stamp = format === "text" ? `${o.date.toISOString()} ` : "";
          write(`${stamp}[${tag} ${process.pid}] ${LABEL[o.type] ?? o.type.toUpperCase()}: ${message}\n`);
        }
      },
    }],
  });
  return {
    debug: (m) => c.debug(m),
    info: (m) => c.info(m),
    warn: (m) => c.warn(m),
    error: (m) => c.error(m),
    setVerbosity: (v) => { c.level = consolaLevel(v); },
  };
}

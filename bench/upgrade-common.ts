// Shared by the upgrade benchmarks: send `upgrade` on a command connection and
// time every answer line until the last one ("Upgrade done" or an error).
import { decodeLine } from "../src/protocol";
import { type Answer, CommandConnection, requestLine, round } from "./harness";

export interface UpgradeMessage { t_ms: number; message: string; error?: boolean }
export interface UpgradeTiming {
  /** performance.now() when the request was written. */
  sentAtPerf: number;
  /** Date.now() when the request was written. */
  sentAtMs: number;
  /** Request to the final answer line. */
  total_ms: number;
  /** Request to the "Master re-executed" progress line (null if none came). */
  reexec_ms: number | null;
  /** The master's own figure in that line ("N ms since the request"), if it gives one. */
  reexec_master_ms: number | null;
  ok: boolean;
  final: string;
  messages: UpgradeMessage[];
}

/** Send `upgrade` (or `upgrade_fleet`) and read answers until one without `wait: true`. */
export async function timedUpgrade(sockPath: string, timeoutMs: number, command: "upgrade" | "upgrade_fleet" = "upgrade"): Promise<UpgradeTiming> {
  const c = await CommandConnection.open(sockPath);
  try {
    const messages: UpgradeMessage[] = [];
    const sentAtMs = Date.now();
    const sentAtPerf = performance.now();
    let line = await c.rawRoundtrip(requestLine(command), timeoutMs);
    const deadline = sentAtPerf + timeoutMs;
    for (;;) {
      const t = performance.now() - sentAtPerf;
      const a = decodeLine(line) as Answer;
      const message = String(a?.message ?? "");
      messages.push({ t_ms: round(t), message, ...(a?.error === true ? { error: true } : {}) });
      if (!a || a.wait !== true) {
        const re = messages.find((m) => /Master re-executed/i.test(m.message));
        const own = re?.message.match(/(\d+(?:\.\d+)?) ms since the request/);
        return {
          sentAtPerf, sentAtMs,
          total_ms: round(t),
          reexec_ms: re ? re.t_ms : null,
          reexec_master_ms: own ? Number(own[1]) : null,
          ok: a?.error !== true && /Upgrade done/i.test(message),
          final: message,
          messages,
        };
      }
      line = await c.nextLine(Math.max(1, deadline - performance.now()));
    }
  } finally {
    c.close();
  }
}

// What each command-socket command does. Every answer says what was asked and
// what is allowed when the request is wrong; nothing here can stop the master
// except the commands that are meant to (die).
import { constants } from "node:os";
import type { Event, UpgradeMode } from "../core/step";
import { MAX_WORKERS } from "../core/step";
import type { Settings, State } from "../core/state";
import { COMMANDS, decodeLine, decodeRequest, MAX_YAML_REQUEST_CHARS, ProtocolError, REPLY_FORMAT_KEY, type Request, toYaml } from "../protocol";
import type { Connection } from "./command-server";

export interface CommandContext {
  state(): State;
  dispatch(e: Event): void;
  report(): unknown;
  /** `state` in Einhorn 1.1.1's layout: Ruby-typed YAML for Einhorn's clients (einhorn-state.ts). */
  einhornState(): string;
  /** `status`: the table (text) or its data (json). */
  status(format: "text" | "json"): string;
  masterPid: number;
  commandName: string | null;
  einhornVersion: string;
  setVerbosity(v: number): void;
  /** Start an upgrade for this client (progress is streamed to it). */
  upgrade(conn: Connection, requestId: unknown, mode: UpgradeMode): void;
  reload(conn: Connection, requestId: unknown): void;
  log(level: "debug" | "info" | "warn" | "error", message: string): void;
}

const COMMAND_LIST = Object.keys(COMMANDS).join(", ");

/** Reference layout: Einhorn's opening line, a blank line, then `name: description` sorted by name. */
export function helpText(): string {
  const lines = Object.entries(COMMANDS).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([c, d]) => `${c}: ${d}`);
  return ["You are speaking to the Einhorn command socket. You can run the following commands:", "", ...lines].join("\n");
}

/**
 * Job-control signals stop workers without ending them: the master would then
 * wait forever for a worker that never exits (escalation to SIGKILL only
 * follows signals that ask a worker to leave), so `signal` and `die` refuse them.
 */
const JOB_CONTROL = new Set(["SIGSTOP", "SIGTSTP", "SIGTTIN", "SIGTTOU"]);

/** Signals `signal`/`die` accept: every named signal except the job-control ones. */
export function parseSignalArg(arg: string): string | null {
  const up = arg.toUpperCase();
  const name = up.startsWith("SIG") ? up : `SIG${up}`;
  let found: string | null = null;
  if (/^\d+$/.test(arg)) found = Object.entries(constants.signals).find(([, n]) => n === Number(arg))?.[0] ?? null;
  else if (name in constants.signals) found = name;
  return found && !JOB_CONTROL.has(found) ? found : null;
}

/**
 * Signals a worker ignores unless it asked for them (WINCH, CHLD, URG) or
 * that only resume it (CONT). As a `die` signal they would leave the master
 * "stopping" for ever, waiting for workers that never leave, so `die`
 * refuses them; `signal` still sends them (Einhorn allows it, and nothing
 * waits on the result).
 */
const IGNORED_BY_DEFAULT = new Set(["SIGWINCH", "SIGCHLD", "SIGCLD", "SIGURG", "SIGCONT"]);

const short = (sig: string) => sig.replace(/^SIG/, "");

type ConfigKey = "number" | "seconds" | "max_unacked" | "max_upgrade_additional" | "signal_timeout" | "ack_timeout" | "upgrade_max_deaths";

/** The settings `config` may change, each with its validation. */
const CONFIG_KEYS: Record<ConfigKey, { describe: string; apply(v: unknown): Partial<Settings> }> = {
  number: { describe: `whole number 1..${MAX_WORKERS}`, apply: (v) => ({ number: wholeNumber(v, 1, MAX_WORKERS) }) },
  seconds: { describe: "number of seconds > 0", apply: (v) => ({ seconds: seconds(v, false) }) },
  max_unacked: { describe: "whole number >= 1", apply: (v) => ({ maxUnacked: wholeNumber(v, 1, 1_000_000) }) },
  max_upgrade_additional: { describe: "whole number >= 0, or null for no cap", apply: (v) => ({ maxUpgradeAdditional: v === null ? null : wholeNumber(v, 0, 1_000_000) }) },
  signal_timeout: { describe: "number of seconds > 0, or null", apply: (v) => ({ signalTimeout: v === null ? null : seconds(v, false) }) },
  ack_timeout: { describe: "number of seconds > 0, or null", apply: (v) => ({ ackTimeout: v === null ? null : seconds(v, false) }) },
  upgrade_max_deaths: { describe: "whole number >= 1", apply: (v) => ({ upgradeMaxDeaths: wholeNumber(v, 1, 1_000_000) }) },
};

class BadValue extends Error {}

function wholeNumber(v: unknown, min: number, max: number): number {
  const n = typeof v === "number" ? v : typeof v === "string" && /^-?\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) throw new BadValue(`${JSON.stringify(v)} is not a whole number from ${min} to ${max}`);
  return n;
}

function seconds(v: unknown, zero: boolean): number {
  const n = typeof v === "number" ? v : typeof v === "string" && v.trim() !== "" ? Number(v) : NaN;
  if (!Number.isFinite(n) || n < 0 || (!zero && n === 0)) throw new BadValue(`${JSON.stringify(v)} is not a number of seconds ${zero ? ">= 0" : "> 0"}`);
  return n;
}

/** `config` args: a YAML/JSON mapping in one argument, or KEY=VALUE pairs. */
export function parseConfigArgs(args: string[]): { patch: Partial<Settings>; changes: string[] } | string {
  if (args.length === 0) return `config needs settings, as KEY=VALUE pairs or a YAML mapping. Known keys: ${Object.keys(CONFIG_KEYS).join(", ")}`;
  let entries: Array<[string, unknown]>;
  if (args.length === 1 && !/^[A-Za-z_]\w*=/.test(args[0]!)) {
    let doc: unknown;
    try { doc = decodeLine(args[0]!, { maxYamlChars: MAX_YAML_REQUEST_CHARS }); } catch (e) { return `config: ${(e as Error).message}`; }
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) return "config: expected a mapping like {number: 4}";
    entries = Object.entries(doc);
  } else {
    entries = [];
    for (const a of args) {
      const eq = a.indexOf("=");
      if (eq < 0) return `config: '${a}' is not KEY=VALUE`;
      const raw = a.slice(eq + 1);
      entries.push([a.slice(0, eq), raw === "null" ? null : raw]);
    }
  }
  if (entries.length === 0) return `config: no settings given. Known settings: ${Object.keys(CONFIG_KEYS).join(", ")}`;
  const patch: Partial<Settings> = {};
  const changes: string[] = [];
  for (const [key, value] of entries) {
    // Own keys only: `constructor`, `toString` and `__proto__` are not settings.
    const def = Object.hasOwn(CONFIG_KEYS, key) ? CONFIG_KEYS[key as ConfigKey] : undefined;
    if (!def) return `config: unknown setting '${key}'. Known settings: ${Object.keys(CONFIG_KEYS).join(", ")}`;
    try {
      Object.assign(patch, def.apply(value));
    } catch (e) {
      if (e instanceof BadValue) return `config: ${key} must be a ${def.describe}; ${e.message}`;
      throw e;
    }
    changes.push(`${key}=${value === null ? "null" : String(value)}`);
  }
  return { patch, changes };
}

/**
 * The longest client value the master keeps or sends back (a ping's
 * request_id, a request's id, ehlo's user), in characters of its JSON form.
 * A ping's longer request_id is kept cut to this with a note; a request with
 * a longer id is refused (docs/security.md, "Limits").
 */
export const MAX_CLIENT_VALUE_CHARS = 256;

/** `v` if its JSON form fits MAX_CLIENT_VALUE_CHARS; else a string of its start, saying it was cut. */
export function boundedValue(v: unknown): { value: unknown; cut: number | null } {
  let json: string;
  try { json = JSON.stringify(v) ?? String(v); } catch { json = String(v); }
  if (json.length <= MAX_CLIENT_VALUE_CHARS) return { value: v, cut: null };
  const text = typeof v === "string" ? v : json;
  return { value: `${text.slice(0, MAX_CLIENT_VALUE_CHARS - 40)}... (cut from ${json.length} characters)`, cut: json.length };
}

export function handleLine(ctx: CommandContext, conn: Connection, line: string): void {
  let req: Request;
  try {
    req = decodeRequest(line);
  } catch (e) {
    const msg = e instanceof ProtocolError ? e.message : String(e);
    const text = msg.startsWith("Could not parse") || msg.startsWith("No \"command\"") || msg.startsWith("\"") ? msg : `Could not parse command: ${msg}`;
    conn.reply(undefined, `${text}. Commands: ${COMMAND_LIST}`, { error: true });
    return;
  }
  // Sticky for the connection (and handed across re-execs with it).
  if (req[REPLY_FORMAT_KEY] === "json") conn.format = "json";
  ctx.log("debug", `Received command ${JSON.stringify(req.command)}${req.args.length ? ` ${JSON.stringify(req.args).slice(0, 200)}` : ""} from ${conn.describe()}`);
  const id = req.id;
  if (id !== undefined && boundedValue(id).cut !== null) {
    // Echoed with every answer and kept while an upgrade runs: not stored, not sent back.
    conn.reply(undefined, `Request refused: its id is ${boundedValue(id).cut} characters of JSON; at most ${MAX_CLIENT_VALUE_CHARS} are allowed`, { error: true });
    return;
  }
  const reply = (message: string) => conn.reply(id, message);
  const refuse = (message: string) => conn.reply(id, message, { error: true });
  const args = req.args;

  switch (req.command) {
    case "worker:ack":
    case "worker:ping": {
      const pid = typeof req.pid === "number" ? req.pid : typeof req.pid === "string" && /^\d+$/.test(req.pid) ? Number(req.pid) : null;
      if (pid === null) {
        ctx.log("warn", `Received ${req.command} without a numeric pid from ${conn.describe()}; ignoring`);
      } else if (req.command === "worker:ack") {
        ctx.dispatch({ type: "ack", pid });
      } else {
        const { value, cut } = boundedValue(req.request_id ?? null);
        if (cut !== null) ctx.log("warn", `worker:ping from pid ${pid}: request_id of ${cut} characters cut to ${MAX_CLIENT_VALUE_CHARS}`);
        ctx.dispatch({ type: "ping", pid, requestId: value });
      }
      // Reference: no answer; the master closes the connection.
      conn.close();
      return;
    }
    case "ehlo": {
      const user = typeof req.user === "string" ? String(boundedValue(req.user).value) : "friend";
      reply(`Welcome, ${user}! You are speaking to Einhorn Master Process ${ctx.masterPid}${ctx.commandName ? ` (${ctx.commandName})` : ""}.\nThis is Einhorn ${ctx.einhornVersion}.`);
      return;
    }
    case "help":
      reply(helpText());
      return;
    case "state": {
      const fmt = args[0] ?? "yaml";
      // Reference: a bare `state` is Einhorn's dump, which its clients load with
      // Psych; `json` and `yaml` are our documented schema (docs/state.md).
      if (args.length === 0) reply(ctx.einhornState());
      else if (fmt === "json") reply(JSON.stringify(ctx.report()));
      else if (fmt === "yaml") reply(toYaml(ctx.report()));
      else refuse(`state takes nothing (Einhorn's layout, for Einhorn's clients), 'json' or 'yaml' (einhorn's own schema), got '${fmt}'`);
      return;
    }
    case "status": {
      const fmt = args[0] ?? "text";
      if (fmt !== "json" && fmt !== "text") { refuse(`status takes 'json' or nothing (the table), got '${args.join(" ")}'`); return; }
      reply(ctx.status(fmt));
      return;
    }
    case "inc": {
      const before = ctx.state().settings.number;
      if (before >= MAX_WORKERS) { refuse(`Already at the maximum of ${MAX_WORKERS} workers`); return; }
      ctx.dispatch({ type: "inc" });
      reply(`Incrementing number of workers from ${before} -> ${ctx.state().settings.number}`);
      return;
    }
    case "dec": {
      const before = ctx.state().settings.number;
      if (before <= 1) { refuse(`Can't decrease number of workers (already at 1). Run 'die' or kill ${ctx.masterPid} if you really want to stop einhorn.`); return; }
      ctx.dispatch({ type: "dec" });
      reply(`Decrementing number of workers from ${before} -> ${ctx.state().settings.number}`);
      return;
    }
    case "set_workers": {
      const n = args[0];
      if (args.length !== 1 || !/^\d+$/.test(n!) || Number(n) < 1 || Number(n) > MAX_WORKERS) {
        refuse(`set_workers takes one whole number from 1 to ${MAX_WORKERS}, got ${args.length ? `'${args.join(" ")}'` : "nothing"}`);
        return;
      }
      const before = ctx.state().settings.number;
      ctx.dispatch({ type: "set-workers", number: Number(n) });
      // Reference wording, including what happens next; for an unchanged count
      // Einhorn answers an empty message, we say so.
      const next = Number(n);
      const then = next > before ? " Will spin up additional workers." : next < before ? " Will gracefully terminate workers." : "";
      reply(`Altering worker count, ${before} -> ${next}.${then}`);
      return;
    }
    case "quieter":
    case "louder": {
      const v = ctx.state().settings.verbosity + (req.command === "quieter" ? 1 : -1);
      const next = Math.min(2, Math.max(0, v));
      ctx.dispatch({ type: "settings", patch: { verbosity: next } });
      ctx.setVerbosity(next);
      reply(`Verbosity set to ${next} (0 debug, 1 info, 2 errors only)`);
      return;
    }
    case "signal": {
      if (args.length === 0) { refuse("signal needs at least one signal name, like 'signal USR1' or 'signal HUP TERM'"); return; }
      const sigs: string[] = [];
      for (const a of args) {
        const s = parseSignalArg(a);
        if (!s) { refuse(`'${a}' is not a signal name; try USR1, USR2, HUP, TERM, INT, QUIT, WINCH (STOP, TSTP, TTIN and TTOU are refused)`); return; }
        sigs.push(s);
      }
      const pids = ctx.state().workers.map((w) => w.pid);
      ctx.dispatch({ type: "signal-workers", signals: sigs });
      reply(`Successfully sent ${sigs.map(short).join(", ")}s to ${pids.length} processes: [${pids.join(", ")}]`);
      return;
    }
    case "die": {
      if (args.length > 1) { refuse(`die takes at most one signal name, got '${args.join(" ")}'`); return; }
      // Without a name, the retire signal (USR2 unless --retire-signal), as a graceful stop.
      const sig = args[0] === undefined ? ctx.state().settings.retireSignal : parseSignalArg(args[0]);
      if (!sig) { refuse(`'${args[0]}' is not a signal name; die takes one, like USR2 (the default) or TERM`); return; }
      if (IGNORED_BY_DEFAULT.has(sig)) {
        refuse(`die ${short(sig)} refused: workers ignore ${short(sig)} unless they handle it, so the master would wait for them for ever; die takes a signal that ends a worker, like USR2 (the default), TERM, INT or QUIT`);
        return;
      }
      const pids = ctx.state().workers.map((w) => w.pid);
      // Answer first: with no worker left the stop exits the master at once.
      reply(`Einhorn is going down! Successfully sent ${short(sig)}s to ${pids.length} processes: [${pids.join(", ")}]`);
      ctx.dispatch({ type: "stop", signal: sig });
      return;
    }
    case "config": {
      const parsed = parseConfigArgs(args);
      if (typeof parsed === "string") { refuse(parsed); return; }
      ctx.dispatch({ type: "settings", patch: parsed.patch });
      reply(`Config updated: ${parsed.changes.join(", ")}`);
      return;
    }
    case "upgrade":
    case "upgrade_fleet":
      ctx.upgrade(conn, id, req.command === "upgrade" ? "smooth" : "fleet");
      return;
    case "reload":
      ctx.reload(conn, id);
      return;
    default:
      refuse(`Unrecognized command: ${JSON.stringify(req.command)}. Commands: ${COMMAND_LIST}`);
  }
}

// What each command-socket command does: one handler per command declared in
// src/command-registry.ts (names, help lines, argument rules). Every answer
// says what was asked and what is allowed when the request is wrong; nothing
// here can stop the master except the commands that are meant to (die).
import type { Event, UpgradeMode } from "../core/step";
import { MAX_WORKERS } from "../core/step";
import type { State } from "../core/state";
import { retireSignalOf } from "../core/pool";
import { type ArgsOf, type CommandName, COMMANDS, commandList, helpText, isCommandName } from "../command-registry";
import { shortSignalName } from "../signal-names";
import { decodeRequest, ProtocolError, REPLY_FORMAT_KEY, type Request, toYaml } from "../protocol";
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
    conn.reply(undefined, `${text}. Commands: ${commandList()}`, { error: true });
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
  const refuse = (message: string) => conn.reply(id, message, { error: true });
  if (!isCommandName(req.command)) {
    refuse(`Unrecognized command: ${JSON.stringify(req.command)}. Commands: ${commandList()}`);
    return;
  }
  run(ctx, req.command, { req, conn, id, reply: (message) => conn.reply(id, message), refuse });
}

/** A request being answered, with its arguments as its command's rule accepted them. */
interface Call<A> {
  name: CommandName;
  req: Request;
  conn: Connection;
  id: unknown;
  args: A;
  reply(message: string): void;
  refuse(message: string): void;
}

type Handler<N extends CommandName> = (ctx: CommandContext, call: Call<ArgsOf<N>>) => void;

/** Check the arguments by the command's rule (refusing with its message), then run its handler. */
function run<N extends CommandName>(ctx: CommandContext, name: N, call: Omit<Call<unknown>, "name" | "args">): void {
  const checked = COMMANDS[name].args.parse(call.req.args);
  if (!checked.ok) { call.refuse(checked.refusal); return; }
  const handler = HANDLERS[name] as Handler<N>;
  handler(ctx, { ...call, name, args: checked.value as ArgsOf<N> });
}

function workerMessage(ctx: CommandContext, { name, req, conn }: Call<unknown>): void {
  const pid = typeof req.pid === "number" ? req.pid : typeof req.pid === "string" && /^\d+$/.test(req.pid) ? Number(req.pid) : null;
  if (pid === null) {
    ctx.log("warn", `Received ${name} without a numeric pid from ${conn.describe()}; ignoring`);
  } else if (name === "worker:ack") {
    ctx.dispatch({ type: "ack", pid });
  } else {
    const { value, cut } = boundedValue(req.request_id ?? null);
    if (cut !== null) ctx.log("warn", `worker:ping from pid ${pid}: request_id of ${cut} characters cut to ${MAX_CLIENT_VALUE_CHARS}`);
    ctx.dispatch({ type: "ping", pid, requestId: value });
  }
  // Reference: no answer; the master closes the connection.
  conn.close();
}

function verbosityStep(ctx: CommandContext, { reply }: Call<unknown>, delta: 1 | -1): void {
  const next = Math.min(2, Math.max(0, ctx.state().settings.verbosity + delta));
  ctx.dispatch({ type: "settings", patch: { verbosity: next } });
  ctx.setVerbosity(next);
  reply(`Verbosity set to ${next} (0 debug, 1 info, 2 errors only)`);
}

/**
 * One handler per command of the registry (src/command-registry.ts), which
 * declares the names, the help lines and the argument rules; a handler gets
 * its arguments already checked. The mapped type makes a missing or extra
 * handler a type error.
 */
const HANDLERS: { [N in CommandName]: Handler<N> } = {
  "worker:ack": workerMessage,
  "worker:ping": workerMessage,
  ehlo(ctx, { req, reply }) {
    const user = typeof req.user === "string" ? String(boundedValue(req.user).value) : "friend";
    reply(`Welcome, ${user}! You are speaking to Einhorn Master Process ${ctx.masterPid}${ctx.commandName ? ` (${ctx.commandName})` : ""}.\nThis is Einhorn ${ctx.einhornVersion}.`);
  },
  help(_ctx, { reply }) {
    reply(helpText());
  },
  state(ctx, { args: format, reply }) {
    // Reference: a bare `state` is Einhorn's dump, which its clients load with
    // Psych; `json` and `yaml` are our documented schema (docs/state.md).
    if (format === null) reply(ctx.einhornState());
    else if (format === "json") reply(JSON.stringify(ctx.report()));
    else reply(toYaml(ctx.report()));
  },
  status(ctx, { args: format, reply }) {
    reply(ctx.status(format));
  },
  inc(ctx, { reply, refuse }) {
    const before = ctx.state().settings.number;
    if (before >= MAX_WORKERS) { refuse(`Already at the maximum of ${MAX_WORKERS} workers`); return; }
    ctx.dispatch({ type: "inc" });
    reply(`Incrementing number of workers from ${before} -> ${ctx.state().settings.number}`);
  },
  dec(ctx, { reply, refuse }) {
    const before = ctx.state().settings.number;
    if (before <= 1) { refuse(`Can't decrease number of workers (already at 1). Run 'die' or kill ${ctx.masterPid} if you really want to stop einhorn.`); return; }
    ctx.dispatch({ type: "dec" });
    reply(`Decrementing number of workers from ${before} -> ${ctx.state().settings.number}`);
  },
  set_workers(ctx, { args: next, reply }) {
    const before = ctx.state().settings.number;
    ctx.dispatch({ type: "set-workers", number: next });
    // Reference wording, including what happens next; for an unchanged count
    // Einhorn answers an empty message, we say so.
    const then = next > before ? " Will spin up additional workers." : next < before ? " Will gracefully terminate workers." : "";
    reply(`Altering worker count, ${before} -> ${next}.${then}`);
  },
  quieter: (ctx, call) => verbosityStep(ctx, call, 1),
  louder: (ctx, call) => verbosityStep(ctx, call, -1),
  signal(ctx, { args: sigs, reply }) {
    const pids = ctx.state().workers.map((w) => w.pid);
    ctx.dispatch({ type: "signal-workers", signals: sigs });
    reply(`Successfully sent ${sigs.map(shortSignalName).join(", ")}s to ${pids.length} processes: [${pids.join(", ")}]`);
  },
  die(ctx, { args, reply }) {
    // Without a name, the retire signal (USR2 unless --retire-signal), as a graceful stop.
    // (Each worker gets its own generation's retire signal; the answer names the live one's.)
    const sig = args ?? retireSignalOf(ctx.state(), ctx.state().version);
    const pids = ctx.state().workers.map((w) => w.pid);
    // Answer first: with no worker left the stop exits the master at once.
    reply(`Einhorn is going down! Successfully sent ${shortSignalName(sig)}s to ${pids.length} processes: [${pids.join(", ")}]`);
    ctx.dispatch(args ? { type: "stop", signal: args } : { type: "stop" });
  },
  config(ctx, { args: { patch, changes }, reply }) {
    ctx.dispatch({ type: "settings", patch });
    reply(`Config updated: ${changes.join(", ")}`);
  },
  upgrade(ctx, { conn, id }) {
    ctx.upgrade(conn, id, "smooth");
  },
  upgrade_fleet(ctx, { conn, id }) {
    ctx.upgrade(conn, id, "fleet");
  },
  reload(ctx, { conn, id }) {
    ctx.reload(conn, id);
  },
};

// Talking to the master: the two messages a worker sends (worker:ack and
// worker:ping), over the descriptor the master connected for us (einhorn -g,
// EINHORN_SOCK_FD) or over a fresh connection to EINHORN_SOCK_PATH. The master
// reads one line, acts, and closes the connection without answering; any
// answer is therefore an error message (permission denied, too many
// connections, …) and becomes the rejection.
import { closeSync, fstatSync, writeSync } from "node:fs";
import net from "node:net";
import { ENV, escapeLine, unescapeLine } from "../protocol-env";
import { readWorkerEnv, isWorkerEnv, type Env, type WorkerEnv } from "./env";
import { EinhornWorkerError, errorWithCode } from "./errors";
import { probeSocketInode } from "./socket-probe";

export interface WorkerMessage {
  command: "worker:ack" | "worker:ping";
  pid: number;
  request_id?: unknown;
  [key: string]: unknown;
}

export interface SendOptions {
  env?: Env;
  /** Give up on a master that neither closes nor answers within this time. Default 10 s. */
  timeoutMs?: number;
  /**
   * Refuse to send when the master is not this process's parent (default true):
   * the master ignores messages whose pid is not one of its workers, so a
   * wrapper that forks instead of exec'ing would otherwise wait forever for an ACK.
   */
  checkParent?: boolean;
}

/** How the message reached the master. */
export type Route = "fd" | "path";

/** One line as reference clients write it: JSON (valid YAML) with `%` and newline escaped. */
export function encodeWorkerMessage(msg: WorkerMessage): string {
  return `${escapeLine(JSON.stringify(msg))}\n`;
}

/** EINHORN_SOCK_FD values already used: the master closes its end after one message. */
const usedSockFds = new Set<number>();

/**
 * Is `fd` still the connection the master made for us? The descriptor may have
 * been closed by other code and its number reused (for a listening socket, a
 * file, …); writing a command line into that would be worse than not sending.
 * It must still be a connected UNIX stream socket. (The peer's pid, which
 * SO_PEERCRED would give, is out of reach of Node APIs: a number reused for
 * another connected UNIX socket is not detected.)
 */
function isMasterConnection(fd: number): boolean {
  try {
    if (!fstatSync(fd).isSocket()) return false;
    const d = probeSocketInode(fstatSync(fd).ino);
    return d !== null && d.family === "unix" && d.stream && !d.listening && d.connected;
  } catch {
    return false;
  }
}

function writeAll(fd: number, data: Buffer): void {
  for (let off = 0; off < data.length;) off += writeSync(fd, data, off, data.length - off);
}

function viaFd(we: WorkerEnv, line: string): void {
  const fd = we.sockFd!;
  usedSockFds.add(fd);
  if (!isMasterConnection(fd)) {
    throw new EinhornWorkerError(`${ENV.SOCK_FD}=${fd} is no longer a connection to the master (pid ${we.masterPid}); was it closed by other code?`);
  }
  try {
    writeAll(fd, Buffer.from(line));
  } catch (e) {
    throw new EinhornWorkerError(`writing to the command socket ${ENV.SOCK_FD}=${fd} failed: ${(e as Error).message}`, { cause: e });
  } finally {
    try { closeSync(fd); } catch { /* already gone */ }
  }
}

/**
 * The text of a refusal: the master answers in YAML (`message: ...`); the
 * worker helper carries no YAML parser, and only wants the words.
 */
function refusalText(answer: string): string {
  const text = unescapeLine(answer.split("\n")[0] ?? "").trim();
  const m = /^message:\s*(.*)$/m.exec(text);
  if (!m) return text || answer.trim();
  const v = m[1]!.trim();
  if (v.startsWith('"')) { try { return String(JSON.parse(v)); } catch { /* as written */ } }
  if (v.startsWith("'") && v.endsWith("'")) return v.slice(1, -1).replace(/''/g, "'");
  return v;
}

function viaPath(path: string, line: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let answer = "";
    let settled = false;
    let closeConnection = () => {};
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => {
      finish(new EinhornWorkerError(`the master did not close the command connection (${ENV.SOCK_PATH}=${path}) within ${timeoutMs} ms`));
      closeConnection();
    }, timeoutMs);
    const closed = (unsent: boolean) => {
      if (unsent) return finish(new EinhornWorkerError(`the master closed the command connection (${path}) before the message was sent`));
      if (answer.trim()) return finish(new EinhornWorkerError(`the master refused the message: ${refusalText(answer)}`));
      finish();
    };
    const cannotConnect = (e: Error) => finish(new EinhornWorkerError(`cannot connect to the command socket ${ENV.SOCK_PATH}=${path}: ${errorWithCode(e)}`, { cause: e }));

    if (typeof Bun === "undefined") {
      // Node: node:net. The master reads one line and closes; end() after the write is our half-close.
      let wrote = false;
      const sock = net.createConnection({ path });
      closeConnection = () => sock.destroy();
      sock.setEncoding("utf8");
      sock.on("connect", () => { sock.write(line, () => { wrote = true; }); });
      sock.on("data", (d: string) => { answer += d; });
      sock.on("error", (e) => { if (!wrote) cannotConnect(e); else finish(new EinhornWorkerError(`command socket ${path}: ${errorWithCode(e)}`, { cause: e })); });
      sock.on("close", () => closed(!wrote));
      return;
    }
    // Bun: Bun.connect. Bun's node:net UNIX client reports ECONNRESET when the
    // master answers and closes at once, losing the refusal's text.
    let pending = Buffer.from(line);
    const pump = (s: { write(b: Buffer): number }) => {
      const n = s.write(pending);
      pending = pending.subarray(Math.max(0, n));
    };
    Bun.connect({
      unix: path,
      socket: {
        open(s) { closeConnection = () => s.end(); pump(s); },
        drain(s) { if (pending.length) pump(s); },
        data(_s, d) { answer += d.toString(); },
        close() { closed(pending.length > 0); },
        error(_s, e) { finish(new EinhornWorkerError(`command socket ${path}: ${errorWithCode(e)}`, { cause: e })); },
        connectError(_s, e) { cannotConnect(e); },
      },
    }).catch(cannotConnect);
  });
}

/**
 * Send one message to the master. Uses EINHORN_SOCK_FD the first time it is
 * available (then closes it), EINHORN_SOCK_PATH otherwise. Resolves once the
 * master has taken the message (it closed the connection, or the line was
 * written to the pre-connected descriptor).
 */
export async function sendToMaster(msg: WorkerMessage, opts: SendOptions = {}): Promise<Route> {
  const env = opts.env ?? process.env;
  const we = readWorkerEnv(env);
  if ((opts.checkParent ?? true) && process.ppid !== we.masterPid) {
    throw new EinhornWorkerError(
      `${ENV.MASTER_PID} is ${we.masterPid}, but this process's parent is ${process.ppid}: either this is a child of a worker ` +
        `rather than the worker itself (a wrapper that forks instead of exec'ing?), or the master has exited. ` +
        `The master ignores ${msg.command} from a pid it did not start.`,
    );
  }
  const line = encodeWorkerMessage(msg);
  let fdProblem: Error | null = null;
  if (we.sockFd !== null && !usedSockFds.has(we.sockFd)) {
    try {
      viaFd(we, line);
      return "fd";
    } catch (e) {
      fdProblem = e as Error;
    }
  }
  if (we.sockPath === null) {
    throw fdProblem ?? new EinhornWorkerError(`no way to reach the master: neither ${ENV.SOCK_PATH} nor an unused ${ENV.SOCK_FD} is set`);
  }
  await viaPath(we.sockPath, line, opts.timeoutMs ?? 10_000);
  return "path";
}

let acking: Promise<boolean> | null = null;

/**
 * Tell the master this worker is up (`worker:ack`). Outside einhorn this is a
 * no-op that resolves to false, so the same program runs in development;
 * under einhorn it resolves to true once the master has the message, and
 * rejects with an EinhornWorkerError when it cannot be delivered. A second
 * call returns the first call's promise (the master would ignore a second ACK);
 * after a failure, a new call tries again.
 */
export function ack(opts: SendOptions = {}): Promise<boolean> {
  if (!isWorkerEnv(opts.env ?? process.env)) return Promise.resolve(false);
  if (acking) return acking;
  const p = sendToMaster({ command: "worker:ack", pid: process.pid }, opts).then(() => true);
  acking = p;
  p.catch(() => { if (acking === p) acking = null; });
  return p;
}

/**
 * Record a check-in with the master (`worker:ping`): it stores the time and
 * `requestId` on this worker, visible in `state`. Same delivery and
 * outside-einhorn behaviour as ack().
 */
export function ping(requestId: unknown = null, opts: SendOptions = {}): Promise<boolean> {
  if (!isWorkerEnv(opts.env ?? process.env)) return Promise.resolve(false);
  return sendToMaster({ command: "worker:ping", pid: process.pid, request_id: requestId }, opts).then(() => true);
}

/** Forget earlier ACKs and used descriptors (tests only). */
export function resetMasterLinkForTests(): void {
  acking = null;
  usedSockFds.clear();
}

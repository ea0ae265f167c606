// The shell's side of the command socket: one connection, requests tagged
// with increasing ids, answers routed back by `request_id` and streamed to the
// caller as they arrive (`wait: true` means more follow for that request).
import type { Socket } from "bun";
import { decodeLine, encodeMessage, REPLY_FORMAT_KEY, type Response } from "../protocol";
import { isFailure, toResponse } from "./shell-script";
import { hasRawBytes, osBytes } from "../../ffi/os-string";

/** Longest answer line accepted (a state dump of a very large pool stays far below). */
const MAX_ANSWER_BYTES = 64 * 1024 * 1024;
/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_UNIX_PATH_BYTES = 107;

/**
 * Who serves the socket (SO_PEERCRED: the process that listens on it, as the
 * kernel saw it when it did). Anyone who can write to the directory can put
 * a socket at the path a shell will use, and would then read the commands
 * (and answer what it likes). So the shell talks only to a socket served by
 * the user's own uid or by root, or by a uid named with --trust-uid.
 * Returns the refusal, or null.
 */
async function checkServer(socket: unknown, path: string, trustUid: number | null): Promise<ConnectError | null> {
  const fd = (socket as { fd?: number } | null)?.fd;
  const me = process.geteuid?.() ?? -1;
  let peer: { pid: number; uid: number };
  try {
    if (typeof fd !== "number" || fd < 0) throw new Error("the connection has no descriptor");
    const { getPeerCred } = await import("../../ffi/socket");
    peer = getPeerCred(fd);
  } catch (e) {
    return new ConnectError(path, "EUNTRUSTED", `cannot tell who serves the socket (${(e as Error).message}); refusing to talk to it`, { cause: e });
  }
  if (peer.uid === me || peer.uid === 0 || peer.uid === trustUid) return null;
  return new ConnectError(
    path,
    "EUNTRUSTED",
    `the socket is served by uid ${peer.uid} (pid ${peer.pid}), not by you (uid ${me}) or root; refusing to talk to it. ` +
      `If you trust uid ${peer.uid}, pass --trust-uid ${peer.uid}`,
  );
}

/** The master could not be reached at all. */
export class ConnectError extends Error {
  override name = "ConnectError";
  constructor(readonly path: string, readonly code: string, reason: string, options?: ErrorOptions) {
    super(`cannot connect to the einhorn master at ${path}: ${reason}`, options);
  }
}

/** The connection ended (or broke) while an answer was still due. */
export class ConnectionLost extends Error {
  override name = "ConnectionLost";
}

const REASONS: Record<string, string> = {
  ENOENT: "no such socket (ENOENT); is the master running, and with this -d/-c?",
  ECONNREFUSED: "nothing is accepting connections there (ECONNREFUSED); a stale socket, or not a socket at all",
  EACCES: "permission denied (EACCES)",
  EPERM: "permission denied (EPERM)",
  ENOTDIR: "a component of the path is not a directory (ENOTDIR)",
  ENOTSOCK: "not a socket (ENOTSOCK)",
  EAGAIN: "the master's accept queue is full (EAGAIN); try again",
};

function describeConnectError(path: string, e: unknown): ConnectError {
  const code = typeof (e as { code?: unknown })?.code === "string" ? (e as { code: string }).code : "EUNKNOWN";
  const reason = REASONS[code] ?? `${code === "EUNKNOWN" ? "" : `${code}: `}${(e as Error)?.message ?? String(e)}`;
  return new ConnectError(path, code, reason, { cause: e });
}

export interface Answer {
  /** Every message for the request, in order; the last one is final. */
  messages: Response[];
  failed: boolean;
}

interface Pending {
  id: number;
  command: string;
  messages: Response[];
  failed: boolean;
  onMessage: (msg: Response, failed: boolean) => void;
  resolve: (a: Answer) => void;
  reject: (e: Error) => void;
}

export interface ClientEvents {
  /** A message that belongs to no request in flight (no request_id and nothing pending). */
  onUnsolicited?(msg: Response): void;
  /** The connection is gone; `pendingCount` requests were still waiting. */
  onClose?(reason: string, pendingCount: number): void;
}

type Sock = Socket<undefined>;

/**
 * A path Bun.connect can be given for `path`. Bun re-encodes a path as UTF-8,
 * so one holding raw non-UTF-8 bytes (ffi/os-string.ts) is reached through
 * /proc/self/fd/N of an O_PATH descriptor opened on its exact bytes (Linux
 * connects through that link to the socket itself). libc loads only then.
 */
async function connectablePath(path: string): Promise<{ path: string; release(): void }> {
  if (!hasRawBytes(path)) return { path, release() {} };
  const { open, O_CLOEXEC } = await import("../../ffi/process");
  const { close } = await import("../../ffi/socket");
  const O_PATH = 0o10000000;
  const fd = open(path, O_PATH | O_CLOEXEC);
  return { path: `/proc/self/fd/${fd}`, release: () => close(fd) };
}

export class ShellClient {
  private socket: Sock | null = null;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private out: Buffer[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Ids of requests given up on: their late answers are dropped quietly. */
  private readonly abandoned = new Set<number>();
  private closedReason: string | null = null;

  private constructor(private readonly events: ClientEvents) {}

  static async connect(path: string, events: ClientEvents = {}, opts: { trustUid?: number | null } = {}): Promise<ShellClient> {
    const bytes = osBytes(path).length;
    if (bytes > MAX_UNIX_PATH_BYTES) {
      throw new ConnectError(path, "ENAMETOOLONG", `the path is ${bytes} bytes; a UNIX socket path may have at most ${MAX_UNIX_PATH_BYTES}`);
    }
    const client = new ShellClient(events);
    let via: { path: string; release(): void } = { path, release() {} };
    try {
      via = await connectablePath(path);
      client.socket = await Bun.connect({
        unix: via.path,
        socket: {
          data: (_s, d) => client.receive(d),
          drain: () => client.flush(),
          close: () => client.closed("the master closed the connection"),
          error: (_s, e) => client.closed(`the connection broke: ${e.message}`),
        },
      });
    } catch (e) {
      throw describeConnectError(path, e);
    } finally {
      via.release();
    }
    const untrusted = await checkServer(client.socket, path, opts.trustUid ?? null);
    if (untrusted) {
      client.close();
      throw untrusted;
    }
    return client;
  }

  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  /**
   * Send one request; `onMessage` sees every answer as it arrives. Resolves
   * with all of them after the final one; rejects with ConnectionLost if the
   * connection ends first.
   */
  request(command: string, args: string[], extra: Record<string, unknown> = {}, onMessage: Pending["onMessage"] = () => {}): { id: number; answer: Promise<Answer> } {
    const id = this.nextId++;
    const answer = new Promise<Answer>((resolve, reject) => {
      if (this.closedReason !== null) {
        reject(new ConnectionLost(`${this.closedReason} before '${command}' could be sent`));
        return;
      }
      this.pending.set(id, { id, command, messages: [], failed: false, onMessage, resolve, reject });
      // JSON is YAML to any Einhorn master; ours then answers in JSON too, so
      // neither side needs the YAML library (an Einhorn master ignores the key).
      this.write(Buffer.from(encodeMessage({ command, args, id, ...extra, [REPLY_FORMAT_KEY]: "json" }, "json")));
    });
    return { id, answer };
  }

  /** Stop waiting for a request: it resolves now with what arrived so far (marked failed). */
  abandon(id: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    this.abandoned.add(id);
    p.resolve({ messages: p.messages, failed: true });
  }

  close(): void {
    if (this.socket && this.closedReason === null) {
      this.closedReason = "closed by the shell";
      this.socket.end();
    }
  }

  private write(data: Buffer): void {
    if (!this.socket) return;
    if (this.out.length === 0) {
      const n = this.socket.write(data);
      if (n === data.length) return;
      data = data.subarray(Math.max(0, n));
    }
    this.out.push(data);
  }

  private flush(): void {
    while (this.out.length && this.socket && this.closedReason === null) {
      const head = this.out[0]!;
      const n = this.socket.write(head);
      if (n < head.length) {
        this.out[0] = head.subarray(Math.max(0, n));
        return;
      }
      this.out.shift();
    }
  }

  private receive(data: Buffer): void {
    let start = 0;
    for (let nl = data.indexOf(10, start); nl >= 0; nl = data.indexOf(10, start)) {
      this.chunks.push(data.subarray(start, nl));
      const line = Buffer.concat(this.chunks).toString("utf8").replace(/\r$/, "");
      this.chunks = [];
      this.buffered = 0;
      start = nl + 1;
      if (line.trim() !== "") this.handleLine(line);
    }
    if (start < data.length) {
      const rest = Buffer.from(data.subarray(start));
      this.buffered += rest.length;
      if (this.buffered > MAX_ANSWER_BYTES) {
        this.closed(`the master sent an answer longer than ${MAX_ANSWER_BYTES} bytes`);
        this.socket?.end();
        return;
      }
      this.chunks.push(rest);
    }
  }

  private handleLine(line: string): void {
    let msg: Response | null;
    try {
      msg = toResponse(decodeLine(line));
    } catch (e) {
      msg = null;
    }
    // An answer we cannot read still tells the user something: show it raw, as a failure.
    if (!msg) msg = { message: `(unreadable answer from the master) ${line}`, error: true };
    const p = this.route(msg);
    if (!p) {
      if (msg.request_id !== undefined && typeof msg.request_id === "number" && this.abandoned.has(msg.request_id)) {
        if (!msg.wait) this.abandoned.delete(msg.request_id);
        return;
      }
      this.events.onUnsolicited?.(msg);
      return;
    }
    const failed = isFailure(msg);
    p.failed ||= failed;
    p.messages.push(msg);
    p.onMessage(msg, failed);
    if (!msg.wait) {
      this.pending.delete(p.id);
      p.resolve({ messages: p.messages, failed: p.failed });
    }
  }

  /** The request an answer belongs to. Answers without request_id (parse errors, refusals) go to the oldest one waiting. */
  private route(msg: Response): Pending | undefined {
    if (msg.request_id !== undefined && msg.request_id !== null) {
      const id = typeof msg.request_id === "number" ? msg.request_id : Number(msg.request_id);
      return this.pending.get(id);
    }
    return this.pending.values().next().value;
  }

  private closed(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) p.reject(new ConnectionLost(`${reason} before answering '${p.command}'`));
    this.events.onClose?.(reason, waiting.length);
  }
}

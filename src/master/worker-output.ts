// --worker-output prefix|json: the master captures each worker's stdout and
// stderr and writes every line tagged with the worker's pid and index (or as
// a JSON object). The default, `inherit`, is Einhorn's: workers write to the
// master's own stdout/stderr and nothing passes through the master.
//
// Each worker gets two socketpairs (one for stdout, one for stderr) instead
// of pipes: the master's ends are sockets, which Bun reads with
// Bun.connect({ fd }) on its event loop, and which the next image of the
// master adopts the same way after a re-exec (their descriptors are handed
// over like the command connections). The master always reads at once, so a
// worker never blocks on its output; when the master's own stdout/stderr is
// slow, lines are dropped in LineSink, counted and reported.
import type { Socket } from "bun";
import { setCloexec, socketpair, close as closeFd } from "../../ffi/socket";
import { hasUnsafe, terminalSafe } from "../terminal-text";
import type { LineSink } from "./line-sink";

export type StreamName = "stdout" | "stderr";

/**
 * A longer line is written in pieces of this size, each marked as a piece
 * (`partial: true` in JSON, `[WORKER pid #index +]` as text), so one runaway
 * line cannot make the master buffer without bound.
 */
export const MAX_LINE_BYTES = 64 * 1024;

/** Splits a byte stream into lines; keeps the unfinished tail. */
export class LineSplitter {
  private tail: Buffer[] = [];
  private tailBytes = 0;

  constructor(initial?: Buffer) {
    if (initial?.length) { this.tail = [initial]; this.tailBytes = initial.length; }
  }

  /**
   * Complete lines in `data` (without "\n"), valid until the caller returns
   * (they may be views into `data`). A line longer than MAX_LINE_BYTES
   * comes out in MAX_LINE_BYTES pieces marked `partial` (continued in the next
   * one); its last piece is not.
   */
  feed(data: Buffer): Array<{ line: Buffer; partial: boolean }> {
    const out: Array<{ line: Buffer; partial: boolean }> = [];
    let start = 0;
    for (;;) {
      const nl = data.indexOf(10, start);
      let piece = data.subarray(start, nl < 0 ? data.length : nl);
      while (this.tailBytes + piece.length > MAX_LINE_BYTES) {
        const take = MAX_LINE_BYTES - this.tailBytes;
        out.push({ line: Buffer.concat([...this.tail, piece.subarray(0, take)]), partial: true });
        this.tail = [];
        this.tailBytes = 0;
        piece = piece.subarray(take);
      }
      if (nl < 0) {
        if (piece.length) { this.tail.push(Buffer.from(piece)); this.tailBytes += piece.length; }
        return out;
      }
      // A view into `data` when the line is whole in it: callers use it before they return.
      out.push({ line: this.tailBytes ? Buffer.concat([...this.tail, piece]) : piece, partial: false });
      this.tail = [];
      this.tailBytes = 0;
      start = nl + 1;
    }
  }

  /** The unfinished tail (at end of stream it is written as a line of its own). */
  rest(): Buffer {
    const b = Buffer.concat(this.tail);
    this.tail = [];
    this.tailBytes = 0;
    return b;
  }
}

/** What goes before a prefixed line: `[WORKER pid #index] `, ` +]` for a partial line, and with `stamps` a UTC ISO 8601 time in front. */
function prefixTag(w: { pid: number; index: number }, partial: boolean, stamps: boolean, now: Date): Buffer {
  return Buffer.from(`${stamps ? `${now.toISOString()} ` : ""}[WORKER ${w.pid} #${w.index}${partial ? " +" : ""}] `);
}

/** Where a line's text ends: a CRLF line ending loses its CR. */
const textEnd = (line: Buffer): number => (line.length && line[line.length - 1] === 13 ? line.length - 1 : line.length);

const NEWLINE = Buffer.from("\n");

/** One captured line as the master writes it. `stamps`: put a UTC ISO 8601 time in front (text). */
export function formatLine(mode: "prefix" | "json", w: { pid: number; index: number }, stream: StreamName, line: Buffer, partial: boolean, stamps: boolean, now: Date): Buffer {
  if (mode === "json") {
    const o: Record<string, unknown> = { time: now.toISOString(), role: "worker", pid: w.pid, index: w.index, stream, message: line.toString("utf8", 0, textEnd(line)) };
    if (partial) o.partial = true;
    return Buffer.from(`${JSON.stringify(o)}\n`);
  }
  return Buffer.concat([prefixTag(w, partial, stamps, now), prefixBody(line, textEnd(line)), NEWLINE]);
}

/**
 * A prefixed line's text as the master writes it: the bytes themselves when
 * they are printable ASCII and tab (most lines, copied without decoding),
 * otherwise decoded and neutralised by terminalSafe, so that no worker can
 * move the cursor, retitle the terminal or reorder text to forge a line of
 * the master's (see src/terminal-text.ts). `end`: the line without its CR.
 */
export function prefixBody(line: Buffer, end: number): Buffer {
  for (let i = 0; i < end; i++) {
    const b = line[i]!;
    if ((b < 0x20 && b !== 9) || b >= 0x7f) {
      const text = line.toString("utf8", 0, end);
      // Bytes that are not UTF-8 (a lone 0x9b is CSI to a terminal in 8-bit mode) go out as U+FFFD.
      return hasUnsafe(text) || text.includes("\ufffd") ? Buffer.from(terminalSafe(text)) : line.subarray(0, end);
    }
  }
  return line.subarray(0, end);
}

/** A captured stream as handed to the next master image. */
export interface HandedStream {
  pid: number;
  index: number;
  stream: StreamName;
  fd: number;
  /** Unfinished line (base64). */
  partial: string;
}

/** The descriptors of one worker's capture, from before its spawn until it is attached. */
export interface PreparedCapture {
  /** The worker's ends: its stdout and stderr. */
  child: [number, number];
  /** The master's ends. */
  master: [number, number];
}

interface Reader {
  pid: number;
  index: number;
  stream: StreamName;
  fd: number;
  split: LineSplitter;
  socket: Socket<undefined> | null;
  done: boolean;
}

export interface WorkerOutputOptions {
  mode: "prefix" | "json";
  stamps: boolean;
  sinks: Record<StreamName, LineSink>;
  log(level: "debug" | "warn" | "error", message: string): void;
}

export class WorkerOutput {
  private readonly readers = new Set<Reader>();
  linesCaptured = 0;

  constructor(private readonly o: WorkerOutputOptions) {}

  /** Socketpairs for a worker about to be spawned (close-on-exec; the spawner dup2s the child ends onto 1 and 2). */
  prepare(): PreparedCapture {
    const out = socketpair();
    let err: [number, number];
    try {
      err = socketpair();
    } catch (e) {
      closeFd(out[0]); closeFd(out[1]);
      throw e;
    }
    return { child: [out[1], err[1]], master: [out[0], err[0]] };
  }

  /** The spawn failed: close everything. */
  abandon(p: PreparedCapture): void {
    for (const fd of [...p.child, ...p.master]) { try { closeFd(fd); } catch { /* closed */ } }
  }

  /** The worker runs: drop our copies of its ends and start reading ours. */
  attach(p: PreparedCapture, pid: number, index: number): void {
    for (const fd of p.child) { try { closeFd(fd); } catch { /* closed */ } }
    this.read({ pid, index, stream: "stdout", fd: p.master[0], split: new LineSplitter(), socket: null, done: false });
    this.read({ pid, index, stream: "stderr", fd: p.master[1], split: new LineSplitter(), socket: null, done: false });
  }

  /** Streams handed over by the previous image of the master. */
  /** Take over the streams a previous image read; one that is unusable is skipped, reported by `onLost`. */
  adopt(streams: HandedStream[], onLost: (h: HandedStream, e: Error) => void = () => {}): void {
    for (const h of streams) {
      try {
        setCloexec(h.fd, true);
      } catch (e) {
        onLost(h, e as Error);
        continue;
      }
      this.read({ pid: h.pid, index: h.index, stream: h.stream, fd: h.fd, split: new LineSplitter(Buffer.from(h.partial, "base64")), socket: null, done: false });
    }
  }

  private emit(r: Reader, line: Buffer, partial: boolean, now = new Date()): void {
    this.linesCaptured++;
    this.o.sinks[r.stream].push(formatLine(this.o.mode, r, r.stream, line, partial, this.o.stamps, now));
  }

  /**
   * The lines of one chunk read, formatted into one buffer and queued as one
   * group (one allocation and one queue entry per chunk, not per line; the
   * group is kept or dropped whole, and its lines counted either way).
   */
  private emitChunk(r: Reader, lines: Array<{ line: Buffer; partial: boolean }>): void {
    if (lines.length === 0) return;
    const now = new Date();
    if (this.o.mode === "json") {
      if (lines.length === 1) { this.emit(r, lines[0]!.line, lines[0]!.partial, now); return; }
      this.linesCaptured += lines.length;
      this.o.sinks[r.stream].push(Buffer.concat(lines.map((l) => formatLine("json", r, r.stream, l.line, l.partial, this.o.stamps, now))), false, lines.length);
      return;
    }
    // formatLine's prefixed lines, laid out in one buffer for the whole chunk.
    const plainTag = prefixTag(r, false, this.o.stamps, now);
    const partTag = prefixTag(r, true, this.o.stamps, now);
    const bodies = lines.map((l) => prefixBody(l.line, textEnd(l.line)));
    let size = 0;
    lines.forEach((l, i) => { size += (l.partial ? partTag : plainTag).length + bodies[i]!.length + 1; });
    const out = Buffer.allocUnsafe(size);
    let at = 0;
    lines.forEach((l, i) => {
      at += (l.partial ? partTag : plainTag).copy(out, at);
      at += bodies[i]!.copy(out, at);
      out[at++] = 10;
    });
    this.linesCaptured += lines.length;
    this.o.sinks[r.stream].push(out.subarray(0, at), false, lines.length);
  }

  private finish(r: Reader): void {
    if (r.done) return;
    r.done = true;
    const rest = r.split.rest();
    if (rest.length) this.emit(r, rest, false);
    this.readers.delete(r);
  }

  private read(r: Reader): void {
    this.readers.add(r);
    const connect = Bun.connect as unknown as (o: { fd: number; socket: Record<string, unknown> }) => Promise<Socket<undefined>>;
    connect({
      fd: r.fd,
      socket: {
        // One timestamp per chunk read: its lines arrived together.
        data: (_s: unknown, d: Buffer) => this.emitChunk(r, r.split.feed(d)),
        end: () => this.finish(r),
        close: () => this.finish(r),
        error: (_s: unknown, e: Error) => { this.o.log("debug", `Output of worker ${r.pid} (${r.stream}): ${e.message}`); this.finish(r); },
      },
    }).then((s) => {
      r.socket = s;
      if (r.done) s.end();
    }, (e) => {
      this.o.log("error", `Cannot read the ${r.stream} of worker ${r.pid} (fd ${r.fd}): ${(e as Error).message}`);
      this.readers.delete(r);
      try { closeFd(r.fd); } catch { /* closed */ }
    });
  }

  /** Streams still open, to hand to the next image; their descriptors are made inheritable. */
  handOver(): HandedStream[] {
    const out: HandedStream[] = [];
    for (const r of this.readers) {
      if (r.done || !r.socket) continue;
      setCloexec(r.fd, false);
      out.push({ pid: r.pid, index: r.index, stream: r.stream, fd: r.fd, partial: r.split.rest().toString("base64") });
    }
    return out;
  }

  /** The exec failed: the streams stay ours (the partial lines were moved into the hand-over; put them back). */
  takeBack(handed: HandedStream[]): void {
    for (const h of handed) {
      setCloexec(h.fd, true);
      for (const r of this.readers) if (r.fd === h.fd) r.split = new LineSplitter(Buffer.from(h.partial, "base64"));
    }
  }
}

/** What the master hands over about capture across its re-exec. */
export interface HandedCapture {
  streams: HandedStream[];
  /** Lines queued for the master's stdout/stderr and not yet written (base64 each). */
  queued: Record<StreamName, string[]>;
  dropped: number;
  /** Of those, dropped lines not reported in the log yet, per sink. */
  unreported?: Record<StreamName, number>;
  captured: number;
}

/**
 * Everything --worker-output needs in the master: the two sinks (its own
 * stdout and stderr), the readers, and the hand-over across re-exec. The
 * master's own log lines go through the stderr sink too (see logWrite).
 */
export class OutputCapture {
  readonly sinks: Record<StreamName, LineSink>;
  readonly output: WorkerOutput;
  private droppedBefore = 0;

  constructor(mode: "prefix" | "json", stamps: boolean, makeSink: (fd: number, stream: StreamName) => LineSink, log: WorkerOutputOptions["log"]) {
    this.sinks = { stdout: makeSink(1, "stdout"), stderr: makeSink(2, "stderr") };
    this.output = new WorkerOutput({ mode, stamps, sinks: this.sinks, log });
  }

  /** The master's log lines: through the stderr sink, ahead of worker lines when it is full. */
  logWrite = (line: string): void => {
    this.sinks.stderr.push(Buffer.from(line), true);
  };

  /** Dropped lines not reported yet, per sink (for the last words before exit). */
  takeUnreported(): Record<StreamName, number> {
    return { stdout: this.sinks.stdout.takeUnreported(), stderr: this.sinks.stderr.takeUnreported() };
  }

  /** Write what the sinks take now; returns the bytes still queued. */
  flush(): number {
    this.sinks.stdout.flush();
    this.sinks.stderr.flush();
    return this.sinks.stdout.queuedBytes + this.sinks.stderr.queuedBytes;
  }

  get droppedLines(): number {
    return this.droppedBefore + this.sinks.stdout.droppedTotal + this.sinks.stderr.droppedTotal;
  }

  get capturedLines(): number {
    return this.output.linesCaptured;
  }

  handOver(): HandedCapture {
    return {
      streams: this.output.handOver(),
      queued: {
        stdout: this.sinks.stdout.takeQueued().map((b) => b.toString("base64")),
        stderr: this.sinks.stderr.takeQueued().map((b) => b.toString("base64")),
      },
      dropped: this.droppedLines,
      unreported: { stdout: this.sinks.stdout.takeUnreported(), stderr: this.sinks.stderr.takeUnreported() },
      captured: this.capturedLines,
    };
  }

  /** The exec failed: keep going as before. */
  takeBack(h: HandedCapture): void {
    this.output.takeBack(h.streams);
    for (const s of ["stdout", "stderr"] as const) this.sinks[s].addUnreported(h.unreported?.[s] ?? 0);
    for (const s of ["stdout", "stderr"] as const) for (const b of h.queued[s]) this.sinks[s].push(Buffer.from(b, "base64"), true);
  }

  /** In the next image: write what was queued, then read the handed streams. */
  adopt(h: HandedCapture, onLost?: (s: HandedStream, e: Error) => void): void {
    for (const s of ["stdout", "stderr"] as const) for (const b of h.queued[s] ?? []) this.sinks[s].push(Buffer.from(b, "base64"), true);
    this.droppedBefore = h.dropped ?? 0;
    for (const s of ["stdout", "stderr"] as const) this.sinks[s].addUnreported(h.unreported?.[s] ?? 0);
    this.output.linesCaptured = h.captured ?? 0;
    this.output.adopt(h.streams ?? [], onLost);
  }
}

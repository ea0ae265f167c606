// Whole lines out to one of the master's own descriptors (stdout or stderr),
// never blocking and never unbounded. Used when the master writes captured
// worker output (--worker-output): a slow reader of the master's output must
// cost lines, counted and reported, never a stalled master and so never a
// blocked worker.
//
// Lines are queued whole and written in order; a line the kernel takes only
// part of is finished before anything else is written to the same
// descriptor, so lines are never split or merged. When capture is on, the
// master's own log lines go through the same sink (as priority lines) for the
// same reason.
import type { NonblockingWriter } from "../../ffi/io";

/** Captured output buffered per sink before lines are dropped. */
const SINK_BUFFER_BYTES = 1024 * 1024;
/** Retry interval while the reader is not taking anything. */
const RETRY_MS = 10;
/** Lines queued in one turn of the event loop go out together, in writes of up to this many bytes. */
const WRITE_BATCH_BYTES = 64 * 1024;

export interface SinkEvents {
  /** Lines were dropped since the last call, and the queue has room again. */
  onDropped?(lines: number): void;
  /** The descriptor failed for good (EPIPE: nobody reads it). */
  onBroken?(e: Error): void;
}

export class LineSink {
  private queue: Buffer[] = [];
  private headOffset = 0;
  private queued = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private droppedSinceReport = 0;
  droppedTotal = 0;
  private broken = false;
  private flushQueued = false;

  constructor(private readonly writer: NonblockingWriter, private readonly events: SinkEvents = {}, readonly capBytes = SINK_BUFFER_BYTES) {}

  get queuedBytes(): number {
    return this.queued;
  }

  /**
   * Queue one line (ending in "\n"), or `lines` whole lines in one buffer
   * (kept or dropped together), and write them in this turn of the event loop.
   * Ordinary lines are dropped past the cap; `priority` lines (the master's
   * own log) may use twice the cap, so they survive a flood of worker output.
   * Returns false when the line was dropped.
   */
  push(line: Buffer, priority = false, lines = 1): boolean {
    if (this.broken) return false;
    const cap = priority ? this.capBytes * 2 : this.capBytes;
    if (this.queued + line.length > cap) {
      this.droppedSinceReport += lines;
      this.droppedTotal += lines;
      return false;
    }
    this.queue.push(line);
    this.queued += line.length;
    // The master's own lines go out at once (the process may exit right
    // after logging); worker lines queued in one turn (a chunk of output is
    // many lines) go out together, one system call instead of one per line.
    if (priority && !this.timer) this.flush();
    else if (!this.flushQueued && !this.timer) {
      this.flushQueued = true;
      queueMicrotask(() => { this.flushQueued = false; this.flush(); });
    }
    return true;
  }

  /** Write as much as the descriptor takes without blocking; retry later for the rest. */
  flush(): void {
    while (this.queue.length && !this.broken) {
      // Join whole lines into one buffer (the head possibly part-written).
      let take = 1;
      let bytes = this.queue[0]!.length - this.headOffset;
      while (take < this.queue.length && bytes + this.queue[take]!.length <= WRITE_BATCH_BYTES) bytes += this.queue[take++]!.length;
      const first = this.headOffset ? this.queue[0]!.subarray(this.headOffset) : this.queue[0]!;
      const out = take === 1 ? first : Buffer.concat([first, ...this.queue.slice(1, take)], bytes);
      let n: number;
      try {
        n = this.writer.write(out);
      } catch (e) {
        this.broken = true;
        this.queue = [];
        this.queued = 0;
        this.events.onBroken?.(e as Error);
        return;
      }
      if (n === 0) break;
      this.queued -= n;
      // Drop the lines written whole; a line written in part stays at the head.
      let left = n + this.headOffset;
      this.headOffset = 0;
      while (this.queue.length && left >= this.queue[0]!.length) {
        left -= this.queue.shift()!.length;
      }
      this.headOffset = left;
      if (n < bytes) break;
    }
    if (this.queue.length && !this.timer) {
      this.timer = setTimeout(() => { this.timer = null; this.flush(); }, RETRY_MS);
    }
    if (this.droppedSinceReport && this.queued <= this.capBytes / 2) {
      const n = this.droppedSinceReport;
      this.droppedSinceReport = 0;
      this.events.onDropped?.(n);
    }
  }

  /** Dropped lines not yet reported (taken for the hand-over, or reported at exit). */
  takeUnreported(): number {
    const n = this.droppedSinceReport;
    this.droppedSinceReport = 0;
    return n;
  }

  /** Drops the previous image counted but did not report yet: reported once the queue has room. */
  addUnreported(n: number): void {
    this.droppedSinceReport += n;
  }

  /** Whatever is still queued (for the next image of the master), emptying the queue. */
  takeQueued(): Buffer[] {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const out = this.queue.map((b, i) => (i === 0 && this.headOffset ? b.subarray(this.headOffset) : b));
    this.queue = [];
    this.queued = 0;
    this.headOffset = 0;
    return out;
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.writer.close();
  }
}

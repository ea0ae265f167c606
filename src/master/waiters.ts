// Clients waiting on an upgrade or reload. A request is first "asked" (the
// core has not answered), then either enrolled (it waits and is told of the
// progress, until a final message) or refused. The core names requesters by
// a number; this table maps it to the connection and the client's own id,
// which every answer echoes.
import type { ReexecKind } from "../core/step";
import type { Connection } from "./command-server";

interface Waiter { conn: Connection; id: unknown; kind: ReexecKind }

export class Waiters {
  private readonly asked = new Map<number, { conn: Connection; id: unknown }>();
  private readonly waiting = new Set<Waiter>();
  private nextRequestId = 1;

  /** A new request from `conn` (with the client's `id`); the number the core will know it by. */
  ask(conn: Connection, id: unknown): number {
    const requestId = this.nextRequestId++;
    this.asked.set(requestId, { conn, id });
    return requestId;
  }

  enroll(requestId: number, kind: ReexecKind): void {
    const r = this.asked.get(requestId);
    this.asked.delete(requestId);
    if (r) this.waiting.add({ conn: r.conn, id: r.id, kind });
  }

  refuse(requestId: number, message: string): void {
    const r = this.asked.get(requestId);
    this.asked.delete(requestId);
    r?.conn.reply(r.id, message, { error: true });
  }

  /** Send a message to the clients waiting on `kind`; `final` ends their wait. */
  notify(kind: ReexecKind, message: string, final: boolean, error = false): void {
    for (const w of this.waiting) {
      if (w.kind !== kind) continue;
      w.conn.reply(w.id, message, { wait: !final, error });
      if (final) this.waiting.delete(w);
    }
  }

  /** The connection closed: nobody is waiting there any more. */
  drop(conn: Connection): void {
    for (const w of this.waiting) if (w.conn === conn) this.waiting.delete(w);
    for (const [n, r] of this.asked) if (r.conn === conn) this.asked.delete(n);
  }

  /** What `conn` waits for, to hand across the execve. */
  waitingOn(conn: Connection): { id: unknown } | null {
    for (const w of this.waiting) if (w.conn === conn) return { id: w.id };
    return null;
  }

  /** A connection handed over by the previous image, still waiting. */
  adopt(conn: Connection, id: unknown, kind: ReexecKind): void {
    this.waiting.add({ conn, id, kind });
  }
}

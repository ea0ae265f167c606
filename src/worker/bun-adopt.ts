// Bun.serve on einhorn's socket. Bun 1.4.4 cannot serve an inherited
// descriptor (no `fd` option; upstream work is open), so we adopt it into a
// running Bun.serve's own listener:
//
//   1. Bun.serve listens on 127.0.0.1:0: a template listener L of its own;
//   2. L is found in /proc/self/fd (the socket whose address is that port)
//      and the epoll instance E watching it, with the registration's events
//      and data, in /proc/self/fdinfo/E (`tfd: L events: .. data: ..`);
//   3. dup2(inherited, L): L now is the shared socket; the template socket
//      had no other descriptor, so closing it dropped its registration;
//   4. epoll_ctl(E, ADD, L, same events, same data): Bun's loop now sees the
//      shared socket's readiness as its listener's, and accepts on it.
//
// None of this is an API. Every step is checked against what it expects
// (exactly one template socket, exactly one registration, the registration
// back in place afterwards), and any surprise is returned as a reason, so
// that serve() falls back to node:http rather than serve from a half-adopted
// socket. uSockets accepts until EAGAIN, so the socket must be non-blocking:
// O_NONBLOCK is set on it, which (being on the open file description) every
// worker of that socket then shares.
import { fstatSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { dup2, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLLEXCLUSIVE, epollCtl } from "../../ffi/epoll";
import { getsockname, getsockoptInt, setNonblocking, SO_ACCEPTCONN, SOL_SOCKET } from "../../ffi/socket";

export interface Registration {
  /** The epoll instance. */
  epfd: number;
  events: number;
  data: bigint;
}

/** One `tfd:` line of an epoll instance's fdinfo. */
export interface EpollEntry { tfd: number; events: number; data: bigint }

/** Parse /proc/PID/fdinfo/EPFD of an epoll instance: one entry per watched descriptor. */
export function parseEpollFdinfo(text: string): EpollEntry[] {
  const out: EpollEntry[] = [];
  for (const m of text.matchAll(/^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)/gim)) {
    out.push({ tfd: Number(m[1]), events: parseInt(m[2]!, 16), data: BigInt(`0x${m[3]}`) });
  }
  return out;
}

function ownFds(): Array<{ fd: number; link: string }> {
  const out: Array<{ fd: number; link: string }> = [];
  for (const name of readdirSync("/proc/self/fd")) {
    try { out.push({ fd: Number(name), link: readlinkSync(`/proc/self/fd/${name}`) }); } catch { /* closed meanwhile (the readdir's own fd) */ }
  }
  return out;
}

/** The listening socket of this process bound to 127.0.0.1:`port`; a reason when not exactly one. */
export function findTemplateListener(port: number): number | string {
  const found: number[] = [];
  for (const { fd, link } of ownFds()) {
    if (!link.startsWith("socket:")) continue;
    try {
      const a = getsockname(fd);
      if (a.family === "inet" && a.host === "127.0.0.1" && a.port === port && getsockoptInt(fd, SOL_SOCKET, SO_ACCEPTCONN) === 1) found.push(fd);
    } catch { /* not an inet socket, or gone */ }
  }
  if (found.length !== 1) return `expected one listening socket on 127.0.0.1:${port} for Bun.serve, found ${found.length}`;
  return found[0]!;
}

/** The epoll registration of `fd`; a reason when it is not in exactly one epoll instance. */
export function findRegistration(fd: number): Registration | string {
  const found: Registration[] = [];
  for (const { fd: epfd, link } of ownFds()) {
    if (link !== "anon_inode:[eventpoll]") continue;
    let text: string;
    try { text = readFileSync(`/proc/self/fdinfo/${epfd}`, "latin1"); } catch { continue; }
    for (const e of parseEpollFdinfo(text)) if (e.tfd === fd) found.push({ epfd, events: e.events, data: e.data });
  }
  if (found.length !== 1) return `expected fd ${fd} in one epoll instance, found it in ${found.length}`;
  const r = found[0]!;
  if ((r.events & 1) === 0) return `fd ${fd} is watched without EPOLLIN (events 0x${r.events.toString(16)})`;
  return r;
}

/**
 * Move the inherited listening socket `inherited` into Bun.serve's listener
 * `template` (found by findTemplateListener). Returns the registration
 * (needed to stop accepting later), or a reason it was not done.
 */
export function adoptListener(inherited: number, template: number): Registration | string {
  const reg = findRegistration(template);
  if (typeof reg === "string") return reg;
  const before = fstatSync(inherited).ino;
  setNonblocking(inherited, true);
  dup2(inherited, template);
  if (fstatSync(template).ino !== before) return `after dup2, fd ${template} is not the inherited socket`;
  // The template socket was closed by dup2, and its registration with it.
  const gone = findRegistration(template);
  if (typeof gone !== "string") return `fd ${template} is still watched after dup2 (the template socket had another descriptor)`;
  // EPOLLEXCLUSIVE: a new connection wakes one waiting worker, and a worker
  // busy serving is not waiting, so an idle one takes it. Without it every
  // worker wakes and the first one to run accepts everything queued (uSockets
  // accepts until EAGAIN): measured, all 32 of wrk's connections in one of
  // two workers. Only EPOLL_CTL_ADD may set it, which is what this is.
  const events = reg.events | EPOLLEXCLUSIVE;
  epollCtl(reg.epfd, EPOLL_CTL_ADD, template, events, reg.data);
  const back = findRegistration(template);
  if (typeof back === "string" || back.epfd !== reg.epfd || back.events !== events || back.data !== reg.data) {
    return `the re-registration of fd ${template} does not read back as it was written`;
  }
  return reg;
}

/**
 * Stop accepting on an adopted listener without closing it: its registration
 * goes, so Bun's loop no longer hears of new connections; they stay in the
 * shared queue for the other workers. Closing it is left to Bun.serve.
 */
export function stopAccepting(fd: number, reg: Registration): void {
  epollCtl(reg.epfd, EPOLL_CTL_DEL, fd);
}

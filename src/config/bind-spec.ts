// `-b` specs: Einhorn's `HOST:PORT[,FLAG...]`, plus IPv6 (`[::1]:8080`), UNIX
// stream sockets (`unix:/path`) and a few extra flags. Pure parsing; binding
// happens in src/master/listeners.ts.

export interface BindSpec {
  /** The text given, for messages. */
  text: string;
  address:
    | { kind: "tcp"; host: string; port: number; v6: boolean }
    | { kind: "unix"; path: string }
    /** A socket systemd passed to the master (socket activation), by LISTEN_FDNAMES name or by index. */
    | { kind: "systemd"; select: string };
  reuseaddr: boolean;
  nonblock: boolean;
  reuseport: boolean;
  /** UNIX sockets only: file mode; owner-only unless asked. */
  mode: number;
  /** Name given to workers in LISTEN_FDNAMES (--listen-fds); default "einhorn". */
  name: string | null;
}

const BIND_FORMS = "HOST:PORT, [IPV6]:PORT, unix:/PATH or systemd:NAME|INDEX, then optional ,FLAG... (flags: r|so_reuseaddr, n|o_nonblock, reuseport|so_reuseport, name=NAME, mode=OCTAL for unix:)";

export class BindSpecError extends Error {
  override name = "BindSpecError";
}

function fail(text: string, why: string): never {
  throw new BindSpecError(`bad bind address '${text}': ${why}; expected ${BIND_FORMS}`);
}

export function parseBindSpec(text: string): BindSpec {
  const spec: BindSpec = { text, address: { kind: "unix", path: "" }, reuseaddr: false, nonblock: false, reuseport: false, mode: 0o600, name: null };
  let rest: string;
  let flagText: string[];
  if (text.startsWith("systemd:")) {
    const parts = text.slice(8).split(",");
    rest = parts[0]!;
    flagText = parts.slice(1);
    if (!/^[A-Za-z0-9_.:-]+$/.test(rest)) fail(text, "systemd: takes a socket name from LISTEN_FDNAMES or an index from 0");
    spec.address = { kind: "systemd", select: rest };
  } else if (text.startsWith("unix:")) {
    // A path may itself contain commas only if no flags follow; flags are split off the end.
    const parts = text.slice(5).split(",");
    rest = parts[0]!;
    flagText = parts.slice(1);
    if (!rest.startsWith("/") && !rest.startsWith(".")) fail(text, "a UNIX socket path must be absolute or start with ./");
    spec.address = { kind: "unix", path: rest };
  } else {
    const parts = text.split(",");
    rest = parts[0]!;
    flagText = parts.slice(1);
    let host: string;
    let portText: string;
    let v6 = false;
    const bracket = /^\[([^\]]+)\]:(.*)$/.exec(rest);
    if (bracket) {
      host = bracket[1]!;
      portText = bracket[2]!;
      v6 = true;
    } else {
      const colon = rest.lastIndexOf(":");
      if (colon < 0) fail(text, "no port");
      host = rest.slice(0, colon);
      portText = rest.slice(colon + 1);
      if (host.includes(":")) fail(text, "an IPv6 address goes in brackets, like [::1]:8080");
    }
    if (!host) fail(text, "no host (use 0.0.0.0 for every IPv4 address, [::] for every address)");
    if (!/^\d+$/.test(portText) || Number(portText) > 65535) fail(text, `port '${portText}' is not a number from 0 to 65535`);
    spec.address = { kind: "tcp", host, port: Number(portText), v6 };
  }
  for (const f of flagText) {
    const flag = f.trim();
    if (spec.address.kind === "systemd" && /^(r|so_reuseaddr|reuseport|so_reuseport)$/.test(flag)) {
      fail(text, `'${flag}' cannot apply to a socket systemd already bound`);
    }
    if (flag === "r" || flag === "so_reuseaddr") spec.reuseaddr = true;
    else if (flag === "n" || flag === "o_nonblock") spec.nonblock = true;
    else if (flag === "reuseport" || flag === "so_reuseport") spec.reuseport = true;
    else if (flag.startsWith("name=")) {
      const n = flag.slice(5);
      if (!/^[A-Za-z0-9_.-]{1,255}$/.test(n)) fail(text, `name '${n}' may only use letters, digits, '_', '.' and '-'`);
      spec.name = n;
    } else if (flag.startsWith("mode=")) {
      if (spec.address.kind !== "unix") fail(text, "mode= applies to unix: sockets only");
      const m = flag.slice(5);
      if (!/^0?[0-7]{3}$/.test(m)) fail(text, `mode '${m}' is not an octal file mode like 0600 or 0660`);
      spec.mode = parseInt(m, 8);
    } else fail(text, `unknown flag '${flag}'`);
  }
  return spec;
}

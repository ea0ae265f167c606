// The master's usage text, laid out as Einhorn 1.1.1 prints it (bin/einhorn:
// a Markdown-ish banner starting "## Usage", then "### Options" and one line
// per option in Ruby OptionParser's summary layout: four spaces, the flags
// padded to 32 columns, a space, the description; flags longer than that put
// the description on the next line). Scripts and wrappers that check for
// "## Usage" on stdout, or show this text to people, keep working. The words
// are ours and describe our options; the options come from the same table the
// parser uses (src/config/options.ts), so the two cannot drift apart.
import { OPTIONS, type OptionSpec } from "../config/options";

/** OptionParser's defaults: summary_indent is four spaces, summary_width 32. */
const INDENT = "    ";
const WIDTH = 32;

const BANNER = `## Usage

Einhorn is the language-independent shared socket manager: it opens your
listening sockets once, runs several copies of your program with those
sockets inherited, keeps them running and replaces them without dropping a
connection. Run \`einhorn -h\` for the details. In short:

    einhorn [options] [--] program [args...]
`;

const OVERVIEW = `
## Overview

Three copies of a server sharing one port, acknowledging by themselves:

    $ einhorn -n 3 -m manual -b 127.0.0.1:8080 -- ./server

Talk to the running master with the built-in shell (or Einhorn's einhornsh):

    $ einhorn sh -e state
    $ einhorn sh -e upgrade

### Server sockets

Each \`-b ADDR\` is bound and listened on by the master, in order, before any
worker starts. Workers find them in EINHORN_FD_0, EINHORN_FD_1, ... and their
number in EINHORN_FD_COUNT. ADDR is HOST:PORT[,FLAG...]; flags: r or
so_reuseaddr (SO_REUSEADDR), n or o_nonblock (O_NONBLOCK).

### ACKs

A worker counts as up once it is ACKed. By default (-m 1) that is one second
after it started, if it is still alive. With -m manual the worker says so
itself: it writes the line

    {"command":"worker:ack","pid":PID}

to the UNIX socket named by EINHORN_SOCK_PATH (or, with -g, to the descriptor
in EINHORN_SOCK_FD). Ruby workers can call Einhorn::Worker.ack!.

### Upgrades

\`upgrade\` (or SIGHUP) re-executes the master, then starts new workers and
sends SIGUSR2 to an old one for each new one that is up. SIGUSR2 asks a
worker to finish what it is doing and exit.

### Preloading

-p PATH runs the workers from a Bun/TypeScript module that exports
einhorn_main; a file that is not such a module is ignored with a warning and
the program runs as given.

### The shell

    einhorn sh [-c NAME | -d PATH] [-e 'cmd args; cmd'] [--timeout SECONDS]

### A systemd unit

    einhorn systemd-unit [--socket] [--user USER] [--] [options] [--] PROGRAM [ARGS...]

prints a hardened service unit (and with --socket a socket unit) for that
command line; einhorn systemd-unit -h has the details.

### Exit status

0 stopped cleanly; 1 could not start, failed at run time, or no program was
given (this text is printed); 2 bad usage; 126 the program is not executable;
127 the program was not found; 70 internal error.
`;

function flags(o: OptionSpec): string {
  const long = `--${o.long}${o.placeholder ? ` ${o.placeholder}` : ""}`;
  return o.short ? `-${o.short}, ${long}` : `    ${long}`;
}

function optionLines(): string[] {
  const lines: string[] = [];
  for (const o of OPTIONS) {
    if (o.hidden) continue;
    const f = flags(o);
    if (f.length <= WIDTH) lines.push(`${INDENT}${f.padEnd(WIDTH)} ${o.help}`);
    else lines.push(`${INDENT}${f}`, `${INDENT}${" ".repeat(WIDTH)} ${o.help}`);
  }
  return lines;
}

/**
 * The usage text. Short (`long` false) is what a bare `einhorn` prints, as
 * Einhorn does: the banner and the options. `-h` adds an overview.
 */
export function einhornUsage(long: boolean): string {
  return `${BANNER}${long ? OVERVIEW : ""}\n### Options\n\n${optionLines().join("\n")}\n`;
}

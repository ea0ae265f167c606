// `einhorn systemd-unit [UNIT OPTIONS] [--] MASTER OPTIONS [--] PROGRAM [ARGS...]`
// prints a hardened systemd service unit for that einhorn command line (and,
// with --socket, a socket unit that binds its -b addresses). Policy:
// - the command socket goes to /run/NAME (RuntimeDirectory), so the private
//   /tmp the sandbox gives the service does not hide it from `einhorn sh`;
// - ExecReload runs `einhorn sh -e upgrade`, which exits non-zero when the
//   upgrade fails, so `systemctl reload` fails with it;
// - stopping is the graceful drain: KillSignal=SIGUSR2 reaches the master
//   only (KillMode=mixed), which passes USR2 to every worker; the master's
//   -t (signal timeout) SIGKILLs a worker that does not drain in time, and
//   TimeoutStopSec leaves room for that before systemd kills everything;
// - the sandboxing is what `systemd-analyze security` scores, minus what the
//   Bun runtime cannot run without (MemoryDenyWriteExecute: the JIT) and what
//   einhorn itself reads (ProcSubset=pid would hide /proc/uptime from status).
import { userInfo } from "node:os";
import { basename, resolve } from "node:path";
import { type MasterConfig, parseMasterArgs, splitArgv, UsageError } from "./master-options";
import { resolveProgram } from "../master/spawner";
import { selfCommand } from "./self";

export interface UnitOptions {
  socket: boolean;
  name: string | null;
  user: string | null;
  group: string | null;
  /** Seconds workers get to drain on stop (the master's -t unless given). */
  drain: number;
  /** Seconds `systemctl reload` (the upgrade) may take. */
  reloadTimeout: number;
}

const UNIT_OPTIONS_USAGE = `Usage: einhorn systemd-unit [--socket] [--name NAME] [--user USER] [--group GROUP]
                            [--drain SECONDS] [--reload-timeout SECONDS] [--] MASTER-OPTIONS [--] PROGRAM [ARGS...]

Prints a hardened systemd service unit running einhorn with MASTER-OPTIONS and
PROGRAM (with --socket, also a socket unit binding the -b addresses; the two are
separated by a line '# ---- NAME.socket ----').

  --socket                 systemd binds the -b addresses (socket activation); einhorn takes them with -b systemd:N
  --name NAME              unit and command name (default: -c NAME, else the program's file name)
  --user USER              User= (default: the user running this; root gets DynamicUser=yes instead)
  --group GROUP            Group=
  --drain SECONDS          time workers get to drain on stop; sets -t unless given (default 30)
  --reload-timeout SECONDS how long 'systemctl reload' (an upgrade) may take (default 300)`;

/** Split the unit options off the front; the rest is the master's command line. */
function parseUnitArgs(argv: string[]): { unit: UnitOptions; master: string[] } {
  const unit: UnitOptions = { socket: false, name: null, user: null, group: null, drain: 30, reloadTimeout: 300 };
  let i = 0;
  const value = (flag: string) => {
    if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value`);
    return argv[++i]!;
  };
  const seconds = (flag: string, v: string) => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} wants a number of seconds greater than 0, got '${v}'`);
    return n;
  };
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--socket") unit.socket = true;
    else if (a === "--name") unit.name = value(a);
    else if (a === "--user") unit.user = value(a);
    else if (a === "--group") unit.group = value(a);
    else if (a === "--drain") unit.drain = seconds(a, value(a));
    else if (a === "--reload-timeout") unit.reloadTimeout = seconds(a, value(a));
    else if (a === "--") { i++; break; } else break;
  }
  if (unit.name !== null && !/^[A-Za-z0-9][A-Za-z0-9_.@-]*$/.test(unit.name)) {
    throw new UsageError(`--name wants letters, digits and '_.@-' (a unit name), got '${unit.name}'`);
  }
  return { unit, master: argv.slice(i) };
}

/**
 * One word of ExecStart= as systemd reads it: double-quoted when needed, with
 * '\\' and '"' escaped, '%' doubled (specifiers) and '$' doubled (variables).
 */
export function systemdWord(w: string): string {
  const s = w.replace(/%/g, "%%").replace(/\$/g, "$$$$");
  if (s !== "" && /^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
}

const FLAG_ONLY = new Set(["command-socket-as-fd", "kill-children-on-exit", "quiet", "verbose", "listen-fds", "subreaper"]);

export interface GeneratedUnits { name: string; service: string; socket: string | null }

function generateUnits(unit: UnitOptions, masterArgv: string[], env: { self: string[]; cwd: string; user: string; uid: number; pathVar?: string }): GeneratedUnits {
  const cfg: MasterConfig = parseMasterArgs(masterArgv, { tmpdir: "/run/einhorn" });
  if (cfg.program.length === 0) throw new UsageError("no PROGRAM given: einhorn systemd-unit [UNIT OPTIONS] [--] MASTER-OPTIONS [--] PROGRAM [ARGS...]");
  for (const bad of ["with-state-fd", "upgrade-check", "version", "help"]) {
    if (splitArgv(masterArgv).raw.has(bad)) throw new UsageError(`--${bad} has no place in a unit's command line`);
  }
  const name = unit.name ?? cfg.commandName ?? basename(cfg.program[0]!).replace(/[^A-Za-z0-9_.@-]/g, "-");
  const runDir = `/run/einhorn-${name}`;
  const { raw } = splitArgv(masterArgv);

  // ExecStart: the master options in long form, adjusted for the unit.
  const words: string[] = [...env.self];
  const put = (long: string, v?: string) => { words.push(`--${long}`); if (v !== undefined) words.push(v); };
  if (!raw.has("command-name")) put("command-name", name);
  if (!raw.has("signal-timeout")) put("signal-timeout", String(unit.drain));
  // journald stamps every line itself.
  if (!raw.has("log-format")) put("log-format", "plain");
  const socketBinds: string[] = [];
  for (const [long, values] of raw) {
    for (const v of values) {
      if (long === "bind" && unit.socket) {
        const spec = cfg.binds[socketBinds.length]!;
        if (spec.address.kind !== "tcp" && spec.address.kind !== "unix") throw new UsageError(`--socket: -b ${v} is already a systemd socket`);
        socketBinds.push(v);
        // Blocking mode stays einhorn's to set, from the same flags.
        put("bind", `systemd:${socketBinds.length - 1}${spec.nonblock ? ",n" : ""}`);
      } else if (FLAG_ONLY.has(long)) put(long);
      else put(long, v);
    }
  }
  words.push("--");
  const program = [...cfg.program];
  if (!cfg.preload) {
    // An absolute path: what runs is then plain to see in the unit.
    program[0] = program[0]!.includes("/") ? resolve(env.cwd, program[0]!) : resolveProgram(program[0]!, env.pathVar);
  }
  words.push(...program);
  // The shell finds the command socket the way the master placed it (TMPDIR is the unit's for both).
  const target = raw.has("socket-path") ? ["--socket-path", cfg.socketPath] : ["--command-name", cfg.commandName ?? name];
  const shell = [...env.self, "sh", ...target, "--timeout", String(unit.reloadTimeout), "--execute", "upgrade"];

  const lowPorts = cfg.binds.some((b) => b.address.kind === "tcp" && b.address.port > 0 && b.address.port < 1024) && !unit.socket;
  const user = unit.user ?? (env.uid === 0 ? null : env.user);
  const lines = [
    `# ${name}.service: generated by \`einhorn systemd-unit\`.`,
    `# Reload (systemctl reload ${name}) runs a smooth upgrade and fails when the upgrade fails;`,
    `# stop drains: USR2 to every worker, SIGKILL after ${unit.drain}s (-t).`,
    "[Unit]",
    `Description=${name} (einhorn)`,
    "After=network-online.target",
    "Wants=network-online.target",
    ...(unit.socket ? [`Requires=${name}.socket`, `After=${name}.socket`] : []),
    "",
    "[Service]",
    "Type=simple",
    ...(user ? [`User=${user}`] : ["# No --user given and generated as root: a transient user, created for the service.", "DynamicUser=yes"]),
    ...(unit.group ? [`Group=${unit.group}`] : []),
    `WorkingDirectory=${env.cwd}`,
    `ExecStart=${words.map(systemdWord).join(" ")}`,
    `ExecReload=${shell.map(systemdWord).join(" ")}`,
    // A reload job is bounded by TimeoutStartSec.
    `TimeoutStartSec=${Math.ceil(unit.reloadTimeout + 30)}`,
    "KillSignal=SIGUSR2",
    "KillMode=mixed",
    `TimeoutStopSec=${Math.ceil(Math.max(cfg.signalTimeout ?? unit.drain, unit.drain) + 15)}`,
    "Restart=on-failure",
    "RestartSec=2",
    // The command socket, pidfile and lockfile: /run/einhorn-NAME, reachable from outside the private /tmp.
    `RuntimeDirectory=einhorn-${name}`,
    "RuntimeDirectoryMode=0750",
    `Environment=TMPDIR=${runDir}`,
    "",
    "# Sandboxing (systemd-analyze security). Not set: MemoryDenyWriteExecute (the Bun runtime's",
    "# JIT writes code), ProcSubset=pid (status reads /proc/uptime). Add ReadWritePaths= for",
    "# directories the program writes to.",
    "NoNewPrivileges=yes",
    ...(lowPorts ? ["AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"] : ["CapabilityBoundingSet="]),
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "PrivateIPC=yes",
    "ProtectHostname=yes",
    "ProtectClock=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectProc=invisible",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "KeyringMode=private",
    "DevicePolicy=closed",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    // --nice needs setpriority, which @resources holds.
    `SystemCallFilter=~@privileged${cfg.nice.master === null && cfg.nice.worker === null ? " @resources" : ""}`,
    "SystemCallErrorNumber=EPERM",
    "UMask=0077",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ];
  let socket: string | null = null;
  if (unit.socket) {
    if (socketBinds.length === 0) throw new UsageError("--socket needs at least one -b address for systemd to bind");
    socket = [
      `# ${name}.socket: generated by \`einhorn systemd-unit --socket\`; systemd binds, einhorn takes the`,
      `# sockets with -b systemd:0, systemd:1, ... in this order and hands them to its workers.`,
      "[Unit]",
      `Description=Listening sockets of ${name} (einhorn)`,
      "",
      "[Socket]",
      ...cfg.binds.map((b) => `ListenStream=${b.address.kind === "unix" ? b.address.path : b.address.kind === "tcp" ? (b.address.v6 ? `[${b.address.host}]:${b.address.port}` : `${b.address.host}:${b.address.port}`) : ""}`),
      ...(cfg.binds.some((b) => b.reuseport) ? ["ReusePort=yes"] : []),
      `Backlog=${cfg.backlog}`,
      `Service=${name}.service`,
      "",
      "[Install]",
      "WantedBy=sockets.target",
      "",
    ].join("\n");
  }
  return { name, service: lines.join("\n"), socket };
}

export function runSystemdUnit(argv: string[]): number {
  if (argv[0] === "-h" || argv[0] === "--help") {
    process.stdout.write(`${UNIT_OPTIONS_USAGE}\n`);
    return 0;
  }
  try {
    const { unit, master } = parseUnitArgs(argv);
    const u = generateUnits(unit, master, { self: selfCommand(), cwd: process.cwd(), user: userInfo().username, uid: process.getuid?.() ?? 0 });
    process.stdout.write(u.service);
    if (u.socket) process.stdout.write(`# ---- ${u.name}.socket ----\n${u.socket}`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError || (e as Error).name === "StartError") {
      process.stderr.write(`einhorn systemd-unit: ${(e as Error).message}\n`);
      return 2;
    }
    throw e;
  }
}

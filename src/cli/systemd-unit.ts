// `einhorn systemd-unit [UNIT OPTIONS] [--] MASTER OPTIONS [--] PROGRAM [ARGS...]`
// prints a hardened systemd service unit for that einhorn command line (and,
// with --socket, a socket unit that binds its -b addresses). Policy:
// - Type=notify: the master tells systemd over sd_notify when the pool is up
//   (READY=1 once every worker ACKed), when an upgrade is under way
//   (RELOADING=1 ... READY=1) and what `systemctl status` shows (STATUS=);
//   NotifyAccess=main, as workers do not get NOTIFY_SOCKET (=all with
//   --pass-notify-socket, which hands it to them); --watchdog sets
//   WatchdogSec=, pinged from the master's event loop (src/master/sd-notify.ts);
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
import { realpathSync } from "node:fs";
import { userInfo } from "node:os";
import { isIP } from "node:net";
import { basename, join, resolve } from "node:path";
import type { BindSpec } from "../config/bind-spec";
import { readMasterArgs, UsageError } from "../config/master-args";
import { flagName, OPTIONS, optionByLong } from "../config/options";
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
  /** WatchdogSec=, or null: no watchdog. */
  watchdog: number | null;
}

const UNIT_OPTIONS_USAGE = `Usage: einhorn systemd-unit [--socket] [--name NAME] [--user USER] [--group GROUP]
                            [--drain SECONDS] [--reload-timeout SECONDS] [--watchdog SECONDS]
                            [--] MASTER-OPTIONS [--] PROGRAM [ARGS...]
       einhorn systemd-unit [UNIT-OPTIONS] [--] --config FILE [MASTER-OPTIONS]

Prints a hardened systemd service unit running einhorn with MASTER-OPTIONS and
PROGRAM (with --socket, also a socket unit binding the -b addresses; the two are
separated by a line '# ---- NAME.socket ----'). With --config FILE the unit runs
'einhorn --config FILE' and the program stays in the file, re-read at every reload.
Warnings (stderr) name paths the unit's PrivateTmp=/ProtectHome= would hide.

  --socket                 systemd binds the -b addresses (socket activation); einhorn takes them with -b systemd:N
  --name NAME              unit name, and command name unless -c or the config gives one (default: that, else the program's file name)
  --user USER              User= (default: the user running this; root gets DynamicUser=yes instead)
  --group GROUP            Group=
  --drain SECONDS          time workers get to drain on stop; sets -t unless given (default 30)
  --reload-timeout SECONDS how long 'systemctl reload' (an upgrade) may take (default 300)
  --watchdog SECONDS       WatchdogSec=: systemd restarts a master whose event loop stops answering for that long`;

/** Split the unit options off the front; the rest is the master's command line. */
function parseUnitArgs(argv: string[]): { unit: UnitOptions; master: string[] } {
  const unit: UnitOptions = { socket: false, name: null, user: null, group: null, drain: 30, reloadTimeout: 300, watchdog: null };
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
    else if (a === "--watchdog") unit.watchdog = seconds(a, value(a));
    else if (a === "--") { i++; break; } else break;
  }
  if (unit.name !== null) unitName("--name", unit.name);
  return { unit, master: argv.slice(i) };
}

// ---- Writing values into the unit --------------------------------------
// Every value the generator writes goes through one of the functions below,
// chosen by how systemd reads the setting (systemd.syntax(7), systemd.unit(5),
// systemd.service(5)). A line break would end the directive and start a new
// one of the user's choosing (`--user $'root\nExecStartPre=...'`), so no value
// may hold a control character; each function refuses one, naming where the
// value came from. '%' starts a specifier in all of these settings, so it is
// doubled everywhere.

/** A one-line rendering of a refused value: control characters shown as escapes. */
function shown(v: string): string {
  return JSON.stringify(v);
}

/** Refuse a value no unit file can hold; `what` names where it came from (an option, "the working directory"). */
function refuseControl(what: string, v: string): string {
  if (/[\u0000-\u001f\u007f-\u009f]/.test(v)) {
    throw new UsageError(`${what} ${shown(v)}: a unit file cannot hold a newline or other control character; give a value without one`);
  }
  return v;
}

const specifiers = (v: string) => v.replace(/%/g, "%%");
/** What needs no quotes in a setting that unquotes its words. */
const BARE = /^[A-Za-z0-9_@%+=:,./-]+$/;
const quoted = (s: string) => (s !== "" && BARE.test(s) ? s : `"${s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`);

/**
 * One word of ExecStart=/ExecReload=: '%' doubled (specifiers), '$' doubled
 * (variables), double-quoted when needed with '\\' and '"' escaped. A quoted
 * ';' is a plain argument, not the separator of a second command.
 */
export function execWord(what: string, w: string): string {
  refuseControl(what, w);
  return quoted(specifiers(w).replace(/\$/g, "$$$$"));
}

/**
 * A setting that does not unquote (User=, Group=, Description=): written as
 * it is after '%' is doubled. Such a value cannot start or end with
 * whitespace (systemd strips it) or end with '\\' (which joins the next line).
 */
export function settingValue(what: string, v: string): string {
  refuseControl(what, v);
  if (v === "" || v.trim() !== v || v.endsWith("\\")) {
    throw new UsageError(`${what} ${shown(v)}: a unit setting cannot be empty, start or end with whitespace, or end with '\\'`);
  }
  return specifiers(v);
}

/** User= or Group=: a name or numeric id, without the characters systemd refuses in one. */
export function userOrGroupValue(what: string, v: string): string {
  const s = settingValue(what, v);
  if (/[:/]/.test(v) || v === "." || v === "..") throw new UsageError(`${what} ${shown(v)}: a user or group name cannot contain ':' or '/' or be '.' or '..'`);
  return s;
}

/** A path setting (WorkingDirectory=, ListenStream= of a UNIX socket): absolute, written as it is after '%' is doubled. */
export function pathValue(what: string, v: string): string {
  const s = settingValue(what, v);
  if (!v.startsWith("/")) throw new UsageError(`${what} ${shown(v)}: a unit wants an absolute path here`);
  return s;
}

/** One item of a setting that unquotes its items (Environment=, RuntimeDirectory=): quoted when needed. */
export function listItem(what: string, v: string): string {
  refuseControl(what, v);
  return quoted(specifiers(v));
}

/** A unit name (NAME.service, einhorn-NAME under /run): refused unless systemd takes it as one. */
function unitName(what: string, v: string): string {
  refuseControl(what, v);
  if (!/^[A-Za-z0-9][A-Za-z0-9_.@-]*$/.test(v)) {
    throw new UsageError(`${what} wants letters, digits and '_.@-' (a unit name), got '${v}'${what === "--name" ? "" : "; give --name NAME"}`);
  }
  return v;
}

/** ListenStream= of one -b address: systemd binds numeric addresses and absolute paths only. */
export function listenStreamValue(spec: BindSpec, cwd: string): string {
  const a = spec.address;
  if (a.kind === "unix") return pathValue(`-b ${spec.text}`, resolve(cwd, a.path));
  if (a.kind !== "tcp") throw new UsageError(`--socket: -b ${spec.text} is already a systemd socket`);
  if (isIP(a.host) === 0) throw new UsageError(`--socket: -b ${spec.text}: systemd binds numeric addresses only (like 127.0.0.1, [::1] or 0.0.0.0), got host '${a.host}'`);
  return a.v6 ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** What the unit's own sandbox hides from the service (systemd.exec(5)), and the setting that hides it. */
const HIDDEN: Array<[string, string, string]> = [
  ["/tmp", "PrivateTmp=yes", "the service gets an empty /tmp of its own"],
  ["/var/tmp", "PrivateTmp=yes", "the service gets an empty /var/tmp of its own"],
  ["/home", "ProtectHome=yes", "empty and inaccessible to the service"],
  ["/root", "ProtectHome=yes", "empty and inaccessible to the service"],
  ["/run/user", "ProtectHome=yes", "empty and inaccessible to the service"],
];

const under = (path: string, dir: string) => path === dir || path.startsWith(`${dir}/`);

/**
 * One warning for each path the service needs that the unit's sandbox hides:
 * the unit is still printed (it is right for a deployment that installs
 * these elsewhere), but as generated here it would fail to start. A symbolic
 * link is followed: a /usr/local/bin link into /home is hidden all the same.
 */
export function sandboxWarnings(needed: Array<[string, string]>): string[] {
  const warnings: string[] = [];
  for (const [what, path] of needed) {
    let real = path;
    try { real = realpathSync(path); } catch { /* not there (yet): judged by its name */ }
    const hit = HIDDEN.find(([dir]) => under(path, dir)) ?? HIDDEN.find(([dir]) => under(real, dir));
    if (!hit) continue;
    const [dir, setting, effect] = hit;
    const where = under(path, dir) ? path : `${path} (really ${real})`;
    warnings.push(`warning: ${what} ${where} is under ${dir}, which the unit's ${setting} hides (${effect}); move it, or change ${setting.split("=")[0]}= in the unit`);
  }
  return warnings;
}

/** The option as `einhorn -h` names it: -c/--command-name, or --metrics. */
function optionLabel(long: string): string {
  const o = optionByLong(long);
  return o ? flagName(o) : `--${long}`;
}

/** Options written as a bare flag (their value in the raw table is only a count or `true`): from the registry. */
const FLAG_ONLY = new Set(OPTIONS.filter((o) => o.kind.takes !== "value").map((o) => o.long));
/** Options with no place in a unit's command line (the registry's unit rendering "refused"). */
const REFUSED_IN_UNIT = OPTIONS.filter((o) => o.unit === "refused").map((o) => o.long);

export interface GeneratedUnits { name: string; service: string; socket: string | null; warnings: string[] }

/**
 * The command socket of the unit's master, decided here only: ExecStart
 * passes it with --socket-path and ExecReload's shell connects to the same
 * path, so nothing else (a command-name in the config file, the TMPDIR the
 * shell sees) can make them disagree. A socket-path the user gave (command
 * line or config file) is kept; otherwise it goes into the RuntimeDirectory,
 * where `TMPDIR=/run/einhorn-NAME einhorn sh -c NAME` also finds it.
 */
export function unitCommandSocket(given: string | undefined, runDir: string, name: string, cwd: string): string {
  return given !== undefined ? resolve(cwd, given) : join(runDir, `einhorn-${name}.sock`);
}

interface ExecArg { value: string; what: string }

function generateUnits(unit: UnitOptions, masterArgv: string[], env: { self: string[]; cwd: string; user: string; uid: number; pathVar?: string }): GeneratedUnits {
  const cwd = env.cwd;
  // The file's own settings come with the rest, from the one read the master's parser makes of it.
  const { config: cfg, cmdRaw: raw, cmdProgram, fileRaw } = readMasterArgs(masterArgv, { tmpdir: "/run/einhorn", cwd });
  for (const bad of REFUSED_IN_UNIT) {
    if (raw.has(bad)) throw new UsageError(`--${bad} has no place in a unit's command line`);
  }
  const configFile = cfg.configFile;
  const given = (long: string) => raw.has(long) || fileRaw.has(long);
  if (configFile) {
    // The master re-reads the file at every upgrade; a program on the unit's command line would override it for good.
    if (cmdProgram.length > 0) {
      throw new UsageError(`with --config, the program goes in the file (the master re-reads it at every upgrade), not on the command line; got '${cmdProgram.join(" ")}'`);
    }
    if (cfg.program.length === 0) throw new UsageError(`config ${configFile}: no 'program:'; the unit runs 'einhorn --config ${configFile}', which takes the program from the file`);
  } else if (cfg.program.length === 0) throw new UsageError("no PROGRAM given: einhorn systemd-unit [UNIT OPTIONS] [--] MASTER-OPTIONS [--] PROGRAM [ARGS...]");

  const name = unit.name
    ?? (cfg.commandName !== null ? unitName(raw.has("command-name") ? optionLabel("command-name") : `command-name in ${configFile}`, cfg.commandName) : null)
    ?? unitName("the program's file name", basename(cfg.program[0]!).replace(/[^A-Za-z0-9_.@-]/g, "-"));
  const runDir = `/run/einhorn-${name}`;
  if (unit.socket && cfg.binds.length === 0) throw new UsageError("--socket needs at least one -b address for systemd to bind");
  const socketPathGiven = raw.get("socket-path")?.at(-1) ?? fileRaw.get("socket-path")?.at(-1);
  const commandSocket = unitCommandSocket(socketPathGiven, runDir, name, cwd);

  // ExecStart: the master options in long form, adjusted for the unit. With
  // --config, only the options the unit needs (and those typed on the
  // command line) are written: the rest, program included, stays the file's.
  const words: ExecArg[] = env.self.map((value) => ({ value, what: "the einhorn binary's path" }));
  const put = (long: string, v?: string) => {
    words.push({ value: `--${long}`, what: optionLabel(long) });
    if (v !== undefined) words.push({ value: v, what: optionLabel(long) });
  };
  // Added only where neither the command line nor the file sets them; listed in the unit, because the command line overrides the file.
  const added: string[] = [];
  const addUnlessGiven = (long: string, v: string) => {
    if (given(long)) return;
    put(long, v);
    added.push(`--${long} ${v}`);
  };
  if (configFile) put("config", configFile);
  addUnlessGiven("command-name", name);
  addUnlessGiven("signal-timeout", String(unit.drain));
  // journald stamps every line itself.
  addUnlessGiven("log-format", "plain");
  const socketFrom = raw.has("socket-path") ? optionLabel("socket-path") : fileRaw.has("socket-path") ? `socket-path in ${configFile}` : "the command socket path";
  words.push({ value: "--socket-path", what: socketFrom }, { value: commandSocket, what: socketFrom });
  const socketBinds = () => {
    for (const [i, spec] of cfg.binds.entries()) {
      if (spec.address.kind !== "tcp" && spec.address.kind !== "unix") throw new UsageError(`--socket: -b ${spec.text} is already a systemd socket`);
      // Blocking mode stays einhorn's to set, from the same flags.
      put("bind", `systemd:${i}${spec.nonblock ? ",n" : ""}`);
    }
  };
  let bindsPut = false;
  for (const [long, values] of raw) {
    if (long === "config" || long === "socket-path") continue;
    if (unit.socket && optionByLong(long)?.unit === "socket-unit") {
      if (!bindsPut) socketBinds();
      bindsPut = true;
      continue;
    }
    for (const v of values) {
      if (FLAG_ONLY.has(long)) put(long);
      else put(long, v);
    }
  }
  // -b addresses from the config file: systemd binds them now, so the command line replaces the file's list.
  if (unit.socket && !bindsPut) socketBinds();
  // The program as the master will find it, when known now (for the sandbox warnings).
  let programPath: string | null = configFile && cfg.program[0]!.includes("/") ? resolve(cwd, cfg.program[0]!) : null;
  if (!configFile) {
    words.push({ value: "--", what: "PROGRAM" });
    const program = [...cfg.program];
    if (!cfg.preload) {
      // An absolute path: what runs is then plain to see in the unit.
      program[0] = program[0]!.includes("/") ? resolve(cwd, program[0]!) : resolveProgram(program[0]!, env.pathVar);
    }
    words.push(...program.map((value, i) => ({ value, what: i === 0 ? "PROGRAM" : `PROGRAM argument ${i}` })));
    programPath = program[0]!;
  }
  const shell: ExecArg[] = [
    ...env.self.map((value) => ({ value, what: "the einhorn binary's path" })),
    ...["sh", "--socket-path", commandSocket, "--timeout", String(unit.reloadTimeout), "--execute", "upgrade"].map((value) => ({ value, what: socketFrom })),
  ];
  const execLine = (args: ExecArg[]) => args.map((a) => execWord(a.what, a.value)).join(" ");

  const lowPorts = cfg.binds.some((b) => b.address.kind === "tcp" && b.address.port > 0 && b.address.port < 1024) && !unit.socket;
  const user = unit.user ?? (env.uid === 0 ? null : env.user);
  const lines = [
    `# ${name}.service: generated by \`einhorn systemd-unit\`.`,
    `# Reload (systemctl reload ${name}) runs a smooth upgrade and fails when the upgrade fails;`,
    `# stop drains: USR2 to every worker, SIGKILL after ${cfg.signalTimeout ?? unit.drain}s (-t).`,
    ...(configFile ? [
      `# Runs einhorn --config ${configFile}: the master re-reads the file at every upgrade (reload).`,
      "# The command line overrides the file; the options the unit sets there itself:",
      `# --socket-path (ExecReload connects to it)${unit.socket ? ", --bind systemd:N (the socket unit binds the file's -b addresses)" : ""}${added.length ? `, and, as the file does not set them: ${added.join(", ")}` : ""}.`,
      "# TimeoutStopSec and SystemCallFilter follow the file's -t and --nice as they are now: regenerate the unit when those change.",
    ] : []),
    "[Unit]",
    `Description=${settingValue("the unit name", `${name} (einhorn)`)}`,
    "After=network-online.target",
    "Wants=network-online.target",
    ...(unit.socket ? [`Requires=${name}.socket`, `After=${name}.socket`] : []),
    "",
    "[Service]",
    // The master says READY=1 once its workers are up; a pool that never comes up fails the start at TimeoutStartSec.
    "Type=notify",
    `NotifyAccess=${cfg.passNotifySocket ? "all" : "main"}`,
    ...(unit.watchdog !== null ? [`WatchdogSec=${unit.watchdog}`] : []),
    ...(user !== null ? [`User=${userOrGroupValue(unit.user !== null ? "--user" : "the user running this (default --user)", user)}`] : ["# No --user given and generated as root: a transient user, created for the service.", "DynamicUser=yes"]),
    ...(unit.group !== null ? [`Group=${userOrGroupValue("--group", unit.group)}`] : []),
    `WorkingDirectory=${pathValue("the working directory", cwd)}`,
    `ExecStart=${execLine(words)}`,
    `ExecReload=${execLine(shell)}`,
    // Bounds the start (until READY=1) and a reload job alike.
    `TimeoutStartSec=${Math.ceil(unit.reloadTimeout + 30)}`,
    "KillSignal=SIGUSR2",
    "KillMode=mixed",
    `TimeoutStopSec=${Math.ceil(Math.max(cfg.signalTimeout ?? unit.drain, unit.drain) + 15)}`,
    "Restart=on-failure",
    "RestartSec=2",
    // The command socket and lockfile (and a pidfile, when -e asks for one): /run/einhorn-NAME, reachable from outside the private /tmp.
    `RuntimeDirectory=${listItem("the unit name", `einhorn-${name}`)}`,
    "RuntimeDirectoryMode=0750",
    `Environment=${listItem("the unit name", `TMPDIR=${runDir}`)}`,
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
    socket = [
      `# ${name}.socket: generated by \`einhorn systemd-unit --socket\`; systemd binds, einhorn takes the`,
      `# sockets with -b systemd:0, systemd:1, ... in this order and hands them to its workers.`,
      "[Unit]",
      `Description=${settingValue("the unit name", `Listening sockets of ${name} (einhorn)`)}`,
      "",
      "[Socket]",
      ...cfg.binds.map((b) => `ListenStream=${listenStreamValue(b, cwd)}`),
      ...(cfg.binds.some((b) => b.reuseport) ? ["ReusePort=yes"] : []),
      `Backlog=${cfg.backlog}`,
      `Service=${name}.service`,
      "",
      "[Install]",
      "WantedBy=sockets.target",
      "",
    ].join("\n");
  }
  // What the service must reach at start: einhorn itself, its working directory, its config, its program.
  const needed: Array<[string, string]> = env.self.map((p, i) => [i === 0 ? "the einhorn binary" : "einhorn's entry script", p]);
  needed.push(["the working directory", cwd]);
  if (configFile) needed.push(["the config file", configFile]);
  if (cfg.preload) needed.push(["the preload module", resolve(cwd, cfg.preload)]);
  else if (programPath !== null) needed.push(["the program", programPath]);
  return { name, service: lines.join("\n"), socket, warnings: sandboxWarnings(needed) };
}

export function runSystemdUnit(argv: string[]): number {
  if (argv[0] === "-h" || argv[0] === "--help") {
    process.stdout.write(`${UNIT_OPTIONS_USAGE}\n`);
    return 0;
  }
  try {
    const { unit, master } = parseUnitArgs(argv);
    const u = generateUnits(unit, master, { self: selfCommand(), cwd: process.cwd(), user: userInfo().username, uid: process.getuid?.() ?? 0 });
    for (const w of u.warnings) process.stderr.write(`einhorn systemd-unit: ${w}\n`);
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

// The system tools the test suite drives as real peers, each declared once
// with the Debian package that provides it and why the suite needs it.
// `npm test` (scripts/test.ts) checks them first: as root on Debian it
// installs what is missing with one apt-get line (printed), otherwise it
// stops at once with the exact command to run. So the README's one test
// command is all the set-up a fresh machine needs, and no test fails or skips
// for a missing tool.
//   bun scripts/system-tools.ts           check, installing as root
//   bun scripts/system-tools.ts --check   check only (exit 1 with the command when something is missing)
import { existsSync } from "node:fs";

export interface SystemTool {
  /** What is looked for: a command on PATH, a dpkg package, or a Python module of /usr/bin/python3. */
  probe: { command: string } | { dpkg: string } | { python: string };
  /** The Debian package that provides it. */
  pkg: string;
  /** Which tests drive it. */
  why: string;
}

export const SYSTEM_TOOLS: SystemTool[] = [
  { probe: { command: "ruby" }, pkg: "ruby", why: "Einhorn's own Ruby client and worker library as peers (einhorn-compat); the original Einhorn anchor" },
  { probe: { command: "tmux" }, pkg: "tmux", why: "einhorn sh on a real terminal (shell)" },
  { probe: { python: "prometheus_client.parser" }, pkg: "python3-prometheus-client", why: "the Prometheus text parser the metrics test reads /metrics with" },
  { probe: { command: "promtool" }, pkg: "prometheus", why: "promtool check metrics on /metrics, and a real Prometheus scraping a master (metrics)" },
  { probe: { command: "prometheus" }, pkg: "prometheus", why: "the same package's server" },
  { probe: { dpkg: "qemu-user-static" }, pkg: "qemu-user-static", why: "the arm64 release binary under emulation (release)" },
  { probe: { dpkg: "libc6-arm64-cross" }, pkg: "libc6-arm64-cross", why: "Debian's arm64 C library for that binary (release)" },
  { probe: { dpkg: "libstdc++6-arm64-cross" }, pkg: "libstdc++6-arm64-cross", why: "its C++ library (release)" },
  { probe: { command: "systemd-analyze" }, pkg: "systemd", why: "systemd-analyze verify and systemd --test on the units systemd-unit prints" },
  { probe: { command: "wrk" }, pkg: "wrk", why: "load during upgrades (recipes, bun-serve, generations' rollback)" },
  { probe: { dpkg: "gunicorn" }, pkg: "gunicorn", why: "a Python server upgraded under load (recipes-servers)" },
  { probe: { dpkg: "uvicorn" }, pkg: "uvicorn", why: "an ASGI server upgraded under load (recipes-servers)" },
  { probe: { dpkg: "puma" }, pkg: "puma", why: "a Ruby server upgraded under load (recipes-servers)" },
  { probe: { command: "setpriv" }, pkg: "util-linux", why: "acting as a second uid (start-up, config-trust, shell-trust)" },
  { probe: { command: "prlimit" }, pkg: "util-linux", why: "lowering RLIMIT_NOFILE and RLIMIT_NPROC (reliability)" },
  { probe: { command: "flock" }, pkg: "util-linux", why: "holding a lockfile (start-up)" },
  { probe: { command: "mount" }, pkg: "mount", why: "a small tmpfs to fill (start-up)" },
  { probe: { command: "useradd" }, pkg: "passwd", why: "the second uid itself" },
  { probe: { command: "script" }, pkg: "bsdutils", why: "einhorn sh on a pseudo-terminal (shell-trust)" },
];

function present(t: SystemTool): boolean {
  const p = t.probe;
  if ("command" in p) return Bun.which(p.command) !== null;
  if ("dpkg" in p) {
    // Installed, not only known: `dpkg -s` also succeeds for a package removed
    // with its configuration files kept (status "rc"), whose programs are gone.
    const r = Bun.spawnSync(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", p.dpkg], { stdout: "pipe", stderr: "ignore" });
    return r.exitCode === 0 && r.stdout.toString().startsWith("ii");
  }
  if (!existsSync("/usr/bin/python3")) return false;
  return Bun.spawnSync(["/usr/bin/python3", "-c", `import ${p.python}`], { stdout: "ignore", stderr: "ignore" }).exitCode === 0;
}

/** The Debian packages missing for the suite, each once, in table order. */
export function missingPackages(): string[] {
  return [...new Set(SYSTEM_TOOLS.filter((t) => !present(t)).map((t) => t.pkg))];
}

/**
 * Make sure every tool is there: 0 when all are (or were just installed),
 * 1 with the exact command printed when they cannot be installed from here.
 */
export function ensureSystemTools(opts: { install: boolean }): number {
  const missing = missingPackages();
  if (missing.length === 0) return 0;
  const line = `apt-get install -y ${missing.join(" ")}`;
  const why = SYSTEM_TOOLS.filter((t) => missing.includes(t.pkg)).map((t) => `  ${t.pkg}: ${t.why}`).join("\n");
  const debian = existsSync("/etc/debian_version") && Bun.which("apt-get") !== null;
  if (!opts.install || process.getuid?.() !== 0 || !debian) {
    const how = debian ? `sudo apt-get update && sudo ${line}` : `install the equivalents of these Debian packages: ${missing.join(", ")}`;
    console.error(`The test suite drives these system tools, which are missing:\n${why}\nRun:\n  ${how}\nthen run the tests again.`);
    return 1;
  }
  console.log(`Installing the system tools the test suite drives:\n${why}\n+ apt-get update && ${line}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  for (const argv of [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", ...missing]]) {
    const r = Bun.spawnSync(argv, { env, stdio: ["ignore", "inherit", "inherit"] });
    if (r.exitCode !== 0) {
      console.error(`'${argv.join(" ")}' failed (exit ${r.exitCode}); the test suite needs: ${missing.join(" ")}`);
      return 1;
    }
  }
  const still = missingPackages();
  if (still.length) {
    console.error(`Still missing after apt-get install: ${still.join(" ")}`);
    return 1;
  }
  return 0;
}

if (import.meta.main) process.exit(ensureSystemTools({ install: !process.argv.includes("--check") }));

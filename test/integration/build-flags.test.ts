// The compiled binary behaves like a server tool: nothing in the directory it
// is started from (.env, bunfig.toml) changes the master, `einhorn sh` or a
// `-p` worker; a `-p` module still resolves npm packages from its own
// node_modules, as any Bun program does.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runBinary, startMaster, stopMaster, tempDir, waitFor } from "../harness";
import { npmProject, type NpmProject } from "../npm-project";

/** A directory with every kind of config a Bun program would pick up from its cwd. */
function plantConfig(dir: string): void {
  writeFileSync(join(dir, ".env"), "PLANTED_DOTENV=from_dotenv\n");
  writeFileSync(join(dir, ".env.local"), "PLANTED_DOTENV_LOCAL=from_dotenv_local\n");
  writeFileSync(join(dir, ".env.production"), "PLANTED_DOTENV_PROD=from_dotenv_production\n");
  // A bunfig preload runs code before the entry point: it would print a marker and set a variable.
  writeFileSync(join(dir, "bunfig.toml"), 'preload = ["./planted-preload.ts"]\n');
  writeFileSync(join(dir, "planted-preload.ts"), 'console.log("PLANTED_PRELOAD_RAN"); process.env.PLANTED_PRELOAD = "ran";\n');
}

const PLANTED = /PLANTED_[A-Z_]*=|PLANTED_PRELOAD_RAN/;

function envReport(path: string): Record<string, string> {
  return Object.fromEntries(readFileSync(path, "utf8").split("\n").filter(Boolean).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
}

describe("nothing is read from the working directory", () => {
  test("a planted .env and bunfig.toml reach neither the master nor its workers", async () => {
    const dir = tempDir();
    plantConfig(dir);
    const report = join(dir, "worker-env");
    // The worker writes the environment it got from the master, then waits to be retired.
    const m = startMaster(["-m", "manual", "--", "sh", "-c", `env > ${report}.tmp && mv ${report}.tmp ${report} && exec sleep 600`], { cwd: dir, dir });
    await waitFor("the worker's environment report", () => existsSync(report), 15_000);
    const env = envReport(report);
    expect(env.EINHORN_MASTER_PID).toBe(String(m.pid));
    expect(Object.keys(env).filter((k) => k.startsWith("PLANTED_"))).toEqual([]);
    expect(await stopMaster(m)).toBe(0);
    expect(m.output()).not.toMatch(PLANTED);
  });

  test("a -p worker does not see them either", async () => {
    const dir = tempDir();
    plantConfig(dir);
    const report = join(dir, "worker-env");
    writeFileSync(join(dir, "app.ts"), [
      'import { writeFileSync, renameSync } from "node:fs";',
      "export function einhorn_main() {",
      `  writeFileSync(${JSON.stringify(report + ".tmp")}, Object.entries(process.env).map(([k, v]) => k + "=" + v).join("\\n") + "\\n");`,
      `  renameSync(${JSON.stringify(report + ".tmp")}, ${JSON.stringify(report)});`,
      "  setInterval(() => {}, 1000);",
      '  process.on("SIGUSR2", () => process.exit(0));',
      "}",
    ].join("\n"));
    const m = startMaster(["-m", "manual", "-p", "./app.ts"], { cwd: dir, dir });
    await waitFor("the -p worker's environment report", () => existsSync(report), 15_000);
    const env = envReport(report);
    expect(env.EINHORN_MASTER_PID).toBe(String(m.pid));
    expect(Object.keys(env).filter((k) => k.startsWith("PLANTED_"))).toEqual([]);
    expect(await stopMaster(m)).toBe(0);
    expect(m.output()).not.toMatch(PLANTED);
  });

  test("einhorn sh and einhorn --version run no planted preload", async () => {
    const dir = tempDir();
    plantConfig(dir);
    const v = await runBinary(["--version"], { cwd: dir, dir });
    expect(v.code).toBe(0);
    expect(v.stdout + v.stderr).not.toMatch(PLANTED);
    // No master runs, so the shell fails to connect; it must still not have run the preload.
    const sh = await runBinary(["sh", "-d", join(dir, "nothing.sock"), "-e", "state"], { cwd: dir, dir });
    expect(sh.code).not.toBe(0);
    expect(sh.stdout + sh.stderr).not.toMatch(PLANTED);
  });
});

describe("a -p module resolves npm packages from its own node_modules", () => {
  let project: NpmProject;
  beforeAll(async () => { project = await npmProject(["hono@4"]); }, 120_000);
  afterAll(() => project?.remove());

  test("hono, installed next to the module, is found, whatever the master's cwd", async () => {
    const report = join(project.dir, "hono-report");
    writeFileSync(join(project.dir, "app.ts"), [
      'import { Hono } from "hono";',
      'import { renameSync, writeFileSync } from "node:fs";',
      "export async function einhorn_main() {",
      "  const app = new Hono();",
      '  app.get("/", (c) => c.text("hono says hi"));',
      '  const res = await app.request("/");',
      // Written aside, then renamed: the test waits for the name, and must not read a file created but not yet written.
      `  writeFileSync(${JSON.stringify(report + ".tmp")}, await res.text());`,
      `  renameSync(${JSON.stringify(report + ".tmp")}, ${JSON.stringify(report)});`,
      "  setInterval(() => {}, 1000);",
      '  process.on("SIGUSR2", () => process.exit(0));',
      "}",
    ].join("\n"));
    const elsewhere = tempDir();
    const m = startMaster(["-m", "manual", "-p", join(project.dir, "app.ts")], { cwd: elsewhere });
    await waitFor("the -p worker to run hono", () => existsSync(report), 15_000);
    expect(readFileSync(report, "utf8")).toBe("hono says hi");
    expect(await stopMaster(m)).toBe(0);
  });

  test("a package that is not installed is reported before any worker starts", async () => {
    writeFileSync(join(project.dir, "missing.ts"), 'import x from "no-such-package-einhorn-test";\nexport function einhorn_main() { return x; }\n');
    const r = await runBinary(["-m", "manual", "-p", join(project.dir, "missing.ts")], { cwd: project.dir });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no-such-package-einhorn-test/);
  });
});

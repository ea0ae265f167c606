// A throwaway npm project for tests that run real packages from the registry
// (frameworks, our own packed tarball). One project per test file: installing
// is the slow part, so a file creates it once (beforeAll) and removes it at the
// end (afterAll); tests write their own programs into it.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const NODE = Bun.which("node");
export const NPM = Bun.which("npm");

export interface NpmProject {
  dir: string;
  remove(): void;
}

/**
 * Install the given specs (registry names, or paths to tarballs) into a fresh
 * ESM project: with `npm install`, or with Bun's own installer (`bun add`,
 * the Bun that runs the tests) when `installer` is "bun".
 */
export async function npmProject(specs: string[], prefix = "einhorn-npm-", installer: "npm" | "bun" = "npm"): Promise<NpmProject> {
  if (installer === "npm" && !NPM) throw new Error("npm is not on PATH; these tests install real packages from the registry");
  const dir = mkdtempSync(join(tmpdir(), prefix));
  writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "einhorn-test-app", version: "1.0.0", private: true, type: "module" }, null, 2));
  if (specs.length) {
    const cmd = installer === "bun" ? [process.execPath, "add", ...specs] : [NPM!, "install", "--no-audit", "--no-fund", "--loglevel=error", ...specs];
    const p = Bun.spawn(cmd, { cwd: dir, stdout: "pipe", stderr: "pipe", env: { ...process.env, BUN_BE_BUN: "1" } });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    if (code !== 0) {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`${cmd.slice(0, 2).join(" ")} ${specs.join(" ")} failed (${code}):\n${out}${err}`);
    }
  }
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

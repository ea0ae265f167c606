// docs/recipes.md for Node and Bun: every recipe in examples/recipes runs
// under the compiled master with its framework from the npm registry, and
// goes through three upgrades under wrk load with no failed request.
// Node: plain http, Express, Fastify, Koa, Hono (node adapter), through listen().
// Bun: Hono and a plain fetch handler through serve(), and the same two as
// -p modules run by the binary's own Bun.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, readdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { BUN, listenerPort, ROOT, startMaster, stopMaster, tempDir, within } from "../harness";
import { NODE, npmProject, type NpmProject } from "../npm-project";
import { expectNoFailures, settled, needsOnPath, upgradesUnderLoad } from "../upgrade-under-load";

const RECIPES = join(ROOT, "examples", "recipes");
let project: NpmProject;

beforeAll(async () => {
  // What `npm install einhorn` puts in a project: the package's built module.
  const b = Bun.spawnSync([BUN, join(ROOT, "scripts/build-package.ts"), "--no-types"], { cwd: ROOT });
  if (b.exitCode !== 0) throw new Error(`building pkg/ failed: ${b.stderr}`);
  project = await npmProject(["express@5", "fastify@5", "koa@2", "hono@4", "@hono/node-server@1"]);
  symlinkSync(ROOT, join(project.dir, "node_modules", "einhorn"));
  for (const f of readdirSync(RECIPES)) copyFileSync(join(RECIPES, f), join(project.dir, f));
}, within(180_000));
afterAll(() => project?.remove());

async function recipe(args: string[], body: RegExp) {
  const m = startMaster(["-n", "2", "-m", "manual", "-b", "127.0.0.1:0", ...args], { cwd: project.dir, dir: tempDir() });
  const s = await settled(m, 2, 0);
  const url = `http://127.0.0.1:${listenerPort(s)}/`;
  expect(await (await fetch(url)).text()).toMatch(body);
  const r = await upgradesUnderLoad(m, url, 2);
  expectNoFailures(r);
  expect(await (await fetch(url)).text()).toMatch(body);
  expect(await stopMaster(m, "SIGINT", 30_000)).toBe(0);
  expect(m.output()).not.toMatch(/instead of Bun\.serve|exited with status [1-9]|killed by/);
}

const cases: Array<[string, string[], RegExp]> = [
  ["Node http, listen()", ["--", NODE!, "node-http.mjs"], /^hello from node http, worker \d+\n$/],
  ["Express, listen()", ["--", NODE!, "express.mjs"], /^hello from express, worker \d+\n$/],
  ["Fastify, listen()", ["--", NODE!, "fastify.mjs"], /^hello from fastify, worker \d+\n$/],
  ["Koa, listen()", ["--", NODE!, "koa.mjs"], /^hello from koa, worker \d+\n$/],
  ["Hono on Node, listen()", ["--", NODE!, "hono-node.mjs"], /^hello from hono on node, worker \d+\n$/],
  ["Hono on Bun, serve()", ["--", BUN, "hono-bun.ts"], /^hello from hono on bun, worker \d+\n$/],
  ["a fetch handler on Bun, serve()", ["--", BUN, "fetch-bun.ts"], /^hello from bun, worker \d+\n$/],
  ["Hono as a -p module", ["-p", "./hono-preload.ts"], /^hello from hono under -p, worker \d+\n$/],
  ["a fetch handler as a -p module", ["-p", "./fetch-preload.ts"], /^hello from a -p module, worker \d+\n$/],
];

describe("recipes under three upgrades with wrk load", () => {
  for (const [name, args, body] of cases) {
    // NODE is null when no node is on PATH; such a case then needs "node".
    const skip = needsOnPath("wrk", args.includes(NODE!) && !NODE ? "node" : null);
    test.skipIf(skip !== "")(`${name}${skip}`, () => recipe(args, body), 120_000);
  }
});

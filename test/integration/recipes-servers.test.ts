// docs/recipes.md, the servers people already run (Debian packages):
// gunicorn, uvicorn and puma under einhorn, each through three upgrades
// under wrk load with no failed request. USR2 means "re-exec" to gunicorn and
// puma: gunicorn runs with --retire-signal TERM (its graceful stop; its sync
// workers close every connection after the response anyway); uvicorn and
// puma close or keep keep-alive connections on their own stop in ways that
// fail requests, so their recipes drain first (see docs/recipes.md).
import { describe, expect, test } from "bun:test";
import { copyFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { freeTcpPort } from "../free-port";
import { listenerPort, ROOT, startMaster, stopMaster, tempDir, within } from "../harness";
import { expectNoFailures, needsOnPath, settled, upgradesUnderLoad } from "../upgrade-under-load";

const RECIPES = join(ROOT, "examples", "recipes");

/** The Python that Debian's uvicorn runs on (its #! line), which has the uvicorn module. */
function uvicornPython(): string {
  const first = readFileSync(Bun.which("uvicorn")!, "utf8").split("\n")[0]!;
  return first.startsWith("#!") ? first.slice(2).trim().split(/\s+/)[0]! : "python3";
}

function recipeDir(...files: string[]): string {
  const dir = tempDir();
  for (const f of files) copyFileSync(join(RECIPES, f), join(dir, f));
  return dir;
}


async function recipe(args: string[], dir: string, body: RegExp, port?: number) {
  const m = startMaster(args, { cwd: dir, dir });
  const s = await settled(m, 2, 0);
  const p = port ?? listenerPort(s);
  const url = `http://127.0.0.1:${p}/`;
  expect(await (await fetch(url)).text()).toMatch(body);
  const r = await upgradesUnderLoad(m, url, 2);
  // A failed request under load is rare and timing-bound: keep what the
  // servers and wrk said, so the one failure is enough to diagnose it.
  if (r.errorTotal) console.log(`servers' output:\n${m.output()}\nwrk:\n${r.raw}`);
  expectNoFailures(r);
  expect(await (await fetch(url)).text()).toMatch(body);
  expect(await stopMaster(m, "SIGINT", 30_000)).toBe(0);
  expect(m.output()).not.toMatch(/still alive \d+s after/);
}

describe("servers from Debian under einhorn", () => {
  const gunicornSkip = needsOnPath("wrk", "gunicorn");
  test.skipIf(gunicornSkip !== "")(`gunicorn --bind fd://$EINHORN_FD_0, --retire-signal TERM${gunicornSkip}`, async () => {
    const dir = recipeDir("wsgi_app.py");
    await recipe(["-n", "2", "-m", "2", "--retire-signal", "TERM", "-b", "127.0.0.1:0", "--",
      "sh", "-c", 'exec gunicorn --bind "fd://$EINHORN_FD_0" --workers 2 wsgi_app:app'], dir, /^hello from gunicorn, worker \d+\/\d+\n$/);
  }, within(120_000));

  const uvicornSkip = needsOnPath("wrk", "uvicorn");
  test.skipIf(uvicornSkip !== "")(`uvicorn on EINHORN_FD_0 (Config(fd=...), as --fd), draining on USR2${uvicornSkip}`, async () => {
    const dir = recipeDir("asgi_app.py");
    await recipe(["-n", "2", "-m", "2", "-b", "127.0.0.1:0", "--", uvicornPython(), "asgi_app.py"], dir, /^hello from uvicorn, worker \d+\n$/);
  }, within(120_000));

  const pumaSkip = needsOnPath("wrk", "puma");
  test.skipIf(pumaSkip !== "")(`puma with --listen-fds, --retire-signal QUIT (handled in config.ru)${pumaSkip}`, async () => {
    const dir = recipeDir("config.ru");
    const port = freeTcpPort();
    await recipe(["-n", "2", "-m", "2", "--retire-signal", "QUIT", "--listen-fds", "-b", `127.0.0.1:${port}`, "--",
      "puma", "-b", `tcp://127.0.0.1:${port}`, "config.ru"], dir, /^hello from puma, worker \d+\n$/, port);
  }, within(120_000));
});

import { describe, expect, test } from "bun:test";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll } from "bun:test";
import { parseMasterArgs } from "../../src/config/master-args";
import { OPTIONS } from "../../src/config/options";
import { ConfigFileError, parseConfigText } from "../../src/config/config-file";
import { rereadConfig } from "../../src/master/config-reload";

const dir = mkdtempSync(join(tmpdir(), "einhorn-config-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
function file(text: string): string {
  const p = join(dir, `c${++n}.yaml`);
  writeFileSync(p, text);
  return p;
}
const D = { tmpdir: "/tmp/x", cpus: 2 };

describe("config file", () => {
  test("every kind of option: values, flags, counts, lists, program and args", () => {
    const p = file(`
number: 4
ack-mode: manual
seconds: 0.5
bind: [127.0.0.1:8080, "unix:/tmp/a.sock,mode=0660"]
kill_children_on_exit: true
command-socket-as-fd: false
quiet: 2
drop-env-var: SECRET
command-name: web
program: /srv/app/server
args: [--port, 8080, "--name=a b"]
`);
    const c = parseMasterArgs(["--config", p], D);
    expect(c.number).toBe(4);
    expect(c.ackMode).toEqual({ kind: "manual" });
    expect(c.seconds).toBe(0.5);
    expect(c.binds.map((b) => b.text)).toEqual(["127.0.0.1:8080", "unix:/tmp/a.sock,mode=0660"]);
    expect(c.killChildrenOnExit).toBe(true);
    expect(c.commandSocketAsFd).toBe(false);
    expect(c.verbosity).toBe(2);
    expect(c.dropEnvVars).toEqual(["SECRET"]);
    expect(c.socketPath).toBe("/tmp/x/einhorn-web.sock");
    expect(c.program).toEqual(["/srv/app/server", "--port", "8080", "--name=a b"]);
    expect(c.configFile).toBe(p);
  });

  test("the command line overrides the file, option by option; its program replaces the file's", () => {
    const p = file("number: 4\nbind: [127.0.0.1:1, 127.0.0.1:2]\nseconds: 3\nprogram: [a, b]\n");
    const c = parseMasterArgs(["-n", "2", "--config", p, "-b", "127.0.0.1:9", "--", "x", "y"], D);
    expect(c.number).toBe(2);
    expect(c.seconds).toBe(3);
    expect(c.binds.map((b) => b.text)).toEqual(["127.0.0.1:9"]);
    expect(c.program).toEqual(["x", "y"]);
    expect(parseMasterArgs(["--config", p], D).program).toEqual(["a", "b"]);
  });

  test("mistakes name the file, the line and what is allowed", () => {
    const bad: Array<[string, RegExp]> = [
      ["number: 4\nnumbr: 3\n", /config .*c\d+\.yaml: line 2: unknown key 'numbr'\. Known keys: bind, backlog, .*program, args$/],
      ["number: [4\n", /config .*: line \d+: not valid YAML: /],
      ["- a\n- b\n", /expected a mapping of options/],
      ["number: 0\n", /config .*: -n\/--number wants a whole number from 1 to 1000, got '0'/],
      ["kill-children-on-exit: yes please\n", /line 1: 'kill-children-on-exit' is a flag: true or false, got "yes please"/],
      ["ack-mode: {a: 1}\n", /line 1: 'ack-mode' wants a number or a string/],
      ["program: [a, b]\nargs: [c]\n", /either in the 'program' list or in 'args'/],
      ["args: [c]\n", /'args' without 'program'/],
      ["config: other.yaml\n", /unknown key 'config'/],
      ["number: 1\nnumber: 2\n", /not valid YAML: Map keys must be unique/],
      ["number: 1\nnum_ber: 2\nnumber_: 3\n", /unknown key/],
    ];
    for (const [text, re] of bad) expect(() => parseMasterArgs(["--config", file(text)], D)).toThrow(re);
    expect(() => parseMasterArgs(["--config", join(dir, "missing.yaml")], D)).toThrow(/config .*missing\.yaml: cannot read it \(ENOENT\)/);
    expect(() => parseConfigText("max_unacked: 1\nmax-unacked: 2\n", "f", OPTIONS)).toThrow(ConfigFileError);
  });

  test("an empty file is no options", () => {
    expect(parseMasterArgs(["--config", file("# nothing\n"), "--", "x"], D).number).toBe(1);
  });
});

describe("re-reading the config file", () => {
  test("settings the file changed become a patch; the command line still wins; fixed options refuse", () => {
    const p = join(dir, "live.yaml");
    writeFileSync(p, "number: 2\nseconds: 1\nbind: [127.0.0.1:0]\nprogram: [srv, v1]\n");
    const old = parseMasterArgs(["--config", p, "--seconds", "5"], D);
    writeFileSync(p, "number: 3\nseconds: 2\nack-timeout: 30\nbind: [127.0.0.1:0]\nprogram: [srv, v2]\n");
    const r = rereadConfig(old, D);
    expect(r.patch).toEqual({ number: 3, ackTimeout: 30 });
    expect(r.config.program).toEqual(["srv", "v2"]);
    expect(r.config.seconds).toBe(5);
    expect(r.changes).toEqual(["number 2 -> 3", "ack-timeout null -> 30", 'program ["srv","v1"] -> ["srv","v2"]']);
    writeFileSync(p, "number: 3\nbind: [127.0.0.1:1]\nprogram: [srv]\n");
    expect(() => rereadConfig(old, D)).toThrow(/bind changed from \["127\.0\.0\.1:0"\] to \["127\.0\.0\.1:1"\], which only a restart of einhorn can apply/);
    writeFileSync(p, "number: three\n");
    expect(() => rereadConfig(old, D)).toThrow(/-n\/--number wants a whole number/);
  });
});

describe("the pidfile", () => {
  test("none unless -e or pidfile: asks for one (Einhorn 1.1.1's pidfile: nil)", () => {
    expect(parseMasterArgs(["--", "x"], D).pidfile).toBeNull();
    expect(parseMasterArgs(["-c", "web", "--", "x"], D).pidfile).toBeNull();
    expect(parseMasterArgs(["-e", "/run/x.pid", "--", "x"], D).pidfile).toBe("/run/x.pid");
    expect(parseMasterArgs(["--config", file("pidfile: /run/y.pid\nprogram: x\n")], D).pidfile).toBe("/run/y.pid");
  });

  test("a re-read keeps the default pidfile an older image handed over; dropping an explicit one is still a change", () => {
    const p = join(dir, "pid.yaml");
    writeFileSync(p, "program: [srv]\n");
    // What an image from before "no pidfile unless asked" hands over.
    const fromOlder = { ...parseMasterArgs(["--config", p, "-c", "web"], D), pidfile: "/tmp/x/einhorn-web.pid" };
    expect(rereadConfig(fromOlder, D).config.pidfile).toBe("/tmp/x/einhorn-web.pid");
    const explicit = { ...parseMasterArgs(["--config", p], D), pidfile: "/run/chosen.pid" };
    expect(() => rereadConfig(explicit, D)).toThrow(/pidfile changed from "\/run\/chosen\.pid" to null, which only a restart of einhorn can apply/);
  });
});

// docs/config.md against the code: its example is a config file this einhorn
// accepts, and its table of keys is the option registry's (src/config/options.ts).
import { expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseMasterArgs } from "../../src/config/master-args";
import { OPTIONS, type OptionSpec, type Reload, runTimeKey } from "../../src/config/options";

const md = readFileSync(join(import.meta.dir, "../../docs/config.md"), "utf8");

test("docs/config.md's example parses and means what its comments say", () => {
  const yaml = /```yaml\n([\s\S]*?)```/.exec(md)![1]!;
  const dir = mkdtempSync(join(tmpdir(), "einhorn-docs-"));
  try {
    writeFileSync(join(dir, "web.yaml"), yaml);
    const c = parseMasterArgs(["--config", join(dir, "web.yaml")], { tmpdir: "/tmp/t", cpus: 2 });
    expect(c.commandName).toBe("web");
    expect(c.number).toBe(4);
    expect(c.ackMode).toEqual({ kind: "manual" });
    expect(c.binds).toHaveLength(2);
    expect(c.maxMemory).toBe(512 * 1024 * 1024);
    expect(c.metrics).toBe("127.0.0.1:9100");
    expect(c.workerOutput).toBe("prefix");
    expect(c.program[0]).toBe("/srv/web/current/bin/server");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** What the docs say an upgrade does with a changed value, per reload class. */
const ON_UPGRADE: Record<Exclude<Reload, "once">, string> = {
  fixed: "fails it: needs a restart",
  master: "taken by the re-executed master",
  worker: "taken by the new workers",
  setting: "applied as it starts",
};

const cell = (text: string) => text.replace(/\|/g, "\\|");

function value(o: OptionSpec): string {
  switch (o.kind.takes) {
    case "flag": return "`true` or `false`";
    case "count": return `\`true\`, \`false\` or a count, 0 to ${o.kind.max - o.kind.min}`;
    case "value": return cell(o.repeat ? `${o.kind.allowed}; a list for several` : o.kind.allowed);
  }
}

/** The row docs/config.md has for option `o`. */
function row(o: OptionSpec): string {
  const same = o.short ? `\`-${o.short}\`, \`--${o.long}\`` : `\`--${o.long}\``;
  const runTime = o.atRunTime ? `\`config ${runTimeKey(o)}=\`` : "";
  return `| \`${o.long}\` | ${value(o)} | ${same} | ${ON_UPGRADE[o.reload as Exclude<Reload, "once">]} | ${runTime} |`;
}

test("docs/config.md's table of keys is the option registry's, in its order", () => {
  const section = md.slice(md.indexOf("| key | value | same as | an upgrade that changes it |"));
  const documented = section.split("\n").filter((l) => l.startsWith("| `")).map((l) => l.trim());
  const rows = OPTIONS.filter((o) => o.inFile).map(row);
  // Printed whole on a mismatch: paste it into docs/config.md.
  expect(documented.slice(0, rows.length).join("\n")).toBe(rows.join("\n"));
  expect(documented.slice(rows.length).map((l) => l.split(" | ")[0])).toEqual(["| `program`", "| `args`"]);
});

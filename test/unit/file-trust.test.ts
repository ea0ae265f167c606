// src/file-trust.ts: the words for modes and owners, and the walk from / to
// a file that follows symbolic links and checks every directory on the way.
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, type Stats, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { directoryProblem, octalMode, ownerProblem, resolveTrusted, UntrustedPath, writableBy } from "../../src/file-trust";

const dir = mkdtempSync(join(tmpdir(), "einhorn-trust-unit-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const me = process.getuid!();

describe("modes and owners", () => {
  test("who may write, and the mode as chmod takes it", () => {
    expect(writableBy(0o644)).toBeNull();
    expect(writableBy(0o664)).toBe("group");
    expect(writableBy(0o646)).toBe("others");
    expect(writableBy(0o1777)).toBe("group and others");
    expect(octalMode(0o100644)).toBe("0644");
    expect(octalMode(0o41777)).toBe("1777");
  });

  test("root and the uid running einhorn are trusted owners; no one else", () => {
    expect(ownerProblem(0, 1000)).toBeNull();
    expect(ownerProblem(1000, 1000)).toBeNull();
    expect(ownerProblem(65534, 0)).toBe("owned by uid 65534, not by root, which runs einhorn");
    expect(ownerProblem(65534, 1000)).toBe("owned by uid 65534, not by root or uid 1000, which runs einhorn");
  });

  test("a directory others may write is safe only when sticky", () => {
    const st = (mode: number, uid = 0) => ({ mode: 0o40000 | mode, uid }) as Stats;
    expect(directoryProblem("/d", st(0o755), 0)).toBeNull();
    expect(directoryProblem("/tmp", st(0o1777), 0)).toBeNull();
    expect(directoryProblem("/d", st(0o775), 0)).toBe("directory /d on the way to it is writable by group (mode 0775) and not sticky, so another user could replace what is in it; chmod g-w,o-w /d");
    expect(directoryProblem("/d", st(0o755, 42), 1000)).toBe("directory /d on the way to it is owned by uid 42, not by root or uid 1000, which runs einhorn, so that user could replace what is in it; chown it to one of them");
  });
});

describe("resolveTrusted", () => {
  // The temp dir is this process's (mkdtemp: 0700), inside sticky /tmp: a safe place.
  const file = join(dir, "c.yaml");
  writeFileSync(file, "number: 1\n", { mode: 0o644 });
  mkdirSync(join(dir, "sub"), { mode: 0o755 });
  symlinkSync("../c.yaml", join(dir, "sub", "rel"));
  symlinkSync(join(dir, "sub", "rel"), join(dir, "abs"));
  symlinkSync("loop", join(dir, "loop"));

  test("follows absolute and relative links, and '..', to the file", () => {
    expect(resolveTrusted(file, me).real).toBe(file);
    expect(resolveTrusted(join(dir, "abs"), me).real).toBe(file);
    expect(resolveTrusted(join(dir, "sub", "..", "sub", "rel"), me).real).toBe(file);
    expect(resolveTrusted(join(dir, "abs"), me).st.isFile()).toBe(true);
  });

  test("a lookup that fails says which errno, and where when it is not the path itself", () => {
    const fail = (p: string) => { try { resolveTrusted(p, me); } catch (e) { return e as UntrustedPath; } throw new Error(`${p} passed`); };
    expect(fail(join(dir, "nope")).message).toBe("cannot read it (ENOENT)");
    expect(fail(join(dir, "nope", "x")).message).toBe(`cannot read it (ENOENT at ${join(dir, "nope")})`);
    expect(fail(join(dir, "c.yaml", "x")).code).toBe("ENOTDIR");
    expect(fail(join(dir, "loop")).code).toBe("ELOOP");
  });

  test("a directory group may write, met through a link, is refused", () => {
    const open = join(dir, "open");
    mkdirSync(open);
    chmodSync(open, 0o775);
    writeFileSync(join(open, "c.yaml"), "number: 1\n", { mode: 0o644 });
    symlinkSync(join(open, "c.yaml"), join(dir, "to-open"));
    expect(() => resolveTrusted(join(dir, "to-open"), me)).toThrow(`directory ${open} on the way to it is writable by group (mode 0775) and not sticky`);
  });
});

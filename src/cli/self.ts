// How to start this same einhorn again: the compiled binary alone, or the Bun
// runtime plus this entry script when run from source (`bun src/cli/main.ts`).

export function selfCommand(): string[] {
  const main = Bun.main;
  // A `bun build --compile` binary serves its sources from Bun's virtual file system.
  if (main.startsWith("/$bunfs/") || main.startsWith("B:/~BUN/")) return [process.execPath];
  return [process.execPath, main];
}

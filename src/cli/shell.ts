// placeholder replaced by the einhorn sh implementation
export async function runShell(_argv: string[]): Promise<number> {
  process.stderr.write("einhorn sh: not available yet\n");
  return 2;
}

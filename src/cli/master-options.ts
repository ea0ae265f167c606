// The master's option parser lives in src/config/master-args.ts, below both
// src/cli and src/master. systemd-unit.ts, rewritten on another branch,
// still imports it from here; once that lands it imports src/config
// directly and this file goes.
export { type MasterConfig, parseMasterArgs, splitArgv, UsageError } from "../config/master-args";

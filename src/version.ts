// The version reported by --version, `ehlo`, `state` and --upgrade-check.
import pkg from "../package.json";

export const EINHORN_VERSION: string = pkg.version;

// Replaced at compile time by scripts/build.ts --tag NAME, so two binaries of
// the same version can be told apart (for instance across a re-exec test).
declare const __EINHORN_BUILD_TAG__: string | undefined;
export const EINHORN_BUILD_TAG: string = typeof __EINHORN_BUILD_TAG__ === "string" ? __EINHORN_BUILD_TAG__ : "";

export function einhornVersionLabel(): string {
  return EINHORN_BUILD_TAG ? `${EINHORN_VERSION}+${EINHORN_BUILD_TAG}` : EINHORN_VERSION;
}

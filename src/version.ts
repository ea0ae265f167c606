// The version reported by --version, `ehlo`, `state` and --upgrade-check.
import { version } from "../package.json";

export const EINHORN_VERSION: string = version;

// Replaced at compile time by scripts/build.ts --tag NAME, so two binaries of
// the same version can be told apart (for instance across a re-exec test).
declare const __EINHORN_BUILD_TAG__: string | undefined;
export const EINHORN_BUILD_TAG: string = typeof __EINHORN_BUILD_TAG__ === "string" ? __EINHORN_BUILD_TAG__ : "";

export function einhornVersionLabel(): string {
  return EINHORN_BUILD_TAG ? `${EINHORN_VERSION}+${EINHORN_BUILD_TAG}` : EINHORN_VERSION;
}

// The release target a binary was built for (linux-x64, linux-arm64-musl, ...),
// baked in by scripts/release.ts so that `einhorn --version` says which
// download this is; empty in a development build (scripts/build.ts).
declare const __EINHORN_TARGET__: string | undefined;
export const EINHORN_TARGET: string = typeof __EINHORN_TARGET__ === "string" ? __EINHORN_TARGET__ : "";

/** The line `einhorn --version` prints. */
export function versionLine(): string {
  return `einhorn ${einhornVersionLabel()}${EINHORN_TARGET ? ` (${EINHORN_TARGET})` : ""}`;
}

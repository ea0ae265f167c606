// The version reported by --version, `ehlo` and `state`.
import pkg from "../package.json";

export const EINHORN_VERSION: string = pkg.version;

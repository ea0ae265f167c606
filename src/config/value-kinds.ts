// The kinds of value the master's options take. Each kind has one parser and
// one description of what it allows, and the command line, the config file
// and the command socket's `config` all parse with it: "seconds > 0" or "1 to
// 1000" is checked one way and said one way, wherever a value comes from.
// Values arrive as text (argv is text; config-file.ts and `config` turn YAML
// numbers into text first), so a number means the same in all three.
import { BindSpecError, type BindSpec, parseBindSpec } from "./bind-spec";
import { shellSplit } from "../shell-split";
import { parseSignal, shortSignalName, type SignalName } from "../signal-names";

/**
 * A value, or a refusal. `why` is given when the parser knows more than
 * "not what is allowed" (which part of a bind spec is wrong); otherwise the
 * message is built from `allowed`.
 */
export type Parsed<T> = { ok: true; value: T } | { ok: false; why?: string };

export interface ValueKind<T> {
  takes: "value";
  /** What is allowed, as messages say it after "wants": "a whole number from 1 to 1000". */
  allowed: string;
  /**
   * The same, compact, as the command socket's `config` answers say it after
   * "must be" ("a whole number 1..1000"); its clients have seen this wording.
   */
  notation: string;
  parse(text: string): Parsed<T>;
  /** What a config diff shows of a value, where that is not the value itself (a bind spec: its text). */
  show?(value: T): unknown;
  /**
   * Texts at the edges of what is allowed, for the test that walks every
   * option through argv, the file and `config`: the first list must parse,
   * the second must not.
   */
  samples: { accepted: readonly string[]; refused: readonly string[] };
}

/** A flag takes no value: given or not. */
export interface FlagKind { takes: "flag" }

/**
 * A flag whose repetitions count (-qq): each one moves `field` by the
 * option's step from `base`, and the sum stays within min..max.
 */
export interface CountKind { takes: "count"; base: number; min: number; max: number }

export type OptionKind = ValueKind<unknown> | FlagKind | CountKind;

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const NO: Parsed<never> = { ok: false };

export const FLAG: FlagKind = { takes: "flag" };

/** 0 debug, 1 info (the default), 2 errors only: Einhorn's scale; -q and -v move along it. */
export const VERBOSITY: CountKind = { takes: "count", base: 1, min: 0, max: 2 };

export function wholeNumber(min: number, max = Number.MAX_SAFE_INTEGER): ValueKind<number> & { min: number; max: number } {
  const capped = max !== Number.MAX_SAFE_INTEGER;
  return {
    takes: "value",
    min,
    max,
    allowed: capped ? `a whole number from ${min} to ${max}` : `a whole number at least ${min}`,
    notation: capped ? `a whole number ${min}..${max}` : `a whole number >= ${min}`,
    parse: (t) => (/^-?\d+$/.test(t.trim()) && Number(t) >= min && Number(t) <= max ? ok(Number(t)) : NO),
    samples: { accepted: [String(min), ...(capped ? [String(max)] : [])], refused: [String(min - 1), ...(capped ? [String(max + 1)] : []), "1.5", "many"] },
  };
}

/** A number of seconds: finite, and above 0 (or, where 0 means "off", at least 0). */
function secondsKind(zeroIsOff: boolean): ValueKind<number> {
  return {
    takes: "value",
    allowed: zeroIsOff ? "a number of seconds, 0 (off) or more" : "a number of seconds greater than 0",
    notation: zeroIsOff ? "a number of seconds >= 0" : "a number of seconds > 0",
    parse(t) {
      const n = Number(t);
      return t.trim() !== "" && Number.isFinite(n) && (zeroIsOff ? n >= 0 : n > 0) ? ok(n) : NO;
    },
    samples: zeroIsOff
      ? { accepted: ["0", "1", "2.5"], refused: ["-1", "", "soon", "Infinity"] }
      : { accepted: ["0.001", "1", "2.5"], refused: ["0", "-1", "", "soon", "Infinity"] },
  };
}

/** A duration that must be longer than nothing: intervals and timeouts. */
export const POSITIVE_SECONDS = secondsKind(false);
/** A window that may be switched off: 0 (off) or a number of seconds (--upgrade-bake). */
export const SECONDS_OR_OFF = secondsKind(true);

export type AckMode = { kind: "timer"; seconds: number } | { kind: "manual" };

/** -m: 'manual', or the seconds a worker must live to count as up (0: at once). */
export const ACK_MODE: ValueKind<AckMode> = {
  takes: "value",
  allowed: "'manual' or a number of seconds of 0 or more (timer)",
  notation: "'manual' or a number of seconds >= 0",
  parse(t) {
    if (t === "manual") return ok({ kind: "manual" });
    const n = Number(t);
    return t.trim() !== "" && Number.isFinite(n) && n >= 0 ? ok({ kind: "timer", seconds: n }) : NO;
  },
  samples: { accepted: ["manual", "0", "1.5"], refused: ["-1", "banana", " "] },
};

/** 512M, 1.5G, 300k, 1048576: bytes. Units are powers of 1024. Null when it is not a size. */
export function parseSize(text: string): number | null {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$/i.exec(text);
  if (!m) return null;
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase() as "" | "k" | "m" | "g" | "t"];
  const n = Math.round(Number(m[1]) * mult);
  return n > 0 ? n : null;
}

/** A number of bytes, at least `min` (given as a size: "1M"). */
export function size(min: string): ValueKind<number> {
  const floor = parseSize(min)!;
  return {
    takes: "value",
    allowed: `a size of at least ${min}, in bytes or with K, M, G or T (powers of 1024), like 512M`,
    notation: `a size >= ${min}`,
    parse(t) {
      const n = parseSize(t);
      return n !== null && n >= floor ? ok(n) : NO;
    },
    samples: { accepted: [min, "512M", "2G"], refused: [String(floor - 1), "lots", "-1M"] },
  };
}

/** 'a', 'b' or 'c'. */
function spoken(words: readonly string[]): string {
  const q = words.map((w) => `'${w}'`);
  return q.length === 1 ? q[0]! : `${q.slice(0, -1).join(", ")} or ${q[q.length - 1]}`;
}

export function oneOf<W extends string>(choices: readonly W[]): ValueKind<W> {
  return {
    takes: "value",
    allowed: spoken(choices),
    notation: spoken(choices),
    parse: (t) => ((choices as readonly string[]).includes(t) ? ok(t as W) : NO),
    samples: { accepted: choices, refused: ["bogus", ""] },
  };
}

/** A signal among `choices`, in any spelling signal-names.ts reads (TERM, SIGTERM, 15); `purpose` says what they have in common. */
export function signalChoice(choices: readonly SignalName[], purpose: string): ValueKind<SignalName> {
  const names = choices.map(shortSignalName);
  const allowed = `one of ${names.join(", ")} (${purpose})`;
  return {
    takes: "value",
    allowed,
    notation: allowed,
    parse(t) {
      const sig = parseSignal(t.trim());
      return sig !== null && choices.includes(sig) ? ok(sig) : NO;
    },
    samples: { accepted: [...names, ...choices], refused: ["HUP", "USR3", ""] },
  };
}

export const BIND: ValueKind<BindSpec> = {
  takes: "value",
  allowed: "HOST:PORT, [IPV6]:PORT, unix:/PATH or systemd:NAME|INDEX, then optional ,FLAG...",
  notation: "a bind address",
  parse(t) {
    try {
      return ok(parseBindSpec(t));
    } catch (e) {
      if (e instanceof BindSpecError) return { ok: false, why: e.message };
      throw e;
    }
  },
  show: (spec) => spec.text,
  samples: { accepted: ["127.0.0.1:0", "[::1]:8080,r", "unix:/tmp/x.sock,mode=0660"], refused: ["1.2.3.4:99999", "nowhere"] },
};

/** A TCP address to serve on, without the bind flags (--metrics). */
export const TCP_ADDRESS: ValueKind<string> = {
  takes: "value",
  allowed: "HOST:PORT (like 127.0.0.1:9100, [::1]:9100 or 0.0.0.0:0)",
  notation: "HOST:PORT",
  parse(t) {
    let spec: BindSpec;
    try { spec = parseBindSpec(t); } catch { return NO; }
    return spec.address.kind === "tcp" && !spec.text.includes(",") ? ok(t) : NO;
  },
  samples: { accepted: ["127.0.0.1:9100", "[::1]:0"], refused: ["unix:/x", "127.0.0.1:1,r", "9100"] },
};

/** Any text: a path or a name is taken as given (what it names is checked where it is used). */
export function anyText(allowed: string): ValueKind<string> {
  return { takes: "value", allowed, notation: allowed, parse: ok, samples: { accepted: ["x", "/a b/c"], refused: [] } };
}

/** A command line, split as a shell would split simple words (--reexec-as). */
export const COMMAND_LINE: ValueKind<string> = {
  takes: "value",
  allowed: "a command line (words split as a shell would)",
  notation: "a command line",
  parse(t) {
    let words: string[];
    try { words = shellSplit(t); } catch (e) { return { ok: false, why: (e as Error).message }; }
    return words.length > 0 ? ok(t) : NO;
  },
  samples: { accepted: ["/usr/bin/env einhorn", "sh -c 'exec einhorn \"$@\"' --"], refused: ["", "'unterminated"] },
};

export interface Nice { master: number | null; worker: number | null; reniceCmd: string | null }

const NICE_LEVEL = wholeNumber(-20, 19);

/** --nice MASTER[:WORKER]: either part may be empty (":10" sets the workers' only). */
export const NICE: ValueKind<Nice> = {
  takes: "value",
  allowed: `MASTER[:WORKER], nice levels from ${NICE_LEVEL.min} to ${NICE_LEVEL.max}`,
  notation: "MASTER[:WORKER]",
  parse(t) {
    const [mst, wrk, ...cmd] = t.split(":");
    const nice: Nice = { master: null, worker: null, reniceCmd: null };
    for (const [which, text] of [["master", mst], ["worker", wrk]] as const) {
      if (!text) continue;
      const level = NICE_LEVEL.parse(text);
      if (!level.ok) return { ok: false, why: `${which} level must be ${NICE_LEVEL.allowed}, got '${text}' in '${t}'` };
      nice[which] = level.value;
    }
    if (cmd.length) {
      return { ok: false, why: `a RENICE_CMD ('${cmd.join(":")}') is not supported; einhorn sets worker priorities itself with setpriority(2), so give --nice MASTER:WORKER` };
    }
    return ok(nice);
  },
  samples: { accepted: ["-20", "19:-20", ":5", "5"], refused: ["20", "0:-21", "0:5:renice"] },
};

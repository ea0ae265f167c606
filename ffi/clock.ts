// clock_gettime(2). Date.now() is the wall clock, which an operator or NTP
// may step; protocols that speak of CLOCK_MONOTONIC (sd_notify's
// MONOTONIC_USEC=) need the kernel's own reading, not a runtime's stand-in.
import { ptr } from "bun:ffi";
import { check, sym } from "./libc";

export const CLOCK_REALTIME = 0;
export const CLOCK_MONOTONIC = 1;

/** struct timespec of `clock`, as whole seconds and nanoseconds. */
export function clockGettime(clock: number): { sec: bigint; nsec: bigint } {
  // struct timespec { time_t tv_sec; long tv_nsec; }: two 64-bit fields on x86-64 and aarch64.
  const ts = new BigInt64Array(2);
  check(sym.clock_gettime(clock, ptr(ts)), "clock_gettime", String(clock));
  return { sec: ts[0]!, nsec: ts[1]! };
}

/** CLOCK_MONOTONIC in microseconds. */
export function monotonicMicros(): bigint {
  const t = clockGettime(CLOCK_MONOTONIC);
  return t.sec * 1_000_000n + t.nsec / 1000n;
}

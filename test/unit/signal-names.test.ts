// The one table of signal names (src/signal-names.ts): every spelling an
// operator, a document or the kernel gives, and what it reads as.
import { describe, expect, test } from "bun:test";
import { constants } from "node:os";
import {
  isSignalName, parseSignal, SIGNAL_NAMES, type SignalName, shortSignalName, signalFromNumber, signalNumber, STANDARD_SIGNALS,
} from "../../src/signal-names";

describe("parseSignal", () => {
  const cases: Array<[string, SignalName | null]> = [
    ["USR2", "SIGUSR2"], ["usr2", "SIGUSR2"], ["SIGUSR2", "SIGUSR2"], ["sigusr2", "SIGUSR2"], ["SigUsr2", "SIGUSR2"], ["12", "SIGUSR2"],
    ["Hup", "SIGHUP"], ["1", "SIGHUP"], ["KILL", "SIGKILL"], ["9", "SIGKILL"], ["ALRM", "SIGALRM"], ["14", "SIGALRM"], ["31", "SIGSYS"],
    // Aliases read as the canonical name: the core records one name per signal.
    ["IOT", "SIGABRT"], ["SIGPOLL", "SIGIO"], ["cld", "SIGCHLD"],
    ["RTMIN", "SIGRTMIN"], ["34", "SIGRTMIN"], ["rtmin+3", "SIGRTMIN+3"], ["SIGRTMAX-1", "SIGRTMAX-1"], ["64", "SIGRTMAX"],
    ["", null], ["SIG", null], ["0", null], ["32", null], ["33", null], ["65", null], ["-1", null], ["1.5", null], ["0x0c", null],
    [" USR2", null], ["USR2 ", null], ["USR3", null], ["SIGSIGUSR2", null], ["RTMIN+16", null], ["12abc", null],
  ];
  for (const [input, out] of cases) test(`${JSON.stringify(input)} -> ${out}`, () => expect(parseSignal(input)).toBe(out));
  test("SIGRTMAX-1 is 63, SIGRTMAX-14 is 50, SIGRTMIN+15 is 49", () => {
    expect(signalNumber(parseSignal("SIGRTMAX-1")!)).toBe(63);
    expect(signalNumber(parseSignal("RTMAX-14")!)).toBe(50);
    expect(signalNumber(parseSignal("RTMIN+15")!)).toBe(49);
  });
});

describe("numbers and names", () => {
  test("every named signal has the number Linux gives it (Node's table agrees for the standard ones and their aliases)", () => {
    for (const [name, num] of Object.entries(constants.signals)) expect(signalNumber(parseSignal(name)!)).toBe(num);
    expect(STANDARD_SIGNALS.map(signalNumber)).toEqual(Array.from({ length: 31 }, (_, i) => i + 1));
  });

  test("number -> name -> number round-trips for 1..31 and 34..64; 0, 32, 33 and 65 have no name", () => {
    for (let n = 1; n <= 64; n++) {
      const name = signalFromNumber(n);
      if (n === 32 || n === 33) expect(name).toBeNull();
      else expect(signalNumber(name!)).toBe(n);
    }
    for (const n of [0, 65, -1, 1.5, NaN]) expect(signalFromNumber(n)).toBeNull();
    expect(SIGNAL_NAMES.length).toBe(62);
    expect(new Set(SIGNAL_NAMES).size).toBe(62);
  });

  test("canonical names only pass isSignalName; the short form drops SIG", () => {
    expect(isSignalName("SIGUSR2")).toBe(true);
    for (const x of ["USR2", "SIGIOT", "sigusr2", "12", 12, null, undefined]) expect(isSignalName(x)).toBe(false);
    expect(shortSignalName("SIGUSR2")).toBe("USR2");
    expect(shortSignalName("SIGRTMIN+3")).toBe("RTMIN+3");
  });
});

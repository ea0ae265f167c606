// Writing to stdout and stderr without Node's stream machinery. The first use
// of process.stdout or process.stderr loads node:stream and its helpers, about
// 2 ms of CPU: more than the rest of `einhorn sh -e CMD` or `einhorn
// --upgrade-check` together. A plain write(2) does for short-lived commands;
// the stream remains the fallback where a write would block.
import { writeSync } from "node:fs";

/** Descriptors that once refused a write (EAGAIN): from then on only their stream, so output stays in order. */
const viaStream = new Set<number>();

function streamOf(fd: 1 | 2): NodeJS.WriteStream {
  return fd === 1 ? process.stdout : process.stderr;
}

/**
 * Write all of `text` to fd 1 or 2; resolves once it is handed to the OS (so
 * process.exit loses nothing). A closed reader (EPIPE, `einhorn sh -e state |
 * head`) drops the text silently; a non-blocking descriptor that is full
 * (EAGAIN) hands the rest to the stream, which waits for it to drain.
 */
export function writeOut(fd: 1 | 2, text: string): Promise<void> {
  if (text === "") return Promise.resolve();
  let data = Buffer.from(text);
  if (!viaStream.has(fd)) {
    try {
      while (data.length) data = data.subarray(writeSync(fd, data));
      return Promise.resolve();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") return Promise.resolve();
      viaStream.add(fd);
    }
  }
  const stream = streamOf(fd);
  return new Promise((resolve) => {
    try {
      stream.write(data, () => resolve());
    } catch {
      resolve(); // a closed pipe: nothing more to say there
    }
  });
}

/** Synchronous best effort, for the last words before process.exit. */
export function writeOutSync(fd: 1 | 2, text: string): void {
  if (viaStream.has(fd)) {
    streamOf(fd).write(text);
    return;
  }
  let data = Buffer.from(text);
  try {
    while (data.length) data = data.subarray(writeSync(fd, data));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EAGAIN") streamOf(fd).write(data);
  }
}

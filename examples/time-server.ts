// The time server from Einhorn's announcement, as a Bun worker: every
// connection gets one line with the current time and is closed.
//
//   einhorn -b 127.0.0.1:2345 -n 4 -m manual -- bun examples/time-server.ts
//   nc 127.0.0.1 2345
//
// Outside einhorn it listens on $PORT (default 2345) by itself.
import type { Socket, TCPSocketListener } from "bun";
import { ack, childIndex, isWorker, onGracefulShutdown, socketFd } from "einhorn/worker";

let open = 0;
let leaving = false;
const handlers = {
  open(s: Socket) {
    open++;
    s.end(`The time is ${new Date().toISOString()} (worker ${process.pid}, index ${childIndex() ?? "-"})\n`);
  },
  close() {
    open--;
    if (leaving && open === 0) process.exit(0);
  },
  data() {},
};

// Bun.listen adopts a listening descriptor with { fd }; that option is missing from its types.
const listenFd = Bun.listen as unknown as (o: { fd: number; socket: typeof handlers }) => TCPSocketListener;

let listener: TCPSocketListener;
if (isWorker()) {
  listener = listenFd({ fd: socketFd(0), socket: handlers });
  await ack();
} else {
  listener = Bun.listen({ hostname: "127.0.0.1", port: Number(process.env.PORT ?? 2345), socket: handlers });
  console.log(`time server listening on 127.0.0.1:${listener.port} (not under einhorn)`);
}

// SIGUSR2 from the master: stop accepting (the other workers keep the shared
// socket), let the last answers go out, exit.
onGracefulShutdown(() => {
  leaving = true;
  listener.stop();
  if (open === 0) process.exit(0);
});

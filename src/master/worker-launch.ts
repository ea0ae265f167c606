// Starting workers: what this image's configuration says workers run (the
// candidate spec a new generation gets), how a worker of a generation is
// started from that generation's own spec, and the `spawn` effect's work
// around Os.spawn (the worker's command connection and output capture).
import { existsSync, realpathSync } from "node:fs";
import { resolve } from "node:path";
import * as sock from "../../ffi/socket";
import { fsPath } from "../../ffi/os-string";
import type { WorkerSpec } from "../core/generation";
import { specOf } from "../core/pool";
import type { State } from "../core/state";
import type { Logger } from "../logging";
import type { MasterConfig } from "./config";
import type { Listener } from "./listeners";
import type { Os } from "./os";
import { pinSelfImage, resolveProgram, spawnWorker, type WorkerPlan } from "./spawner";
import type { OutputCapture, PreparedCapture } from "./worker-output";
import { workerNotifyEnv } from "./sd-notify";

/** What starting a worker needs to see of the master. */
export interface LaunchView {
  state(): State;
  os: Pick<Os, "spawn">;
  log: Pick<Logger, "warn" | "error">;
  config: MasterConfig;
  /** How to run this einhorn binary (the exec helper, -p workers). */
  selfCommand: string[];
  /** The environment the master was started with: what a new generation's workers inherit. */
  env: Record<string, string | undefined>;
  /** The listening sockets every worker gets (filled in once the master has bound or adopted them). */
  listeners(): Listener[];
  /** --worker-output: each worker's stdout and stderr are read through it (null for inherit). */
  capture: OutputCapture | null;
  /** Serve the master's end of a worker's -g socketpair as a command connection. */
  adoptConnection(fd: number): Promise<unknown>;
}

export class WorkerLaunch {
  /** This binary's running image, pinned (see pinSelfImage); null without /proc. */
  private selfExec: string | null = null;
  /** Generations whose recorded program was gone at a spawn (warned once each). */
  private readonly goneWarned = new Set<number>();

  constructor(private readonly v: LaunchView) {}

  /** Hold this image open, so later spawns do not depend on the binary's path on disk. */
  pinImage(): void {
    this.selfExec = pinSelfImage();
  }

  /**
   * What this image's configuration says workers run: the spec of the first
   * generation at start, and after a re-exec the candidate an upgrade rolls
   * out (generations already running keep theirs). The program is looked up
   * in PATH and its symlinks resolved now, so a release behind a `current`
   * symlink that moves later is not picked up by respawns (an upgrade makes a
   * new spec). A program that cannot be found now gets its spawn's own error.
   */
  candidateSpec(): WorkerSpec {
    const cfg = this.v.config;
    const env = Object.fromEntries(Object.entries(this.v.env).filter((e): e is [string, string] => e[1] !== undefined));
    let programPath: string | null = null;
    if (!cfg.preload && cfg.program.length) {
      try { programPath = realpathSync(fsPath(resolveProgram(cfg.program[0]!, env.PATH))); } catch { /* reported by the spawn */ }
    }
    let cwd = "/";
    try { cwd = realpathSync(process.cwd()); } catch { /* a removed directory: recorded as / */ }
    // -p's module by its real path too (a re-read file may name it relatively, or through `current`).
    let preload: string | null = null;
    if (cfg.preload) {
      preload = resolve(cwd, cfg.preload);
      try { preload = realpathSync(fsPath(preload)); } catch { /* checked by the preflight and the spawn */ }
    }
    return {
      program: cfg.program,
      programPath,
      preload,
      cwd,
      // NOTIFY_SOCKET and WATCHDOG_* are the master's (sd-notify.ts), unless --pass-notify-socket.
      env: workerNotifyEnv(env, cfg.passNotifySocket),
      retireSignal: cfg.retireSignal,
      killChildrenOnExit: cfg.killChildrenOnExit,
      commandSocketAsFd: cfg.commandSocketAsFd,
      listenFds: cfg.listenFds,
      nice: cfg.nice.worker,
    };
  }

  /** How to start a worker of generation `version`, from its own spec. */
  private planFor(version: number): WorkerPlan {
    const spec = specOf(this.v.state(), version);
    let programFile: string | undefined;
    if (spec.preload) {
      // With -p, every worker is this binary running the preload module; PROGRAM ARGS become its argv.
      programFile = this.selfExec ?? undefined;
    } else if (spec.programPath) {
      if (existsSync(fsPath(spec.programPath))) programFile = spec.programPath;
      else if (!this.goneWarned.has(version)) {
        this.goneWarned.add(version);
        this.v.log.warn(`Version ${version}'s program ${spec.programPath} is gone; starting its workers from '${spec.program[0]}' as given`);
      }
    }
    const listeners = this.v.listeners();
    return {
      program: spec.preload ? [...this.v.selfCommand, "_preload", spec.preload, "--", ...spec.program] : spec.program,
      programFile,
      listenFds: spec.listenFds,
      listenNames: listeners.map((l) => l.spec.name ?? "einhorn"),
      listenerFds: listeners.map((l) => l.fd),
      sockPath: this.v.config.socketPath,
      selfCommand: this.v.selfCommand,
      ...(this.selfExec ? { selfExec: this.selfExec } : {}),
      killChildrenOnExit: spec.killChildrenOnExit,
      retireSignal: spec.retireSignal,
      workerNice: spec.nice,
      baseEnv: spec.env,
    };
  }

  /** The `spawn` effect's work: the worker's command connection and output capture, then Os.spawn. */
  spawnWorker(index: number, version: number): number {
    const capture = this.v.capture;
    let pair: [number, number] | null = null;
    let captured: PreparedCapture | null = null;
    try {
      const plan = this.planFor(version);
      if (specOf(this.v.state(), version).commandSocketAsFd) pair = sock.socketpair();
      if (capture) captured = capture.output.prepare();
      const pid = spawnWorker((file, argv, env, opts) => this.v.os.spawn(file, argv, env, opts), plan, index, pair ? pair[1] : null, (e) => this.v.log.error(`Worker ${e.message}`), captured?.child ?? null);
      if (captured) capture!.output.attach(captured, pid, index);
      if (pair) {
        sock.close(pair[1]);
        const masterEnd = pair[0];
        this.v.adoptConnection(masterEnd).catch((e) => {
          this.v.log.error(`Could not serve the command connection of worker ${pid}: ${(e as Error).message}`);
          try { sock.close(masterEnd); } catch { /* gone */ }
        });
      }
      return pid;
    } catch (e) {
      if (pair) for (const fd of pair) { try { sock.close(fd); } catch { /* already closed */ } }
      if (captured) capture!.output.abandon(captured);
      throw e;
    }
  }
}

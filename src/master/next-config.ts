// The configuration the next master image gets. Every upgrade or reload
// re-reads --config FILE (config-reload.ts says what a change may be and
// how it is applied); what it found is kept here until the exec hands it
// over, and only a successful re-read replaces what an earlier one found.
import type { State } from "../core/state";
import type { MasterConfig } from "./config";
import { type ConfigReload, rereadConfig } from "./config-reload";

export class NextConfig {
  /** What the latest successful re-read found (null before the first). */
  private reload: ConfigReload | null = null;

  constructor(private readonly current: MasterConfig) {}

  /** Re-read --config FILE now; the changes it found, for people. Throws an Error saying why the file cannot be used. */
  reread(): string[] {
    this.reload = rereadConfig(this.current);
    return this.reload.changes;
  }

  /** The configuration the next image starts with. */
  get config(): MasterConfig {
    return this.reload?.config ?? this.current;
  }

  /** The state the next image continues from: with --config, what the re-read file says (its settings patched in). */
  state(now: State): State {
    return this.reload ? { ...now, settings: { ...now.settings, ...this.reload.patch } } : now;
  }
}

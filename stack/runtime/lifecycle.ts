/**
 * The one lifecycle of a running stack, for `faultstack run` in one thread, for the
 * sharded run's main thread and for each shard worker: what was set up is undone in
 * reverse order, each step best effort (a step that fails must not keep the next one
 * from running: a device left behind is worse than a log line lost), and shutdown()
 * runs it once however many times it is asked for (a signal, a device error and the
 * control plane may all ask).
 */
export type Cleanup = () => void | Promise<void>;

export class Lifecycle {
  private readonly steps: Cleanup[] = [];
  private stopping: Promise<void> | null = null;
  private resolveClosed!: () => void;
  /** Settles when shutdown() has undone every step. */
  readonly closed = new Promise<void>((r) => {
    this.resolveClosed = r;
  });

  /** Registers what undoes the step just taken; steps are undone last first. */
  defer(step: Cleanup): void {
    this.steps.push(step);
  }

  /** Undoes every step once; later calls wait for the first one. */
  shutdown(): Promise<void> {
    if (!this.stopping) {
      this.stopping = (async () => {
        while (this.steps.length > 0) {
          const step = this.steps.pop()!;
          try {
            await step();
          } catch {
            /* best effort: the remaining steps still run */
          }
        }
        this.resolveClosed();
      })();
    }
    return this.stopping;
  }

  get shuttingDown(): boolean {
    return this.stopping !== null;
  }
}

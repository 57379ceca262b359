/**
 * KB 297040's connection-table lock, as the emulated Windows stack had it.
 *
 * What it models, exactly: the lock that Windows' TCP takes around work on its
 * connection table. faultstack's own table needs no lock (one thread: every table
 * operation runs to its end, stack/tcp/conntable.ts), so the emulation takes it only
 * where the article says it matters: on the failure path of an active open (the
 * TCP layer's activeOpenFailed hook, index.ts). The hotfixed path takes it and
 * releases it at once; the buggy one takes it and returns without releasing it.
 * While it is held, everything that would need the table waits: the stack's gate
 * refuses every received packet (each one counted in `blocked`, the waiters that
 * never get it), runs no timer and sends nothing. `holder` names the path that holds
 * it and `since` when it was taken, so that a hang can be inspected (`faultstack
 * stats`) and released by hand (`faultstack unlock`).
 */
export class ConnTableLock {
  holder: string | null = null;
  /** Stack time of the acquisition (ms). */
  since = 0;
  /** Wall time of the acquisition, for display. */
  sinceWall = 0;
  /** Received packets refused while it was held: they waited for the table and never got it. */
  blocked = 0;
  acquisitions = 0;

  get held(): boolean {
    return this.holder !== null;
  }

  acquire(holder: string, now: number): void {
    this.holder = holder;
    this.since = now;
    this.sinceWall = Date.now();
    this.acquisitions++;
  }

  release(): string | null {
    const h = this.holder;
    this.holder = null;
    return h;
  }

  describe(now: number) {
    return {
      held: this.held,
      holder: this.holder,
      heldForMs: this.held ? Math.round(now - this.since) : 0,
      since: this.held ? new Date(this.sinceWall).toISOString() : null,
      blockedPackets: this.blocked,
      acquisitions: this.acquisitions,
    };
  }
}

export type LockReport = { name: string } & ReturnType<ConnTableLock['describe']>;

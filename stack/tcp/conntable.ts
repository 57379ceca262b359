/**
 * The TCP connection table and its lock.
 *
 * Connections are found by (local address, local port, remote address, remote
 * port). The table hashes the remote half into a Map of chains, and keeps the last
 * hit: a bulk transfer finds its connection without touching the Map.
 *
 * The lock is explicit because KB 297040 is about it: a path that takes it and
 * never releases it hangs everything that needs the table. In normal operation the
 * stack is single-threaded and the lock is taken and released around the few
 * operations that the emulated Windows code did under it; `holder` names who holds
 * it and `since` when, so that a hang can be inspected and released by hand.
 */
import type { TcpConnection } from './connection';

export class ConnTableLock {
  holder: string | null = null;
  since = 0;
  sinceWall = 0;
  blocked = 0;
  acquisitions = 0;

  get held(): boolean { return this.holder !== null; }

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

export class ConnTable {
  private readonly buckets = new Map<number, TcpConnection>();
  private last: TcpConnection | null = null;
  readonly lock = new ConnTableLock();
  size = 0;

  private static remoteKey(remoteAddr: number, remotePort: number): number {
    return remoteAddr * 65536 + remotePort; // < 2^48: exact in a double
  }

  lookup(localAddr: number, localPort: number, remoteAddr: number, remotePort: number): TcpConnection | undefined {
    const l = this.last;
    if (l && l.remotePort === remotePort && l.localPort === localPort && l.remoteAddr === remoteAddr && l.localAddr === localAddr) return l;
    let c = this.buckets.get(ConnTable.remoteKey(remoteAddr, remotePort)) ?? null;
    while (c) {
      if (c.localPort === localPort && c.localAddr === localAddr) { this.last = c; return c; }
      c = c.chainNext;
    }
    return undefined;
  }

  insert(conn: TcpConnection): void {
    const k = ConnTable.remoteKey(conn.remoteAddr, conn.remotePort);
    conn.chainNext = this.buckets.get(k) ?? null;
    this.buckets.set(k, conn);
    this.size++;
  }

  remove(conn: TcpConnection): boolean {
    if (this.last === conn) this.last = null;
    const k = ConnTable.remoteKey(conn.remoteAddr, conn.remotePort);
    let c = this.buckets.get(k) ?? null;
    let prev: TcpConnection | null = null;
    while (c) {
      if (c === conn) {
        const next = c.chainNext;
        if (prev) prev.chainNext = next;
        else if (next) this.buckets.set(k, next);
        else this.buckets.delete(k);
        c.chainNext = null;
        this.size--;
        return true;
      }
      prev = c;
      c = c.chainNext;
    }
    return false;
  }

  *all(): IterableIterator<TcpConnection> {
    for (const head of this.buckets.values()) {
      let c: TcpConnection | null = head;
      while (c) { yield c; c = c.chainNext; }
    }
  }
}
